"""``python -m tmexp.bench NAME [options]``: the project's benchmarks.

    sim        simulator steps/s, one car and 64 cars batched; memory for a ~10 km track
    collect    frames/s of one collector on one core driving K = 1 and K = 16 cars
    learner    samples/s of one training step of the default run (or an experiment) vs a plain eager one
    learning   one training run per seed: first finish, best times, stalls, throughput (from the runs' logs)
    analysis   TensorBoard log loading vs tbparse
    sweep      per-job launch overhead of hydra/launcher=local
    search     idle worker time of a search (hydra/sweeper=optuna, 12 uneven trials on 2 workers)
    checkpoint bytes, seconds and the learner's wait for checkpoints with replay (50,000 and 1,000,000 transitions)
    params     parameter counts of the four published experiments' networks

Each prints one JSON object with ``--json``; ``python -m tmexp.bench NAME --help`` lists its options.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "sim": "tmexp.bench.sim",
    "collect": "tmexp.bench.collect",
    "learner": "tmexp.bench.learner",
    "learning": "tmexp.bench.learning",
    "analysis": "tmexp.bench.analysis",
    "sweep": "tmexp.bench.sweep",
    "search": "tmexp.bench.search",
    "checkpoint": "tmexp.bench.checkpoint",
    "params": "tmexp.bench.param_count",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        print(__doc__.strip(), file=sys.stderr)
        if argv and argv[0] not in ("-h", "--help"):
            print(
                f"tmexp.bench: error: unknown benchmark {argv[0]!r}; choose one of {', '.join(BENCHMARKS)}.",
                file=sys.stderr,
            )
            return 2
        return 0 if argv else 2
    return int(importlib.import_module(BENCHMARKS[argv[0]]).main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
