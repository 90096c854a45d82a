"""Searches: ``hydra/sweeper=optuna``, tmexp's Optuna sweeper, on tmexp runs (docs/searches.md).

The Hydra plugin (``hydra_plugins/tmexp_optuna_sweeper``) registers the schema and hands ``sweep`` to
``run_study`` here. A study:

- lives in ``<sweep dir>/optuna.journal`` (Optuna's JournalStorage on a plain file: safe on a shared filesystem
  across SLURM nodes, no database server) unless ``hydra.sweeper.storage`` names another Optuna storage URL;
- runs ``n_jobs`` trials at once, each launched alone from a worker thread through the sweep's launcher
  (``hydra/launcher=local`` or ``slurm``), so that a trial that ends, or is pruned, frees its worker for the next
  trial at once; Hydra's in-process launcher runs one trial at a time, on the sweep's own thread;
- runs trial N in job N (``hydra.job.num``, the job directory by default): job numbers keep counting across reruns;
- prunes: each run reports its objective at every logging interval (``TrialReporter``, in the job) to
  ``<sweep dir>/.search/<N>.jsonl``; the sweeper turns the reports into the trial's intermediate values (step k: the
  objective after k x ``step_seconds`` of training), asks the pruner, and asks the run to stop by writing
  ``<sweep dir>/.search/<N>.prune``; the run ends cleanly (final checkpoint, logs, its objective) with status
  ``pruned``. The job needs no Optuna and no access to the study, only the shared filesystem;
- continues when the same command is run again (same objective, same search space; anything else is refused in
  one line), marks failed the trials a killed sweep left running and asks them again.

Before Hydra starts, ``check_search`` refuses what cannot run and ``search_jobs`` gives the training CLI's check what
to compose: a search space cannot be expanded as a grid, so each parameter's candidate values (a choice's options,
an interval's ends) are composed one at a time, the others at their first value.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tmexp.launch import objective
from tmexp.validation import ConfigError

log = logging.getLogger(__name__)

OBJECTIVE_ATTR = "tmexp_objective"  # the study's user attribute naming the objective its values measure
SPACE_ATTR = "tmexp_search_space"  # ... and the search space its trials were drawn from
JOURNAL = "optuna.journal"
TRIALS_DIR = ".search"  # in the sweep directory: each running trial's reports and its prune request
MIN_OPTUNA = (4, 0)
INSTALL = "pip install -e '.[search]' (or pip install 'optuna>=4')"
_RESOLVER = "tmexp.objective_direction"


def register_resolvers() -> None:
    """``${tmexp.objective_direction:${objective}}``: the preset's direction, implied by the objective."""
    if not OmegaConf.has_resolver(_RESOLVER):
        OmegaConf.register_new_resolver(_RESOLVER, lambda name: objective.direction(name))


def install() -> None:
    """Make ``hydra/sweeper=optuna`` composable before Hydra starts (the plugin registers the same resolver when
    Hydra scans it). Idempotent."""
    register_resolvers()


def is_search(sweeper: DictConfig | Mapping | None) -> bool:
    """Whether ``hydra.sweeper`` is the Optuna sweeper."""
    return sweeper is not None and "optuna" in str(sweeper.get("_target_", "")).lower()


def import_optuna():
    """Optuna, or a one-line ConfigError saying what to install (it is the ``search`` extra)."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"hydra/sweeper=optuna needs Optuna, which is not installed: {INSTALL}.") from None
    version = tuple(int(p) for p in optuna.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_OPTUNA:
        raise ConfigError(f"hydra/sweeper=optuna needs Optuna >= 4, and {optuna.__version__} is installed: {INSTALL}.")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# ----- the search space ------------------------------------------------------------------------------------------
def _distribution(override):
    """The Optuna distribution of one sweep override, as the hydra-optuna-sweeper plugin read them."""
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    if override.is_range_sweep() and not value.shuffle:  # range(a, b[, step]): b included, as in the plugin
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            return FloatDistribution(float(value.start), float(value.stop), step=float(value.step))
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    # choice(a, b), a,b, or a shuffled range: categorical
    return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))


def search_space(overrides: list[str], sweeper: DictConfig | Mapping) -> tuple[dict[str, Any], list[str]]:
    """(distributions by key, the fixed overrides every trial gets): ``hydra.sweeper.params`` first, then the
    command line's task overrides (a key in both: the command line's)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    import_optuna()
    params = sweeper.get("params") or {}
    if OmegaConf.is_config(params):
        params = OmegaConf.to_container(params)
    arguments = [f"{k}={v}" for k, v in params.items()] + [o for o in overrides if not _is_hydra_override(o)]
    parsed = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        parsed[override.get_key_element()] = override  # the later (command line) wins
    distributions = {k: _distribution(o) for k, o in parsed.items() if o.is_sweep_override()}
    fixed = [o.input_line for o in parsed.values() if not o.is_sweep_override()]
    return distributions, fixed


