"""Car physics of the simulator: one 10 ms engine step for B cars at once (numpy, structure of arrays).

The model, per car: a heading (unit vector), a velocity that may point away from the heading, a yaw rate set by
the steering state and the speed, and a steering state that moves towards the pressed direction at a limited rate.
Lateral velocity (sliding) is caught by grip at most ``grip_mps2``; turning faster than grip allows makes the car
slide, which costs speed, so braking before a turn and taking a wide line pay off. Walls sit
``road_width/2 + offroad_width`` from the centreline: touching one removes the velocity into it and a little of
the rest, so walls slow the car without stopping it dead.

One engine step is written once (``_engine_step``) over an ``ops`` namespace and runs either on numpy arrays
(a batch of cars) or on Python floats (one car: numpy's per-call overhead would make a single car ~5x slower).
Only + - * / sqrt, comparisons, min/max and round-half-even are used (no transcendental functions), all exactly
rounded in IEEE double precision by both, so a car's trajectory is bit-for-bit the same alone or in a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from types import SimpleNamespace

import numpy as np

from tmexp.envs.driver import CarView, DriverCar
from tmexp.envs.sim.params import SimParams
from tmexp.envs.track import ArrayOps, ScalarOps, TrackGeometry, locate


@dataclass
class SimCars:
    """The simulator's state of B cars, each field (B,).

    Heading (fx, fz) is a unit vector; right is (-fz, fx); yaw_rate > 0 turns right.
    """

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
    def zeros(cls, n: int) -> SimCars:
        kw = {f.name: np.zeros(n) for f in fields(cls)}
        kw["idx"] = np.zeros(n, dtype=np.int64)
        kw["wall"] = np.zeros(n, dtype=bool)
        return cls(**kw)

    def copy(self) -> SimCars:
        return SimCars(**{f.name: getattr(self, f.name).copy() for f in fields(self)})

    def take(self, rows: np.ndarray) -> SimCars:
        """A copy of the cars ``rows`` (int indices), in that order."""
        return SimCars(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def assign(self, mask: np.ndarray, other: SimCars) -> None:
        """Set the cars in ``mask`` to ``other``'s values (``other`` holds exactly those cars)."""
        for f in fields(self):
            getattr(self, f.name)[mask] = getattr(other, f.name)

    def speed(self) -> np.ndarray:
        return np.sqrt(self.vx * self.vx + self.vz * self.vz)

    def view(self, i: int = 0) -> CarView:
        """Car ``i`` as the reference driver sees it."""
        return CarView(
            float(self.x[i]),
            float(self.z[i]),
            float(self.fx[i]),
            float(self.fz[i]),
            float(np.sqrt(self.vx[i] * self.vx[i] + self.vz[i] * self.vz[i])),
            float(self.steer[i]),
        )


def driver_car(p: SimParams) -> DriverCar:
    """The simulator's car as the reference driver plans for it."""
    return DriverCar(
        grip_mps2=p.grip_mps2,
        brake_decel_mps2=p.brake_decel_mps2,
        steer_rate_per_s=p.steer_rate_per_s,
        max_curvature_per_m=p.max_curvature_per_m,
        understeer_speed_mps=p.understeer_speed_mps,
    )


_FIELD_NAMES = tuple(f.name for f in fields(SimCars))


class _NumpyOps(ArrayOps):
    where = staticmethod(np.where)
    maximum = staticmethod(np.maximum)
    sqrt = staticmethod(np.sqrt)


class _ScalarOps(ScalarOps):
    @staticmethod
    def where(c, a, b):
        return a if c else b

    maximum = staticmethod(max)
    sqrt = staticmethod(math.sqrt)


def advance(
    state: SimCars,
    accel: np.ndarray,
    brake: np.ndarray,
    steer_cmd: np.ndarray,
    p: SimParams,
    geo: TrackGeometry,
    dt: float,
    n_steps: int,
) -> np.ndarray:
    """Run ``n_steps`` engine steps of ``dt`` seconds on B cars in place.

    Args:
        accel, brake: (B,) 0/1 floats; steer_cmd: (B,) -1 (left), 0 or +1 (right).
    Returns:
        (B, n_steps) metres along the extended centreline after each engine step (negative behind the start).
    """
    names = _FIELD_NAMES
    s_line = geo.line.s
    if len(state.x) == 1:
        car = SimpleNamespace(**{n: getattr(state, n)[0].item() for n in names})
        a, b, c = float(accel[0]), float(brake[0]), float(steer_cmd[0])
        history = np.empty((1, n_steps))
        for k in range(n_steps):
            _engine_step(car, a, b, c, p, geo, dt, _ScalarOps)
            history[0, k] = s_line[car.idx] + car.along
        for n in names:
            getattr(state, n)[0] = getattr(car, n)
        return history
    car = SimpleNamespace(**{n: getattr(state, n) for n in names})
    history = np.empty((len(state.x), n_steps))
    for k in range(n_steps):
        _engine_step(car, accel, brake, steer_cmd, p, geo, dt, _NumpyOps)
        history[:, k] = s_line[car.idx] + car.along
    for n in names:
        setattr(state, n, getattr(car, n))
    return history


