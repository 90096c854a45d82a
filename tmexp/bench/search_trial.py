"""The trial app of ``python -m tmexp.bench search``: a Hydra app whose job N sleeps ``seconds[N % len(seconds)]``.

Its lengths are set by the job number, not by the searched value ``x``, so that every sweeper runs the same trials
of the same deliberately uneven lengths. Each job writes ``trial.json`` in its directory: when its process started
(the moment its worker slot was taken) and when the job ended, which the benchmark turns into idle worker time.
It returns ``x`` as its objective (nothing to learn: the benchmark measures scheduling only).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig

from tmexp.launch import slurm_launcher

# A trial's length in seconds, by job number: short and long ones mixed, as RL runs and pruned trials are.
LENGTHS_S = [6.0, 24.0, 14.0, 3.0, 18.0, 5.0, 20.0, 4.0, 12.0, 9.0, 7.0, 3.0]


@dataclass
class TrialConfig:
    x: float = 0.0
    seconds: list[float] = field(default_factory=lambda: list(LENGTHS_S))
    objective: str = "best_time"  # what tmexp's optuna preset reads for the study's direction
    run_name: str = "bench_search"
    # For tests of the scheduling: job hold_job waits (at most hold_timeout_s) until job hold_until_job has ended.
    hold_job: int = -1
    hold_until_job: int = -1
    hold_timeout_s: float = 120.0


ConfigStore.instance().store(name="bench_search_trial", node=TrialConfig)
slurm_launcher.install()  # hydra/launcher=slurm is tmexp's driver, as in tmexp.train


def process_start_time() -> float:
    """When this process started (Linux: from /proc, exact); elsewhere, now."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


@hydra.main(version_base="1.3", config_path=None, config_name="bench_search_trial")
def main(cfg: TrialConfig) -> float:
    hydra_cfg = HydraConfig.get()
    num = int(hydra_cfg.job.num)
    started = process_start_time()
    time.sleep(cfg.seconds[num % len(cfg.seconds)])
    saw_other_end = None
    if num == cfg.hold_job:
        other = Path(hydra_cfg.sweep.dir) / str(cfg.hold_until_job) / "trial.json"
        deadline = time.monotonic() + cfg.hold_timeout_s
        while not other.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        saw_other_end = other.is_file()
    record = {
        "job": num,
        "process_started": started,
        "ended": time.time(),
        "pid": os.getpid(),
        "saw_other_end": saw_other_end,
    }
    (Path(hydra_cfg.runtime.output_dir) / "trial.json").write_text(json.dumps(record))
    return float(cfg.x)


if __name__ == "__main__":
    main()
