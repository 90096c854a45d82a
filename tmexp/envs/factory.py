"""Build the configured environment backend for one collector: one car, or a collector's cars as a vector env.

With a map cycle (``map.cycle``) the env knows every map of the cycle, and each reset's ``options["map_index"]``
says which one the race is on (``tmexp/envs/maps.py``); a one-map run is a cycle of one.
"""

from __future__ import annotations

import logging

from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from tmexp.envs.maps import cycle_maps, load_tracks

log = logging.getLogger(__name__)


def make_env(env_cfg, map_cfg, rewards_cfg, seed: int | None = None, collector_index: int = 0):
    """Return the env of ``env_cfg.backend`` for collector ``collector_index`` (raises the backend's own errors)."""
    maps = cycle_maps(map_cfg)
    tracks = load_tracks(maps)
    if env_cfg.backend == "sim":
        from tmexp.envs.sim import SimEnv

        return SimEnv(tracks, env_cfg, rewards_cfg, env_cfg.sim, seed=seed)
    if env_cfg.backend == "tmi":
        from tmexp.envs.tmi.env import TmiEnv

        for m in maps:
            if not m.reference_line_path and collector_index == 0:
                log.warning(
                    "map %r has no reference_line_path: progress and rewards follow the simulator's "
                    "built-in track of that name, not the game's map (see docs/game.md)",
                    m.short_name,
                )
        cycle = [(track, m.map_path) for track, m in zip(tracks, maps)] if len(maps) > 1 else None
        return TmiEnv(
            tracks[0], env_cfg, rewards_cfg, env_cfg.tmi, collector_index=collector_index, seed=seed, maps=cycle
        )
    raise ValueError(f"env.backend is {env_cfg.backend!r}: choose sim or tmi.")


def make_vector_env(
    env_cfg, map_cfg, rewards_cfg, num_envs: int, seed: int | None = None, collector_index: int = 0, env=None
) -> VectorEnv:
    """``num_envs`` cars of collector ``collector_index`` as one Gymnasium ``VectorEnv`` with autoreset off.

    The caller restarts each car's race itself (``reset(seed=[...], options={"reset_mask": mask, "map_index":
    maps})``). The simulator steps its cars as one batch per track (``SimVecEnv``); the game drives one car per
    collector, so there ``num_envs`` must be 1. ``env``: a one-car env of this config already built (a probe) to
    reuse: its tracks, or the game itself.
    """
    if env_cfg.backend == "sim":
        from tmexp.envs.sim import SimVecEnv

        tracks = env.tracks if env is not None else load_tracks(cycle_maps(map_cfg))
        return SimVecEnv(
            num_envs, tracks, env_cfg, rewards_cfg, env_cfg.sim, seed=seed, autoreset_mode=AutoresetMode.DISABLED
        )
    if num_envs != 1:
        raise ValueError(f"env.backend {env_cfg.backend!r} drives one car per collector, not {num_envs}.")
    one = (
        env if env is not None else make_env(env_cfg, map_cfg, rewards_cfg, seed=seed, collector_index=collector_index)
    )
    return SyncVectorEnv([lambda: one], autoreset_mode=AutoresetMode.DISABLED)
