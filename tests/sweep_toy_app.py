"""A tiny Hydra app with the training app's run-directory contract, for the sweep and SLURM tests.

It keeps the launcher, preemption and sweep-summary tests independent of the training core: each "step" sleeps
``step_seconds`` and counts ``frames_per_step`` frames. Like ``python -m tmexp.train`` it resumes from
``checkpoint/``, logs ``cumul_number_frames_played`` to TensorBoard with step = frames (``purge_step`` on resume),
writes ``status.json`` (with ``first_step_at``) and stops through ``tmexp.launch.preemption.PreemptionWatcher``.

Run it as a module with this folder on PYTHONPATH (submitit's workers unpickle the task function by module name):
``PYTHONPATH=tests python -m sweep_toy_app --multirun hydra/launcher=local hydra.searchpath=[file://<repo>/conf]``
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from tensorboard.compat.proto.event_pb2 import Event, SessionLog
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tmexp import rundir
from tmexp.launch import freeze, slurm_launcher
from tmexp.launch.preemption import PreemptionWatcher


@dataclass
class Btr:
    use_munchausen: bool = True


@dataclass
class ToyConfig:
    seed: int = 0
    btr: Btr = field(default_factory=Btr)
    steps: int = 10
    frames_per_step: int = 10
    step_seconds: float = 0.05
    checkpoint_every: int = 5
    fail_at_step: int = -1  # raise at this step (-1: never)
    # Set after the first step of the first attempt, for tests that signal a running job at a known point.
    ready_file: str = ""


ConfigStore.instance().store(name="toy", node=ToyConfig)
slurm_launcher.install()


def _write_status(run_dir: Path, status: str, frames: int, extra: dict | None = None, error: str | None = None):
    rundir.write_status(run_dir, status, error=error, frames=frames, **(extra or {}))


def _scalar_event(tag: str, value: float, step: int) -> Event:
    return Event(wall_time=time.time(), step=step, summary=Summary(value=[Summary.Value(tag=tag, simple_value=value)]))


def _slurm_task() -> str | None:
    """``<array>_<task>`` for an array task (what scancel and the sweep's ledger call it), else the job id."""
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


@hydra.main(version_base="1.3", config_path=None, config_name="toy")
def main(cfg: ToyConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode.name == "MULTIRUN":  # like tmexp.train: a SLURM sweep's job runs its frozen config
        frozen = freeze.load_frozen(hydra_cfg.sweep.dir, hydra_cfg.job.num, cfg)
        if frozen is not None:
            cfg = OmegaConf.merge(cfg, frozen)
    (run_dir / "toy_config.json").write_text(json.dumps(OmegaConf.to_container(cfg)))  # what this start ran
    watcher = PreemptionWatcher()
    ckpt = run_dir / "checkpoint" / "latest.json"
    state = json.loads(ckpt.read_text()) if ckpt.is_file() else {"step": 0, "attempts": 0}
    state["attempts"] += 1
    resumed = state["step"] > 0

    def save() -> None:
        ckpt.parent.mkdir(exist_ok=True)
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, ckpt)

    writer = EventFileWriter(str(run_dir / "tensorboard"))
    if resumed:  # like SummaryWriter(purge_step=...): readers drop older events at or past this step
        writer.add_event(
            Event(
                wall_time=time.time(),
                step=state["step"] * cfg.frames_per_step,
                session_log=SessionLog(status=SessionLog.START),
            )
        )
    _write_status(run_dir, "running", state["step"] * cfg.frames_per_step, extra={"attempts": state["attempts"]})
    try:
        while state["step"] < cfg.steps:
            if state["step"] == cfg.fail_at_step:
                raise RuntimeError(f"toy failure at step {state['step']}")
            time.sleep(cfg.step_seconds)
            state["step"] += 1
            frames = state["step"] * cfg.frames_per_step
            writer.add_event(_scalar_event("cumul_number_frames_played", frames, frames))
            if state["attempts"] == 1 and state["step"] == 1:
                _write_status(run_dir, "running", frames, extra={"first_step_at": time.time()})
                if cfg.ready_file:  # where a test can signal this job (written atomically: the test polls for it)
                    Path(cfg.ready_file + ".tmp").write_text(
                        json.dumps(
                            {
                                "pid": os.getpid(),
                                "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                                "frames": frames,
                                "slurm_task": _slurm_task(),
                            }
                        )
                    )
                    os.replace(cfg.ready_file + ".tmp", cfg.ready_file)
            if state["step"] % cfg.checkpoint_every == 0:
                save()
            if watcher.requested:
                save()
                writer.close()
                _write_status(run_dir, "preempted", frames, extra={"stopped_at_frames": frames})
                watcher.requeue_and_exit()
    except Exception as error:
        writer.close()
        _write_status(run_dir, "failed", state["step"] * cfg.frames_per_step, error=f"{type(error).__name__}: {error}")
        raise
    writer.close()
    _write_status(run_dir, "finished", state["step"] * cfg.frames_per_step)


if __name__ == "__main__":
    main()
