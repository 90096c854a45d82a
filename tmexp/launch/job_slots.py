"""At most N jobs of a multirun train at once: ``performance.job_slots``.

submitit's local executor (``hydra/launcher=local``) starts every job of a sweep at once. Twelve jobs on a 2-core
machine then share the cores twelve ways, and each one's wall-time budget measures the crowd, not the run. With
``performance.job_slots=N`` each job first takes one of N slots, lock files under ``<sweep dir>/.job_slots/``, and
waits while all are taken (polling every 2 s, so waiting jobs start in no fixed order). A slot is an advisory
``flock`` on an open file, so the kernel frees it when its job ends in any way (finished, failed, SIGKILL): a dead
job never holds a slot. A run's wall clock (``training.max_minutes``, the TensorBoard events) starts once it holds
a slot. On SLURM the scheduler allots resources and ``hydra.launcher.array_parallelism`` limits a sweep instead.
"""

from __future__ import annotations

import fcntl
import logging
import time
from pathlib import Path
from typing import IO

log = logging.getLogger("tmexp.launch.job_slots")


def try_slot(folder: Path, slots: int) -> IO | None:
    """One free slot's lock file, held open (keep it until the job ends), or None when all ``slots`` are taken."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(slots):
        handle = open(folder / f"slot{k}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return handle
    return None


def acquire_slot(folder: str | Path, slots: int, poll_s: float = 2.0, timeout_s: float | None = None) -> IO:
    """Wait for one of ``slots`` slots under ``folder``; raises TimeoutError after ``timeout_s`` (None: never)."""
    folder = Path(folder)
    start = time.monotonic()
    handle = try_slot(folder, slots)
    if handle is None:
        log.info("all %d job slots under %s are taken (performance.job_slots): waiting for one", slots, folder)
    while handle is None:
        if timeout_s is not None and time.monotonic() - start >= timeout_s:
            raise TimeoutError(f"no free job slot under {folder} after {timeout_s:g} s")
        time.sleep(poll_s)
        handle = try_slot(folder, slots)
    waited = time.monotonic() - start
    if waited > poll_s:
        log.info("got a job slot after waiting %.0f s", waited)
    return handle
