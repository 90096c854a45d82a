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

The same command run again in the same directory goes on where it stopped (``tmexp/launch/resume.py``): a job that
finished what its config asks for is skipped at once and returns the objective it recorded; any other resumes from
its checkpoint. A job that raises is started again up to ``performance.max_retries`` times.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tmexp import rundir
from tmexp.compose import compose_config, experiment_first, register_configs  # noqa: F401 (compose_config stays importable here)
from tmexp.config import Config
from tmexp.launch import freeze, objective, resume, search, slurm_launcher
from tmexp.launch.job_slots import acquire_slot
from tmexp.launch.precheck import precheck  # importable from here too (tests, scripts)
from tmexp.validation import ConfigError, check_config

log = logging.getLogger("tmexp.train")

register_configs()
search.install()  # hydra/sweeper=optuna: tmexp's preset and the study's continuation (tmexp/launch/search.py)
slurm_launcher.install()  # hydra/launcher=slurm: tmexp's driver around submitit (tmexp/launch/slurm_launcher.py)


def train(
    cfg: Config,
    run_dir: str | Path,
    should_stop=lambda: False,
    observers=(),
    sweep: str | None = None,
    pruned=lambda: False,
) -> str:
    """Run (or resume) one training run in ``run_dir``; return why it stopped. A run that ended (rather than being
    preempted) records its ``objective`` in ``status.json``, with its final status. A run that raises is started
    again, from its latest checkpoint, up to ``cfg.performance.max_retries`` times; the last error is raised.

    Args:
        observers: what shows the learner's progress (``tmexp.launch.console``); none: its console line on stdout.
        sweep: the id of the multirun command running this job (``rundir.write_sweep_command``); None for a single
            run. ``status.json`` records what this command did with the run: resumed, retried.
        pruned: whether a stop that ``should_stop`` asked for is a search's pruning (the run then ends "pruned",
            with its objective) rather than a preemption.
    """
    run_dir = Path(run_dir)
    with rundir.lock(run_dir):  # one process per run directory, for the process's life (RunDirInUse otherwise)
        return _train_locked(cfg, run_dir, should_stop, observers, sweep, pruned)


def _train_locked(cfg: Config, run_dir: Path, should_stop, observers, sweep: str | None, pruned) -> str:
    from tmexp.core.checkpoint import check_resume, resume_structure

    # before anything is written: the checkpoint must resume with this config (its first start's config file is
    # what a checkpoint older than its resume keys is compared with)
    check_resume(
        run_dir,
        resume_structure(cfg),
        rundir.read_resolved_config(run_dir),
        replay_capacity=_replay_capacity(cfg),
        discard_replay=cfg.training.resume_discards_replay,
    )
    resolved = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    changes = rundir.write_resolved_config(run_dir, resolved)
    meta = rundir.write_run_meta(run_dir, config_changes=changes)
    wandb_run = None
    if cfg.logger.wandb:  # before build: W&B's TensorBoard patch must see the run's SummaryWriter created
        from tmexp.launch import wandb_logging

        wandb_run = wandb_logging.start(cfg.logger, run_dir, cfg.run_name, resolved, meta)
    failed = True
    try:
        retries, retry_error = 0, None
        while True:
            try:
                learner, reason = _attempt(cfg, run_dir, should_stop, observers, sweep, retry_error)
                break
            except Exception as error:  # not KeyboardInterrupt / SystemExit: those stop a job, they are no failure
                if retries >= cfg.performance.max_retries or isinstance(error, REFUSALS):
                    raise
                retries, retry_error = retries + 1, _one_line(error)
                log.warning(
                    "run %s failed (%s): retry %d of %d, from its latest checkpoint",
                    run_dir,
                    retry_error,
                    retries,
                    cfg.performance.max_retries,
                )
        failed = False
    finally:
        if wandb_run is not None:
            wandb_logging.finish(wandb_run, failed)
    run = learner.run
    if reason == "stop_requested" and pruned():
        reason = "pruned"
    status = {"stop_requested": "preempted", "interrupted": "stopped", "pruned": "pruned"}.get(reason, "finished")
    log.info("run %s: %s after %d frames, %d batches", run_dir, status, run.counters.frames, run.counters.batches)
    if reason == "stop_requested":  # it goes on after a requeue: no result yet
        learner.write_status(status)
        return reason
    result = objective.measure(run_dir, cfg.objective, objective.map_names(cfg.map))
    log.info("objective: %s", result)
    # with the final status, in one write: whoever sees "finished" sees the objective too
    learner.write_status(status, objective=resume.objective_fields(result))
    return reason


