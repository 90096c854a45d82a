"""``SimVecEnv``: many cars on one track stepped together, as a Gymnasium ``VectorEnv``.

Autoreset follows Gymnasium's default (``AutoresetMode.NEXT_STEP``): the step that ends a car's race returns its
last observation with terminated/truncated set; the next ``step`` resets that car (its action is ignored) and
returns the new race's first observation with reward 0 and both flags False. With
``autoreset_mode=AutoresetMode.DISABLED`` the caller restarts cars itself, any subset at a time, through
``reset(seed=..., options={"reset_mask": mask})`` (Gymnasium's convention): a collector drives each car's races.

A map cycle's cars race on several tracks: pass a list of tracks, and each reset's ``options["map_index"]`` says
which track each reset car races on next (one ``SimBatch`` per track steps the cars racing there).

``info`` holds one array per key of ``tmexp.envs.base.INFO_KEYS`` (``cp_times`` and ``cutoff`` as object arrays)
plus Gymnasium's ``_<key>`` masks (all True).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from gymnasium.spaces import Box, Dict, Discrete
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from tmexp.envs.base import EnvSpec, RewardSpec, action_space, observation_space
from tmexp.envs.sim.core import SimBatch
from tmexp.envs.sim.params import SimParams
from tmexp.envs.track import Track


class SimVecEnv(VectorEnv):
    """``num_envs`` cars; batched observations ``{"img": (N, 1, H, W) uint8, "floats": (N, F) float32}``."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int,
        track: Track | Sequence[Track],
        spec: EnvSpec,
        rewards: RewardSpec,
        params: SimParams,
        seed: int | None = None,
        autoreset_mode: AutoresetMode = AutoresetMode.NEXT_STEP,
    ):
        if autoreset_mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
            raise ValueError(f"SimVecEnv supports autoreset_mode NEXT_STEP or DISABLED, not {autoreset_mode}")
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        self.num_envs = int(num_envs)
        self.single_observation_space = observation_space(spec)
        self.single_action_space: Discrete = action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        # A map cycle: one batch per track, each car racing on one of them (``map_index``) until its next reset.
        self.tracks = [track] if isinstance(track, Track) else list(track)
        self.batches = [SimBatch(self.num_envs, t, spec, rewards, params) for t in self.tracks]
        self.batch = self.batches[0]
        self.map_index = np.zeros(self.num_envs, dtype=np.int64)
        self._seed = seed
        self._rngs = [np.random.default_rng() for _ in range(self.num_envs)]
        self._autoreset = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset every car, or the cars of ``options["reset_mask"]`` ((num_envs,) bool); the others race on.

        ``seed``: an int s seeds car i with s + i; a list gives each car its seed (None: keep its generator).
        ``options["map_index"]`` ((num_envs,) ints): the track each reset car races on from now (a map cycle's
        map); without it a car stays on its track.
        """
        mask = np.ones(self.num_envs, dtype=bool)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool).reshape(self.num_envs)
        if options and options.get("map_index") is not None:
            index = np.asarray(options["map_index"], dtype=np.int64).reshape(self.num_envs)
            if np.any((index < 0) | (index >= len(self.tracks))):
                raise ValueError(f"map_index {index.tolist()} must be in [0, {len(self.tracks)})")
            self.map_index = np.where(mask, index, self.map_index)
        seed = seed if seed is not None else self._seed
        self._seed = None
        if seed is not None:
            seeds = seed if isinstance(seed, (list, tuple)) else [seed + i for i in range(self.num_envs)]
            for i in np.flatnonzero(mask):
                if seeds[i] is not None:  # car i with seed s draws exactly what SimEnv(seed=s) draws
                    self._rngs[i] = np.random.Generator(np.random.PCG64(seeds[i]))
        self._reset_cars(np.flatnonzero(mask))
        return self._observe(), self._infos()

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        if np.any((actions < 0) | (actions >= self.single_action_space.n)):
            raise ValueError(f"actions {actions!r} must all be in Discrete(12)")
        restart = np.flatnonzero(self._autoreset)
        if len(restart) and self.metadata["autoreset_mode"] == AutoresetMode.DISABLED:
            raise RuntimeError(
                f"SimVecEnv.step: cars {restart.tolist()} ended their races; reset them first with "
                "reset(options={'reset_mask': mask})."
            )
        reward = np.empty(self.num_envs)
        terminated, truncated = np.empty(self.num_envs, dtype=bool), np.empty(self.num_envs, dtype=bool)
        for batch, rows in self._groups():
            if rows is None:
                reward, terminated, truncated = batch.step(actions)
            else:
                sub = batch.take(rows)
                reward[rows], terminated[rows], truncated[rows] = sub.step(actions[rows])
                batch.put(rows, sub)
        if len(restart):
            self._reset_cars(restart)
            reward[restart] = 0.0
            terminated[restart] = False
            truncated[restart] = False
        self._autoreset = terminated | truncated
        return self._observe(), reward, terminated, truncated, self._infos()

    def _groups(self):
        """(batch, rows) for each track some car races on; rows None when every car races on that one."""
        if len(self.batches) == 1:
            return [(self.batch, None)]
        groups = []
        for m, batch in enumerate(self.batches):
            rows = np.flatnonzero(self.map_index == m)
            if len(rows) == self.num_envs:
                return [(batch, None)]
            if len(rows):
                groups.append((batch, rows))
        return groups

    def _reset_cars(self, which: np.ndarray) -> None:
        for m, batch in enumerate(self.batches):
            cars = which[self.map_index[which] == m]
            if len(cars):
                batch.reset_cars(cars, [self._rngs[i] for i in cars])
        self._autoreset[which] = False

    def _observe(self) -> dict[str, np.ndarray]:
        groups = self._groups()
        if groups[0][1] is None:
            return groups[0][0].observe()
        # batch_space of a Dict of Boxes is a Dict of Boxes; gymnasium's stubs say Space
        space = cast(Dict, self.observation_space)
        img_space, floats_space = cast(Box, space["img"]), cast(Box, space["floats"])
        obs: dict[str, np.ndarray] = {
            "img": np.empty(img_space.shape, dtype=np.uint8),
            "floats": np.empty(floats_space.shape, dtype=np.float32),
        }
        for batch, rows in groups:
            part = batch.take(rows).observe()
            obs["img"][rows], obs["floats"][rows] = part["img"], part["floats"]
        return obs

    def _car_infos(self) -> dict[str, list]:
        groups = self._groups()
        if groups[0][1] is None:
            return groups[0][0].infos()
        infos: dict[str, list] = {}
        for batch, rows in groups:
            for key, values in batch.take(rows).infos().items():
                column = infos.setdefault(key, [None] * self.num_envs)
                for k, i in enumerate(rows):
                    column[i] = values[k]
        return infos

    def _infos(self) -> dict[str, np.ndarray]:
        infos: dict[str, np.ndarray] = {}
        for key, values in self._car_infos().items():
            if key in ("cp_times", "cutoff"):
                arr = np.empty(self.num_envs, dtype=object)
                for i, v in enumerate(values):  # element-wise: a list of equal-length lists would broadcast
                    arr[i] = v
            else:
                arr = np.asarray(values)
            infos[key] = arr
            infos["_" + key] = np.ones(self.num_envs, dtype=bool)
        return infos
