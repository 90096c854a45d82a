"""Write small TensorBoard logs and run directories with known contents (tests, benchmark, demos).

Events go through TensorBoard's own writer, so the files are the same format training writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tmexp.core import metrics


def write_events(log_dir: str | Path, rows, filename_suffix: str = "") -> Path:
    """Write scalar rows ``(tag, step, wall_time, value)`` in order to a new event file; returns its path."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(log_dir), max_queue_size=1 << 20, flush_secs=3600, filename_suffix=filename_suffix)
    for tag, step, wall_time, value in rows:
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
        writer.add_event(event_pb2.Event(wall_time=float(wall_time), step=int(step), summary=summary))
    writer.close()
    return Path(writer._file_name)  # the writer names the file (time, host, pid, counter) and keeps it here


def training_rows(
    map_name: str = "A01",
    minutes: float = 60.0,
    start: float = 1.7e9,
    frames_per_min: int = 100_000,
    updates_per_frame: float = 0.25,
    race_every_min: float = 2.0,
    first_finish_min: float = 10.0,
    best_start_s: float = 30.0,
    best_end_s: float = 25.0,
    loss: float = 100.0,
    seed: int = 0,
    track_m: float = 1000.0,
) -> list[tuple[str, int, float, float]]:
    """Rows resembling a training run: counters and metrics every minute, races every ``race_every_min``.

    Races before ``first_finish_min`` are unfinished (300 s) and reach a distance growing towards ``track_m``
    (with noise); later ones finish (``track_m``) with times improving from ``best_start_s`` towards
    ``best_end_s`` plus noise. ``alltime_min_ms_<map>`` tracks the best finished race.
    """
    rng = np.random.default_rng(seed)
    rows = []
    best_ms = None
    for k in range(int(minutes) + 1):
        t = float(k)
        frames = int(frames_per_min * t)
        wall = start + 60.0 * t
        rows += [
            (metrics.CUMUL_FRAMES, frames, wall, frames),
            (metrics.CUMUL_BATCHES, frames, wall, int(frames * updates_per_frame)),
            (metrics.CUMUL_TRAINING_HOURS, frames, wall, t / 60.0),
            (metrics.LOSS, frames, wall, loss / (1.0 + t / 10.0)),
            (metrics.LEARNER_PERCENTAGE, frames, wall, 50.0 + 10.0 * rng.random()),
        ]
        if k % max(int(race_every_min), 1) == 0 and k > 0:
            done = t >= first_finish_min
            frac = min(1.0, (t - first_finish_min) / max(minutes - first_finish_min, 1.0))
            race = best_start_s + (best_end_s - best_start_s) * frac + abs(rng.normal(0.0, 0.3)) if done else 300.0
            race = float(np.float32(race))
            reached = (
                track_m
                if done
                else float(np.clip(track_m * t / first_finish_min * (0.9 + 0.1 * rng.random()), 0.0, 0.99 * track_m))
            )
            rows += [
                (metrics.eval_race_time(map_name), frames, wall, race),
                (metrics.eval_race_finished(map_name), frames, wall, float(done)),
                (metrics.explo_race_time(map_name), frames, wall + 1.0, race + 0.5 if done else 300.0),
                (metrics.explo_race_finished(map_name), frames, wall + 1.0, float(done)),
                (metrics.avg_q(map_name), frames, wall, -1.0 + 0.01 * t),
                (metrics.eval_race_progress(map_name), frames, wall, reached),
                (metrics.explo_race_progress(map_name), frames, wall + 1.0, reached),
            ]
            if done:
                rows.append((metrics.eval_race_time_robust(map_name), frames, wall, race))
                best_ms = min(best_ms or 1e12, round(race * 1000))
            if best_ms is not None:
                rows.append((metrics.alltime_min_ms(map_name), frames, wall, best_ms))
    return rows


def write_run_dir(
    run_dir: str | Path,
    rows,
    overrides: list[str] | None = None,
    config: dict | None = None,
    status: dict | None = None,
    meta: dict | None = None,
) -> Path:
    """A tmexp/Hydra-style run directory: .hydra/overrides.yaml, config_resolved.yaml, status/meta, tensorboard/."""
    run_dir = Path(run_dir)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides or [])))
    if config is not None:
        (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        (run_dir / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    if status is not None:
        (run_dir / "status.json").write_text(json.dumps(status))
    if meta is not None:
        (run_dir / "run_meta.json").write_text(json.dumps(meta))
    if rows:
        write_events(run_dir / "tensorboard", rows)
    return run_dir


# The counters of ``jumping_counter_rows``: (step, updates, training seconds) at each periodic log, and at each race's
# end. Between the logs at steps 10_000 and 20_000 the learner catches up (2_000 updates), mostly before the race
# at step 15_000, so interpolating the logs places that race at 1_100 updates where it ran at 1_900.
JUMP_LOGS = [(0, 0, 0.0), (10_000, 100, 10.0), (20_000, 2_100, 70.0), (30_000, 2_200, 80.0)]
JUMP_RACES = [(15_000, 1_900, 60.0, 26.0), (25_000, 2_150, 75.0, 25.0)]  # (step, updates, seconds, race time s)


def jumping_counter_rows(
    exact: bool, map_name: str = "A01", start: float = 1.7e9
) -> list[tuple[str, int, float, float]]:
    """A run whose counters jump between their periodic logs (``JUMP_LOGS``), with two finished eval races
    (``JUMP_RACES``); ``exact`` also writes the counters at each race's end, as tmexp runs do since they log
    ``Race/cumul_number_batches_done`` (older runs, Linesight and rulka logs do not)."""
    rows = []
    for step, updates, seconds in JUMP_LOGS:
        wall = start + step / 100.0
        rows += [
            (metrics.CUMUL_BATCHES, step, wall, updates),
            (metrics.CUMUL_TRAINING_HOURS, step, wall, seconds / 3600),
        ]
    best_ms = None
    for step, updates, seconds, race_s in JUMP_RACES:
        wall = start + step / 100.0
        best_ms = min(best_ms or 10**9, round(race_s * 1000))
        rows += [
            (metrics.eval_race_time(map_name), step, wall, race_s),
            (metrics.eval_race_finished(map_name), step, wall, 1.0),
            (metrics.alltime_min_ms(map_name), step, wall, best_ms),
        ]
        if exact:
            rows += [(metrics.RACE_BATCHES, step, wall, updates), (metrics.RACE_TRAINING_S, step, wall, seconds)]
    return sorted(rows, key=lambda r: (r[1], r[2]))


def best_times(n_seeds: int, mean_s: float = 24.0, spread_s: float = 0.5, seed: int = 0) -> np.ndarray:
    """Final best times (s) of ``n_seeds`` seeds of one arm: normal around ``mean_s`` with sd ``spread_s``, rounded to
    the millisecond as the game gives them (a seed group whose answer is known, for the statistics' tests)."""
    return np.round(np.random.default_rng(seed).normal(mean_s, spread_s, n_seeds), 3)
