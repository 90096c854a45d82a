"""The Hydra side of ``hydra/sweeper=optuna``: its schema and the ``Sweeper`` that hands the work to
``tmexp.launch.search.run_study``.

Hydra imports every module of ``hydra_plugins`` when any Hydra app starts, so this one imports neither Optuna nor
tmexp at import time: a Hydra app that never names the sweeper pays nothing, and an install without the ``search``
extra still starts. (No ``from __future__ import annotations``: Hydra's plugin scan imports modules outside
``sys.modules``, where a dataclass cannot resolve string annotations.)
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

DIRECTION_RESOLVER = "tmexp.objective_direction"


@dataclass
class OptunaSweeperConf:
    """``hydra.sweeper.*`` (``conf/hydra/sweeper/optuna.yaml`` sets tmexp's values; docs/searches.md explains)."""

    _target_: str = "hydra_plugins.tmexp_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sampler and pruner are built by the study, with its search space
    direction: str = "minimize"
    study_name: str | None = None
    storage: str | None = None  # None: a journal file, <sweep dir>/optuna.journal
    n_trials: int = 8
    n_jobs: int = 1
    max_failure_rate: float = 1.0
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler"})
    pruner: Any = field(default_factory=lambda: {"_target_": "optuna.pruners.NopPruner"})
    step_seconds: float = 60.0
    prune_after_minutes: float = 0.0
    poll_seconds: float = 2.0
    params: dict[str, str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="tmexp_optuna", node=OptunaSweeperConf, provider="tmexp")


def _direction(name: str) -> str:
    from tmexp.launch.objective import direction

    return direction(name)


if not OmegaConf.has_resolver(DIRECTION_RESOLVER):
    OmegaConf.register_new_resolver(DIRECTION_RESOLVER, _direction)


class OptunaSweeper(Sweeper):
    """Runs a study: ``n_jobs`` trials at once, a new one as soon as one ends (``tmexp.launch.search``)."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.hydra_context = None
        self.config = None
        self.launcher = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from tmexp.launch.search import run_study

        return run_study(self.settings, self.config, self.launcher, arguments)
