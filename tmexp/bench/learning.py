"""Learning benchmark: how fast and how surely a configuration learns, one run per seed, read from its own logs.

    python -m tmexp.bench learning --seeds 0,1,2,3,4 --minutes 15 [--out DIR] [--json] [overrides...]
    python -m tmexp.bench learning --runs DIR [DIR ...] [--minutes 15] [--json]

The first form trains the configuration (the default one, plus any ``tmexp.train`` overrides) once per seed, one
run after the other so that each has the machine to itself, each for ``--minutes`` minutes of training, in
``DIR/seed<N>`` (default ``outputs/bench_learning/<date>_<time>``); every run is checked before the first starts.
The second form recomputes the figures from run directories that exist (any tmexp run, or a folder of them).

Per run, from its TensorBoard logs (``tmexp.analysis``), with minutes of training time (the run's
``cumul_training_hours`` counter, interpolated between its log points; wall time for runs without it):

- ``first_finish_min``: the minute of the first finished race (eval or exploration), None if none finished;
- ``best_s``: the best race time at each checkpoint (every 5 minutes and at ``--minutes``), None before a finish;
- ``stall_fraction``: of the races that ended after minute 5, the fraction that ended within 50 m of the start;
- ``frames_per_s``: frames played / training seconds;
- ``updates_per_s`` and ``learner_pct``: from the first log point with an update on (the replay fills first):
  gradient updates per training second, and the mean of ``Performance/learner_percentage_training``.

Then the median of each figure across the runs (a run that never finished counts as slower than any that did).

A run on a map cycle (``map=A01_hock``, or any ``map.cycle``) gets these figures for each of its maps (races on a
map count for that map; frames and updates are the run's), a table per map, and one more figure:
``all_maps_finished_min``, the minute by which every map of the cycle had a finished race (None if one never did),
whose median says whether the configuration learns every map of the cycle within ``--minutes``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

STALL_RADIUS_M = 50.0  # a race that ends this close to the start has stalled there
STALL_AFTER_MIN = 5.0  # races before this minute are the exploration phase, not counted as stalls
CHECKPOINT_EVERY_MIN = 5.0


class BenchmarkError(ValueError):
    """An option or a run directory that cannot be used (the message names it and the fix)."""


@dataclass
class RunFigures:
    """The benchmark's figures of one run (see the module docstring)."""

    run: str
    seed: int | None
    minutes: float  # training minutes the run lasted
    map: str | None = None  # the map these race figures are of (a map cycle's run has one RunFigures per map)
    first_finish_min: float | None = None
    first_finish_s: float | None = None  # the first finished race's time
    best_s: dict[str, float | None] = field(default_factory=dict)  # checkpoint minute (as text) -> best time
    stall_fraction: float | None = None  # None: no race ended after minute 5
    races_after_5_min: int = 0
    frames_per_s: float | None = None
    updates_per_s: float | None = None
    learner_pct: float | None = None


def checkpoints(minutes: float) -> list[float]:
    """5, 10, ... up to ``minutes``, and ``minutes`` itself."""
    points = list(np.arange(CHECKPOINT_EVERY_MIN, minutes + 1e-9, CHECKPOINT_EVERY_MIN))
    if not points or points[-1] < minutes - 1e-9:
        points.append(minutes)
    return [float(p) for p in points]


def _label(minute: float) -> str:
    return f"{minute:g}"


