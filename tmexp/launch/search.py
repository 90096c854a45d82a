"""Searches: Hydra's Optuna sweeper (``hydra/sweeper=optuna``, the ``hydra-optuna-sweeper`` plugin) on tmexp runs.

The preset ``conf/hydra/sweeper/optuna.yaml`` keeps the study in ``<sweep_dir>/optuna.db`` (SQLite) under the name
``run_name``, and takes its direction from ``objective`` through the ``tmexp.objective_direction`` resolver. Each
trial is a job whose task function returns the run's objective (``tmexp/launch/objective.py``); a job that raised is
a failed trial, and ``max_failure_rate: 1.0`` keeps the study going past it.

Three things the plugin does not do, added around its ``sweep`` by ``extend_optuna_sweeper`` (Hydra loads sweeper
classes only from the ``hydra_plugins`` namespace, so tmexp wraps the plugin's method instead of subclassing it):

- a rerun in the same sweep directory continues the study *and* its job numbers: trial N runs in job directory N,
  so a new trial never lands in (and resumes) an earlier trial's run directory;
- trials a killed sweep left "running" are marked failed when the study is continued;
- a study whose trials all failed ends with the sweep summary (every job failed) instead of a traceback from the
  plugin asking the study for its best trial.

``search_jobs`` gives the training CLI's check what to compose before Hydra starts: a search space cannot be
expanded as a grid, so each parameter's candidate values (a choice's options, an interval's ends) are composed one
at a time, the others at their first value.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tmexp.launch import objective
from tmexp.validation import ConfigError

log = logging.getLogger(__name__)

OBJECTIVE_ATTR = "tmexp_objective"  # the study's user attribute naming the objective its values measure
_RESOLVER = "tmexp.objective_direction"


def register_resolvers() -> None:
    """``${tmexp.objective_direction:${objective}}``: the preset's direction, implied by the objective."""
    if not OmegaConf.has_resolver(_RESOLVER):
        OmegaConf.register_new_resolver(_RESOLVER, lambda name: objective.direction(name))


def install() -> None:
    """Set up ``hydra/sweeper=optuna`` for tmexp: the preset, its direction resolver, the sweep's extension.

    The plugin registers its schema as ``hydra/sweeper/optuna`` when Hydra scans plugins, and Hydra refuses a YAML
    file named like a registered schema that has a defaults list. So scan first, then register the schema again
    as ``optuna_plugin`` (the base of ``conf/hydra/sweeper/optuna.yaml``) and drop the plugin's name for it, which
    makes the preset the ``optuna`` option. Idempotent."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    try:
        from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
    except ImportError:  # an install without the plugin: hydra/sweeper=optuna is then Hydra's "unknown option"
        return
    Plugins.instance()
    store = ConfigStore.instance()
    store.repo.get("hydra", {}).get("sweeper", {}).pop("optuna.yaml", None)
    store.store(group="hydra/sweeper", name="optuna_plugin", node=OptunaSweeperConf, provider="tmexp")
    register_resolvers()
    extend_optuna_sweeper()


def is_search(sweeper: DictConfig | None) -> bool:
    """Whether ``hydra.sweeper`` is the Optuna sweeper."""
    return sweeper is not None and "optuna" in str(sweeper.get("_target_", ""))


# ----- before Hydra starts: what to compose, what to refuse ----------------------------------------------------
def search_space(overrides: list[str], sweeper: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(distributions, fixed values) as the plugin builds them: ``hydra.sweeper.params`` first, then the command
    line's task overrides (sweeps such as ``interval(0.1, 0.9)``, ``choice(a, b)``, ``range(1, 5)``, ``a,b``)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    params = [f"{k}={v}" for k, v in (OmegaConf.to_container(sweeper.params) if sweeper.get("params") else {}).items()]
    return create_params_from_overrides(params + [o for o in overrides if not _is_hydra_override(o)])


def _is_hydra_override(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def _candidates(distribution) -> list[Any]:
    """The values of a distribution worth composing: every choice, or both ends of a range."""
    choices = getattr(distribution, "choices", None)
    if choices is not None:
        return list(choices)
    return [distribution.low, distribution.high]


def search_jobs(overrides: list[str], sweeper: DictConfig) -> list[list[str]]:
    """Override lists to compose and check: each candidate value of each parameter once, the others at their
    first candidate. The command's non-sweep overrides come first in each, as they do in every trial."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    distributions, _ = search_space(overrides, sweeper)
    fixed = [o.input_line for o in OverridesParser.create().parse_overrides(overrides) if not o.is_sweep_override()]
    first = {name: _candidates(d)[0] for name, d in distributions.items()}
    jobs = [fixed + [f"{k}={v}" for k, v in first.items()]]
    for name, distribution in distributions.items():
        for value in _candidates(distribution)[1:]:
            jobs.append(fixed + [f"{k}={value if k == name else v}" for k, v in first.items()])
    return jobs


