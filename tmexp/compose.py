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


def experiment_first(argv: list[str]) -> list[str]:
    """``argv`` with its experiment overrides (``+experiment=``) moved before the other overrides, order kept
    otherwise. Hydra composes appended groups in command-line order and the later one's defaults win, so
    ``+ablation=no_impala +experiment=A01_cpu_btr`` would run the bundle's IMPALA: the experiment comes first."""

    def is_experiment(arg: str) -> bool:
        return arg.lstrip("+~").split("=", 1)[0] == "experiment" and "=" in arg

    experiments = [a for a in argv if is_experiment(a)]
    rest = [a for a in argv if not is_experiment(a)]
    # at the first override: flags stay where they were (Hydra's parser wants the overrides in one run)
    first = next((i for i, a in enumerate(rest) if "=" in a and not a.startswith("-")), len(rest))
    return rest[:first] + experiments + rest[first:]


def compose_config(overrides: list[str] | None = None, return_hydra_config: bool = False) -> Config | DictConfig:
    """``conf/config.yaml`` with ``overrides`` as the typed ``Config`` (or the raw DictConfig with Hydra's node)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="train"):
        cfg = compose(
            config_name="config",
            overrides=experiment_first(list(overrides or [])),
            return_hydra_config=return_hydra_config,
        )
    if return_hydra_config:
        return cfg
    return OmegaConf.to_object(cfg)