def _is_hydra_override(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def _candidates(distribution) -> list[Any]:
    """The values of a distribution worth composing: every choice, or both ends of a range."""
    choices = getattr(distribution, "choices", None)
    if choices is not None:
        return list(choices)
    return [distribution.low, distribution.high]


def _grid(distributions: dict[str, Any]) -> dict[str, list[Any]]:
    """The grid sampler's search space: every value of each parameter (choices and stepped ranges only)."""
    grid = {}
    for name, d in distributions.items():
        if getattr(d, "choices", None) is not None:
            grid[name] = list(d.choices)
        elif getattr(d, "step", None) is not None and not d.log:
            n = int(round((d.high - d.low) / d.step))
            grid[name] = [d.low + i * d.step for i in range(n + 1)]
        else:
            raise ConfigError(
                f"hydra/sweeper/sampler=grid cannot search {name} over an interval: give its values "
                f"(choice(...) or range(a, b, step)), or use another sampler."
            )
    return grid


def search_jobs(overrides: list[str], sweeper: DictConfig) -> list[list[str]]:
    """Override lists to compose and check: each candidate value of each parameter once, the others at their
    first candidate. The command's fixed overrides come first in each, as they do in every trial."""
    distributions, fixed = search_space(overrides, sweeper)
    first = {name: _candidates(d)[0] for name, d in distributions.items()}
    jobs = [fixed + [f"{k}={v}" for k, v in first.items()]]
    for name, distribution in distributions.items():
        for value in _candidates(distribution)[1:]:
            jobs.append(fixed + [f"{k}={value if k == name else v}" for k, v in first.items()])
    return jobs


# ----- storage and the study's identity ---------------------------------------------------------------------------
def storage_for(setting: Any, sweep_dir: str | Path):
    """(Optuna storage, where it is in words): a journal file by default, or the URL of ``hydra.sweeper.storage``
    (``sqlite:///...``, ``postgresql://...``); a path without a scheme is a journal file."""
    optuna = import_optuna()
    from optuna.storages.journal import JournalFileBackend

    if setting is None or str(setting) == "":
        path = Path(sweep_dir) / JOURNAL
    elif "://" in str(setting):
        return str(setting), str(setting)
    else:
        path = Path(str(setting))
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path))), str(path)


def _space_json(distributions: dict[str, Any]) -> dict[str, str]:
    from optuna.distributions import distribution_to_json

    return {name: distribution_to_json(d) for name, d in sorted(distributions.items())}


def check_continuation(
    study, where: str, objective_name: str | None, direction: str, distributions: dict[str, Any]
) -> None:
    """An existing study continues only with its objective, direction and search space; else one line."""
    fix = "use another hydra.sweep.dir (or hydra.sweeper.study_name) for a new study"
    previous = study.user_attrs.get(OBJECTIVE_ATTR)
    if previous is not None and objective_name is not None and previous != str(objective_name):
        raise ConfigError(
            f"{where} optimises objective {previous}, not {objective_name}: set objective={previous} "
            f"to continue it, or {fix}."
        )
    if [d.name.lower() for d in study.directions] != [direction]:
        raise ConfigError(f"{where} is {study.directions[0].name.lower()}d, but this search is {direction}d: {fix}.")
    space = study.user_attrs.get(SPACE_ATTR)
    if space is None:
        return
    now = _space_json(distributions)
    for name in sorted(set(space) | set(now)):
        if space.get(name) != now.get(name):
            was, is_now = _describe(space.get(name)), _describe(now.get(name))
            if was is None:
                what = f"did not search {name}, this command searches it as {is_now}"
            elif is_now is None:
                what = f"searched {name} as {was}, this command does not search it"
            else:
                what = f"searched {name} as {was}, this command as {is_now}"
            raise ConfigError(f"{where} {what}: give the study's search space to continue it, or {fix}.")


