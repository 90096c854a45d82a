"""``python -m tmexp.bench sweep [--json]``: per-job launch overhead of ``hydra/launcher=local`` versus sequential runs.

``python -m tmexp.bench sweep --compose 5000 [--json]`` instead measures how soon a large SLURM sweep starts: the time
from the command ``python -m tmexp.train --multirun hydra/launcher=slurm +experiment=A01_btr_ablation
seed=range(0,N/10)`` (10 arms) until every job is submitted. Everything before ``sbatch`` is real: the check of every
job before Hydra starts, Hydra, the launcher's composition, checks and frozen configs, submitit's job files, the
arrays split at MaxArraySize. SLURM's commands are stand-ins on PATH that answer at once (``sbatch`` prints a job id,
``sinfo`` one large node), so the figure is tmexp's own. Goal: under 60 s for 5,000 jobs.

Runs N smoke jobs (seeds 0..N-1) as one multirun through submitit's local launcher, then the same N runs one after
another as plain ``python -m tmexp.train`` commands. A job's launch overhead is the time from its submission to its
first training step (``first_step_at`` in the run's status.json): for the sweep, from the moment the multirun
command starts (what the user waits for); for a sequential run, from the moment its own command starts. Goal: under
5 s per job. On a machine with fewer cores than jobs, the parallel jobs share the cores while they import and build,
so their overhead grows with N / cores; the sequential figure is the per-process floor.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tmexp import rundir

GOAL_S = 5.0


def _first_step_at(run_dir: Path) -> float | None:
    return (rundir.read_status(run_dir) or {}).get("first_step_at")


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "median": None, "max": None}
    return {
        "mean": round(statistics.fmean(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


class BenchmarkError(RuntimeError):
    """A benchmark run failed; the message names the command and where its output is."""


def _run(command: list[str], log_path: Path) -> None:
    with open(log_path, "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise BenchmarkError(f"`{' '.join(command)}` exited with {code}; its output is in {log_path}.")


def _overheads(run_dirs: list[Path], started: list[float]) -> tuple[list[float], list[str]]:
    overheads, missing = [], []
    for run_dir, t0 in zip(run_dirs, started):
        first = _first_step_at(run_dir)
        if first is None:
            missing.append(str(run_dir))
        else:
            overheads.append(first - t0)
    return overheads, missing


def bench_sweep(work: Path, jobs: int, module: str, overrides: list[str]) -> dict:
    sweep_dir = work / "sweep"
    command = [
        sys.executable,
        "-m",
        module,
        "--multirun",
        "hydra/launcher=local",
        f"hydra.sweep.dir={sweep_dir}",
        f"seed={','.join(str(s) for s in range(jobs))}",
        *overrides,
    ]
    t0 = time.time()
    _run(command, work / "sweep.log")
    wall = time.time() - t0
    run_dirs = [sweep_dir / str(n) for n in range(jobs)]
    overheads, missing = _overheads(run_dirs, [t0] * jobs)
    return {
        "wall_s": round(wall, 2),
        "overhead_s": _stats(overheads),
        "per_job_overhead_s": [round(o, 3) for o in overheads],
        "missing_first_step_at": missing,
    }


def bench_sequential(work: Path, jobs: int, module: str, overrides: list[str]) -> dict:
    run_dirs, started = [], []
    t_all = time.time()
    for seed in range(jobs):
        run_dir = work / "sequential" / str(seed)
        started.append(time.time())
        _run(
            [sys.executable, "-m", module, f"hydra.run.dir={run_dir}", f"seed={seed}", *overrides],
            work / f"sequential_{seed}.log",
        )
        run_dirs.append(run_dir)
    wall = time.time() - t_all
    overheads, missing = _overheads(run_dirs, started)
    return {
        "wall_s": round(wall, 2),
        "overhead_s": _stats(overheads),
        "per_job_overhead_s": [round(o, 3) for o in overheads],
        "missing_first_step_at": missing,
    }


# Stand-ins for SLURM's commands: they answer at once, so that --compose measures tmexp's own work.
_FAKE_SLURM = {
    "sinfo": 'echo "debug*|n001|64|512000|gpu:8|idle|infinite"',
    "sbatch": 'n=$(( $(cat "$(dirname "$0")/counter" 2>/dev/null || echo 1000) + 1 )); '
    'echo $n > "$(dirname "$0")/counter"; echo "Submitted batch job $n"',
    "scontrol": 'echo "MaxArraySize            = 1001"',
    "squeue": "true",
    "sacct": "true",
    "sacctmgr": "true",
    "scancel": "true",
}
COMPOSE_GOAL_S = 60.0


def bench_compose(jobs: int, module: str, keep: bool) -> dict:
    """Seconds from the command's start until each array is submitted, for a SLURM sweep of ``jobs`` jobs."""
    import os
    import re
    import resource

    work = Path(tempfile.mkdtemp(prefix="tmexp-bench-compose-"))
    bin_dir = work / "bin"
    bin_dir.mkdir()
    for name, body in _FAKE_SLURM.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    seeds = -(-jobs // 10)
    command = [
        sys.executable,
        "-m",
        module,
        "--multirun",
        "hydra/launcher=slurm",
        "+experiment=A01_btr_ablation",
        f"seed=range(0,{seeds})",
        f"hydra.sweep.dir={work / 'sweep'}",
        "hydra.launcher.poll_s=3600",
    ]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    t0 = time.time()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    submitted, arrays, output = 0, [], []
    try:
        for line in proc.stdout:
            output.append(line)
            match = re.match(r"\[slurm\] submitted jobs #\d+\.\.#\d+ \((\d+)\)", line)
            if match:
                submitted += int(match.group(1))
                arrays.append(round(time.time() - t0, 2))
                if submitted >= seeds * 10:
                    break
    finally:
        proc.kill()
        proc.wait()
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        (work / "command.log").write_text("".join(output))
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    if submitted < seeds * 10:
        raise BenchmarkError(
            f"`{' '.join(command)}` submitted {submitted} of {seeds * 10} jobs; its last output: "
            + " | ".join(x.strip() for x in output[-5:])
        )
    return {
        "jobs": seeds * 10,
        "arrays": len(arrays),
        "seconds_to_each_array": arrays,
        "seconds_to_all": arrays[-1],
        "cpu_seconds": round(cpu.ru_utime + cpu.ru_stime, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "goal_s": COMPOSE_GOAL_S,
        "meets_goal": arrays[-1] < COMPOSE_GOAL_S,
        "work_dir": str(work) if keep else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmexp.bench sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=8, help="number of smoke jobs (default 8)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", action="store_true", help="keep the run directories (printed) instead of deleting")
    parser.add_argument("--module", default="tmexp.train", help="the Hydra app to launch (default tmexp.train)")
    parser.add_argument(
        "--compose",
        type=int,
        metavar="N",
        default=None,
        help="instead: seconds until a SLURM sweep of N jobs is submitted (stand-in SLURM commands)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        default=["+experiment=smoke"],
        help="overrides for every job (default: +experiment=smoke)",
    )
    args = parser.parse_args(argv)
    if args.compose:
        try:
            result = {"benchmark": "sweep --compose", **bench_compose(args.compose, args.module, args.keep)}
        except BenchmarkError as error:
            print(f"tmexp.bench sweep: error: {error}", file=sys.stderr)
            return 1
        print(
            json.dumps(result)
            if args.json
            else f"{result['jobs']} jobs in {result['arrays']} arrays, all submitted {result['seconds_to_all']} s "
            f"after the command started (first array at {result['seconds_to_each_array'][0]} s; "
            f"{result['cpu_seconds']} CPU seconds; load average {result['load_average_1min']}; goal < "
            f"{COMPOSE_GOAL_S:.0f} s: {'met' if result['meets_goal'] else 'not met'})"
        )
        return 0

    work = Path(tempfile.mkdtemp(prefix="tmexp-bench-sweep-"))
    try:
        sweep = bench_sweep(work, args.jobs, args.module, args.overrides)
        sequential = bench_sequential(work, args.jobs, args.module, args.overrides)
    except BenchmarkError as error:
        print(f"tmexp.bench sweep: error: {error}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    mean = sweep["overhead_s"]["mean"]
    result = {
        "benchmark": "sweep",
        "jobs": args.jobs,
        "launcher": "local",
        "overrides": args.overrides,
        "sweep": sweep,
        "sequential": sequential,
        "speedup_wall": round(sequential["wall_s"] / sweep["wall_s"], 2) if sweep["wall_s"] else None,
        "goal_overhead_s": GOAL_S,
        "meets_goal": mean is not None and mean < GOAL_S,
        "work_dir": str(work) if args.keep else None,
    }
    if sweep["missing_first_step_at"] or sequential["missing_first_step_at"]:
        print("tmexp.bench sweep: warning: some runs wrote no first_step_at in status.json", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.jobs} jobs: sweep (local launcher) {sweep['wall_s']} s wall, launch overhead per job "
            f"mean {sweep['overhead_s']['mean']} s / max {sweep['overhead_s']['max']} s; sequential "
            f"{sequential['wall_s']} s wall, overhead mean {sequential['overhead_s']['mean']} s "
            f"(goal < {GOAL_S} s per job: {'met' if result['meets_goal'] else 'not met'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
