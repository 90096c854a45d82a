"""One process per run directory: a second start is refused in one line naming the holder (exit 2, nothing touched),
a sweep's job in use is reported as such while the others run, and a lock left by a dead process never blocks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_harness import REAL_APP, REPO, app_env, job_status, run_sweep

from tmexp import rundir

HOLD = """
import sys, time
from tmexp import rundir
rundir.lock(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def hold(run_dir: Path) -> subprocess.Popen:
    """Another process holding ``run_dir``, as a trainer would."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], cwd=REPO, env=app_env(), stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_second_holder_is_refused_naming_the_first_and_a_dead_holder_never_blocks(tmp_path):
    holder = hold(tmp_path)
    try:
        with pytest.raises(rundir.RunDirInUse) as error:
            rundir.lock(tmp_path)
        message = str(error.value)
        assert str(tmp_path) in message and f"process {holder.pid} on {socket.gethostname()}" in message
        assert "\n" not in message
        assert rundir.lock_holder(tmp_path).startswith(f"process {holder.pid}")
    finally:
        stop(holder)  # SIGKILL: no chance to clean up; its .lock file stays, naming it
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == holder.pid
    assert rundir.lock_holder(tmp_path) is None
    with rundir.lock(tmp_path):
        with rundir.lock(tmp_path):  # the same process again: nested
            assert rundir.lock_holder(tmp_path) is None
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    held_again = hold(tmp_path)  # released: another process takes it at once
    stop(held_again)


def _smoke_run(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tmexp.train",
            "+experiment=smoke",
            "training.max_frames=200",
            f"hydra.run.dir={run_dir}",
            *extra,
        ],
        cwd=REPO,
        env=app_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_second_start_in_a_directory_in_use_is_one_line_exit_2_and_touches_nothing(tmp_path):
    run_dir = tmp_path / "run"
    first = _smoke_run(run_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    before = tree(run_dir)
    holder = hold(run_dir)
    try:
        second = _smoke_run(run_dir)
    finally:
        stop(holder)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and str(run_dir) in lines[0] and f"process {holder.pid}" in lines[0], second.stderr
    after = tree(run_dir)
    assert {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}


@pytest.mark.slow
def test_a_sweep_reports_its_job_in_use_and_runs_the_others(tmp_path):
    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "0").mkdir(parents=True)
    holder = hold(sweep_dir / "0")
    try:
        done = run_sweep(REAL_APP, sweep_dir, ["+experiment=smoke", "training.max_frames=200", "seed=0,1"], timeout=300)
    finally:
        stop(holder)
    assert done.returncode != 0
    assert f"{sweep_dir / '0'} is in use by process {holder.pid}" in done.stderr  # said before anything started
    assert job_status(sweep_dir / "1")["status"] == "finished"
    assert not (sweep_dir / "0" / "status.json").exists() and not (sweep_dir / "0" / "checkpoint").exists()
    line = next(line for line in done.stdout.splitlines() if line.strip().startswith("#0 "))
    assert "IN USE" in line, done.stdout
    assert f"in use: by process {holder.pid}" in done.stdout