def _describe(encoded: str | None) -> str | None:
    if encoded is None:
        return None
    from optuna.distributions import json_to_distribution

    return repr(json_to_distribution(encoded))


def check_search(overrides: list[str], sweeper: DictConfig, objective_name: str, sweep_dir: str | Path) -> None:
    """Refuse, in one line, a search that cannot run or would mix results: no Optuna, no trial, no search space,
    a direction against the objective, or an existing study of another objective, direction or search space."""
    import_optuna()
    n_trials, n_jobs = sweeper.get("n_trials"), sweeper.get("n_jobs")
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(
            f"hydra.sweeper.n_trials is {n_trials}: a search runs at least one trial (e.g. hydra.sweeper.n_trials=8)."
        )
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise ConfigError(f"hydra.sweeper.n_jobs is {n_jobs}: use 1 or more (trials run at once).")
    if not sweeper.get("step_seconds", 1) or sweeper.get("step_seconds", 1) <= 0:
        raise ConfigError(
            f"hydra.sweeper.step_seconds is {sweeper.get('step_seconds')}: use a positive number of "
            "seconds (the training time between a trial's intermediate values)."
        )
    distributions, _ = search_space(overrides, sweeper)
    if not distributions:
        raise ConfigError(
            "hydra/sweeper=optuna has nothing to search: give a parameter's range, e.g. "
            "'btr.munchausen_alpha=interval(0.5, 0.99)' or 'seed=choice(0, 1)' "
            "(or hydra.sweeper.params)."
        )
    for name in distributions:
        if name.lstrip("+~") == "objective":
            raise ConfigError(
                "objective is what the search optimises, not a search parameter: fix it with "
                "objective=<name> and search other keys."
            )
    if "GridSampler" in str((sweeper.get("sampler") or {}).get("_target_", "")):
        _grid(distributions)
    implied = objective.direction(objective_name)
    direction = sweeper.get("direction")
    if str(getattr(direction, "name", direction)) != implied:
        raise ConfigError(
            f"hydra.sweeper.direction is {direction} but objective {objective_name} is "
            f"{implied}d: drop the hydra.sweeper.direction override (the objective sets it)."
        )
    _check_existing_study(sweeper, objective_name, implied, distributions, Path(str(sweep_dir)))


def _check_existing_study(
    sweeper: DictConfig, objective_name: str, direction: str, distributions: dict, sweep_dir: Path
) -> None:
    setting = sweeper.get("storage")
    if (setting is None and not (sweep_dir / JOURNAL).is_file()) or not sweeper.get("study_name"):
        return  # nothing to continue (a database URL is looked at when the sweep starts)
    if setting is not None and "://" not in str(setting) and not Path(str(setting)).is_file():
        return
    optuna = import_optuna()
    storage, where = storage_for(setting, sweep_dir)
    try:
        study = optuna.load_study(study_name=str(sweeper.study_name), storage=storage)
    except KeyError:  # the storage holds other studies only: this one starts fresh
        return
    check_continuation(study, f"study {sweeper.study_name!r} in {where}", objective_name, direction, distributions)


# ----- the study ---------------------------------------------------------------------------------------------------
@dataclass
class Running:
    """A trial whose job is out: its reports so far and whether it was asked to stop."""

    trial: Any  # optuna.trial.Trial
    reports: Path
    prune_file: Path
    read_lines: int = 0
    last_step: int = -1
    prune_requested: bool = False
    started: float = field(default_factory=time.time)


def _instantiate(node: Any, **extra: Any):
    from hydra.utils import instantiate

    return instantiate(node, **extra) if node else None


def _make_sampler(node: Any, distributions: dict[str, Any]):
    target = str((node or {}).get("_target_", ""))
    if "GridSampler" in target:
        return _instantiate(node, search_space=_grid(distributions))
    return _instantiate(node)


