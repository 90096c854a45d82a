"""A sweep resumes as a whole: the same command with the same sweep directory skips the jobs that finished, resumes
the interrupted ones and runs the failed ones again; performance.max_retries retries a job that raised; the summary
says per job what the command did."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_harness import REAL_APP, REPO, app_env, job_status, run_sweep, scalar_steps_of, sweep_command

from tmexp import rundir
from tmexp.compose import compose_config
from tmexp.launch import resume
from tmexp.launch.summary import JobProgress, collect, format_summary

SMOKE = ["+experiment=smoke", "training.checkpoint_every_minutes=0.01"]  # a checkpoint every loop after 0.6 s

# The training app with a failure injected in-process, once per run directory (the basic launcher runs every job
# in this process): at its 20th batch a run saves a checkpoint, then raises.
FAILING_APP = """
import runpy

from tmexp.core.learner import Learner

train_one_batch = Learner.train_one_batch
failed = set()


def fail_once(self):
    if self.run.run_dir not in failed and self.run.counters.batches == 20:
        failed.add(self.run.run_dir)
        self.save()
        raise RuntimeError("injected failure")
    train_one_batch(self)


Learner.train_one_batch = fail_once
runpy.run_module("tmexp.train", run_name="__main__", alter_sys=True)  # as python -m tmexp.train
"""


def run_failing_sweep(sweep_dir: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", FAILING_APP, "--multirun", f"hydra.sweep.dir={sweep_dir}", *overrides]
    return subprocess.run(command, cwd=REPO, env=app_env(), capture_output=True, text=True, timeout=300)


def summary_line(output: str, num: int) -> str:
    return next(line for line in output.splitlines() if line.strip().startswith(f"#{num} "))


def file_times(run_dir: Path) -> dict[str, int]:
    """Every file of a run's checkpoint and TensorBoard folders, with its modification time."""
    return {
        str(p.relative_to(run_dir)): p.stat().st_mtime_ns
        for folder in ("checkpoint", "tensorboard")
        for p in sorted((run_dir / folder).rglob("*"))
        if p.is_file()
    }