def _attempt(cfg: Config, run_dir: Path, should_stop, observers, sweep: str | None, retry_error: str | None):
    """One start of the run: build it (resumed when its directory holds a checkpoint), train, close; return the
    learner and why it stopped. A failure is recorded in ``status.json`` and raised, the run closed either way."""
    from tmexp.core.build import build
    from tmexp.core.checkpoint import has_checkpoint
    from tmexp.core.learner import Learner
    from tmexp.launch.preemption import preemption_signals

    rundir.record_start(run_dir, sweep, resumed=has_checkpoint(run_dir), retry_error=retry_error)
    try:
        run = build(cfg, run_dir, ignore_signals=preemption_signals())
    except BaseException as error:  # e.g. a game that does not start: the sweep summary says why
        rundir.write_status(run_dir, "failed", error=_one_line(error))
        raise
    learner = Learner(run, should_stop=should_stop, observers=observers)
    try:
        reason = learner.train()
    except BaseException as error:
        learner.write_status("failed", error=_one_line(error))
        raise
    finally:
        run.close()  # its collectors and TensorBoard writer, before any retry builds new ones
    return learner, reason


def _replay_capacity(cfg: Config) -> int:
    """The largest replay the config's memory schedule allows."""
    return max(int(point[1][0]) for point in cfg.memory.memory_size_schedule)


def _refusals() -> tuple[type[BaseException], ...]:
    """Errors that starting again cannot mend: never retried; a single run ends on them in one line."""
    from tmexp.core.checkpoint import CheckpointError, CheckpointWriteError, ResumeMismatch

    return (rundir.RunDirInUse, ResumeMismatch, CheckpointError, CheckpointWriteError)


REFUSALS = _refusals()


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(dict_cfg: DictConfig) -> float:
    """The task function: train, then return the run's objective (what a search's trial reports)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    # a SLURM sweep's job runs the config frozen at its submission, at every start and requeue (tmexp/launch/freeze.py)
    frozen = freeze.load_frozen(hydra_cfg.sweep.dir, hydra_cfg.job.num, dict_cfg) if multirun else None
    if frozen is not None:
        dict_cfg = OmegaConf.merge(OmegaConf.structured(Config), frozen)
    cfg: Config = OmegaConf.to_object(dict_cfg)
    check_config(cfg)
    sweep = rundir.read_sweep_command(hydra_cfg.sweep.dir) if multirun else None
    try:
        held = rundir.lock(run_dir)  # before the run's status is read or written: another process may be in it
    except rundir.RunDirInUse as error:
        if multirun:
            raise  # this job fails, reported as in use; the sweep's other jobs go on
        _refuse(error)
    with held:
        return _main_locked(cfg, run_dir, multirun, hydra_cfg, sweep)


def _refuse(error: BaseException) -> NoReturn:
    """End a single run on a refusal in one line: exit 2 (nothing was done), 1 after a write that failed."""
    from tmexp.core.checkpoint import CheckpointWriteError

    print(f"tmexp.train: error: {' '.join(str(error).split())}", file=sys.stderr)
    sys.exit(1 if isinstance(error, CheckpointWriteError) else 2)


def _main_locked(cfg: Config, run_dir: Path, multirun: bool, hydra_cfg, sweep: str | None) -> float:
    from tmexp.launch.console import logging_context, make_console, start_lines
    from tmexp.launch.preemption import PreemptionWatcher

    done = resume.finished_before(cfg, run_dir)
    if done is not None:  # a sweep run again: this job has nothing left to train
        rundir.record_skip(run_dir, sweep, objective=resume.objective_fields(done))
        log.info(
            "run %s already finished (training.max_frames / max_minutes reached): skipped; objective: %s", run_dir, done
        )
        return done.value
    watcher = PreemptionWatcher()
    slot = None
    if cfg.performance.job_slots and multirun:
        slot = acquire_slot(Path(hydra_cfg.sweep.dir) / ".job_slots", cfg.performance.job_slots)
    for line in start_lines(run_dir, cfg.training.max_frames, cfg.training.max_minutes):
        print(line, flush=True)
    console = make_console(
        cfg.logger.console,
        objective.map_names(cfg.map),
        cfg.training.batch_size,
        cfg.training.max_frames,
        cfg.training.max_minutes,
    )
    trial = search.TrialReporter.for_job(
        hydra_cfg, multirun, run_dir, cfg.objective, objective.map_names(cfg.map), cfg.training.log_every_seconds
    )  # a search's trial: reports, prunes
    pruned = trial.prune_requested if trial is not None else (lambda: False)
    try:
        with logging_context(console):
            reason = train(
                cfg,
                run_dir,
                should_stop=lambda: watcher.requested or pruned(),
                observers=[console] + ([trial] if trial is not None else []),
                sweep=sweep,
                pruned=pruned,
            )
    except REFUSALS as error:
        if multirun:
            raise
        _refuse(error)
    finally:
        if slot is not None:
            slot.close()  # frees the slot for the next job (the kernel does it too if this process dies)
    if reason == "stop_requested":
        watcher.requeue_and_exit()
    if reason == "interrupted" and multirun:
        raise KeyboardInterrupt  # Ctrl-C stops the sweep, not just this job (its checkpoint is saved)
    return rundir.read_status(run_dir)["objective"]["value"]


def cli(argv: list[str] | None = None) -> None:
    if argv is None:
        sys.argv[1:] = experiment_first(sys.argv[1:])  # what Hydra's main reads
        argv = sys.argv[1:]
    else:
        argv = experiment_first(argv)
    try:
        precheck(argv)
    except ConfigError as error:
        print(f"tmexp.train: error: {error}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