def run_study(settings: Mapping[str, Any], config: DictConfig, launcher: Any, arguments: list[str]) -> list:
    """Run ``n_trials`` trials of the study (created, or continued) with ``n_jobs`` at once; return the trials'
    Hydra ``JobReturn``s in the order they ended."""
    optuna = import_optuna()
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / TRIALS_DIR).mkdir(exist_ok=True)
    distributions, fixed = search_space(arguments, settings)
    objective_name = config.get("objective")
    direction = str(settings.get("direction", "minimize")).lower()
    storage, where = storage_for(settings.get("storage"), sweep_dir)
    study_name = str(settings.get("study_name") or config.get("run_name") or "study")
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        load_if_exists=True,
        direction=direction,
        sampler=_make_sampler(settings.get("sampler"), distributions),
        pruner=_instantiate(settings.get("pruner")),
    )
    check_continuation(study, f"study {study_name!r} in {where}", objective_name, direction, distributions)
    if objective_name is not None and OBJECTIVE_ATTR not in study.user_attrs:
        study.set_user_attr(OBJECTIVE_ATTR, str(objective_name))
    if SPACE_ATTR not in study.user_attrs:
        study.set_user_attr(SPACE_ATTR, _space_json(distributions))
    _fail_stale_trials(optuna, study)
    log.info(
        "study %r (%s): %d trials so far; %d more, %d at once",
        study_name,
        where,
        len(study.trials),
        settings["n_trials"],
        settings["n_jobs"],
    )
    return _Scheduler(optuna, study, settings, launcher, sweep_dir, distributions, fixed).run()


def _fail_stale_trials(optuna, study) -> None:
    """Trials a killed sweep left running: failed, and their parameters asked again first."""
    running = optuna.trial.TrialState.RUNNING
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == running]
    for t in stale:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
    if stale:
        log.warning(
            "trials %s of study %s were left running by an earlier sweep: marked failed, asked again",
            [t.number for t in stale],
            study.study_name,
        )