def check_search(overrides: list[str], sweeper: DictConfig, objective_name: str) -> None:
    """Refuse, in one line, a search that cannot run or would mix results: no trial, no search space, a direction
    against the objective, or an existing study of another objective, direction or search space."""
    n_trials, n_jobs = sweeper.get("n_trials"), sweeper.get("n_jobs")
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"hydra.sweeper.n_trials is {n_trials}: a search runs at least one trial "
                          "(e.g. hydra.sweeper.n_trials=8).")
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise ConfigError(f"hydra.sweeper.n_jobs is {n_jobs}: use 1 or more (trials launched together).")
    distributions, fixed = search_space(overrides, sweeper)
    if not distributions:
        raise ConfigError("hydra/sweeper=optuna has nothing to search: give a parameter's range, e.g. "
                          "'btr.munchausen_alpha=interval(0.5, 0.99)' or 'seed=choice(0, 1)' "
                          "(or hydra.sweeper.params).")
    for name in distributions:
        if name.lstrip("+~") == "objective":
            raise ConfigError("objective is what the search optimises, not a search parameter: fix it with "
                              "objective=<name> and search other keys.")
    implied = objective.direction(objective_name)
    direction = sweeper.get("direction")
    if str(getattr(direction, "name", direction)) != implied:
        raise ConfigError(f"hydra.sweeper.direction is {direction} but objective {objective_name} is "
                          f"{implied}d: drop the hydra.sweeper.direction override (the objective sets it).")
    _check_existing_study(sweeper, objective_name, implied, distributions)


def _sqlite_file(storage: Any) -> Path | None:
    url = str(storage or "")
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def _check_existing_study(sweeper: DictConfig, objective_name: str, implied: str, distributions: dict) -> None:
    path = _sqlite_file(sweeper.get("storage"))
    if path is None or not path.is_file() or not sweeper.get("study_name"):
        return
    import optuna
    from optuna.distributions import check_distribution_compatibility

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=str(sweeper.study_name), storage=str(sweeper.storage))
    except KeyError:  # the file holds other studies only: this one starts fresh
        return
    where = f"study {sweeper.study_name!r} in {path}"
    fix = "use another hydra.sweep.dir (or hydra.sweeper.study_name) for a new study"
    previous = study.user_attrs.get(OBJECTIVE_ATTR)
    if previous is not None and previous != str(objective_name):
        raise ConfigError(f"{where} optimises objective {previous}, not {objective_name}: set objective={previous} "
                          f"to continue it, or {fix}.")
    if [d.name.lower() for d in study.directions] != [implied]:
        raise ConfigError(f"{where} is {study.directions[0].name.lower()}d, but objective {objective_name} is "
                          f"{implied}d: {fix}.")
    for trial in study.trials:
        for name, old in trial.distributions.items():
            if name in distributions:
                try:
                    check_distribution_compatibility(old, distributions[name])
                except ValueError as error:
                    raise ConfigError(f"{where} searched {name} as {old}, which {distributions[name]} cannot "
                                      f"continue ({error}): {fix}.") from error