def _series(scalars: pd.DataFrame, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one tag, in step order (the last write wins at a repeated step)."""
    rows = scalars[scalars["tag"] == tag].sort_values("step", kind="stable")
    rows = rows.drop_duplicates("step", keep="last")
    return rows["step"].to_numpy(np.int64), rows["value"].to_numpy(np.float64)


def minutes_axis(scalars: pd.DataFrame, first_wall_time: float):
    """A function from steps (frames) to training minutes for one run's scalars.

    The ``cumul_training_hours`` counter is logged every few seconds at step = frames; between its points (and
    from (0, 0) to the first) the minutes are interpolated linearly. A run without the counter (another
    project's logs) falls back on wall time since its first event, by the wall time of each step's scalars.
    """
    from tmexp.core import metrics

    steps, hours = _series(scalars, metrics.CUMUL_TRAINING_HOURS)
    if len(steps):
        xs = np.concatenate(([0], steps)).astype(np.float64)
        ys = np.concatenate(([0.0], 60.0 * hours))
        ys = np.maximum.accumulate(ys)  # a resumed run's counter continues; float32 jitter must not go back
        return lambda s: np.interp(np.asarray(s, dtype=np.float64), xs, ys)
    by_step = scalars.groupby("step")["wall_time"].min()
    origin = first_wall_time if not math.isnan(first_wall_time) else float(by_step.min())
    xs, ys = by_step.index.to_numpy(np.float64), (by_step.to_numpy(np.float64) - origin) / 60.0
    return lambda s: np.interp(np.asarray(s, dtype=np.float64), xs, ys)


def run_figures(
    label: str,
    scalars: pd.DataFrame,
    minutes: float,
    map_name: str | None = None,
    seed: int | None = None,
    first_wall_time: float = float("nan"),
) -> RunFigures:
    """The benchmark's figures of one run from its scalars (the long table of ``tmexp.analysis``, one run)."""
    from tmexp.analysis import tables
    from tmexp.core import metrics

    if map_name is None:
        maps = tables.detect_maps(scalars)
        if not maps:
            raise BenchmarkError(f"run {label!r} logged no race; train it longer or point --runs at another run.")
        map_name = maps[0]
    to_min = minutes_axis(scalars, first_wall_time)

    race_min, race_m, race_s = [], [], []
    for is_eval in (True, False):
        time_tag = metrics.eval_race_time(map_name) if is_eval else metrics.explo_race_time(map_name)
        done_tag = metrics.eval_race_finished(map_name) if is_eval else metrics.explo_race_finished(map_name)
        prog_tag = metrics.eval_race_progress(map_name) if is_eval else metrics.explo_race_progress(map_name)
        steps, times = _series(scalars, time_tag)
        done = dict(zip(*_series(scalars, done_tag)))
        progress = dict(zip(*_series(scalars, prog_tag)))
        for step, t in zip(steps, times):
            race_min.append(float(to_min(step)))
            race_s.append(t if done.get(step, 0.0) > 0.5 else math.nan)
            race_m.append(progress.get(step, math.nan))
    order = np.argsort(race_min, kind="stable")
    race_min_a = np.asarray(race_min)[order]
    race_s_a, race_m_a = np.asarray(race_s)[order], np.asarray(race_m)[order]

    finished = np.flatnonzero(~np.isnan(race_s_a))
    fig = RunFigures(
        run=label,
        seed=seed,
        minutes=0.0,
        map=map_name,
        first_finish_min=float(race_min_a[finished[0]]) if len(finished) else None,
        first_finish_s=float(race_s_a[finished[0]]) if len(finished) else None,
    )
    for point in checkpoints(minutes):
        upto = race_s_a[race_min_a <= point + 1e-9]
        upto = upto[~np.isnan(upto)]
        fig.best_s[_label(point)] = float(upto.min()) if len(upto) else None

    late = (race_min_a > STALL_AFTER_MIN) & ~np.isnan(race_m_a)
    fig.races_after_5_min = int(late.sum())
    if fig.races_after_5_min:
        fig.stall_fraction = float(np.mean(race_m_a[late] < STALL_RADIUS_M))

    frame_steps, frames = _series(scalars, metrics.CUMUL_FRAMES)
    batch_steps, batches = _series(scalars, metrics.CUMUL_BATCHES)
    if len(frame_steps):
        fig.minutes = float(to_min(frame_steps[-1]))
        if fig.minutes > 0:
            fig.frames_per_s = float(frames[-1] / (60.0 * fig.minutes))
    training = np.flatnonzero(batches > 0)
    if len(training) >= 2:
        first, last = training[0], training[-1]
        span_s = 60.0 * float(to_min(batch_steps[last]) - to_min(batch_steps[first]))
        if span_s > 0:
            fig.updates_per_s = float((batches[last] - batches[first]) / span_s)
    if len(training):
        pct_steps, pct = _series(scalars, metrics.LEARNER_PERCENTAGE)
        pct = pct[pct_steps > batch_steps[training[0]]]  # intervals that ended after updates had begun
        if len(pct):
            fig.learner_pct = float(pct.mean())
    return fig


def _median(values: list[float | None], none_is_worst: bool = False) -> float | None:
    """Median of the values; None values are dropped, or count as +infinity with ``none_is_worst``."""
    if none_is_worst:
        vals = [math.inf if v is None else v for v in values]
        med = statistics.median(vals) if vals else None
        return None if med is None or math.isinf(med) else float(med)
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


def medians(figures: list[RunFigures]) -> dict:
    """The median of each figure across runs (first finish and best times: an unfinished run counts as worst)."""
    keys = list(figures[0].best_s) if figures else []
    return {
        "first_finish_min": _median([f.first_finish_min for f in figures], none_is_worst=True),
        "best_s": {k: _median([f.best_s.get(k) for f in figures], none_is_worst=True) for k in keys},
        "stall_fraction": _median([f.stall_fraction for f in figures]),
        "frames_per_s": _median([f.frames_per_s for f in figures]),
        "updates_per_s": _median([f.updates_per_s for f in figures]),
        "learner_pct": _median([f.learner_pct for f in figures]),
        "finished_runs": sum(f.first_finish_min is not None for f in figures),
        "runs": len(figures),
    }


def figures_of_runs(paths: list[str | Path], minutes: float) -> list[RunFigures]:
    """Load the runs under ``paths`` (``tmexp.analysis``) and compute each one's figures."""
    from tmexp.analysis import loading

    try:
        runset = loading.load_runs([str(p) for p in paths], workers=1)
    except loading.RunLoadError as err:
        raise BenchmarkError(str(err)) from None
    out = []
    for label, info in runset.runs.items():
        if info.no_data:
            raise BenchmarkError(f"run {info.path} has no data ({info.no_data}); leave it out of --runs.")
        config = info.config or {}
        seed = config.get("seed")
        scalars = runset.scalars[runset.scalars["run"] == label]
        for map_name in run_maps(config):
            out.append(
                run_figures(
                    str(info.path),
                    scalars,
                    minutes,
                    map_name=map_name,
                    seed=int(seed) if seed is not None else None,
                    first_wall_time=info.first_wall_time,
                )
            )
    return out


def run_maps(config: dict) -> list[str | None]:
    """The maps a run's config names: its map cycle's, or its one map (None: whatever map its logs hold)."""
    map_cfg = config.get("map") or {}
    cycle = [entry.get("short_name") for entry in map_cfg.get("cycle") or []]
    return cycle or [map_cfg.get("short_name")]


def by_map(figures: list[RunFigures]) -> dict[str | None, list[RunFigures]]:
    """The figures grouped by map, in the order the maps first appear."""
    groups: dict[str | None, list[RunFigures]] = {}
    for f in figures:
        groups.setdefault(f.map, []).append(f)
    return groups


def all_maps_finished(figures: list[RunFigures]) -> dict[str, float | None]:
    """Run -> the minute by which every map of its cycle had a finished race (None: a map never had one)."""
    runs: dict[str, list[float | None]] = {}
    for f in figures:
        runs.setdefault(f.run, []).append(f.first_finish_min)
    return {run: None if any(m is None for m in mins) else max(mins) for run, mins in runs.items()}


# ----- training the runs ------------------------------------------------------------------------------------------
def run_overrides(seed: int, minutes: float, run_dir: Path, overrides: list[str]) -> list[str]:
    """The ``tmexp.train`` command line of one seed's run (the user's overrides last, so they win)."""
    return [f"seed={seed}", f"training.max_minutes={minutes:g}", f"hydra.run.dir={run_dir}", *overrides]


def check_runs(seeds: list[int], minutes: float, out: Path, overrides: list[str]) -> None:
    """Compose and check every seed's run before any starts (``tmexp.train``'s own checks)."""
    from tmexp.launch.precheck import precheck
    from tmexp.validation import ConfigError

    for seed in seeds:
        run_dir = out / f"seed{seed}"
        if run_dir.exists():
            raise BenchmarkError(f"{run_dir} exists (a run there would be resumed); pass another --out.")
        try:
            precheck(run_overrides(seed, minutes, run_dir, overrides))
        except ConfigError as err:
            raise BenchmarkError(str(err)) from None


def train_runs(seeds: list[int], minutes: float, out: Path, overrides: list[str], quiet: bool) -> list[Path]:
    """Train one run per seed, one after the other; each run's console output goes to ``DIR/seed<N>.log``."""
    out.mkdir(parents=True, exist_ok=True)
    dirs = []
    for seed in seeds:
        run_dir = out / f"seed{seed}"
        log_path = out / f"seed{seed}.log"
        if not quiet:
            print(f"seed {seed}: training {minutes:g} min in {run_dir} (log: {log_path})", file=sys.stderr, flush=True)
        t0 = time.time()
        with open(log_path, "w") as log:
            code = subprocess.call(
                [sys.executable, "-m", "tmexp.train", *run_overrides(seed, minutes, run_dir, overrides)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if code != 0:
            raise RuntimeError(f"the run of seed {seed} failed (exit code {code}); see {log_path}")
        if not quiet:
            print(f"seed {seed}: done in {(time.time() - t0) / 60:.1f} min", file=sys.stderr, flush=True)
        dirs.append(run_dir)
    return dirs


# ----- the report -------------------------------------------------------------------------------------------------
def _fmt(value: float | None, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f} %"


def table(figures: list[RunFigures], summary: dict, minutes: float) -> str:
    """The per-run rows and the medians as a Markdown table."""
    points = [_label(p) for p in checkpoints(minutes)]
    head = (
        ["run", "seed", "first finish (min)"]
        + [f"best at {p} min (s)" for p in points]
        + ["stall after 5 min", "frames/s", "updates/s", "learner %"]
    )
    rows = []
    for f in figures:
        rows.append(
            [f.run, _fmt(f.seed, "d"), _fmt(f.first_finish_min, ".1f", "none")]
            + [_fmt(f.best_s.get(p), ".2f") for p in points]
            + [
                _percent(f.stall_fraction),
                _fmt(f.frames_per_s, ".0f"),
                _fmt(f.updates_per_s, ".1f"),
                _fmt(f.learner_pct, ".0f"),
            ]
        )
    m = summary
    rows.append(
        [f"median ({m['finished_runs']} of {m['runs']} finished)", "", _fmt(m["first_finish_min"], ".1f", "none")]
        + [_fmt(m["best_s"].get(p), ".2f") for p in points]
        + [
            _percent(m["stall_fraction"]),
            _fmt(m["frames_per_s"], ".0f"),
            _fmt(m["updates_per_s"], ".1f"),
            _fmt(m["learner_pct"], ".0f"),
        ]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tmexp.bench learning", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds, one run each (default 0,1,2,3,4)")
    p.add_argument("--minutes", type=float, default=15.0, help="training minutes per run (default 15)")
    p.add_argument(
        "--out", type=Path, default=None, help="where the runs go (default outputs/bench_learning/<date>_<time>)"
    )
    p.add_argument(
        "--runs",
        nargs="+",
        type=Path,
        default=None,
        metavar="DIR",
        help="recompute the figures of these existing runs instead of training",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("overrides", nargs="*", help="tmexp.train overrides for every run (e.g. +experiment=A01_v2)")
    args = p.parse_args(argv)
    if not args.minutes > 0:
        raise BenchmarkError(f"--minutes must be positive, got {args.minutes:g}; pass e.g. --minutes 15.")
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise BenchmarkError(
            f"--seeds {args.seeds!r} is not a comma-separated list of integers; pass e.g. --seeds 0,1,2."
        ) from None
    if not args.seed_list or len(set(args.seed_list)) != len(args.seed_list):
        raise BenchmarkError(f"--seeds {args.seeds!r} must name each seed once; pass e.g. --seeds 0,1,2.")
    if args.runs is not None:
        if args.overrides:
            raise BenchmarkError(
                "--runs reads existing runs, so overrides have nothing to change; drop the overrides or --runs."
            )
        missing = [str(r) for r in args.runs if not r.exists()]
        if missing:
            raise BenchmarkError(f"--runs {missing[0]} does not exist; pass run directories.")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if args.runs is None:
            out = args.out or Path("outputs") / "bench_learning" / time.strftime("%Y-%m-%d_%H-%M-%S")
            check_runs(args.seed_list, args.minutes, out, args.overrides)
            paths = train_runs(args.seed_list, args.minutes, out, args.overrides, args.quiet or args.json)
        else:
            paths = args.runs
        figures = figures_of_runs(paths, args.minutes)
    except BenchmarkError as err:
        print(f"tmexp.bench learning: error: {err}", file=sys.stderr)
        return 2
    groups = by_map(figures)
    summaries = {m: medians(group) for m, group in groups.items()}
    finished_all = all_maps_finished(figures)
    all_median = _median(list(finished_all.values()), none_is_worst=True)
    if args.json:
        report = {
            "benchmark": "learning",
            "minutes": args.minutes,
            "overrides": args.overrides,
            "runs": [asdict(f) for f in figures],
            "median": next(iter(summaries.values())),
        }
        if len(groups) > 1:
            report.update(
                median_by_map=summaries, all_maps_finished_min=finished_all, median_all_maps_finished_min=all_median
            )
        print(json.dumps(report))
    elif len(groups) == 1:
        print(table(figures, summaries[next(iter(groups))], args.minutes))
    else:
        for m, group in groups.items():
            print(f"map {m}\n\n{table(group, summaries[m], args.minutes)}\n")
        done = sum(v is not None for v in finished_all.values())
        print(
            f"every map of the cycle finished: {done} of {len(finished_all)} runs within {args.minutes:g} min, "
            f"median {_fmt(all_median, '.1f', 'never')} min"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