class _Scheduler:
    """Keeps ``n_jobs`` trials out; tells the study each one's end; turns running trials' reports into
    intermediate values and prunes. Every call to Optuna happens on this (the sweep's) thread; the worker threads
    only wait for their launcher."""

    def __init__(self, optuna, study, settings, launcher, sweep_dir: Path, distributions, fixed: list[str]):
        self.optuna, self.study, self.launcher = optuna, study, launcher
        self.n_trials, self.n_jobs = int(settings["n_trials"]), int(settings["n_jobs"])
        self.max_failure_rate = float(settings.get("max_failure_rate", 1.0))
        self.step_s = float(settings.get("step_seconds") or 60.0)
        self.prune_after_s = 60.0 * float(settings.get("prune_after_minutes") or 0.0)
        self.poll_s = float(settings.get("poll_seconds") or 2.0)
        self.sweep_dir, self.distributions, self.fixed = sweep_dir, distributions, fixed
        # An in-process launcher (Hydra's basic one) runs a job in this process, changing its working directory:
        # one at a time, on this thread, where Ctrl-C and preemption signals reach the run.
        self.in_process = "BasicLauncher" in type(launcher).__name__
        self.returns: list = []
        self.failed = self.ended = 0

    def run(self) -> list:
        if self.in_process:
            return self._run_in_process()
        running: dict[Future, Running] = {}
        launched = 0
        try:
            while running or (launched < self.n_trials and not self._too_many_failures()):
                while len(running) < self.n_jobs and launched < self.n_trials and not self._too_many_failures():
                    item = self._ask()
                    running[self._start(item)] = item
                    launched += 1
                done, _ = wait(running, timeout=self.poll_s, return_when=FIRST_COMPLETED)
                for future in done:
                    self._end(running.pop(future), future)
                for item in running.values():
                    self._follow(item)
        except KeyboardInterrupt:
            log.warning(
                "interrupted: trials %s are left running in the study; continuing it marks them failed and "
                "asks them again",
                sorted(item.trial.number for item in running.values()),
            )
            raise
        if self._too_many_failures():
            log.error(
                "%d of %d trials failed (more than hydra.sweeper.max_failure_rate=%g): the study stops",
                self.failed,
                self.ended,
                self.max_failure_rate,
            )
        return self.returns

    def _run_in_process(self) -> list:
        """One trial at a time, run on this thread; a watcher thread follows its reports meanwhile (the only
        thread calling Optuna while the trial runs)."""
        for _ in range(self.n_trials):
            if self._too_many_failures():
                break
            item = self._ask()
            stop = threading.Event()

            def watch(item: Running = item, stop: threading.Event = stop) -> None:
                while not stop.wait(self.poll_s):
                    self._follow(item)

            watcher = threading.Thread(target=watch, name=f"trial-{item.trial.number}-reports", daemon=True)
            watcher.start()
            future: Future = Future()
            try:
                future.set_result(
                    self.launcher.launch([self._overrides(item.trial)], initial_job_idx=item.trial.number)[0]
                )
            except KeyboardInterrupt:
                log.warning(
                    "interrupted: trial %d is left running in the study; continuing it marks it failed and "
                    "asks it again",
                    item.trial.number,
                )
                raise
            except Exception as error:  # the launcher's own failure: the trial's
                future.set_exception(error)
            finally:
                stop.set()
                watcher.join()
            self._end(item, future)
        return self.returns

    def _too_many_failures(self) -> bool:
        return self.ended > 0 and self.failed / self.ended > self.max_failure_rate

    def _ask(self) -> Running:
        trial = self.study.ask(self.distributions)
        base = self.sweep_dir / TRIALS_DIR / str(trial.number)
        for path in (base.with_suffix(".jsonl"), base.with_suffix(".prune")):
            path.unlink(missing_ok=True)  # left by a trial of the same number in a study deleted and started again
        return Running(trial, base.with_suffix(".jsonl"), base.with_suffix(".prune"))

    def _overrides(self, trial) -> list[str]:
        return [*self.fixed, *(f"{name}={value}" for name, value in trial.params.items())]

    def _start(self, item: Running) -> Future:
        """Launch the trial's job from a worker thread; the future holds its JobReturn. Daemon threads: an
        interrupted sweep exits without waiting for jobs that a cluster runs on."""
        future: Future = Future()

        def work() -> None:
            future.set_running_or_notify_cancel()
            try:
                future.set_result(self._launch(item))
            except BaseException as error:  # the job's failure is the trial's, told on the sweep's thread
                future.set_exception(error)

        threading.Thread(target=work, name=f"trial-{item.trial.number}", daemon=True).start()
        return future

    def _launch(self, item: Running):
        """On a worker thread: run the trial's job (trial N is job N) and wait for it."""
        return self.launcher.launch([self._overrides(item.trial)], initial_job_idx=item.trial.number)[0]

    def _end(self, item: Running, future: Future) -> None:
        from hydra.core.utils import JobStatus

        states = self.optuna.trial.TrialState
        self._follow(item, may_prune=False)  # reports written just before the end (a run that ended is no prune)
        self.ended += 1
        number = item.trial.number
        try:
            job_return = future.result()
            self.returns.append(job_return)
            if job_return.status != JobStatus.COMPLETED:
                _ = job_return.return_value  # raises the job's exception
            value = float(job_return.return_value)
        except BaseException as error:  # the job raised, or its launcher lost it (a cancelled SLURM job)
            self.failed += 1
            self.study.tell(item.trial, state=states.FAIL)
            log.warning("trial %d failed: %s", number, " ".join(f"{type(error).__name__}: {error}".split()))
            return
        if item.prune_requested:
            self.study.tell(item.trial, state=states.PRUNED)
            log.info("trial %d pruned (objective %.6g when it stopped)", number, value)
        else:
            self.study.tell(item.trial, value)
            log.info("trial %d: %.6g", number, value)

    def _follow(self, item: Running, may_prune: bool = True) -> None:
        """Take the trial's new reports: one intermediate value per step (the first report at or past
        k x step_seconds of training), then ask the pruner once the run has trained prune_after_minutes."""
        try:
            lines = item.reports.read_text().splitlines()
        except OSError:
            return
        new = False
        for line in lines[item.read_lines :]:
            try:
                report = json.loads(line)
            except ValueError:  # a line being written: read it next time
                break
            item.read_lines += 1
            step = int(float(report["seconds"]) // self.step_s)
            if step > item.last_step:
                item.trial.report(float(report["value"]), step)
                item.last_step, new = step, True
                seconds = float(report["seconds"])
        if not (new and may_prune) or item.prune_requested or seconds < self.prune_after_s:
            return
        if item.trial.should_prune():
            item.prune_requested = True
            item.prune_file.write_text(json.dumps({"step": item.last_step, "at": time.time()}))
            log.info("trial %d: pruning at step %d (%.0f s of training)", item.trial.number, item.last_step, seconds)


# ----- inside a trial's job -----------------------------------------------------------------------------------------
class TrialReporter:
    """A run's side of pruning: at each logging interval, its objective so far, appended to the trial's report
    file; and whether the sweeper asked it to stop. A learner observer (``update``/``close``, as the console)."""

    def __init__(
        self,
        run_dir: Path,
        sweep_dir: Path,
        number: int,
        objective_name: str,
        map_name: str | list[str],
        every_s: float,
        check_every_s: float = 1.0,
    ):
        base = Path(sweep_dir) / TRIALS_DIR / str(number)
        self.reports, self.prune_file = base.with_suffix(".jsonl"), base.with_suffix(".prune")
        self.run_dir, self.objective_name, self.map_name = Path(run_dir), objective_name, map_name
        self.every_s, self.check_every_s = every_s, check_every_s
        self._next_report_s = every_s
        self._checked_at, self._pruned = 0.0, False

    @classmethod
    def for_job(
        cls,
        hydra_cfg: DictConfig,
        multirun: bool,
        run_dir: Path,
        objective_name: str,
        map_name: str | list[str],
        every_s: float,
    ) -> TrialReporter | None:
        """The reporter of a job of a search (None for any other run)."""
        if not multirun or not is_search(hydra_cfg.sweeper):
            return None
        return cls(run_dir, Path(str(hydra_cfg.sweep.dir)), int(hydra_cfg.job.num), objective_name, map_name, every_s)

    def update(self, values: Mapping[str, float], counters: Any, line: str) -> None:
        if counters.training_seconds >= self._next_report_s:
            self.report(counters.training_seconds, counters.frames)
            self._next_report_s = counters.training_seconds + self.every_s

    def close(self, values: Mapping[str, float], counters: Any, line: str) -> None:
        self.report(counters.training_seconds, counters.frames)

    def report(self, seconds: float, frames: int) -> None:
        value = objective.measure(self.run_dir, self.objective_name, self.map_name).value
        with open(self.reports, "a") as out:  # one short line per write: a reader sees whole lines or none
            out.write(json.dumps({"seconds": round(seconds, 3), "frames": frames, "value": value}) + "\n")

    def prune_requested(self) -> bool:
        """Whether the sweeper pruned this trial (the file is looked at once a second at most)."""
        now = time.monotonic()
        if not self._pruned and now - self._checked_at >= self.check_every_s:
            self._checked_at = now
            self._pruned = self.prune_file.is_file()
        return self._pruned


# ----- after the sweep: the study in the summary ---------------------------------------------------------------
def study_report(sweeper: DictConfig, sweep_dir: Path, objective_name: str | None) -> list[str]:
    """Lines for the sweep summary: the study's trials (value, parameters) and its best trial with the overrides of
    its job."""
    from tmexp import rundir

    try:
        optuna = import_optuna()
        storage, where = storage_for(sweeper.get("storage"), sweep_dir)
        study = optuna.load_study(study_name=str(sweeper.study_name), storage=storage)
    except Exception as error:  # no storage, or a study this sweep never created
        return [f"optuna study {sweeper.get('study_name')}: not readable ({type(error).__name__}: {error})"]
    name = study.user_attrs.get(OBJECTIVE_ATTR, objective_name or "value")
    unit = objective.spec(name).unit if name in objective.OBJECTIVES else ""
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name.lower() for t in trials]
    rank = {s: i for i, s in enumerate(("complete", "pruned", "fail", "running", "waiting"))}
    counts = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states), key=lambda s: (rank.get(s, len(rank)), s)))
    lines = [
        (
            f"optuna study {study.study_name!r} ({where}): {len(states)} trials ({counts}); "
            f"objective {name}, {study.directions[0].name.lower()}d"
        )
    ]
    for t in trials:
        if t.value is not None:
            value = f"{t.value:.6g} {unit}"
        elif t.state.name == "PRUNED" and t.intermediate_values:
            last = max(t.intermediate_values)
            value = f"pruned@{last} ({t.intermediate_values[last]:.4g})"
        else:
            value = t.state.name
        params = " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        lines.append(f"  trial {t.number:<3} {value:<22} {params}")
    if not any(t.state.name == "COMPLETE" for t in trials):
        lines.append("best trial: none (no trial completed)")
        return lines
    best = study.best_trial
    job_dir = sweep_dir / str(best.number)
    overrides = rundir.read_overrides(job_dir) if job_dir.is_dir() else []
    lines.append(f"best trial: #{best.number}, {name} {best.value:.6g} {unit}, run {job_dir}")
    lines.append(f"  overrides: {' '.join(overrides) or ' '.join(f'{k}={v}' for k, v in best.params.items())}")
    return lines