# ----- around the plugin's sweep -------------------------------------------------------------------------------
def extend_optuna_sweeper() -> None:
    """Wrap the Optuna sweeper's ``sweep`` (see the module docstring); call before Hydra starts. Idempotent."""
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

    if getattr(OptunaSweeper.sweep, "_tmexp", False):
        return
    plugin_sweep = OptunaSweeper.sweep

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        _prepare_study(impl)
        try:
            plugin_sweep(self, arguments)
        except ValueError:  # the plugin asks the study for its best trial, which it has not
            if _completed_trials(impl) > 0:
                raise
            log.error("no trial of the study completed: the summary below says why")

    sweep._tmexp = True
    OptunaSweeper.sweep = sweep


def _prepare_study(impl) -> None:
    """Create or load the study, record its objective, fail trials a killed sweep left running, and number the
    new jobs after the study's trials."""
    import optuna

    Path(str(impl.sweep_dir)).mkdir(parents=True, exist_ok=True)  # the SQLite file lives there
    study = optuna.create_study(study_name=impl.study_name, storage=impl.storage, load_if_exists=True,
                                directions=impl._get_directions())
    objective_name = str(impl.config.get("objective", ""))
    if objective_name and OBJECTIVE_ATTR not in study.user_attrs:
        study.set_user_attr(OBJECTIVE_ATTR, objective_name)
    stale = [t.number for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    for number in stale:
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    if stale:
        log.warning("trials %s of study %s were left running by an earlier sweep: marked failed", stale,
                    study.study_name)
    impl.job_idx = len(study.trials)
    if impl.job_idx:
        log.info("continuing study %s: %d trials so far, the next is job %d", study.study_name, impl.job_idx,
                 impl.job_idx)


def _completed_trials(impl) -> int:
    import optuna

    study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


# ----- after the sweep: the study in the summary ---------------------------------------------------------------
def study_report(sweeper: DictConfig, sweep_dir: Path, objective_name: str | None) -> list[str]:
    """Lines for the sweep summary: the study's trials (value, parameters) and its best trial with the overrides of
    its job. [] when the study cannot be read."""
    import optuna

    from tmexp import rundir

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=str(sweeper.study_name), storage=str(sweeper.storage))
    except Exception as error:  # no storage, or a study this sweep never created
        return [f"optuna study {sweeper.get('study_name')}: not readable ({type(error).__name__}: {error})"]
    name = study.user_attrs.get(OBJECTIVE_ATTR, objective_name or "value")
    unit = objective.spec(name).unit if name in objective.OBJECTIVES else ""
    states = [t.state.name.lower() for t in study.trials]
    rank = {s: i for i, s in enumerate(("complete", "fail", "pruned", "running", "waiting"))}  # whatever ran first
    counts = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states), key=lambda s: (rank.get(s, len(rank)), s)))
    lines = [f"optuna study {study.study_name!r} ({sweeper.storage}): {len(states)} trials ({counts}); "
             f"objective {name}, {study.directions[0].name.lower()}d"]
    for t in study.trials:
        value = f"{t.value:.6g} {unit}" if t.value is not None else t.state.name
        params = " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        lines.append(f"  trial {t.number:<3} {value:<14} {params}")
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        lines.append("best trial: none (no trial completed)")
        return lines
    best = study.best_trial
    job_dir = sweep_dir / str(best.number)
    overrides = rundir.read_overrides(job_dir) if job_dir.is_dir() else []
    lines.append(f"best trial: #{best.number}, {name} {best.value:.6g} {unit}, run {job_dir}")
    lines.append(f"  overrides: {' '.join(overrides) or ' '.join(f'{k}={v}' for k, v in best.params.items())}")
    return lines
