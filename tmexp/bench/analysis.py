"""Load-speed benchmark: tmexp's reader against tbparse on the same generated logs.

``python -m tmexp.bench analysis --json`` writes 16 runs x 4 tags x 10,000 points with TensorBoard's own writer
into a temporary directory, loads them with tmexp (one process per run, and in a single process) and with tbparse,
checks that all three give identical (run, tag, step, wall_time, value) rows, and prints the load seconds (best of
``--repeat``) and the speedups. Every ``--split-every``-th run is written as a Linesight-style split run (its second
half in ``<run>_2`` beside it) and tmexp is given the run folders one by one, so its discovery of continuation
folders is part of the timed load; tbparse's rows of ``<run>_2`` are counted under ``<run>`` for the comparison.
It also reports a worker's peak memory: what one run's read allocates at most (``tracemalloc``, numpy included),
beside the size of that run's event files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tmexp.analysis import loading
from tmexp.analysis.synthetic import write_events
from tmexp.core import metrics

TAGS = [metrics.LOSS, metrics.avg_q("A01"), metrics.eval_race_time("A01"), metrics.LEARNER_PERCENTAGE]


def generate(root: Path, runs: int, points: int, seed: int = 0, split_every: int = 0) -> list[Path]:
    """``runs`` runs, each ``points`` values of every tag, interleaved as training logs; return the run folders.

    Every ``split_every``-th run (0: none) is continued in ``<run>_2``: its second half lies in that folder.
    """
    rng = np.random.default_rng(seed)
    folders = []
    for r in range(runs):
        values = rng.normal(size=(points, len(TAGS))).astype(np.float32)
        rows = [
            (tag, 1000 * i, 1.7e9 + 0.5 * i, float(values[i, k])) for i in range(points) for k, tag in enumerate(TAGS)
        ]
        folder = root / f"run_{r:02d}"
        if split_every and r % split_every == 0:
            half = len(rows) // 2
            write_events(folder, rows[:half])
            write_events(root / f"{folder.name}_2", rows[half:])
        else:
            write_events(folder, rows)
        folders.append(folder)
    return folders


def _canonical_rows(df: pd.DataFrame, run_col: str) -> pd.DataFrame:
    run = df[run_col].astype(str).str.replace(r"_2$", "", regex=True)  # a split run's continuation folder
    out = pd.DataFrame(
        {
            "run": run.to_numpy(),
            "tag": df["tag"].astype(str).to_numpy(),
            "step": df["step"].to_numpy(np.int64),
            "wall_time": df["wall_time"].to_numpy(np.float64),
            "value": df["value"].to_numpy(np.float64),
        }
    )
    return out.sort_values(["run", "tag", "step", "wall_time"], kind="stable").reset_index(drop=True)


def load_tmexp(folders: list[Path], workers: int | None) -> pd.DataFrame:
    return loading.load_scalars(folders, workers=workers)


def load_tbparse(root: Path) -> pd.DataFrame:
    import warnings

    from tbparse import SummaryReader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tbparse's own pandas deprecation notices
        return SummaryReader(str(root), pivot=False, extra_columns={"wall_time", "dir_name"}).scalars


def _best_time(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), times, result


def worker_peak(files: list[Path]) -> dict:
    """Peak bytes a worker allocates reading one run's event files (numpy arrays included), and their size."""
    import tracemalloc

    size = sum(f.stat().st_size for f in files)
    tracemalloc.start()
    try:
        loading.read_event_files({"run": files}, workers=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        "run_event_files_mb": round(size / 1e6, 2),
        "worker_peak_mb": round(peak / 1e6, 2),
        "worker_peak_per_file_size": round(peak / size, 2),
    }


def run(
    runs: int = 16, points: int = 10_000, repeat: int = 3, workers: int | None = None, split_every: int = 4
) -> dict:
    with tempfile.TemporaryDirectory(prefix="tmexp_bench_") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        folders = generate(root, runs, points, split_every=split_every)
        generate_s = time.perf_counter() - start
        import tbparse  # noqa: F401  (import cost outside the timing, as for tmexp)

        parallel_s, parallel_all, ours = _best_time(lambda: load_tmexp(folders, workers), repeat)
        single_s, single_all, ours_single = _best_time(lambda: load_tmexp(folders, 1), repeat)
        tbparse_s, tbparse_all, theirs = _best_time(lambda: load_tbparse(root), repeat)

        a = _canonical_rows(ours, "run")
        b = _canonical_rows(ours_single, "run")
        c = _canonical_rows(theirs, "dir_name")
        identical = bool(len(a) == runs * points * len(TAGS) and a.equals(b) and a.equals(c))
        peak = worker_peak(sorted(folders[-1].rglob("events.out.tfevents.*")))  # a run in one folder
    return {
        "runs": runs,
        "split_runs": len(range(0, runs, split_every)) if split_every else 0,
        "tags": len(TAGS),
        "points_per_tag": points,
        "rows": int(len(a)),
        "cpu_count": os.cpu_count(),
        "workers": workers or min(runs, os.cpu_count() or 1),
        "repeat": repeat,
        "generate_s": round(generate_s, 3),
        "tmexp_s": round(parallel_s, 3),
        "tmexp_single_process_s": round(single_s, 3),
        "tbparse_s": round(tbparse_s, 3),
        "speedup": round(tbparse_s / parallel_s, 2),
        "speedup_single_process": round(tbparse_s / single_s, 2),
        "all_times_s": {
            "tmexp": [round(t, 3) for t in parallel_all],
            "tmexp_single_process": [round(t, 3) for t in single_all],
            "tbparse": [round(t, 3) for t in tbparse_all],
        },
        "identical": identical,
        **peak,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmexp.bench analysis", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--points", type=int, default=10_000, help="points per tag per run")
    parser.add_argument("--repeat", type=int, default=3, help="timed loads per reader (best is reported)")
    parser.add_argument("--workers", type=int, help="processes for tmexp (default: min(runs, CPUs))")
    parser.add_argument(
        "--split-every", type=int, default=4, help="write every Nth run as a split run <run> + <run>_2 (0: none)"
    )
    args = parser.parse_args(argv)
    result = run(args.runs, args.points, args.repeat, args.workers, args.split_every)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['rows']} rows: tmexp {result['tmexp_s']} s ({result['workers']} processes), "
            f"tmexp single process {result['tmexp_single_process_s']} s, tbparse {result['tbparse_s']} s; "
            f"speedup {result['speedup']}x ({result['speedup_single_process']}x single process); "
            f"identical: {result['identical']}; a worker's peak memory {result['worker_peak_mb']} MB for "
            f"{result['run_event_files_mb']} MB of event files"
        )
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
