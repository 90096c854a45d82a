"""``SimVecEnv``: many cars on one track stepped together, as a Gymnasium ``VectorEnv``.

Autoreset follows Gymnasium's default (``AutoresetMode.NEXT_STEP``): the step that ends a car's race returns its
last observation with terminated/truncated set; the next ``step`` resets that car (its action is ignored) and
returns the new race's first observation with reward 0 and both flags False. With
``autoreset_mode=AutoresetMode.DISABLED`` the caller restarts cars itself, any subset at a time, through
``reset(seed=..., options={"reset_mask": mask})`` (Gymnasium's convention): a collector drives each car's races.

``info`` holds one array per key of ``tmexp.envs.base.INFO_KEYS`` (``cp_times`` and ``cutoff`` as object arrays)
plus Gymnasium's ``_<key>`` masks (all True).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.spaces import Discrete
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from tmexp.envs.base import EnvSpec, RewardSpec, action_space, observation_space
from tmexp.envs.sim.core import SimBatch
from tmexp.envs.sim.params import SimParams
from tmexp.envs.track import Track


class SimVecEnv(VectorEnv):
    """``num_envs`` cars; batched observations ``{"img": (N, 1, H, W) uint8, "floats": (N, F) float32}``."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int, track: Track, spec: EnvSpec, rewards: RewardSpec, params: SimParams,
                 seed: int | None = None, autoreset_mode: AutoresetMode = AutoresetMode.NEXT_STEP):
        if autoreset_mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
            raise ValueError(f"SimVecEnv supports autoreset_mode NEXT_STEP or DISABLED, not {autoreset_mode}")
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        self.num_envs = int(num_envs)
        self.single_observation_space = observation_space(spec)
        self.single_action_space: Discrete = action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.batch = SimBatch(self.num_envs, track, spec, rewards, params)
        self._seed = seed
        self._rngs = [np.random.default_rng() for _ in range(self.num_envs)]
        self._autoreset = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset every car, or the cars of ``options["reset_mask"]`` ((num_envs,) bool); the others race on.

        ``seed``: an int s seeds car i with s + i; a list gives each car its seed (None: keep its generator).
        """
        mask = np.ones(self.num_envs, dtype=bool)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool).reshape(self.num_envs)
        seed = seed if seed is not None else self._seed
        self._seed = None
        if seed is not None:
            seeds = seed if isinstance(seed, (list, tuple)) else [seed + i for i in range(self.num_envs)]
            for i in np.flatnonzero(mask):
                if seeds[i] is not None:  # car i with seed s draws exactly what SimEnv(seed=s) draws
                    self._rngs[i] = np.random.Generator(np.random.PCG64(seeds[i]))
        which = np.flatnonzero(mask)
        self.batch.reset_cars(which, [self._rngs[i] for i in which])
        self._autoreset[which] = False
        return self.batch.observe(), self._infos()

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        if np.any((actions < 0) | (actions >= self.single_action_space.n)):
            raise ValueError(f"actions {actions!r} must all be in Discrete(12)")
        restart = np.flatnonzero(self._autoreset)
        if len(restart) and self.metadata["autoreset_mode"] == AutoresetMode.DISABLED:
            raise RuntimeError(f"SimVecEnv.step: cars {restart.tolist()} ended their races; reset them first with "
                               "reset(options={'reset_mask': mask}).")
        reward, terminated, truncated = self.batch.step(actions)
        if len(restart):
            self.batch.reset_cars(restart, [self._rngs[i] for i in restart])
            reward[restart] = 0.0
            terminated[restart] = False
            truncated[restart] = False
        self._autoreset = terminated | truncated
        return self.batch.observe(), reward, terminated, truncated, self._infos()

    def _infos(self) -> dict[str, np.ndarray]:
        infos: dict[str, np.ndarray] = {}
        for key, values in self.batch.infos().items():
            if key in ("cp_times", "cutoff"):
                arr = np.empty(self.num_envs, dtype=object)
                for i, v in enumerate(values):  # element-wise: a list of equal-length lists would broadcast
                    arr[i] = v
            else:
                arr = np.asarray(values)
            infos[key] = arr
            infos["_" + key] = np.ones(self.num_envs, dtype=bool)
        return infos
