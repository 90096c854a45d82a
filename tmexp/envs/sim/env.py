"""``SimEnv``: one car on a track as a Gymnasium environment (the default backend, ``env=sim``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from tmexp.envs import float_stats
from tmexp.envs.base import EnvSpec, RewardSpec, action_space, observation_space
from tmexp.envs.driver import ReferenceDriver
from tmexp.envs.float_stats import FloatStats
from tmexp.envs.sim.core import SimBatch
from tmexp.envs.sim.params import SimParams
from tmexp.envs.sim.physics import driver_car
from tmexp.envs.track import Track


class SimEnv(gym.Env):
    """One car; observations ``{"img": uint8 (1, H, W), "floats": float32 (F,)}``, actions Discrete(12).

    See ``tmexp.envs.sim.core`` for race semantics and rewards and ``tmexp.envs.base.INFO_KEYS`` for ``info``.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        track: Track | Sequence[Track],
        spec: EnvSpec,
        rewards: RewardSpec,
        params: SimParams,
        seed: int | None = None,
        render_mode: str | None = None,
    ):
        # Not self.spec: gym.Env.spec is the Gymnasium registration spec.
        self.env_spec, self.rewards, self.params = spec, rewards, params
        # A map cycle's tracks: ``reset(options={"map_index": i})`` races on track i from then on.
        self.tracks = [track] if isinstance(track, Track) else list(track)
        self.track = self.tracks[0]
        self.observation_space = observation_space(spec)
        self.action_space = action_space()
        self.render_mode = render_mode
        self.batches = [SimBatch(1, t, spec, rewards, params) for t in self.tracks]
        self.batch = self.batches[0]
        self._seed = seed
        self._needs_reset = True
        self._last_obs: dict[str, np.ndarray] | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed if seed is not None else self._seed)
        self._seed = None  # the constructor's seed applies to the first reset only, as in Gymnasium
        if options and options.get("map_index") is not None:
            index = int(np.asarray(options["map_index"]).reshape(-1)[0])
            if not 0 <= index < len(self.tracks):
                raise ValueError(f"map_index {index} must be in [0, {len(self.tracks)})")
            self.track, self.batch = self.tracks[index], self.batches[index]
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
        """Per-float mean and std over reference-driver races on this env's tracks (``tmexp.envs.float_stats``).

        Measured on fresh envs of the same settings, so this env's own races and random draws are untouched. With
        several tracks (a map cycle) one set serves them all, as the network has one float input for every map
        (Linesight too keeps one set for all its maps): the floats of every track's races, pooled, so that each
        track counts by its frames, as its races do in replay.
        """
        if len(self.tracks) == 1:
            stats = self._measure(self.track)
            return stats.mean, stats.std
        return pooled_float_stats([self._measure(track, min_std=0.0) for track in self.tracks])

    def _measure(self, track: Track, **kwargs) -> FloatStats:  # in the class, float_stats names the method
        env = SimEnv(track, self.env_spec, self.rewards, self.params, seed=0)
        driver = ReferenceDriver(track, driver_car(self.params))
        return float_stats.measure(env, lambda: env.batch.car.view(0), driver, self.env_spec, **kwargs)

    def _obs(self) -> dict[str, np.ndarray]:
        obs = self.batch.observe()
        self._last_obs = {"img": obs["img"][0], "floats": obs["floats"][0]}
        return self._last_obs

    def render(self):
        """The current observation image as an (H, W, 3) uint8 array."""
        if self._last_obs is None:
            return None
        return np.repeat(self._last_obs["img"][0][:, :, None], 3, axis=2)


def pooled_float_stats(parts: list[FloatStats], min_std: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """The mean and std of the floats of several measurements together (each measured with ``min_std=0``), each
    counting by its frames; a float (nearly) constant over all of them gets mean 0 and std 1, as in one."""
    frames = np.array([p.frames for p in parts], dtype=np.float64)[:, None]
    means = np.stack([p.mean for p in parts]).astype(np.float64)
    second = np.stack([p.std.astype(np.float64) ** 2 for p in parts]) + means**2
    mean = (frames * means).sum(axis=0) / frames.sum()
    std = np.sqrt(np.maximum((frames * second).sum(axis=0) / frames.sum() - mean**2, 0.0))
    constant = std < min_std
    return (np.where(constant, 0.0, mean).astype(np.float32), np.where(constant, 1.0, std).astype(np.float32))
