"""One race of the reference driver (``tmexp.envs.driver``) in the simulator: its time and what it saw."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tmexp.envs.base import EnvSpec, RewardSpec
from tmexp.envs.driver import ReferenceDriver
from tmexp.envs.sim.env import SimEnv
from tmexp.envs.sim.params import SimParams
from tmexp.envs.sim.physics import driver_car
from tmexp.envs.track import Track


@dataclass
class Lap:
    finished: bool
    race_time_ms: int
    cp_times: list
    positions: np.ndarray  # (T, 2) x, z after each action
    images: list  # observation images (1, H, W) every ``image_every`` actions
    wall_contacts: int


def drive_lap(
    track: Track, spec: EnvSpec, params: SimParams, rewards: RewardSpec | None = None, image_every: int = 20
) -> Lap:
    """Drive one race with the reference driver; returns where it went and what it saw."""
    env = SimEnv(track, spec, rewards or RewardSpec(), params, seed=0)
    driver = ReferenceDriver(track, driver_car(params))
    obs, info = env.reset()
    dt_action = spec.tm_engine_step_per_action * spec.ms_per_tm_engine_step / 1000.0
    positions, images, walls = [], [obs["img"]], 0
    while True:
        car = env.batch.car
        action = driver.act(car.view(0), info["progress_m"], dt_action)
        obs, _, terminated, truncated, info = env.step(action)
        positions.append((float(car.x[0]), float(car.z[0])))
        walls += info["wall_contact"]
        if len(positions) % image_every == 0:
            images.append(obs["img"])
        if terminated or truncated:
            return Lap(info["finished"], info["race_time_ms"], info["cp_times"], np.asarray(positions), images, walls)
