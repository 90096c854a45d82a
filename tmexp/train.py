"""``python -m tmexp.train``: compose the configuration, check it, then run the shared training core.

Usage (any leaf of the config tree can be overridden or swept)::

    python -m tmexp.train                                   # default config on the simulator
    python -m tmexp.train +experiment=A01_v4_btr
    python -m tmexp.train --multirun btr.use_munchausen=true,false seed=0,1
    python -m tmexp.train --cfg job                         # print the composed configuration
    python -m tmexp.train --multirun hydra/sweeper=optuna 'btr.munchausen_alpha=interval(0.5,0.99)'   # a search

Before Hydra creates any run directory or launches any job, every job of the command (each combination of the
sweep, including sweeps an experiment file defines; for a search, each candidate value of each parameter) is
composed and checked, and so is a SLURM request against its partition; a mistake ends in one line naming the key or
file, with exit code 2. ``train(cfg, run_dir)`` is the entry tests call without Hydra. A run returns its
``objective`` (``tmexp/launch/objective.py``), which a search optimises.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ValidationError

from tmexp import rundir
from tmexp.compose import compose_config, register_configs  # compose_config stays importable from here too
from tmexp.config import Config
from tmexp.launch import objective, search, slurm
from tmexp.launch.job_slots import acquire_slot
from tmexp.validation import ConfigError, check_config, check_output_dir, choice_message, choice_type

log = logging.getLogger("tmexp.train")

register_configs()
search.install()  # hydra/sweeper=optuna: tmexp's preset and the study's continuation (tmexp/launch/search.py)


def train(cfg: Config, run_dir: str | Path, should_stop=lambda: False, observers=()) -> str:
    """Run (or resume) one training run in ``run_dir``; return why it stopped. A run that ended (rather than being
    preempted) records its ``objective`` in ``status.json``, with its final status.

    Args:
        observers: what shows the learner's progress (``tmexp.launch.console``); none: its console line on stdout.
    """
    from tmexp.core.build import build
    from tmexp.core.learner import Learner
    from tmexp.launch.preemption import preemption_signals

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    rundir.write_resolved_config(run_dir, resolved)
    meta = rundir.write_run_meta(run_dir)
    wandb_run = None
    if cfg.logger.wandb:  # before build: W&B's TensorBoard patch must see the run's SummaryWriter created
        from tmexp.launch import wandb_logging

        wandb_run = wandb_logging.start(cfg.logger, run_dir, cfg.run_name, resolved, meta)
    failed = True
    try:
        try:
            run = build(cfg, run_dir, ignore_signals=preemption_signals())
        except BaseException as error:  # e.g. a game that does not start: the sweep summary says why
            rundir.write_status(run_dir, "failed", error=f"{type(error).__name__}: {error}")
            raise
        learner = Learner(run, should_stop=should_stop, observers=observers)
        try:
            reason = learner.train()
        except BaseException as error:
            learner.write_status("failed", error=f"{type(error).__name__}: {error}")
            raise
        finally:
            run.close()
        failed = False
    finally:
        if wandb_run is not None:
            wandb_logging.finish(wandb_run, failed)
    status = {"stop_requested": "preempted", "interrupted": "stopped"}.get(reason, "finished")
    log.info("run %s: %s after %d frames, %d batches", run_dir, status, run.counters.frames, run.counters.batches)
    if reason == "stop_requested":  # it goes on after a requeue: no result yet
        learner.write_status(status)
        return reason
    result = objective.measure(run_dir, cfg.objective, cfg.map.short_name)
    log.info("objective: %s", result)
    # with the final status, in one write: whoever sees "finished" sees the objective too
    learner.write_status(status, objective={"name": result.name, "value": result.value, "unit": result.unit,
                                            "note": result.note})
    return reason


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(dict_cfg: DictConfig) -> float:
    """The task function: train, then return the run's objective (what a search's trial reports)."""
    from hydra.core.hydra_config import HydraConfig

    from tmexp.launch.console import logging_context, make_console
    from tmexp.launch.preemption import PreemptionWatcher

    cfg: Config = OmegaConf.to_object(dict_cfg)
    check_config(cfg)
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    watcher = PreemptionWatcher()
    slot = None
    if cfg.performance.job_slots and multirun:
        slot = acquire_slot(Path(hydra_cfg.sweep.dir) / ".job_slots", cfg.performance.job_slots)
    console = make_console(cfg.logger.console, cfg.map.short_name, cfg.training.batch_size, cfg.training.max_frames,
                           cfg.training.max_minutes)
    try:
        with logging_context(console):
            reason = train(cfg, run_dir, should_stop=lambda: watcher.requested, observers=[console])
    finally:
        if slot is not None:
            slot.close()  # frees the slot for the next job (the kernel does it too if this process dies)
    if reason == "stop_requested":
        watcher.requeue_and_exit()
    if reason == "interrupted" and multirun:
        raise KeyboardInterrupt  # Ctrl-C stops the sweep, not just this job (its checkpoint is saved)
    return rundir.read_status(run_dir)["objective"]["value"]


# ----- checks before Hydra starts anything ---------------------------------------------------------------------
_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}


def _one_line(error: BaseException) -> str:
    """A composition error as one line; a value outside a closed set of the schema as check_config words it."""
    cause = error
    while cause is not None:
        if isinstance(cause, ValidationError) and cause.full_key and choice_type(cause.full_key) is not None:
            return choice_message(cause.full_key, cause.value, choice_type(cause.full_key))
        cause = cause.__cause__
    parts = []
    while error is not None:
        text = " ".join(str(error).split())
        if text and text not in parts:
            parts.append(text)
        error = error.__cause__
    return "; ".join(parts) or type(error).__name__


def _split_argv(argv: list[str]) -> tuple[list[str], bool, bool]:
    """Return (overrides, multirun, print_only) from a ``python -m tmexp.train`` command line."""
    overrides, multirun, print_only, skip = [], False, False, False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in ("--multirun", "-m"):
            multirun = True
        elif arg in ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun"):
            print_only = print_only or arg in ("--cfg", "-c")
            skip = True
        elif arg.startswith("-"):
            print_only = print_only or arg.startswith("--cfg")
        else:
            overrides.append(arg)
    return overrides, multirun, print_only


def _expand(overrides: list[str]) -> list[list[str]]:
    """Every job's override list: the cartesian product of the sweeps, as Hydra's basic sweeper forms it."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    for override in parsed:
        if override.is_interval_sweep():
            raise ConfigError(f"{override.input_line} is a search space, which a grid cannot expand: add "
                              "hydra/sweeper=optuna to search it, or list values (a,b,c) for a grid.")
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for batch in batches for job in batch] or [[]]


