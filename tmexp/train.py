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
from omegaconf import DictConfig, OmegaConf

from tmexp import rundir
from tmexp.compose import compose_config, register_configs  # compose_config stays importable from here too
from tmexp.config import Config
from tmexp.launch import objective, search
from tmexp.launch.job_slots import acquire_slot
from tmexp.launch.precheck import precheck  # importable from here too (tests, scripts)
from tmexp.validation import ConfigError, check_config

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
