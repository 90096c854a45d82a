"""Checkpoint benchmark: bytes written, wall seconds, and how long the learner waits, for checkpoints with replay.

    python -m tmexp.bench checkpoint [--scales default,linesight] [--interval N] [--rate F] [--dir DIR] [--json]

Two scales, each a run built from its composed config (``tmexp.core.build``, serial source, in ``--dir``):

- ``default``: the default run (48x48 image, its float count, ``nn=cpu``) with 50,000 transitions in replay (its
  capacity until frame 5M);
- ``linesight``: ``+experiment=A01_v2`` (Linesight's network, 64x64 image) with a replay of 1,000,000 transitions
  (about 9.4 GB in memory: both images, 8 KB, and both float vectors of each transition).

Replay is filled with synthetic transitions through ``ReplayBuffer.add``. Then the first checkpoint (every chunk
written), then a periodic one: ``--interval`` transitions are added (180,000 by default: 5 minutes, the default
checkpoint interval, at the default run's 600 frames/s) and the run checkpoints again. While a checkpoint is written
in the background the benchmark keeps adding transitions at ``--rate`` frames/s, as the learner goes on ingesting
races, so that the chunks the learner overwrites before the writer took them are copied as in a run. For each
checkpoint: the bytes written, the wall seconds until it is on disk, and the learner's waits: the ``save`` call
(copying the networks, optimiser and priorities and listing the chunks to write) plus the chunk copies made inside
``add``. Goal: the learner waits <= 1 s per periodic checkpoint at 1,000,000 transitions. Everything written goes
under a temporary folder (inside ``--dir`` when given) that is deleted at the end.

Disk: a third checkpoint follows the periodic one after as many transitions again (the steady state: two kept
checkpoints and one being written), and the checkpoint folder's size is sampled every 10 ms throughout; the peak is
reported in bytes and in copies of the replay as one checkpoint holds it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tmexp.bench.harness import BenchmarkError, compose_run
from tmexp.core.replay import STORED, Transitions

SCALES = {  # name -> (experiment, transitions in replay, overrides)
    "default": (None, 50_000, []),
    "linesight": ("A01_v2", 1_000_000, ["memory.memory_size_schedule=[[0,[1000000,20000]]]"]),
}
INTERVAL = 180_000  # transitions between two checkpoints: 5 minutes at the default run's 600 frames/s
RATE = 600.0  # frames/s added while a checkpoint is being written
GOAL_BLOCKED_S = 1.0
BLOCK = 4096  # transitions per synthetic add


def synthetic_block(replay, rng: np.random.Generator, rows: int = BLOCK) -> Transitions:
    """``rows`` random transitions shaped for ``replay``."""

    def random_like(name: str) -> np.ndarray:
        array = getattr(replay, name)
        shape = (rows, *array.shape[1:])
        if array.dtype == np.uint8:
            return rng.integers(0, 256, shape, dtype=np.uint8)
        if array.dtype == np.int64:
            return rng.integers(0, 4, shape, dtype=np.int64)
        return rng.standard_normal(shape, dtype=np.float32)

    return Transitions(**{name: random_like(name) for name in STORED})


def fill(replay, block: Transitions, count: int) -> None:
    """Add ``count`` transitions, ``block`` at a time (its rows rolled so that blocks differ)."""
    shift = 0
    while count > 0:
        rows = min(count, len(block))
        shift += 1
        replay.add(
            Transitions(*(np.roll(getattr(block, f)[:rows], shift, axis=0) for f in Transitions.__dataclass_fields__))
        )
        count -= rows


class DiskSampler:
    """The largest size the files under a folder reach, sampled every ``every_s`` in a thread."""

    def __init__(self, folder: Path, every_s: float = 0.01):
        self.folder, self.every_s, self.peak = folder, every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="disk-sampler", daemon=True)

    def size(self) -> int:
        total = 0
        for root, _, names in os.walk(self.folder):
            for name in names:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except OSError:  # removed while walking
                    continue
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.size())
            time.sleep(self.every_s)

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.size())


def checkpoint_once(run, block: Transitions, rate: float) -> dict:
    """One checkpoint of ``run``, adding transitions at ``rate`` frames/s while it is written."""
    checkpointer, replay = run.checkpointer, run.replay
    files_before = _files(run.run_dir)
    t0 = time.perf_counter()
    blocked = checkpointer.save(
        online=run.online,
        target=run.target,
        optimizer=run.optimizer,
        scaler=run.scaler,
        self_loss=run.self_loss,
        replay=replay,
        counters=run.counters,
    )
    added, add_s = 0, 0.0
    while checkpointer.writing():
        due = int(rate * (time.perf_counter() - t0)) - added
        if due > 0:
            start = time.perf_counter()
            fill(replay, block, due)
            add_s += time.perf_counter() - start
            added += due
        time.sleep(0.05)
    checkpointer.wait()
    last = checkpointer.last
    new_files = sorted(set(_files(run.run_dir)) - set(files_before))
    return {
        "bytes": last["bytes"],
        "wall_s": round(last["wall_s"], 3),
        "chunks_written": last["chunks_written"],
        "save_call_s": round(blocked, 4),
        "chunk_copies_s": round(last["copy_s"], 4),
        "learner_blocked_s": round(blocked + last["copy_s"], 4),
        "added_while_writing": added,
        "files_written": len(new_files),
    }


def _files(run_dir: Path) -> list[str]:
    folder = run_dir / "checkpoint" / "replay"
    return [p.name for p in folder.iterdir()] if folder.is_dir() else []


def bench_scale(name: str, work: Path, interval: int, rate: float) -> dict:
    from tmexp.core.build import build

    experiment, transitions, overrides = SCALES[name]
    cfg = compose_run(experiment, overrides + ["performance.serial=true", "training.save_replay=true"])
    run_dir = work / name
    run_dir.mkdir()
    run = build(cfg, run_dir)
    try:
        replay = run.replay
        replay.set_capacity(run.schedules.at(0)["memory_capacity"])  # the ring's size at the run's start
        rng = np.random.default_rng(0)
        block = synthetic_block(replay, rng)
        t0 = time.perf_counter()
        fill(replay, block, transitions)
        fill_s = time.perf_counter() - t0
        row_bytes = sum(getattr(replay, f)[0].nbytes for f in STORED) + replay.priority[0].nbytes
        with DiskSampler(run_dir / "checkpoint") as disk:
            first = checkpoint_once(run, block, rate)
            fill(replay, block, interval)
            periodic = checkpoint_once(run, block, rate)
            fill(replay, block, interval)
            steady = checkpoint_once(run, block, rate)
        one_replay = row_bytes * len(replay)
        result = {
            "scale": name,
            "experiment": experiment or "default",
            "transitions": len(replay),
            "img_shape": list(replay.img.shape[1:]),
            "float_dim": replay.floats.shape[1],
            "replay_bytes": row_bytes * len(replay),
            "chunk_rows": replay.chunk_rows,
            "fill_s": round(fill_s, 2),
            "first": first,
            "periodic": periodic,
            "steady": steady,
            "peak_disk_bytes": disk.peak,
            "peak_disk_replays": round(disk.peak / one_replay, 2),
        }
    finally:
        run.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tmexp.bench checkpoint", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scales", default="default,linesight", help=f"comma-separated, of {', '.join(SCALES)} (default: both)"
    )
    parser.add_argument(
        "--interval",
        type=int,
        default=INTERVAL,
        help=f"transitions added between the two checkpoints (default {INTERVAL:,})",
    )
    parser.add_argument(
        "--rate", type=float, default=RATE, help=f"frames/s added while a checkpoint is written (default {RATE:g})"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="folder for the temporary run directories (default: the system's temporary folder)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    args.scales = [s.strip() for s in args.scales.split(",") if s.strip()]
    unknown = [s for s in args.scales if s not in SCALES]
    if unknown or not args.scales:
        raise BenchmarkError(f"--scales {','.join(unknown) or '(empty)'}: choose among {', '.join(SCALES)}.")
    if args.interval < 0 or args.rate < 0:
        raise BenchmarkError("--interval and --rate must be >= 0.")
    if args.dir is not None and not args.dir.is_dir():
        raise BenchmarkError(f"--dir {args.dir} is not a folder: create it or give another.")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        work = Path(tempfile.mkdtemp(prefix="tmexp-bench-checkpoint-", dir=args.dir))
    except BenchmarkError as error:
        print(f"tmexp.bench checkpoint: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"tmexp.bench checkpoint: error: cannot write in --dir {args.dir}: {error.strerror}", file=sys.stderr)
        return 2
    scales = []
    try:
        for name in args.scales:
            scales.append(bench_scale(name, work, args.interval, args.rate))
            gc.collect()
    except BenchmarkError as error:
        print(f"tmexp.bench checkpoint: error: {error}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(work, ignore_errors=True)
    at_scale = [s for s in scales if s["scale"] == "linesight"]
    result = {
        "benchmark": "checkpoint",
        "interval_transitions": args.interval,
        "rate_frames_per_s": args.rate,
        "scales": scales,
        "goal_blocked_s": GOAL_BLOCKED_S,
        "meets_goal": (at_scale[0]["periodic"]["learner_blocked_s"] <= GOAL_BLOCKED_S) if at_scale else None,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    for s in scales:
        print(
            f"{s['scale']}: {s['transitions']:,} transitions, image {s['img_shape']}, {s['float_dim']} floats, "
            f"{s['replay_bytes'] / 1e9:.2f} GB in memory"
        )
        print(f"  peak disk use: {s['peak_disk_bytes'] / 1e9:.2f} GB, {s['peak_disk_replays']:.2f}x the replay")
        for kind in ("first", "periodic", "steady"):
            c = s[kind]
            print(
                f"  {kind:>8}: {c['bytes'] / 1e6:,.1f} MB in {c['wall_s']:.2f} s ({c['chunks_written']} chunks); "
                f"learner waited {c['learner_blocked_s']:.3f} s (save {c['save_call_s']:.3f} s, chunk copies "
                f"{c['chunk_copies_s']:.3f} s)"
            )
    if result["meets_goal"] is not None:
        verdict = "met" if result["meets_goal"] else "missed"
        print(f"goal (periodic at 1M: the learner waits <= {GOAL_BLOCKED_S} s): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
