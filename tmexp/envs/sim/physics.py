"""Car physics of the simulator: one 10 ms engine step for B cars at once (numpy, structure of arrays).

The model, per car: a heading (unit vector), a velocity that may point away from the heading, a yaw rate set by
the steering state and the speed, and a steering state that moves towards the pressed direction at a limited rate.
Lateral velocity (sliding) is caught by grip at most ``grip_mps2``; turning faster than grip allows makes the car
slide, which costs speed, so braking before a turn and taking a wide line pay off. Walls sit
``road_width/2 + offroad_width`` from the centreline: touching one removes the velocity into it and a little of
the rest, so walls slow the car without stopping it dead.

Only + - * / sqrt, comparisons and min/max are used per step (no transcendental functions), so a car's
trajectory is bit-for-bit the same whether it is stepped alone or in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from tmexp.envs.sim.params import SimParams
from tmexp.envs.track import SPACING_M, ExtendedLine


@dataclass
class CarState:
    """Per-car state, each field (B,). Heading (fx, fz) is a unit vector; right is (-fz, fx); yaw_rate > 0 turns right."""

    x: np.ndarray
    z: np.ndarray
    fx: np.ndarray
    fz: np.ndarray
    vx: np.ndarray
    vz: np.ndarray
    yaw_rate: np.ndarray
    steer: np.ndarray
    idx: np.ndarray  # int64: nearest point of the extended centreline
    along: np.ndarray  # metres ahead of that point along its tangent
    lateral: np.ndarray  # metres right of that point along its normal
    wall: np.ndarray  # bool: touched a wall during the last engine step

    @classmethod
    def zeros(cls, n: int) -> "CarState":
        kw = {f.name: np.zeros(n) for f in fields(cls)}
        kw["idx"] = np.zeros(n, dtype=np.int64)
        kw["wall"] = np.zeros(n, dtype=bool)
        return cls(**kw)

    def copy(self) -> "CarState":
        return CarState(**{f.name: getattr(self, f.name).copy() for f in fields(self)})

    def assign(self, mask: np.ndarray, other: "CarState") -> None:
        """Set the cars in ``mask`` to ``other``'s values (``other`` holds exactly those cars)."""
        for f in fields(self):
            getattr(self, f.name)[mask] = getattr(other, f.name)

    def speed(self) -> np.ndarray:
        return np.sqrt(self.vx * self.vx + self.vz * self.vz)


class TrackGeometry:
    """The extended centreline as one (M, 6) table [x, z, tx, tz, nx, nz] so a step gathers one row per car."""

    def __init__(self, line: ExtendedLine):
        self.line = line
        self.table = np.concatenate([line.xz, line.tangent, line.normal], axis=1)
        self.last = len(self.table) - 1

    def locate(self, state: CarState, iterations: int = 2) -> None:
        """Move each car's nearest index along the line (a car moves < 1 m per step) and refresh along/lateral."""
        idx = state.idx
        for _ in range(iterations):
            row = self.table[idx]
            along = (state.x - row[:, 0]) * row[:, 2] + (state.z - row[:, 1]) * row[:, 3]
            idx = np.clip(idx + np.rint(along * (1.0 / SPACING_M)).astype(np.int64), 0, self.last)
        row = self.table[idx]
        dx, dz = state.x - row[:, 0], state.z - row[:, 1]
        state.idx = idx
        state.along = dx * row[:, 2] + dz * row[:, 3]
        state.lateral = dx * row[:, 4] + dz * row[:, 5]


