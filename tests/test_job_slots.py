"""performance.job_slots: at most N jobs of a multirun train at once; a dead job frees its slot."""

import subprocess
import sys
import time

import pytest

from tmexp.launch.job_slots import acquire_slot, try_slot


def test_slots_are_shared_out_and_freed(tmp_path):
    first = acquire_slot(tmp_path, 2)
    second = acquire_slot(tmp_path, 2)
    assert try_slot(tmp_path, 2) is None  # both taken
    with pytest.raises(TimeoutError, match="no free job slot"):
        acquire_slot(tmp_path, 2, poll_s=0.05, timeout_s=0.2)
    second.close()
    third = acquire_slot(tmp_path, 2, poll_s=0.05, timeout_s=1.0)  # the freed one
    assert third is not None
    first.close()
    third.close()


def test_a_killed_job_does_not_keep_its_slot(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from tmexp.launch.job_slots import acquire_slot; "
                f"s = acquire_slot(Path({str(tmp_path)!r}), 1); print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert try_slot(tmp_path, 1) is None
        holder.kill()  # SIGKILL: no cleanup code runs
        holder.wait(timeout=10)
        deadline = time.monotonic() + 10
        slot = None
        while slot is None and time.monotonic() < deadline:
            slot = try_slot(tmp_path, 1)
            time.sleep(0.05)
        assert slot is not None
        slot.close()
    finally:
        holder.kill()
