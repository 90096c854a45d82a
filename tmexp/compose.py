"""Compose the configuration tree (``conf/``) into the typed schema of ``tmexp/config.py``, without a CLI.

The training CLI, the benchmarks and the tests compose through here; the schema module stays free of Hydra so that
the core can import it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tmexp.config import Config

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore as ``config_schema``, the first entry of the defaults list."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="config_schema", node=Config)


def compose_config(overrides: list[str] | None = None, return_hydra_config: bool = False) -> Config | DictConfig:
    """``conf/config.yaml`` with ``overrides`` as the typed ``Config`` (or the raw DictConfig with Hydra's node)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="train"):
        cfg = compose(config_name="config", overrides=list(overrides or []), return_hydra_config=return_hydra_config)
    if return_hydra_config:
        return cfg
    return OmegaConf.to_object(cfg)