def engine_step(state: CarState, accel: np.ndarray, brake: np.ndarray, steer_cmd: np.ndarray, p: SimParams,
                geo: TrackGeometry, dt: float) -> None:
    """Advance B cars by ``dt`` seconds in place. accel, brake: (B,) 0/1 floats; steer_cmd: (B,) -1, 0 or +1."""
    rate = p.steer_rate_per_s * dt
    state.steer = state.steer + np.clip(steer_cmd - state.steer, -rate, rate)
    fx, fz = state.fx, state.fz
    rx, rz = -fz, fx
    v_f = state.vx * fx + state.vz * fz
    v_l = state.vx * rx + state.vz * rz
    offroad = np.abs(state.lateral) > 0.5 * p.road_width_m
    grip = np.where(offroad, p.grip_mps2 * p.offroad_grip_factor, p.grip_mps2)

    # Longitudinal: drive force first, then resistances that shrink the speed towards zero without reversing it.
    engine = accel * p.engine_accel_mps2 * np.maximum(0.0, 1.0 - v_f * (1.0 / p.engine_cutoff_speed_mps))
    braking = (brake > 0) & (v_f > 0.5)
    reversing = (brake > 0) & (accel == 0) & (v_f <= 0.5)
    drive = np.where(brake > 0, engine * p.brake_with_throttle_factor, engine)
    drive = np.where(reversing, np.where(v_f > -p.reverse_max_speed_mps, -p.reverse_accel_mps2, 0.0), drive)
    resist = (p.drag_coef_per_m * v_f * v_f + p.rolling_resistance_mps2
              + np.where(offroad, p.offroad_drag_mps2, 0.0) + np.where(braking, p.brake_decel_mps2, 0.0))
    v_f = v_f + drive * dt
    v_f = np.where(v_f > 0, np.maximum(v_f - resist * dt, 0.0), np.minimum(v_f + resist * dt, 0.0))

    # Lateral: grip pulls the sideways velocity to zero at most grip * dt per step; the rest is a slide.
    v_l = v_l - np.clip(v_l, -grip * dt, grip * dt)

    # Yaw: steering curvature (less at speed: understeer), capped by what grip can nearly follow.
    ratio = v_f * (1.0 / p.understeer_speed_mps)
    yaw = v_f * state.steer * p.max_curvature_per_m / (1.0 + ratio * ratio)
    yaw_cap = p.yaw_over_grip * grip / np.maximum(np.abs(v_f), 1.0)
    state.yaw_rate = np.clip(yaw, -yaw_cap, yaw_cap)

    state.vx = fx * v_f + rx * v_l
    state.vz = fz * v_f + rz * v_l
    a = state.yaw_rate * dt  # |a| < 0.1: third-order sine and second-order cosine, then renormalise
    sa, ca = a - a * a * a * (1.0 / 6.0), 1.0 - 0.5 * a * a
    nfx, nfz = fx * ca + rx * sa, fz * ca + rz * sa
    norm = np.sqrt(nfx * nfx + nfz * nfz)
    state.fx, state.fz = nfx / norm, nfz / norm
    state.x = state.x + state.vx * dt
    state.z = state.z + state.vz * dt

    geo.locate(state)
    _walls(state, p, geo)


def _walls(state: CarState, p: SimParams, geo: TrackGeometry) -> None:
    """Push cars that crossed a wall back onto it; drop their velocity into the wall and a fraction of the rest."""
    limit = 0.5 * p.road_width_m + p.offroad_width_m - p.car_half_width_m
    over = np.abs(state.lateral) - limit
    behind_start = (state.idx == 0) & (state.along < 0)  # the wall closing the line's start extension
    hit = (over > 0) | behind_start
    state.wall = hit
    if not hit.any():
        return
    row = geo.table[state.idx]
    # Outward normal of the wall that was hit (sideways, or backwards past the start).
    side = np.where(state.lateral > 0, 1.0, -1.0)
    nx = np.where(behind_start, -row[:, 2], side * row[:, 4])
    nz = np.where(behind_start, -row[:, 3], side * row[:, 5])
    depth = np.where(behind_start, -state.along, np.maximum(over, 0.0))
    depth = np.where(hit, depth, 0.0)
    state.x = state.x - depth * nx
    state.z = state.z - depth * nz
    v_n = np.maximum(state.vx * nx + state.vz * nz, 0.0)
    keep = np.where(hit, 1.0 - p.wall_speed_loss_per_step, 1.0)
    state.vx = (state.vx - v_n * nx * hit) * keep
    state.vz = (state.vz - v_n * nz * hit) * keep
    state.along = np.where(behind_start, 0.0, state.along)
    state.lateral = np.where(over > 0, side * limit, state.lateral)
