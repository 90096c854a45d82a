"""Helpers shared by the sweep and SLURM tests: launch a multirun, find out whether SLURM answers, read TensorBoard."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tmexp import rundir

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
CONF_DIR = REPO / "conf"
TOY_APP = "sweep_toy_app"
REAL_APP = "tmexp.train"
SUMMARY_CALLBACK = "+hydra.callbacks.sweep_summary._target_=tmexp.launch.summary.SweepSummary"

# What the CI node can give a job: one CPU, no GPU, a little memory (so that jobs run side by side).
SLURM_TEST_RESOURCES = [
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
    "hydra.launcher.array_parallelism=4",
    "hydra.launcher.poll_s=1",
]


def app_env() -> dict[str, str]:
    """The environment of a launched sweep: the toy app and tmexp importable in submitit's workers too."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("SUBMITIT_EXECUTOR", None)  # pytest itself might run inside a submitit job
    return env


def sweep_command(app: str, sweep_dir: Path, overrides: list[str], summary: bool = True) -> list[str]:
    command = [sys.executable, "-m", app, "--multirun", f"hydra.sweep.dir={sweep_dir}", *overrides]
    if app == TOY_APP:
        command.append(f"hydra.searchpath=[file://{CONF_DIR}]")
    if summary and app == TOY_APP:  # the real app's conf/config.yaml registers the callback itself
        command.append(SUMMARY_CALLBACK)
    return command


def run_sweep(
    app: str, sweep_dir: Path, overrides: list[str], timeout: float = 240, summary: bool = True
) -> subprocess.CompletedProcess:
    return subprocess.run(
        sweep_command(app, sweep_dir, overrides, summary),
        cwd=REPO,
        env=app_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_sweep(app: str, sweep_dir: Path, overrides: list[str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "w")
    return subprocess.Popen(
        sweep_command(app, sweep_dir, overrides),
        cwd=REPO,
        env=app_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_json(path: Path, timeout: float, proc: subprocess.Popen | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file():
            return json.loads(path.read_text())
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {proc.returncode}) before {path} appeared")
        time.sleep(0.1)
    raise AssertionError(f"{path} did not appear within {timeout} s")


def job_status(run_dir: Path) -> dict:
    status = rundir.read_status(run_dir)
    assert status is not None, f"{run_dir} has no readable status.json"
    return status


def scalar_steps_of(event_file: Path, tag: str = "cumul_number_frames_played") -> list[int]:
    """Every step logged for ``tag`` in one event file, in order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [
        event.step
        for event in EventFileLoader(str(event_file)).Load()
        if event.HasField("summary") and any(v.tag == tag for v in event.summary.value)
    ]


def scalar_steps(run_dir: Path, tag: str = "cumul_number_frames_played") -> list[int]:
    """Every step logged for ``tag`` in the run's event files, in file order (raw: duplicates kept)."""
    return [
        step
        for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))
        for step in scalar_steps_of(path, tag)
    ]


def assert_resumed_steps_continue(run_dir: Path, tag: str = "cumul_number_frames_played") -> list[list[int]]:
    """Each attempt's event file logs steps in order and only past every step the attempts before it logged.

    Returns the steps of each event file (one per attempt)."""
    per_file = [scalar_steps_of(p, tag) for p in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))]
    high = -1
    for steps in per_file:
        assert steps == sorted(steps), f"steps go backwards within one attempt: {steps}"
        assert not steps or steps[0] > high, f"an attempt logged step {steps[0]} again (up to {high} was logged)"
        high = max(steps, default=high)
    return per_file


def slurm_problem() -> str | None:
    """Why the SLURM tests cannot run here, or None when a controller answers and a node is usable."""
    if shutil.which("sinfo") is None:
        return "sinfo not found: SLURM is not installed (bash .ci/slurm/setup.sh installs and starts it)"
    try:
        answer = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s: no SLURM controller (bash .ci/slurm/setup.sh starts one)"
    if answer.returncode != 0:
        return f"no SLURM controller answers sinfo ({answer.stderr.strip()}); bash .ci/slurm/setup.sh starts one"
    states = answer.stdout.split()
    if not any(s.rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"SLURM answers but no node is usable (states: {' '.join(states) or 'none'})"
    return None


_SLURM_PROBLEM = slurm_problem()
requires_slurm = pytest.mark.skipif(_SLURM_PROBLEM is not None, reason=str(_SLURM_PROBLEM))


def sacct_states(*job_ids: str) -> list[str]:
    """The accounting states of jobs (``<id>`` or an array task ``<array>_<task>``), as SLURM reports them."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "State"], capture_output=True, text=True, timeout=30
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def final_sacct_states(*job_ids: str, timeout: float = 30) -> list[str]:
    """``sacct_states`` once every job has a final state: slurmdbd records a job's end a moment after it ends."""
    deadline = time.monotonic() + timeout
    while True:
        states = sacct_states(*job_ids)
        final = len(states) == len(job_ids) and not {"PENDING", "RUNNING", "REQUEUED", "COMPLETING"} & set(states)
        if final or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def submitit_job_ids(sweep_dir: Path) -> list[str]:
    return sorted(p.name for p in (sweep_dir / ".submitit").iterdir() if p.is_dir())


def ledger(sweep_dir: Path) -> dict[int, dict]:
    """The sweep's SLURM ledger (tmexp/launch/slurm_launcher.py): job number -> its entry."""
    data = json.loads((sweep_dir / ".slurm_jobs.json").read_text())
    return {int(k): v for k, v in data["jobs"].items()}


def wait_until(
    condition,
    timeout: float,
    proc: subprocess.Popen | None = None,
    what: str = "the condition",
    log_path: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"the sweep ended (exit {proc.returncode}) before {what}"
                + (f":\n{log_path.read_text()[-3000:]}" if log_path else "")
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} did not happen within {timeout} s" + (f":\n{log_path.read_text()[-3000:]}" if log_path else "")
            )
        time.sleep(0.2)
