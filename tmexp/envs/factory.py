"""Build the configured environment backend for one collector."""

from __future__ import annotations

import logging

from tmexp.envs.track import load_map

log = logging.getLogger(__name__)


def make_env(env_cfg, map_cfg, rewards_cfg, seed: int | None = None, collector_index: int = 0):
    """Return the env of ``env_cfg.backend`` for collector ``collector_index`` (raises the backend's own errors)."""
    track = load_map(map_cfg.short_name, map_cfg.reference_line_path)
    if env_cfg.backend == "sim":
        from tmexp.envs.sim import SimEnv

        return SimEnv(track, env_cfg, rewards_cfg, env_cfg.sim, seed=seed)
    if env_cfg.backend == "tmi":
        from tmexp.envs.tmi.env import TmiEnv

        if not map_cfg.reference_line_path and collector_index == 0:
            log.warning("map %r has no map.reference_line_path: progress and rewards follow the simulator's "
                        "built-in track of that name, not the game's map (see docs/game.md)", map_cfg.short_name)
        return TmiEnv(track, env_cfg, rewards_cfg, env_cfg.tmi, collector_index=collector_index, seed=seed)
    raise ValueError(f"env.backend is {env_cfg.backend!r}: choose sim or tmi.")
