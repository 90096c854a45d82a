"""``SimEnv``: one car on a track as a Gymnasium environment (the default backend, ``env=sim``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from tmexp.envs import float_stats
from tmexp.envs.base import EnvSpec, RewardSpec, action_space, observation_space
from tmexp.envs.driver import ReferenceDriver
from tmexp.envs.sim.core import SimBatch
from tmexp.envs.sim.params import SimParams
from tmexp.envs.sim.physics import driver_car
from tmexp.envs.track import Track


class SimEnv(gym.Env):
    """One car; observations ``{"img": uint8 (1, H, W), "floats": float32 (F,)}``, actions Discrete(12).

    See ``tmexp.envs.sim.core`` for race semantics and rewards and ``tmexp.envs.base.INFO_KEYS`` for ``info``.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, track: Track, spec: EnvSpec, rewards: RewardSpec, params: SimParams,
                 seed: int | None = None, render_mode: str | None = None):
        # Not self.spec: gym.Env.spec is the Gymnasium registration spec.
        self.track, self.env_spec, self.rewards, self.params = track, spec, rewards, params
        self.observation_space = observation_space(spec)
        self.action_space = action_space()
        self.render_mode = render_mode
        self.batch = SimBatch(1, track, spec, rewards, params)
        self._seed = seed
        self._needs_reset = True
        self._last_obs: dict[str, np.ndarray] | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed if seed is not None else self._seed)
        self._seed = None  # the constructor's seed applies to the first reset only, as in Gymnasium
        self.batch.reset_cars(np.array([0]), [self.np_random])
        self._needs_reset = False
        return self._obs(), self.batch.info(0)

    def step(self, action):
        if self._needs_reset:
            raise RuntimeError("SimEnv.step called before reset() or after the race ended; call reset() first.")
        a = int(action)
        if a != action or not 0 <= a < self.action_space.n:
            raise ValueError(f"action {action!r} is not in Discrete(12)")
        reward, terminated, truncated = self.batch.step(np.array([a]))
        self._needs_reset = bool(terminated[0] or truncated[0])
        return self._obs(), float(reward[0]), bool(terminated[0]), bool(truncated[0]), self.batch.info(0)

    def float_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-float mean and std over reference-driver races on this track (``tmexp.envs.float_stats``).

        Measured on a fresh env of the same settings, so this env's own races and random draws are untouched.
        """
        env = SimEnv(self.track, self.env_spec, self.rewards, self.params, seed=0)
        driver = ReferenceDriver(self.track, driver_car(self.params))
        stats = float_stats.measure(env, lambda: env.batch.car.view(0), driver, self.env_spec)
        return stats.mean, stats.std

    def _obs(self) -> dict[str, np.ndarray]:
        obs = self.batch.observe()
        self._last_obs = {"img": obs["img"][0], "floats": obs["floats"][0]}
        return self._last_obs

    def render(self):
        """The current observation image as an (H, W, 3) uint8 array."""
        if self._last_obs is None:
            return None
        return np.repeat(self._last_obs["img"][0][:, :, None], 3, axis=2)
