"""Simulator throughput and memory: ``python -m tmexp.bench sim --json``.

Measures environment steps per second including the image and the float vector, for one car (``SimEnv``) and for
64 cars stepped together (``SimVecEnv``), on one core, with a fixed pseudo-random mostly-forward policy; and the
memory the simulator needs for a ~10 km track: the peak traced allocation while building it and stepping 64 cars
(``--track``; default: the 9.9 km line in the repository's tests/data/, when present).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np

from tmexp.envs.base import EnvSpec, RewardSpec
from tmexp.envs.sim.env import SimEnv
from tmexp.envs.sim.params import SimParams
from tmexp.envs.sim.vec_env import SimVecEnv
from tmexp.envs.track import load_map, load_track

_FIXTURE_10KM = Path(__file__).resolve().parents[2] / "tests" / "data" / "tracks" / "map5_0.5m_cl.npy"
_POLICY = np.array([0, 0, 0, 0, 1, 2, 3, 6, 4, 5])  # mostly forward, some steering and braking


def bench_single(track, seconds: float) -> tuple[float, float]:
    env = SimEnv(track, EnvSpec(), RewardSpec(), SimParams(), seed=0)
    env.reset()
    actions = _POLICY[np.random.default_rng(0).integers(0, len(_POLICY), 1_000_000)]
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            _, _, terminated, truncated, _ = env.step(int(actions[steps]))
            steps += 1
            if terminated or truncated:
                env.reset()
    return steps / (time.perf_counter() - start), steps / (time.process_time() - cpu)


def bench_batched(track, num_envs: int, seconds: float) -> tuple[float, float]:
    venv = SimVecEnv(num_envs, track, EnvSpec(), RewardSpec(), SimParams(), seed=0)
    venv.reset()
    actions = _POLICY[np.random.default_rng(0).integers(0, len(_POLICY), (20_000, num_envs))]
    steps, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            venv.step(actions[steps % len(actions)])
            steps += 1
    return steps * num_envs / (time.perf_counter() - start), steps * num_envs / (time.process_time() - cpu)


def memory_for_track(path: Path, num_envs: int) -> dict:
    """Peak Python/numpy allocation while loading the track and stepping ``num_envs`` cars on it."""
    tracemalloc.start()
    start = time.perf_counter()
    track = load_track(path)
    venv = SimVecEnv(num_envs, track, EnvSpec(), RewardSpec(), SimParams(), seed=0)
    venv.reset()
    build_s = time.perf_counter() - start
    for _ in range(20):
        venv.step(np.zeros(num_envs, dtype=np.int64))
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "track": path.name,
        "track_length_m": round(track.length, 1),
        "build_s": round(build_s, 2),
        "memory_peak_mb": round(peak / 2**20, 1),
        "memory_held_mb": round(current / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmexp.bench sim", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=4.0, help="time per measurement")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--track", default=str(_FIXTURE_10KM), help="a ~10 km reference line for the memory figure")
    args = parser.parse_args(argv)

    track = load_map("A01", None)
    single, single_cpu = bench_single(track, args.seconds)
    batched, batched_cpu = bench_batched(track, args.num_envs, args.seconds)
    result = {
        "map": "A01",
        "steps_per_s_single": round(single, 1),
        "steps_per_s_batched": round(batched, 1),
        # Per second of this process's CPU time: the figure to compare when other work shares the cores.
        "steps_per_cpu_s_single": round(single_cpu, 1),
        "steps_per_cpu_s_batched": round(batched_cpu, 1),
        "num_envs_batched": args.num_envs,
        "cpu_threads": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    if Path(args.track).is_file():
        result["memory_10km"] = memory_for_track(Path(args.track), args.num_envs)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
