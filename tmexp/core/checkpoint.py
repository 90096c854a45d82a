"""Save and resume: everything a run needs to continue where it stopped, written atomically.

A checkpoint is written to a temporary file in the same directory, flushed to disk, then renamed over the old one,
so a run killed at any moment leaves either the previous checkpoint or the new one, never half of one.

It holds the network pair, the optimiser and grad-scaler state, the target self-loss state, the counters, every
random generator and the structure keys the run was started with (``_RESUME_KEYS``: resuming with another network
or task is refused). Replay is not saved yet: a resumed run refills it before it trains again (``_resume_replay``).
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import asdict, dataclass, field, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tmexp.rundir import RunDir

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "latest.pt"


@dataclass
class Counters:
    """Everything that counts up over a run; saved in checkpoints so a resumed run continues them."""

    frames: int = 0
    batches: int = 0
    samples_used: int = 0
    transitions_added: int = 0
    races: int = 0
    eval_races: int = 0
    training_seconds: float = 0.0  # wall time spent inside this run, across resumes
    samples_since_target_update: int = 0
    alltime_min_ms: dict[str, int] = field(default_factory=dict)
    eval_time_ema_s: float | None = None  # rolling mean of finished eval race times (robust time)

    def status(self, map_name: str) -> dict[str, Any]:
        """The counters ``status.json`` reports."""
        return {"frames": self.frames, "batches": self.batches, "races": self.races,
                "training_hours": self.training_seconds / 3600, "wall_minutes": self.training_seconds / 60,
                "best_ms": {map_name: self.alltime_min_ms.get(map_name)}}


# ----- what may change between a run and its resumption -----------------------------------------------------------
class ResumeMismatch(ValueError):
    """A run directory holds a checkpoint of a run whose network or task differs from the config given."""


# Keys that must match to resume: the network's shape and the task. Everything else (budgets, schedules,
# collectors) may change between a run and its resumption.
_RESUME_KEYS = ("nn", "btr", "map.short_name", "env.w_downsized", "env.h_downsized", "env.backend",
                "training.temporal_mini_race_duration_ms")


def _plain(node: Any) -> Any:
    """Enums as their value, so a typed config and its YAML form compare equal."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return node.value if isinstance(node, Enum) else node


def resume_structure(cfg) -> dict[str, Any]:
    """The resume-relevant keys of a config (a ``Config`` or its plain-dict form)."""
    full = asdict(cfg) if is_dataclass(cfg) else cfg
    out = {}
    for key in _RESUME_KEYS:
        node = full
        for part in key.split("."):
            node = node[part]
        out[key] = _plain(node)
    return out


def check_resumable(saved: dict[str, Any], current: dict[str, Any], run_dir: Path) -> None:
    """Raise ``ResumeMismatch`` naming the first resume key whose value differs."""
    for key in _RESUME_KEYS:
        if key in saved and _plain(saved[key]) != current[key]:
            raise ResumeMismatch(
                f"{run_dir} holds a run with a different {key} than this command: resume it with the overrides it "
                "was started with (see its .hydra/overrides.yaml), or choose a new hydra.run.dir."
            )


# ----- files and random generators ---------------------------------------------------------------------------------
def checkpoint_path(run_dir: Path) -> Path:
    return RunDir(run_dir).checkpoint / CHECKPOINT_NAME


def has_checkpoint(run_dir: Path) -> bool:
    return checkpoint_path(run_dir).is_file()


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``<run_dir>/checkpoint/latest.pt``."""
    path = checkpoint_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(checkpoint_path(run_dir), map_location=map_location, weights_only=False)


# ----- a run's checkpoint -------------------------------------------------------------------------------------------
def save(run_dir: Path, structure: dict[str, Any], *, online, target, optimizer, scaler, self_loss, replay,
         counters: Counters) -> Path:
    """Checkpoint a run's learning state; ``structure`` is ``resume_structure`` of its config."""
    return save_checkpoint(run_dir, {
        "online": online.state_dict(),
        "target": target.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "self_loss": self_loss.state_dict(),
        "counters": counters.__dict__.copy(),
        "rng": rng_state(),
        "replay_rng": replay.rng.bit_generator.state,
        "config": structure,
    })


def resume(run_dir: Path, structure: dict[str, Any], device: torch.device, *, online, target, optimizer, scaler,
           self_loss, replay) -> Counters:
    """Load a run's checkpoint into the freshly built parts given; return its counters.

    Raises:
        ResumeMismatch: the checkpoint's network or task differs from ``structure``.
    """
    state = load_checkpoint(run_dir, map_location=device)
    check_resumable(state.get("config", {}), structure, run_dir)
    online.load_state_dict(state["online"])
    target.load_state_dict(state["target"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    self_loss.load_state_dict(state["self_loss"])
    counters = Counters(**state["counters"])
    restore_rng_state(state["rng"])
    _resume_replay(replay, state)
    log.info("resumed from checkpoint: %d frames, %d batches", counters.frames, counters.batches)
    return counters


def _resume_replay(replay, state: dict[str, Any]) -> None:
    """Replay's part of a resume. Its transitions are not saved yet: a resumed run starts with an empty buffer and
    trains again once it holds ``memory_start_learn`` transitions (the learner builds no allowance meanwhile).
    Saving them belongs here and in ``save``."""
    replay.rng.bit_generator.state = state["replay_rng"]
