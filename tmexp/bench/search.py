"""``python -m tmexp.bench search [--json]``: the fraction of worker time a search leaves idle.

A search of 12 trials of deliberately uneven lengths (``tmexp/bench/search_trial.py``: job N sleeps a set number of
seconds, 3 to 24) on 2 workers, through ``hydra/sweeper=optuna`` and submitit's local launcher. A worker is busy
from the moment its trial's process starts to the moment the trial ends; between trials, while the sweeper has not
yet started the next one (or waits for a slower trial of the same batch), it is idle. The figure is

    idle = 1 - (sum of the trials' busy seconds) / (workers x seconds from the first trial's start to the last's end)

so the sweeper's own start (composing, opening the study) is not counted, and the end of the search, when fewer
trials are left than workers, is. The lengths are set so that a scheduler that starts each trial as soon as a worker
frees idles about 2% by that tail alone; one that waits for a whole batch idles about a third. Goal: <= 10%.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tmexp.bench.search_trial import LENGTHS_S
from tmexp.compose import CONF_DIR

GOAL_IDLE = 0.10


class BenchmarkError(RuntimeError):
    """The search failed; the message names the command and where its output is."""


def sweeper_name() -> str:
    """Which ``hydra/sweeper=optuna`` is installed: tmexp's own, or the old hydra-optuna-sweeper plugin."""
    try:
        import hydra_plugins.hydra_optuna_sweeper  # noqa: F401

        return "hydra-optuna-sweeper (plugin)"
    except ImportError:
        return "tmexp"


def search_command(sweep_dir: Path, trials: int, workers: int, extra: list[str]) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "tmexp.bench.search_trial",
        "--multirun",
        "hydra/sweeper=optuna",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweeper.n_jobs={workers}",
        "x=interval(0.0, 1.0)",
        *extra,
    ]
    if sweeper_name() == "tmexp":  # tmexp's preset lives in its conf/ (the plugin's is its own registered schema)
        command.append(f"hydra.searchpath=[file://{CONF_DIR}]")
    return command


def idle_fraction(intervals: list[tuple[float, float]], workers: int) -> dict:
    """The idle share of ``workers`` slots from the first start to the last end, given each trial's (start, end)."""
    start = min(s for s, _ in intervals)
    end = max(e for _, e in intervals)
    busy = sum(e - s for s, e in intervals)
    span = end - start
    return {
        "idle_fraction": round(1.0 - busy / (workers * span), 4),
        "span_s": round(span, 2),
        "busy_s": round(busy, 2),
        "ideal_span_s": round(busy / workers, 2),
    }


def run_search(work: Path, trials: int, workers: int, extra: list[str]) -> dict:
    sweep_dir = work / "search"
    command = search_command(sweep_dir, trials, workers, extra)
    log_path = work / "search.log"
    t0 = time.time()
    with open(log_path, "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.time() - t0
    if code != 0:
        raise BenchmarkError(f"`{' '.join(command)}` exited with {code}; its output is in {log_path}.")
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("*/trial.json")]
    if len(records) != trials:
        raise BenchmarkError(f"{len(records)} of {trials} trials wrote trial.json; see {log_path}.")
    intervals = [(r["process_started"], r["ended"]) for r in sorted(records, key=lambda r: r["job"])]
    return {
        "wall_s": round(wall, 2),
        **idle_fraction(intervals, workers),
        "trials": [
            {
                "job": r["job"],
                "start_s": round(r["process_started"] - intervals[0][0], 2),
                "length_s": round(r["ended"] - r["process_started"], 2),
            }
            for r in sorted(records, key=lambda r: r["job"])
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmexp.bench search", description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=12, help="trials of the search (default 12)")
    parser.add_argument("--workers", type=int, default=2, help="hydra.sweeper.n_jobs (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", action="store_true", help="keep the sweep directory (printed) instead of deleting")
    parser.add_argument("overrides", nargs="*", default=[], help="more overrides for the search")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="tmexp-bench-search-"))
    try:
        result = run_search(work, args.trials, args.workers, args.overrides)
    except BenchmarkError as error:
        print(f"tmexp.bench search: error: {error}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "search",
        "sweeper": sweeper_name(),
        "trials_n": args.trials,
        "workers": args.workers,
        "lengths_s": LENGTHS_S,
        **result,
        "goal_idle_fraction": GOAL_IDLE,
        "meets_goal": result["idle_fraction"] <= GOAL_IDLE,
        "work_dir": str(work) if args.keep else None,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.trials} trials on {args.workers} workers ({result['sweeper']}): idle "
            f"{100 * result['idle_fraction']:.1f}% of worker time; {result['span_s']} s from the first trial's "
            f"start to the last's end, {result['ideal_span_s']} s with no idle worker "
            f"(goal <= {100 * GOAL_IDLE:.0f}%: {'met' if result['meets_goal'] else 'not met'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