# ----- end to end ---------------------------------------------------------------------------------------------------
def test_a_killed_local_sweep_run_again_skips_finished_jobs_and_resumes_the_rest(tmp_path):
    sweep_dir = tmp_path / "sweep"
    overrides = ["hydra/launcher=local", *SMOKE, "training.max_frames=300", "seed=0,1,2,3", "performance.job_slots=2"]
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(
        sweep_command(REAL_APP, sweep_dir, overrides),
        cwd=REPO,
        env=app_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    jobs = [sweep_dir / str(n) for n in range(4)]
    try:  # kill the whole sweep once a job finished and another one has a checkpoint but has not finished
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            states = [(rundir.read_status(job) or {}).get("status") for job in jobs]
            interrupted = [
                job
                for job, state in zip(jobs, states)
                if state == "running" and (job / "checkpoint" / "latest.pt").is_file()
            ]
            if "finished" in states and interrupted:
                break
            time.sleep(0.1)
        assert first.poll() is None, "the sweep ended before it was killed:\n" + (tmp_path / "first.log").read_text()
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        log.close()

    finished = [job for job in jobs if (rundir.read_status(job) or {}).get("status") == "finished"]
    interrupted = [job for job in jobs if job not in finished and (job / "checkpoint" / "latest.pt").is_file()]
    assert finished and interrupted
    before = {job: (file_times(job), job_status(job)) for job in finished}

    again = run_sweep(REAL_APP, sweep_dir, overrides, timeout=400)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for job in finished:  # not started again: checkpoint and event files untouched, counters as they were
        times, status = before[job]
        assert file_times(job) == times
        now = job_status(job)
        assert now["status"] == "finished" and now["skipped"] is True
        assert (now["frames"], now["starts"], now["objective"]) == (status["frames"], 1, status["objective"])
        assert "skipped" in summary_line(again.stdout, int(job.name))
    for job in interrupted:  # resumed from its checkpoint and finished
        status = job_status(job)
        assert status["status"] == "finished" and status["frames"] >= 300
        assert status["resumed"] is True and status["starts"] == 2 and status["skipped"] is False
        assert "resumed" in summary_line(again.stdout, int(job.name))
    for job in jobs:
        assert job_status(job)["status"] == "finished"
    assert (
        f"4 of 4 jobs finished ({len(finished)} skipped as already finished, {len(interrupted)} resumed)"
        in again.stdout
    )


def test_a_job_that_fails_once_is_retried_from_its_checkpoint_and_finishes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    overrides = ["+experiment=smoke", "training.max_frames=300", "performance.max_retries=1"]
    result = run_failing_sweep(sweep_dir, overrides)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    status = job_status(sweep_dir / "0")
    assert status["status"] == "finished" and status["frames"] >= 300
    assert status["retries"] == 1 and status["retry_errors"] == ["RuntimeError: injected failure"]
    assert status["starts"] == 2 and status["error"] is None
    assert "failed (RuntimeError: injected failure): retry 1 of 1" in output
    assert "retried (1)" in summary_line(result.stdout, 0)
    assert "1 of 1 jobs finished (1 retried)" in result.stdout
    files = sorted((sweep_dir / "0" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 2
    retried_steps = scalar_steps_of(files[1])
    assert retried_steps and min(retried_steps) > 0, "the retry started again from frame 0, not from its checkpoint"


@pytest.mark.slow  # three runs of the training app, one after another: about 40 s on two cores
def test_without_retries_a_failed_job_is_reported_and_the_same_command_runs_it_again(tmp_path):
    sweep_dir = tmp_path / "sweep"
    overrides = ["+experiment=smoke", "training.max_frames=300"]
    failed = run_failing_sweep(sweep_dir, overrides)
    assert failed.returncode != 0
    status = job_status(sweep_dir / "0")
    assert status["status"] == "failed" and status["error"] == "RuntimeError: injected failure"
    assert status["retries"] == 0
    assert "FAILED" in summary_line(failed.stdout, 0) and "0 of 1 jobs finished, 1 did not" in failed.stdout

    again = run_sweep(REAL_APP, sweep_dir, overrides, timeout=300)  # no failure injected this time
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    status = job_status(sweep_dir / "0")
    assert status["status"] == "finished" and status["frames"] >= 300 and status["resumed"] is True
    assert status["starts"] == 2 and "resumed" in summary_line(again.stdout, 0)

    more = run_sweep(REAL_APP, sweep_dir, ["+experiment=smoke", "training.max_frames=500"], timeout=300)  # trains on
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    status = job_status(sweep_dir / "0")
    assert status["frames"] >= 500 and status["starts"] == 3 and status["skipped"] is False


def test_a_retry_closes_the_failed_attempts_collectors_and_writer_first(tmp_path, monkeypatch):
    from tmexp.core import build as build_module
    from tmexp.core.learner import Learner
    from tmexp.train import train

    events = []
    real_build, real_close = build_module.build, build_module.Run.close

    def build(*args, **kwargs):
        events.append("build")
        return real_build(*args, **kwargs)

    def close(run):
        events.append("close")
        real_close(run)

    def fail_in_first_attempt(self, rollout):
        if events.count("build") == 1:
            raise RuntimeError("first attempt fails")
        ingest(self, rollout)

    ingest = Learner.ingest
    monkeypatch.setattr(build_module, "build", build)
    monkeypatch.setattr(build_module.Run, "close", close)
    monkeypatch.setattr(Learner, "ingest", fail_in_first_attempt)

    cfg = compose_config(["+experiment=smoke", "training.max_frames=200", "performance.max_retries=2"])
    assert train(cfg, tmp_path) == "max_frames"
    assert events == ["build", "close", "build", "close"]
    status = job_status(tmp_path)
    assert status["status"] == "finished" and status["retries"] == 1 and status["starts"] == 2

    events.clear()
    cfg = compose_config(["+experiment=smoke", "training.max_frames=200"])  # max_retries=0
    with pytest.raises(RuntimeError, match="first attempt fails"):
        train(cfg, tmp_path / "no_retry")
    assert events == ["build", "close"]
    status = job_status(tmp_path / "no_retry")
    assert status["status"] == "failed" and status["error"] == "RuntimeError: first attempt fails"


def test_a_negative_max_retries_is_one_line_exit_2(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tmexp.train",
            "--multirun",
            "performance.max_retries=-1",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tmexp.train: error: performance.max_retries is -1")
    assert not (tmp_path / "sweep").exists()


# ----- what a job decides and records -------------------------------------------------------------------------------
def _finished(run_dir: Path, frames: int = 400, wall_minutes: float = 1.5, **fields) -> Path:
    rundir.write_status(run_dir, "finished", frames=frames, wall_minutes=wall_minutes, **fields)
    return run_dir


def test_targets_reached_for_the_budget_a_job_is_run_with_now(tmp_path):
    status = rundir.read_status(_finished(tmp_path))
    assert resume.targets_reached(status, max_frames=400, max_minutes=0)
    assert resume.targets_reached(status, max_frames=300, max_minutes=0)
    assert not resume.targets_reached(status, max_frames=401, max_minutes=0)  # a larger budget trains on
    assert resume.targets_reached(status, max_frames=0, max_minutes=1.5)
    assert resume.targets_reached(status, max_frames=10_000, max_minutes=1.5)  # the nearer target stopped it
    assert not resume.targets_reached(status, max_frames=10_000, max_minutes=2)
    assert not resume.targets_reached(status, max_frames=0, max_minutes=0)  # no target: it never ends by itself
    # a run that stopped for time sees its minutes as training_seconds / 60
    assert resume.targets_reached(
        {"status": "finished", "frames": 1, "wall_minutes": 0.7 * 60 / 60}, max_frames=0, max_minutes=0.7
    )
    for other in ("running", "preempted", "stopped", "failed"):
        assert not resume.targets_reached({**status, "status": other}, max_frames=400, max_minutes=0)
    assert not resume.targets_reached(None, max_frames=400, max_minutes=0)


def test_a_finished_job_returns_the_objective_it_recorded_or_measures_the_one_asked_for(tmp_path):
    recorded = {"name": "best_time", "value": 61.5, "unit": "s", "note": ""}
    run_dir = _finished(tmp_path, objective=recorded)
    cfg = compose_config(["+experiment=smoke", "training.max_frames=400"])
    done = resume.finished_before(cfg, run_dir)
    assert (done.name, done.value, done.unit) == ("best_time", 61.5, "s")
    assert resume.objective_fields(done) == recorded

    cfg = compose_config(["+experiment=smoke", "training.max_frames=400", "objective=furthest_race"])
    done = resume.finished_before(cfg, run_dir)  # no event file here: the no-data value of a distance
    assert (done.name, done.value, done.unit) == ("furthest_race", 0.0, "m")

    assert resume.finished_before(compose_config(["+experiment=smoke", "training.max_frames=800"]), run_dir) is None


def test_status_fields_say_what_each_command_did(tmp_path):
    first = rundir.record_start(tmp_path, "A", resumed=False)
    assert (first["status"], first["starts"], first["sweep"]) == ("running", 1, "A")
    assert (first["resumed"], first["retries"], first["retry_errors"], first["skipped"]) == (False, 0, [], False)

    retried = rundir.record_start(tmp_path, "A", resumed=True, retry_error="RuntimeError: boom")
    assert (retried["starts"], retried["retries"], retried["retry_errors"]) == (2, 1, ["RuntimeError: boom"])
    assert retried["resumed"] is False  # a retry is reported as a retry

    requeued = rundir.record_start(tmp_path, "A", resumed=True)  # the same command, another process
    assert (requeued["starts"], requeued["retries"], requeued["resumed"]) == (3, 1, True)

    again = rundir.record_start(tmp_path, "B", resumed=True)  # the sweep run again: its own account
    assert (again["starts"], again["retries"], again["retry_errors"], again["resumed"]) == (4, 0, [], True)

    skipped = rundir.record_skip(tmp_path, "C", objective={"name": "best_time", "value": 1.0})
    assert (skipped["status"], skipped["skipped"], skipped["sweep"], skipped["starts"]) == ("finished", True, "C", 4)
    assert (skipped["resumed"], skipped["retries"]) == (False, 0)

    single = rundir.record_start(tmp_path, None, resumed=True)  # single runs: every start is a new command
    assert (single["sweep"], single["skipped"], single["resumed"]) == (None, False, True)


def test_the_sweep_command_id_is_recorded_and_read(tmp_path):
    assert rundir.read_sweep_command(tmp_path) is None
    first = rundir.write_sweep_command(tmp_path / "sweep")
    assert rundir.read_sweep_command(tmp_path / "sweep") == first
    second = rundir.write_sweep_command(tmp_path / "sweep")
    assert second != first and rundir.read_sweep_command(tmp_path / "sweep") == second


# ----- the summary ----------------------------------------------------------------------------------------------------
def _job(sweep_dir: Path, num: int) -> Path:
    run_dir = sweep_dir / str(num)
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {num}\n    id: '{num}'\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text(f"- seed={num}\n")
    return run_dir


def _finish(run_dir: Path) -> None:
    rundir.write_status(run_dir, "finished", frames=400, wall_minutes=1.0)


def test_summary_says_per_job_finished_skipped_resumed_retried_or_failed(tmp_path):
    earlier = rundir.write_sweep_command(tmp_path)
    jobs = [_job(tmp_path, n) for n in range(6)]
    rundir.record_start(jobs[5], earlier, resumed=True)  # what an earlier command did, then killed
    now = rundir.write_sweep_command(tmp_path)

    rundir.record_start(jobs[0], now, resumed=False)
    _finish(jobs[0])
    _finish(jobs[1])
    rundir.record_skip(jobs[1], now)
    rundir.record_start(jobs[2], now, resumed=True)
    _finish(jobs[2])
    rundir.record_start(jobs[3], now, resumed=False)
    rundir.record_start(jobs[3], now, resumed=True, retry_error="RuntimeError: once")
    rundir.record_start(jobs[3], now, resumed=True, retry_error="RuntimeError: twice")
    _finish(jobs[3])
    rundir.record_start(jobs[4], now, resumed=False)
    rundir.record_start(jobs[4], now, resumed=True, retry_error="RuntimeError: once")
    rundir.write_status(jobs[4], "failed", error="RuntimeError: again")

    results = collect(tmp_path, [[f"seed={n}"] for n in range(6)])
    assert [r.outcome for r in results] == ["finished", "skipped", "resumed", "retried (2)", "FAILED", "RUNNING"]
    assert results[5].resumed is False  # the earlier command's fields are not this one's
    text = format_summary(tmp_path, results)
    assert "4 of 6 jobs finished (1 skipped as already finished, 1 resumed, 1 retried), 2 did not" in text
    assert "raised an error after 1 retry: RuntimeError: again" in text
    assert "retried after: RuntimeError: twice" in text


def test_job_progress_announces_what_a_command_run_again_does(tmp_path, capsys):
    jobs = [_job(tmp_path, n) for n in range(3)]
    for job in jobs:
        rundir.record_start(job, "earlier", resumed=False)
    _finish(jobs[0])
    rundir.write_status(jobs[1], "failed", error="RuntimeError: boom")
    command = rundir.write_sweep_command(tmp_path)
    progress = JobProgress(tmp_path)  # what the earlier command left is not announced
    assert progress.poll() == []

    rundir.record_skip(jobs[0], command)
    rundir.record_start(jobs[1], command, resumed=True)
    _finish(jobs[1])
    rundir.record_start(jobs[2], command, resumed=False)
    rundir.record_start(jobs[2], command, resumed=True, retry_error="RuntimeError: once")
    _finish(jobs[2])
    lines = progress.poll()
    assert lines == [
        "job #0 skipped (already finished): seed=0  [400 frames]",
        "job #1 resumed: seed=1  [400 frames]",
        "job #2 retried (1): seed=2  [400 frames]",
    ]
    assert progress.poll() == []  # each once
