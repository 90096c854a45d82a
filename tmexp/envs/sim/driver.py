"""A reference driver: pure pursuit on the centreline with a speed profile limited by curvature and grip.

It proves a track is finishable in the simulator and gives the agent a time to beat; it is not optimal (it
follows the centreline instead of choosing a line). It plays the same 12 discrete actions as the agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tmexp.envs.base import EnvSpec, RewardSpec
from tmexp.envs.sim.env import SimEnv
from tmexp.envs.sim.params import SimParams
from tmexp.envs.track import SPACING_M, Track

# (accelerate, brake) x steer command -1/0/+1 -> action index (see tmexp.envs.base.ACTIONS).
_ACTION = {("accel", -1): 1, ("accel", 0): 0, ("accel", 1): 2,
           ("coast", -1): 4, ("coast", 0): 3, ("coast", 1): 5,
           ("brake", -1): 7, ("brake", 0): 6, ("brake", 1): 8}


@dataclass
class ReferenceDriver:
    """Pure pursuit + a grip-limited speed profile, for one track and one set of car parameters."""

    track: Track
    params: SimParams
    grip_fraction: float = 0.95  # corner at this fraction of the grip limit
    brake_fraction: float = 0.85  # plan braking at this fraction of the brake deceleration
    lookahead_m: float = 5.0
    lookahead_s: float = 0.25  # plus this many seconds of travel
    speed_profile: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        p = self.params
        curvature = np.maximum(self.track.curvature(window_m=8.0), 1e-4)
        corner = np.sqrt(self.grip_fraction * p.grip_mps2 / curvature)
        v = np.minimum(corner, 120.0)
        decel = self.brake_fraction * p.brake_decel_mps2
        for i in range(len(v) - 2, -1, -1):  # the speed from which braking reaches the next limit in time
            v[i] = min(v[i], np.sqrt(v[i + 1] ** 2 + 2.0 * decel * SPACING_M))
        self.speed_profile = v

    def act(self, x: float, z: float, fx: float, fz: float, speed: float, steer: float, progress_m: float,
            dt_action: float) -> int:
        """The action for a car at (x, z) heading (fx, fz) with the given speed (m/s), steering state, progress."""
        p = self.params
        i = min(int(progress_m / SPACING_M), len(self.track.s) - 1)
        ahead = self.lookahead_m + self.lookahead_s * speed
        j = min(i + int(ahead / SPACING_M), len(self.track.s) - 1)
        if j == i:  # at the very end: aim straight along the last tangent
            tx, tz = self.track.xz[-1] + self.track.tangent[-1] * ahead
        else:
            tx, tz = self.track.xz[j]
        dx, dz = tx - x, tz - z
        right, forward = dx * -fz + dz * fx, dx * fx + dz * fz
        dist2 = max(right * right + forward * forward, 1e-6)
        want_curvature = 2.0 * right / dist2  # pure pursuit: the arc through the target point
        ratio = speed / p.understeer_speed_mps
        full_lock = p.max_curvature_per_m / (1.0 + ratio * ratio)
        want_steer = float(np.clip(want_curvature / full_lock, -1.0, 1.0))
        rate = p.steer_rate_per_s * dt_action
        cmd = min((-1, 0, 1), key=lambda c: abs(steer + np.clip(c - steer, -rate, rate) - want_steer))

        target = self.speed_profile[min(i + int(speed * dt_action / SPACING_M) + 2, len(self.speed_profile) - 1)]
        if speed > target + 1.0:
            pedal = "brake"
        elif speed < target - 0.5:
            pedal = "accel"
        else:
            pedal = "coast"
        return _ACTION[(pedal, cmd)]


@dataclass
class Lap:
    finished: bool
    race_time_ms: int
    cp_times: list
    positions: np.ndarray  # (T, 2) x, z after each action
    images: list  # observation images (1, H, W) every ``image_every`` actions
    wall_contacts: int


def drive_lap(track: Track, spec: EnvSpec, params: SimParams, rewards: RewardSpec | None = None,
              image_every: int = 20) -> Lap:
    """Drive one race with the reference driver; returns where it went and what it saw."""
    env = SimEnv(track, spec, rewards or RewardSpec(), params, seed=0)
    driver = ReferenceDriver(track, params)
    obs, info = env.reset()
    dt_action = spec.tm_engine_step_per_action * spec.ms_per_tm_engine_step / 1000.0
    positions, images, walls = [], [obs["img"]], 0
    while True:
        car = env.batch.car
        action = driver.act(float(car.x[0]), float(car.z[0]), float(car.fx[0]), float(car.fz[0]),
                            float(car.speed()[0]), float(car.steer[0]), info["progress_m"], dt_action)
        obs, _, terminated, truncated, info = env.step(action)
        positions.append((float(car.x[0]), float(car.z[0])))
        walls += info["wall_contact"]
        if len(positions) % image_every == 0:
            images.append(obs["img"])
        if terminated or truncated:
            return Lap(info["finished"], info["race_time_ms"], info["cp_times"], np.asarray(positions), images,
                       walls)


def reference_float_stats(track: Track, spec: EnvSpec, params: SimParams, rewards: RewardSpec | None = None,
                          random_fractions: tuple[float, ...] = (0.0, 0.2, 0.4), seed: int = 0,
                          min_std: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each float input over reference-driver races, one per fraction of random actions.

    The random actions widen the spread beyond the driver's own line (slides, wall contact, slow corners). An input
    (nearly) constant in these races (e.g. the vertical components on a flat track) gets mean 0 and std 1, so it
    passes through unscaled when it does vary.
    """
    env = SimEnv(track, spec, rewards or RewardSpec(), params, seed=seed)
    driver = ReferenceDriver(track, params)
    rng = np.random.default_rng(seed)
    dt_action = spec.tm_engine_step_per_action * spec.ms_per_tm_engine_step / 1000.0
    rows = []
    for fraction in random_fractions:
        obs, info = env.reset()
        while True:
            car = env.batch.car
            action = driver.act(float(car.x[0]), float(car.z[0]), float(car.fx[0]), float(car.fz[0]),
                                float(car.speed()[0]), float(car.steer[0]), info["progress_m"], dt_action)
            if rng.random() < fraction:
                action = int(rng.integers(env.action_space.n))
            rows.append(obs["floats"])
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
    floats = np.asarray(rows, dtype=np.float64)
    mean, std = floats.mean(axis=0), floats.std(axis=0)
    constant = std < min_std
    return np.where(constant, 0.0, mean).astype(np.float32), np.where(constant, 1.0, std).astype(np.float32)
