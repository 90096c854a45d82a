"""TensorBoard tag names (the one place they are defined), the run's writer, race logging and the console line.

Race times are seconds under ``Race/`` and milliseconds in ``alltime_min_ms_<map>``; an unfinished race counts
as the race cutoff (300 s). The TensorBoard step is frames played (actions); gradient updates are logged as the
counter ``cumul_number_batches_done`` so analysis can compare runs at equal updates. Each race also records the
run's own counters at its end (``Race/cumul_number_batches_done``, ``Race/cumul_training_seconds``; frames are its
step), so a race is placed on the updates and training-time axes exactly, not at the last 30-second log.

| tag | unit | meaning |
|---|---|---|
| ``alltime_min_ms_<map>`` | ms | best race time so far (exploration or eval) |
| ``Race/eval_race_time_robust_trained_<map>`` | s | finished eval race no slower than 1.02 x the EMA of finished ones |
| ``Race/eval_race_time_trained_<map>`` | s | every eval race (300 s when unfinished) |
| ``Race/explo_race_time_trained_<map>`` | s | every exploration race (300 s when unfinished) |
| ``Race/eval_race_finished_trained_<map>`` | 0/1 | whether the eval race finished |
| ``Race/explo_race_finished_trained_<map>`` | 0/1 | whether the exploration race finished |
| ``Race/eval_race_progress_trained_<map>`` | m | metres along the centreline the eval race reached |
| ``Race/explo_race_progress_trained_<map>`` | m | the same for exploration (learning shows here before a finish) |
| ``RL/avg_Q_trained_<map>`` | reward | mean Q of the actions taken in the race |
| ``Training/loss`` | | mean IQN loss over the logging interval |
| ``Training/grad_norm`` | | mean gradient norm before clipping |
| ``Training/learning_rate``, ``Training/gamma`` | | schedule values |
| ``Training/epsilon``, ``Training/epsilon_boltzmann`` | | schedule values |
| ``Performance/learner_percentage_training`` | % | time in training batches / wall time of the interval |
| ``Performance/transitions_learned_per_second`` | 1/s | samples consumed by the learner per second |
| ``Performance/frames_per_second`` | 1/s | frames played by all collectors per second |
| ``Performance/collector_restarts`` | | collector processes restarted so far |
| ``Memory/size`` | | transitions in replay |
| ``cumul_number_frames_played`` | | frames (actions) played so far |
| ``cumul_number_batches_done`` | | gradient updates so far |
| ``cumul_training_hours`` | h | wall hours spent training (excludes time the run was stopped) |
| ``Race/cumul_number_batches_done`` | | gradient updates done when the race at this step ended (exact, one per race) |
| ``Race/cumul_training_seconds`` | s | training seconds when the race at this step ended (exact, one per race) |
| ``Performance/updates_per_second`` | 1/s | gradient updates per second over the logging interval |
| ``Performance/load_average_1m`` | | the machine's 1-minute load average at the log (how crowded the cores were) |

The analysis imports this module for the names alone: it imports nothing of tmexp, and torch only inside the
functions that write.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

RACE_CUTOFF_S = 300.0


def alltime_min_ms(map_name: str) -> str:
    return f"alltime_min_ms_{map_name}"


def eval_race_time_robust(map_name: str) -> str:
    return f"Race/eval_race_time_robust_trained_{map_name}"


def eval_race_time(map_name: str) -> str:
    return f"Race/eval_race_time_trained_{map_name}"


def explo_race_time(map_name: str) -> str:
    return f"Race/explo_race_time_trained_{map_name}"


def eval_race_finished(map_name: str) -> str:
    return f"Race/eval_race_finished_trained_{map_name}"


def explo_race_finished(map_name: str) -> str:
    return f"Race/explo_race_finished_trained_{map_name}"


def eval_race_progress(map_name: str) -> str:
    return f"Race/eval_race_progress_trained_{map_name}"


def explo_race_progress(map_name: str) -> str:
    return f"Race/explo_race_progress_trained_{map_name}"


def avg_q(map_name: str) -> str:
    return f"RL/avg_Q_trained_{map_name}"


LOSS = "Training/loss"
GRAD_NORM = "Training/grad_norm"
LEARNING_RATE = "Training/learning_rate"
GAMMA = "Training/gamma"
EPSILON = "Training/epsilon"
EPSILON_BOLTZMANN = "Training/epsilon_boltzmann"
LEARNER_PERCENTAGE = "Performance/learner_percentage_training"
TRANSITIONS_LEARNED_PER_S = "Performance/transitions_learned_per_second"
FRAMES_PER_S = "Performance/frames_per_second"
COLLECTOR_RESTARTS = "Performance/collector_restarts"
UPDATES_PER_S = "Performance/updates_per_second"
LOAD_AVERAGE = "Performance/load_average_1m"
MEMORY_SIZE = "Memory/size"
CUMUL_FRAMES = "cumul_number_frames_played"
CUMUL_BATCHES = "cumul_number_batches_done"
CUMUL_TRAINING_HOURS = "cumul_training_hours"
# The counters at each race's end (one point per race, at the race's step): the exact step axes.
RACE_BATCHES = "Race/cumul_number_batches_done"
RACE_TRAINING_S = "Race/cumul_training_seconds"

# The unit of each tag (the table above); "" for a plain number. Analysis labels its tables with it and converts
# logs of other Linesight-family versions to it on load.
UNITS = {
    LOSS: "",
    GRAD_NORM: "",
    LEARNING_RATE: "",
    GAMMA: "",
    EPSILON: "",
    EPSILON_BOLTZMANN: "",
    LEARNER_PERCENTAGE: "%",
    TRANSITIONS_LEARNED_PER_S: "1/s",
    FRAMES_PER_S: "1/s",
    COLLECTOR_RESTARTS: "",
    MEMORY_SIZE: "",
    CUMUL_FRAMES: "",
    CUMUL_BATCHES: "",
    CUMUL_TRAINING_HOURS: "h",
    UPDATES_PER_S: "1/s",
    LOAD_AVERAGE: "",
    RACE_BATCHES: "",
    RACE_TRAINING_S: "s",
}
MAP_UNITS = {
    alltime_min_ms: "ms",
    eval_race_time_robust: "s",
    eval_race_time: "s",
    explo_race_time: "s",
    eval_race_finished: "0/1",
    explo_race_finished: "0/1",
    eval_race_progress: "m",
    explo_race_progress: "m",
    avg_q: "",
}


def unit(tag: str) -> str | None:
    """The unit of a tag tmexp logs ("" for a plain number); None for a tag it does not know."""
    if tag in UNITS:
        return UNITS[tag]
    for name, tag_unit in MAP_UNITS.items():
        prefix = name("")
        if tag.startswith(prefix) and len(tag) > len(prefix):
            return tag_unit
    return None


# Old Linesight tags (no Race/ or RL/ prefix) -> the current tag, with <map> standing for the map's short name.
LEGACY_PREFIXES = {
    "eval_race_time_robust_trained_": "Race/eval_race_time_robust_trained_",
    "eval_race_time_trained_": "Race/eval_race_time_trained_",
    "explo_race_time_trained_": "Race/explo_race_time_trained_",
    "eval_race_finished_trained_": "Race/eval_race_finished_trained_",
    "explo_race_finished_trained_": "Race/explo_race_finished_trained_",
    "avg_Q_trained_": "RL/avg_Q_trained_",
    "loss": "Training/loss",
    "learner_percentage_training": "Performance/learner_percentage_training",
    "transitions_learned_per_second": "Performance/transitions_learned_per_second",
}


def canonical_tag(tag: str) -> str:
    """Map an old Linesight tag name onto the current one; current names pass through unchanged."""
    for old, new in LEGACY_PREFIXES.items():
        if old.endswith("_"):
            if tag.startswith(old):
                return new + tag[len(old) :]
        elif tag == old:
            return new
    return tag


# ----- writing a run's metrics ------------------------------------------------------------------------------------
ROBUST_FACTOR = 1.02  # a robust eval time is no slower than this times the rolling mean of finished eval times
ROBUST_EMA_WEIGHT = 0.1  # weight of the newest finished eval race in that rolling mean


def make_writer(log_dir: str | Path, purge_step: int | None = None):
    """The run's TensorBoard ``SummaryWriter``.

    Args:
        purge_step: on resume, the checkpoint's frame count: events a killed run logged after its checkpoint are
            hidden, so each tag's steps stay monotonic.
    """
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir), purge_step=purge_step)


def write_hparams(writer, params: Mapping[str, Any], map_name: str | list[str]) -> None:
    """Record a run's hyperparameters for TensorBoard's HParams view, against its best time on each of its maps
    (``map_name``: one map, or a map cycle's list) and its loss."""
    from torch.utils.tensorboard.summary import hparams

    names = [map_name] if isinstance(map_name, str) else list(map_name)
    summaries = hparams(dict(params), {**{alltime_min_ms(m): 0.0 for m in names}, LOSS: 0.0})
    file_writer = writer._get_file_writer()
    for summary in summaries:
        file_writer.add_summary(summary)


def robust_eval_time(race_s: float, ema_s: float | None) -> tuple[bool, float]:
    """Judge a finished eval race against the rolling mean of finished eval times (None before the first).

    Returns:
        Whether the race time is robust (no slower than ``ROBUST_FACTOR`` x the mean), and the updated mean.
    """
    mean = race_s if ema_s is None else ema_s
    return race_s <= ROBUST_FACTOR * mean, (1 - ROBUST_EMA_WEIGHT) * mean + ROBUST_EMA_WEIGHT * race_s


def log_race(
    writer,
    race: Mapping[str, Any],
    step: int,
    map_name: str,
    eval_time_ema_s: float | None,
    best_ms: int | None,
    batches: int | None = None,
    training_seconds: float | None = None,
) -> float | None:
    """Write one race's scalars at ``step`` (frames played when the race ended).

    Args:
        race: a rollout (``finished``, ``race_time_ms``, ``is_eval``, ``q_taken`` (T,), optionally ``progress_m``).
        eval_time_ema_s: the rolling mean of finished eval race times so far (None before the first).
        best_ms: the run's best race time so far, this race included (None: no race finished yet).
        batches, training_seconds: the run's gradient updates and training seconds when the race ended, written as
            ``RACE_BATCHES`` / ``RACE_TRAINING_S`` at the same step (the exact step axes of the analysis).
    Returns:
        The updated rolling mean of finished eval race times.
    """
    m, finished = map_name, race["finished"]
    race_s = race["race_time_ms"] / 1000 if finished else RACE_CUTOFF_S
    if "progress_m" in race:
        progress = eval_race_progress(m) if race["is_eval"] else explo_race_progress(m)
        writer.add_scalar(progress, race["progress_m"], step)
    if race["is_eval"]:
        writer.add_scalar(eval_race_time(m), race_s, step)
        writer.add_scalar(eval_race_finished(m), float(finished), step)
        if finished:
            robust, eval_time_ema_s = robust_eval_time(race_s, eval_time_ema_s)
            if robust:
                writer.add_scalar(eval_race_time_robust(m), race_s, step)
    else:
        writer.add_scalar(explo_race_time(m), race_s, step)
        writer.add_scalar(explo_race_finished(m), float(finished), step)
    if len(race["q_taken"]):
        writer.add_scalar(avg_q(m), float(np.mean(race["q_taken"])), step)
    writer.add_scalar(alltime_min_ms(m), best_ms if best_ms is not None else int(RACE_CUTOFF_S * 1000), step)
    if batches is not None:
        writer.add_scalar(RACE_BATCHES, batches, step)
    if training_seconds is not None:
        writer.add_scalar(RACE_TRAINING_S, training_seconds, step)
    return eval_time_ema_s


def console_line(
    values: Mapping[str, float],
    *,
    map_name: str,
    training_seconds: float,
    frames: int,
    races: int,
    batches: int,
    best_ms: int | None,
    memory_size: int,
    start_learn: int,
    best_by_map: Mapping[str, int | None] | None = None,
) -> str:
    """One line of progress for the terminal, from an interval's scalars (``values``, keyed by tag).

    ``best_by_map``: a map cycle's best time of each map, shown instead of ``map_name``'s ``best_ms``.
    """
    bests = best_by_map if best_by_map is not None else {map_name: best_ms}
    best = ", ".join(f"{m} {f'{ms / 1000:.2f} s' if ms is not None else '-'}" for m, ms in bests.items())
    head = (
        f"[{int(training_seconds // 60):4d}m{int(training_seconds % 60):02d}s] frames {frames:,} "
        f"({values[FRAMES_PER_S]:.0f}/s) | races {races} | best {best}"
    )
    if memory_size < start_learn:
        return f"{head} | filling replay {memory_size:,}/{start_learn:,}"
    loss = values.get(LOSS)
    return (
        f"{head} | batches {batches:,} | learner {values[LEARNER_PERCENTAGE]:.0f}% | "
        f"loss {f'{loss:.4g}' if loss is not None else '-'} | eps {values[EPSILON]:.3f} | memory {memory_size:,}"
    )
