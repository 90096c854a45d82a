"""A sweep resumes as a whole: the same ``--multirun`` command with the same ``hydra.sweep.dir`` starts every job
again, and each job decides from its own ``status.json`` what is left to do:

- finished, with a target of the config it runs with now reached by its counters (``training.max_frames`` or
  ``training.max_minutes``, the nearer of which stops a run): skipped at once, nothing built, returning the
  objective it recorded (what a search would have got from it); a larger budget trains on from its checkpoint;
- interrupted (running when killed, preempted, stopped by Ctrl-C): resumed from its checkpoint by the core;
- failed, or never started: run again (from its checkpoint, when it has one).

A job that raises is started again in the same process up to ``performance.max_retries`` times (``tmexp.train``).
What the command did with each job (``rundir.record_start`` / ``record_skip``) is what the sweep summary reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tmexp import rundir
from tmexp.launch import objective

# status.json's wall_minutes is training_seconds / 60, the learner compares training_seconds with 60 x max_minutes
_MINUTES_SLACK = 1e-9


def targets_reached(status: dict[str, Any] | None, max_frames: int, max_minutes: float) -> bool:
    """Whether a run whose ``status.json`` is ``status`` has nothing left to train for these budgets (0: none)."""
    if not status or status.get("status") != "finished":
        return False
    frames, minutes = status.get("frames"), status.get("wall_minutes")
    frames_reached = bool(max_frames) and isinstance(frames, int) and frames >= max_frames
    minutes_reached = (
        bool(max_minutes) and isinstance(minutes, (int, float)) and minutes >= max_minutes - _MINUTES_SLACK
    )
    return frames_reached or minutes_reached


def finished_before(cfg, run_dir: str | Path) -> objective.ObjectiveValue | None:
    """The objective of the run in ``run_dir`` when it already finished what ``cfg`` (a ``tmexp.config.Config``)
    asks for, else None (it has training to do). The objective is the one it recorded, or measured again from
    its logs when ``cfg.objective`` names another."""
    status = rundir.read_status(run_dir)
    if not targets_reached(status, cfg.training.max_frames, cfg.training.max_minutes):
        return None
    recorded = status.get("objective")
    if isinstance(recorded, dict) and recorded.get("name") == str(cfg.objective) and recorded.get("value") is not None:
        return objective.ObjectiveValue(
            recorded["name"], float(recorded["value"]), str(recorded.get("unit", "")), str(recorded.get("note") or "")
        )
    return objective.measure(run_dir, cfg.objective, objective.map_names(cfg.map))


def objective_fields(result: objective.ObjectiveValue) -> dict[str, Any]:
    """How ``status.json`` records an objective."""
    return {"name": result.name, "value": result.value, "unit": result.unit, "note": result.note}