def _multirun_jobs(overrides: list[str]) -> tuple[list[list[str]], bool]:
    """What to compose and check for a --multirun: every job of a grid, or a search's candidate values; and whether
    it is a search (``hydra/sweeper=optuna``, which draws its trials as it goes)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    fixed = [o.input_line for o in OverridesParser.create().parse_overrides(overrides) if not o.is_sweep_override()]
    base = compose_config(fixed, return_hydra_config=True)
    if search.is_search(base.hydra.sweeper):
        search.check_search(overrides, base.hydra.sweeper, base.objective)
        return search.search_jobs(overrides, base.hydra.sweeper), True
    jobs = _expand(overrides)
    first = compose_config(jobs[0], return_hydra_config=True)
    if first.hydra.sweeper.get("params"):
        extra = [f"{k}={v}" for k, v in first.hydra.sweeper.params.items()]
        jobs = [job + more for job in jobs for more in _expand(extra)]
    return jobs, False


def _check_resume(cfg: Config, run_dir: Path) -> None:
    """A run directory that holds a checkpoint is resumed: its network and task must match this command's."""
    from tmexp.core.checkpoint import ResumeMismatch, check_resumable, has_checkpoint, resume_structure

    saved = rundir.read_resolved_config(run_dir)
    if has_checkpoint(run_dir) and saved is not None:
        try:
            check_resumable(resume_structure(saved), resume_structure(cfg), run_dir)
        except ResumeMismatch as error:
            raise ConfigError(str(error)) from error


def _sweep_job_dir(hydra_node: DictConfig, index: int) -> Path:
    """Where job ``index`` of a multirun will run: ``hydra.sweep.dir / hydra.sweep.subdir`` as Hydra resolves it
    (``${hydra.job.num}`` by default; a subdir such as ``${run_name}/seed${seed}`` resolves from the job's config)."""
    with open_dict(hydra_node):
        hydra_node.job.num = index
    try:
        subdir = str(hydra_node.sweep.subdir)
    except Exception:  # an interpolation only the launcher can resolve: Hydra's default layout
        subdir = str(index)
    return Path(hydra_node.sweep.dir) / subdir


def precheck(argv: list[str]) -> int:
    """Compose and check every job of the command line; return the number of jobs (raises ConfigError)."""
    if any(a in _INFO_FLAGS for a in argv):
        return 0
    overrides, multirun, print_only = _split_argv(argv)
    try:
        jobs, searching = _multirun_jobs(overrides) if multirun else ([overrides], False)
        launcher = None
        for index, job in enumerate(jobs):
            dict_cfg = compose_config(job, return_hydra_config=True)
            if print_only:
                continue
            hydra_node = dict_cfg.hydra
            launcher = hydra_node.launcher
            with open_dict(dict_cfg):
                del dict_cfg["hydra"]
            cfg = OmegaConf.to_object(dict_cfg)
            check_config(cfg)
            check_output_dir(hydra_node.sweep.dir if multirun else hydra_node.run.dir)
            if not searching:  # a search's trials get new job directories, numbered after the study's trials
                run_dir = _sweep_job_dir(hydra_node, index) if multirun else Path(hydra_node.run.dir)
                _check_resume(cfg, run_dir)
        if multirun and slurm.is_slurm(launcher):
            slurm.check_request(launcher)
    except ConfigError:
        raise
    except Exception as error:  # Hydra / OmegaConf composition errors: unknown key, bad type, unknown option
        raise ConfigError(_one_line(error)) from error
    return len(jobs)


def cli(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        precheck(argv)
    except ConfigError as error:
        print(f"tmexp.train: error: {error}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
