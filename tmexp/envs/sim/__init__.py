"""The embedded Trackmania-like simulator (the default backend, ``env=sim``)."""

from tmexp.envs.sim.env import SimEnv
from tmexp.envs.sim.params import SimParams
from tmexp.envs.sim.vec_env import SimVecEnv

__all__ = ["SimEnv", "SimParams", "SimVecEnv"]
