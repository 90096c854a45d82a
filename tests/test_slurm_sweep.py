"""Sweeps through hydra/launcher=slurm on a real SLURM (the single node that .ci/slurm/setup.sh starts): a job array
that finishes, a job preempted by the checkpoint signal or requeued by the scheduler that resumes where it stopped,
a failed job that SLURM calls COMPLETED but the sweep reports as failed, with its log; a job killed by SLURM that is
that job's failure while the others go on; a driver killed mid-sweep and run again; arrays split at a size limit."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from sweep_harness import (
    REAL_APP,
    REPO,
    SLURM_TEST_RESOURCES,
    TOY_APP,
    app_env,
    assert_resumed_steps_continue,
    final_sacct_states,
    job_status,
    ledger,
    requires_slurm,
    run_sweep,
    scalar_steps,
    start_sweep,
    submitit_job_ids,
    sweep_command,
    wait_for_json,
    wait_until,
)

from tmexp import rundir

pytestmark = [pytest.mark.slurm, requires_slurm]

SLURM = ["hydra/launcher=slurm", *SLURM_TEST_RESOURCES]


def test_slurm_sweep_2x2_runs_as_one_job_array(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(TOY_APP, sweep_dir, SLURM + ["btr.use_munchausen=true,false", "seed=0,1"])
    assert result.returncode == 0, result.stdout + result.stderr

    for num in range(4):
        assert job_status(sweep_dir / str(num))["status"] == "finished"
        assert scalar_steps(sweep_dir / str(num)) == list(range(10, 101, 10))
    tasks = [j for j in submitit_job_ids(sweep_dir) if "_" in j]  # <array>_<task>; <array>/ holds the sbatch file
    assert len(tasks) == 4 and len({t.split("_")[0] for t in tasks}) == 1, f"not one array: {tasks}"
    assert final_sacct_states(*tasks) == ["COMPLETED"] * 4  # accounting answers (slurmdbd)
    assert "4 of 4 jobs finished" in result.stdout
    assert sorted(entry["slurm_ids"][0] for entry in ledger(sweep_dir).values()) == sorted(tasks)
    frozen = (sweep_dir / ".frozen" / "3.yaml").read_text()  # job 3: use_munchausen=False, seed=1
    assert "use_munchausen: false" in frozen and "seed: 1" in frozen


def _lines(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


def test_a_job_slurm_kills_is_that_jobs_failure_and_the_others_are_collected_as_they_end(tmp_path):
    """scancel of a running job: no result file, SLURM's accounting says CANCELLED. The driver reports it when it
    happens, goes on waiting for the other job (longer), collects it, prints the summary and exits 1."""
    sweep_dir, ready, log = tmp_path / "sweep", tmp_path / "ready.json", tmp_path / "sweep.log"
    proc = start_sweep(
        TOY_APP, sweep_dir, SLURM + ["step_seconds=0.2", "steps=30", "seed=0,1", f"ready_file={ready}"], log
    )
    try:
        job = wait_for_json(ready, timeout=90, proc=proc)  # both jobs write it: the first one to start is killed
        subprocess.run(["scancel", job["slurm_task"]], check=True)
        assert proc.wait(timeout=150) == 1, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["scancel", "--name=sweep_toy_app"], check=False)
    out = log.read_text()
    killed = next(num for num, entry in ledger(sweep_dir).items() if entry["slurm_ids"][-1] == job["slurm_task"])
    other = 1 - killed
    progress = _lines(out, "job #")
    assert progress[0].startswith(f"job #{killed} FAILED (CANCELLED)"), progress
    assert progress[1].startswith(f"job #{other} finished"), progress  # collected after, as it ended after
    assert job_status(sweep_dir / str(other))["status"] == "finished"
    assert "1 of 2 jobs finished, 1 did not" in out
    summary_line = out[out.index(f"  #{killed} ") :].splitlines()
    assert f"SLURM ended job {job['slurm_task']} CANCELLED" in summary_line[1]
    assert ledger(sweep_dir)[killed]["slurm_state"] == "CANCELLED"


def test_a_killed_driver_run_again_waits_for_live_jobs_and_submits_only_failed_ones(tmp_path):
    """Four jobs, two CPUs: the two short ones finish, the long ones start. The driver is killed (SIGKILL), then
    one long job is cancelled. Run again, the command submits nothing for the finished jobs, waits for the running
    one (no second copy in its run directory), submits the cancelled one again, and all four finish."""
    sweep_dir, log, log2 = tmp_path / "sweep", tmp_path / "sweep.log", tmp_path / "again.log"
    overrides = SLURM + ["step_seconds=0.2", "steps=3,60", "seed=0,1"]  # jobs 0,1: 3 steps; jobs 2,3: 60 steps
    proc = start_sweep(TOY_APP, sweep_dir, overrides, log)
    try:

        def short_done_long_running() -> bool:
            statuses = [rundir.read_status(sweep_dir / str(n)) or {} for n in range(4)]
            return all(s.get("status") == "finished" for s in statuses[:2]) and all(
                s.get("frames", 0) > 0 for s in statuses[2:]
            )

        wait_until(short_done_long_running, 120, proc, "two jobs finished and two running", log)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        before = ledger(sweep_dir)
        shown = subprocess.run(
            [sys.executable, "-m", "tmexp.launch.slurm_launcher", str(sweep_dir)],
            cwd=REPO,
            env=app_env(),
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.splitlines()
        assert shown[0].startswith(f"sweep {sweep_dir}: 4 jobs in .slurm_jobs.json: "), shown
        assert "RUNNING" in shown[3] and f"#2    {before[2]['slurm_ids'][-1]}" in shown[3], shown
        subprocess.run(["scancel", before[3]["slurm_ids"][-1]], check=True)
        again = start_sweep(TOY_APP, sweep_dir, overrides, log2)
        assert again.wait(timeout=150) == 0, log2.read_text()[-3000:]
    finally:
        for p in (proc, locals().get("again")):
            if p is not None and p.poll() is None:
                p.kill()
        subprocess.run(["scancel", "--name=sweep_toy_app"], check=False)
    out = log2.read_text()
    assert (
        "4 of 4 jobs were submitted before (.slurm_jobs.json): 2 finished (not submitted again), 1 still queued "
        "or running (waited for), 1 failed or vanished (submitted again)"
    ) in out, out[-3000:]
    after = ledger(sweep_dir)
    assert [len(after[n]["slurm_ids"]) for n in range(4)] == [1, 1, 1, 2]
    assert after[2]["slurm_ids"] == before[2]["slurm_ids"]
    assert job_status(sweep_dir / "2")["attempts"] == 1, "the running job got a second copy"
    status3 = job_status(sweep_dir / "3")
    assert status3["status"] == "finished"
    assert "4 of 4 jobs finished" in out
    assert len(_lines(out, "[slurm] submitted")) == 1 and "#3..#3 (1)" in out


def test_a_sweep_larger_than_the_array_size_limit_goes_in_several_arrays(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(TOY_APP, sweep_dir, SLURM + ["hydra.launcher.max_array_size=3", "steps=2", "seed=0,1,2,3,4"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ids = [ledger(sweep_dir)[n]["slurm_ids"][0] for n in range(5)]
    arrays = [i.split("_")[0] for i in ids]
    assert arrays[0] == arrays[1] != arrays[2] == arrays[3] != arrays[4], ids  # task indices 0..1 (< 3 - 1)
    assert "5 of 5 jobs finished" in result.stdout


@pytest.mark.parametrize("how", ["usr2", "scontrol_requeue"])
def test_preempted_slurm_job_resumes_in_the_same_run_directory(tmp_path, how):
    """usr2: submitit's checkpoint signal (what SLURM sends signal_delay_s before the time limit); the job saves and
    requeues itself. scontrol_requeue: the scheduler requeues the job (SIGTERM); the job saves, SLURM requeues it."""
    sweep_dir, ready = tmp_path / "sweep", tmp_path / "ready.json"
    log = tmp_path / "sweep.log"
    proc = start_sweep(TOY_APP, sweep_dir, SLURM + ["steps=40", "step_seconds=0.1", f"ready_file={ready}"], log)
    try:
        job = wait_for_json(ready, timeout=90, proc=proc)
        if how == "usr2":
            subprocess.run(["scancel", f"--signal={signal.SIGUSR2.name[3:]}", job["slurm_job_id"]], check=True)
        else:
            subprocess.run(["scontrol", "requeue", job["slurm_job_id"]], check=True)
        assert proc.wait(timeout=150) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["scancel", "--name=sweep_toy_app"], check=False)

    status = job_status(sweep_dir / "0")
    assert status["status"] == "finished" and status["attempts"] == 2
    assert 0 < status["stopped_at_frames"] < status["frames"] == 400
    steps = scalar_steps(sweep_dir / "0")
    assert steps == sorted(set(steps)) == list(range(10, 401, 10)), "TensorBoard steps duplicated or lost"
    assert final_sacct_states(job["slurm_job_id"]) == ["COMPLETED"]


def test_failed_slurm_job_is_reported_although_slurm_says_completed(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(TOY_APP, sweep_dir, SLURM + ["fail_at_step=-1,3"])
    assert result.returncode != 0

    tasks = [j for j in submitit_job_ids(sweep_dir) if "_" in j]
    assert final_sacct_states(*tasks) == ["COMPLETED", "COMPLETED"]  # the known Hydra issue: SLURM cannot tell
    assert job_status(sweep_dir / "0")["status"] == "finished"
    assert job_status(sweep_dir / "1")["status"] == "failed"
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("#1"))
    assert "FAILED" in line and "fail_at_step=3" in line
    err_log = next(line.split("log: ", 1)[1] for line in result.stdout.splitlines() if line.endswith("_log.err"))
    assert f"{tasks[1]}_0_log.err" in err_log
    assert "toy failure at step 3" in open(err_log).read()


def test_training_app_smoke_sweep_2x2_on_slurm(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(
        REAL_APP, sweep_dir, SLURM + ["+experiment=smoke", "btr.use_munchausen=true,false", "seed=0,1"], timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for num in range(4):
        status = job_status(sweep_dir / str(num))
        assert status["status"] == "finished" and status["frames"] >= 400
        steps = scalar_steps(sweep_dir / str(num))
        assert steps and steps == sorted(steps)


def test_training_app_preempted_on_slurm_resumes_past_the_preemption_point(tmp_path):
    sweep_dir, log = tmp_path / "sweep", tmp_path / "sweep.log"
    run_dir = sweep_dir / "0"
    # Long enough to be signalled while it trains; the smoke experiment logs and saves status every 2 s.
    proc = start_sweep(REAL_APP, sweep_dir, SLURM + ["+experiment=smoke", "training.max_frames=1500"], log)
    try:
        deadline = time.monotonic() + 180
        while (rundir.read_status(run_dir) or {}).get("frames", 0) <= 0:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the job did not start training within 180 s"
            time.sleep(0.2)
        job_id = submitit_job_ids(sweep_dir)[0]
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["scancel", "--name=train"], check=False)

    status = job_status(run_dir)
    assert status["status"] == "finished" and status["frames"] >= 1500
    attempts = assert_resumed_steps_continue(run_dir)  # no TensorBoard step logged again after the resume
    assert len(attempts) >= 2, "the requeued job should have resumed with a new event file"
    preempted_at = attempts[0][-1]
    assert 0 < preempted_at < attempts[-1][-1] <= status["frames"]
    assert "resumed_at" in rundir.read_run_meta(run_dir)


def test_a_job_runs_the_config_frozen_at_submission_after_the_config_files_changed(tmp_path):
    """The jobs wait (--begin) while a config file they use is edited: they run the submission's value, and their
    log names the key that changed."""
    conf = tmp_path / "conf"
    (conf / "toy_steps").mkdir(parents=True)
    short = conf / "toy_steps" / "short.yaml"
    short.write_text("# @package _global_\nsteps: 5\n")
    sweep_dir, log = tmp_path / "sweep", tmp_path / "sweep.log"
    overrides = SLURM + ["+toy_steps=short", "seed=0,1", "+hydra.launcher.additional_parameters.begin='now+5'"]
    command = [
        c.replace("hydra.searchpath=[", f"hydra.searchpath=[file://{conf},")
        for c in sweep_command(TOY_APP, sweep_dir, overrides)
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=app_env(), stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: (sweep_dir / ".slurm_jobs.json").is_file(), 60, proc, "the submission", log)
        short.write_text("# @package _global_\nsteps: 7\n")  # an edit after the submission
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["scancel", "--name=sweep_toy_app"], check=False)
    for num in range(2):
        assert job_status(sweep_dir / str(num))["frames"] == 50  # 5 steps of 10 frames: the frozen value
        job_logs = "".join(p.read_text() for p in (sweep_dir / str(num)).glob("*.log"))
        assert "runs the config frozen at submission" in job_logs
        assert "the config files now give other values for: steps" in job_logs
