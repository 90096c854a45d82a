"""Collector benchmark: frames/s of one collector on one core, for K = 1 and K = 16 cars side by side.

    python -m tmexp.bench collect [--cars 1,16] [--seconds N] [--rounds R] [--experiment NAME] [--json] [overrides...]

It composes the run's configuration (the default one, or ``+experiment=NAME``, plus any ``tmexp.train``
overrides; checked as ``tmexp.train`` checks) and builds that run (``tmexp.core.build``, in a temporary directory)
for its collector settings and its network's weights. For each K it makes the collector a collector process makes
(``collectors.Collector``, ``performance.cars_per_collector=K``) and times ``Collector.step``, what the loop of a
collector process (``play_races``) repeats: one batched forward pass for the K cars, each car's action, the
simulator's step, each car's race arrays, a rollout per race that ends, new races started. Torch uses one thread,
as in a collector process (``performance.torch_threads_collector``, default 1).

The Ks are interleaved round by round, so that load from other processes hits them alike; figures are medians
over rounds, and the ratio to the first K is taken per round. ``frames_per_s`` is per second of wall time,
``frames_per_cpu_s`` per second of this process's CPU time: on a shared machine the latter is the cost of a frame.
Exploration follows the run's schedules at frame 0 (the start of a run: mostly random actions, short races).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import torch

from tmexp.bench.harness import BenchmarkError, built_run, compose_run, fail, report
from tmexp.core.collectors import Collector


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tmexp.bench collect", description=__doc__.split("\n")[0])
    p.add_argument("--cars", default="1,16", help="the Ks to compare, comma-separated (default 1,16)")
    p.add_argument("--seconds", type=float, default=3.0, help="time per K and round (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds (median reported)")
    p.add_argument("--experiment", default=None, help="+experiment=NAME (default: the default run)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("overrides", nargs="*", help="tmexp.train overrides (e.g. nn=small)")
    args = p.parse_args(argv)
    try:
        args.cars = [int(k) for k in args.cars.split(",")]
    except ValueError:
        raise BenchmarkError(f"--cars {args.cars!r} is not a list of integers; pass e.g. --cars 1,16.") from None
    if not args.cars or min(args.cars) < 1 or args.seconds <= 0 or args.rounds < 1:
        raise BenchmarkError(
            "--cars must list positive integers, --seconds be > 0 and --rounds >= 1; pass e.g. "
            "--cars 1,16 --seconds 3 --rounds 3."
        )
    return args


def frames_in(collector: Collector, seconds: float) -> tuple[int, float, float]:
    """Step the collector's cars for about ``seconds``; return (frames played, wall seconds, CPU seconds)."""
    steps, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        for _ in range(10):
            collector.step()
        steps += 10
    return steps * len(collector.cars), time.perf_counter() - wall0, time.process_time() - cpu0


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        cfg = compose_run(args.experiment, list(args.overrides) + ["performance.serial=true"])
        if str(cfg.env.backend) != "sim":
            raise BenchmarkError("the collector benchmark drives the simulator: leave env=sim (the default).")
    except BenchmarkError as err:
        return fail("collect", err)
    with built_run(cfg, "collect") as (run, _):
        result = measure(args, cfg, run)
    report(result, args.json)
    return 0


def measure(args, cfg, run) -> dict:
    torch.set_num_threads(max(1, cfg.performance.torch_threads_collector))
    run.weights.publish(run.online)
    base = run.source.collector.s
    collectors = {
        k: Collector(dataclasses.replace(base, cars=k, total_cars=k), 0, run.weights, run.frames_played)
        for k in args.cars
    }
    try:
        for collector in collectors.values():  # first races, weights pulled, caches warm
            frames_in(collector, min(0.5, args.seconds))
        rates: dict[int, list[float]] = {k: [] for k in args.cars}
        cpu_rates: dict[int, list[float]] = {k: [] for k in args.cars}
        for _ in range(args.rounds):
            for k, collector in collectors.items():
                frames, wall, cpu = frames_in(collector, args.seconds)
                rates[k].append(frames / wall)
                cpu_rates[k].append(frames / max(cpu, 1e-9))
    finally:
        for collector in collectors.values():
            collector.close()
    first = args.cars[0]
    result: dict = {
        "experiment": args.experiment or "default",
        "overrides": list(args.overrides),
        "img": list(run.spaces.img_shape),
        "floats": base.float_dim,
        "iqn_k": base.nn.iqn_k,
        "torch_threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "seconds": args.seconds,
    }
    for k in args.cars:
        result[f"frames_per_s_k{k}"] = round(statistics.median(rates[k]), 1)
        result[f"frames_per_cpu_s_k{k}"] = round(statistics.median(cpu_rates[k]), 1)
        if k != first:
            ratios = [a / b for a, b in zip(rates[k], rates[first])]
            result[f"ratio_k{k}_vs_k{first}"] = round(statistics.median(ratios), 2)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