def _engine_step(car, accel, brake, steer_cmd, p: SimParams, geo: TrackGeometry, dt: float, ops) -> None:
    """One engine step of ``car`` (fields scalars or (B,) arrays) in place; see the module docstring."""
    where, clip, maximum = ops.where, ops.clip, ops.maximum
    rate = p.steer_rate_per_s * dt
    car.steer = car.steer + clip(steer_cmd - car.steer, -rate, rate)
    fx, fz = car.fx, car.fz
    rx, rz = -fz, fx
    v_f = car.vx * fx + car.vz * fz
    v_l = car.vx * rx + car.vz * rz
    offroad = abs(car.lateral) > 0.5 * p.road_width_m
    grip = where(offroad, p.grip_mps2 * p.offroad_grip_factor, p.grip_mps2)

    # Longitudinal: drive force first, then resistances that shrink the speed towards zero without reversing it.
    engine = accel * p.engine_accel_mps2 * maximum(0.0, 1.0 - v_f * (1.0 / p.engine_cutoff_speed_mps))
    braking = (brake > 0) & (v_f > 0.5)
    reversing = (brake > 0) & (accel == 0) & (v_f <= 0.5)
    drive = where(brake > 0, engine * p.brake_with_throttle_factor, engine)
    drive = where(reversing, where(v_f > -p.reverse_max_speed_mps, -p.reverse_accel_mps2, 0.0), drive)
    resist = (
        p.drag_coef_per_m * v_f * v_f
        + p.rolling_resistance_mps2
        + where(offroad, p.offroad_drag_mps2, 0.0)
        + where(braking, p.brake_decel_mps2, 0.0)
    )
    v_f = v_f + drive * dt
    v_f = where(v_f > 0, maximum(v_f - resist * dt, 0.0), -maximum(-v_f - resist * dt, 0.0))

    # Lateral: grip pulls the sideways velocity to zero at most grip * dt per step; the rest is a slide.
    v_l = v_l - clip(v_l, -grip * dt, grip * dt)

    # Yaw: steering curvature (less at speed: understeer), capped by what grip can nearly follow.
    ratio = v_f * (1.0 / p.understeer_speed_mps)
    yaw = v_f * car.steer * p.max_curvature_per_m / (1.0 + ratio * ratio)
    yaw_cap = p.yaw_over_grip * grip / maximum(abs(v_f), 1.0)
    car.yaw_rate = clip(yaw, -yaw_cap, yaw_cap)

    car.vx = fx * v_f + rx * v_l
    car.vz = fz * v_f + rz * v_l
    a = car.yaw_rate * dt  # |a| < 0.1: third-order sine and second-order cosine, then renormalise
    sa, ca = a - a * a * a * (1.0 / 6.0), 1.0 - 0.5 * a * a
    nfx, nfz = fx * ca + rx * sa, fz * ca + rz * sa
    norm = ops.sqrt(nfx * nfx + nfz * nfz)
    car.fx, car.fz = nfx / norm, nfz / norm
    car.x = car.x + car.vx * dt
    car.z = car.z + car.vz * dt

    locate(car, geo, ops)

    # Walls: push a car that crossed one back onto it; drop its velocity into the wall and a little of the rest.
    limit = 0.5 * p.road_width_m + p.offroad_width_m - p.car_half_width_m
    over = abs(car.lateral) - limit
    behind_start = (car.idx == 0) & (car.along < 0)  # the wall closing the line's start extension
    hit = (over > 0) | behind_start
    car.wall = hit
    _, _, tx, tz, nx, nz = ops.rows(geo, car.idx)
    # Outward normal of the wall that was hit (sideways, or backwards past the start); zero depth if none.
    side = where(car.lateral > 0, 1.0, -1.0)
    wx = where(behind_start, -tx, side * nx)
    wz = where(behind_start, -tz, side * nz)
    depth = where(behind_start, -car.along, maximum(over, 0.0))
    car.x = car.x - depth * wx
    car.z = car.z - depth * wz
    v_n = where(hit, maximum(car.vx * wx + car.vz * wz, 0.0), 0.0)
    keep = where(hit, 1.0 - p.wall_speed_loss_per_step, 1.0)
    car.vx = (car.vx - v_n * wx) * keep
    car.vz = (car.vz - v_n * wz) * keep
    # A car that glances off a wall (heading within wall_glance_max_deg of it) turns along it, as in the game;
    # otherwise grip would keep steering its velocity back into the wall and a graze would stop it dead. Steeper
    # hits keep their heading and scrub speed until the driver steers away.
    f_n = where(hit, maximum(car.fx * wx + car.fz * wz, 0.0), 0.0)
    glance = hit & (f_n < math.sin(math.radians(p.wall_glance_max_deg)))
    gx, gz = car.fx - f_n * wx, car.fz - f_n * wz
    g_norm = maximum(ops.sqrt(gx * gx + gz * gz), 1e-6)
    car.fx = where(glance, gx / g_norm, car.fx)
    car.fz = where(glance, gz / g_norm, car.fz)
    car.along = where(behind_start, 0.0, car.along)
    car.lateral = where(over > 0, side * limit, car.lateral)
