"""Build the configured environment backend for one collector."""

from __future__ import annotations

from tmexp.envs.track import load_map


def make_env(env_cfg, map_cfg, rewards_cfg, seed: int | None = None, collector_index: int = 0):
    """Return the env of ``env_cfg.backend`` for collector ``collector_index`` (raises the backend's own errors)."""
    track = load_map(map_cfg.short_name, map_cfg.reference_line_path)
    if env_cfg.backend == "sim":
        from tmexp.envs.sim import SimEnv

        return SimEnv(track, env_cfg, rewards_cfg, env_cfg.sim, seed=seed)
    if env_cfg.backend == "tmi":
        from tmexp.envs.tmi.env import TmiEnv

        return TmiEnv(track, env_cfg, rewards_cfg, env_cfg.tmi, collector_index=collector_index, seed=seed)
    raise ValueError(f"env.backend is {env_cfg.backend!r}: choose sim or tmi.")
