"""Sweeps through hydra/launcher=local (submitit's local executor): every job runs, failures are reported with their
logs and fail the sweep, and a signalled job saves, is restarted in the same run directory and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from sweep_harness import (
    REAL_APP,
    REPO,
    TOY_APP,
    app_env,
    job_status,
    run_sweep,
    scalar_steps,
    start_sweep,
    wait_for_json,
)

from tmexp import rundir
from tmexp.launch.summary import collect, expected_jobs, format_summary

LOCAL = ["hydra/launcher=local"]


def test_local_sweep_2x2_every_job_finishes_with_tensorboard(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(TOY_APP, sweep_dir, LOCAL + ["btr.use_munchausen=true,false", "seed=0,1"])
    assert result.returncode == 0, result.stdout + result.stderr

    seen = set()
    for num in range(4):
        run_dir = sweep_dir / str(num)
        assert job_status(run_dir)["status"] == "finished"
        assert scalar_steps(run_dir) == list(range(10, 101, 10))
        seen.add(tuple((run_dir / ".hydra" / "overrides.yaml").read_text().split()))
        assert list((sweep_dir / ".submitit").glob("*/*_log.out")), "submitit's job logs are missing"
    assert len(seen) == 4, "the four jobs must have four different override sets"
    assert "4 of 4 jobs finished" in result.stdout

    # The analysis side reads the same sweep directory: one row per job.
    table = subprocess.run(
        [sys.executable, "-m", "tmexp.compare", str(sweep_dir), "--sweep"],
        cwd=REPO,
        env=app_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if line.startswith("| ") and " finished " in line]
    assert len(rows) == 4 and any("btr.use_munchausen=False" in row and "seed=1" in row for row in rows)


def test_failing_job_is_reported_with_its_log_and_fails_the_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(TOY_APP, sweep_dir, LOCAL + ["fail_at_step=-1,3"])
    assert result.returncode != 0

    assert job_status(sweep_dir / "0")["status"] == "finished"  # the other job's results stay
    assert scalar_steps(sweep_dir / "0") == list(range(10, 101, 10))
    failed = job_status(sweep_dir / "1")
    assert failed["status"] == "failed" and "toy failure at step 3" in failed["error"]

    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("#1"))
    assert "FAILED" in line and "fail_at_step=3" in line
    log_lines = [line.split("log: ", 1)[1] for line in result.stdout.splitlines() if "log: " in line]
    err_logs = [p for p in log_lines if p.endswith("_log.err")]
    assert err_logs, result.stdout
    assert "toy failure at step 3" in open(err_logs[0]).read()
    assert "1 of 2 jobs finished, 1 did not" in result.stdout


def test_signalled_local_job_is_restarted_and_resumes(tmp_path):
    sweep_dir, ready = tmp_path / "sweep", tmp_path / "ready.json"
    proc = start_sweep(
        TOY_APP, sweep_dir, LOCAL + ["steps=40", "step_seconds=0.1", f"ready_file={ready}"], tmp_path / "sweep.log"
    )
    try:
        job = wait_for_json(ready, timeout=60, proc=proc)
        os.kill(job["pid"], signal.SIGUSR2)  # what submitit's local executor sends at its time limit
        assert proc.wait(timeout=120) == 0, (tmp_path / "sweep.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    status = job_status(sweep_dir / "0")
    assert status["status"] == "finished" and status["attempts"] == 2
    assert 0 < status["stopped_at_frames"] < status["frames"] == 400
    steps = scalar_steps(sweep_dir / "0")
    assert steps == sorted(set(steps)) == list(range(10, 401, 10)), "TensorBoard steps duplicated or lost"
    assert len(list((sweep_dir / "0" / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_plain_run_sigterm_saves_and_the_same_command_resumes(tmp_path):
    run_dir, ready = tmp_path / "run", tmp_path / "ready.json"
    command = [sys.executable, "-m", TOY_APP, f"hydra.run.dir={run_dir}", "steps=30", "step_seconds=0.1"]
    proc = subprocess.Popen(
        command + [f"ready_file={ready}"],
        cwd=REPO,
        env=app_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_json(ready, timeout=60, proc=proc)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "Traceback" not in output
    stopped = job_status(run_dir)
    assert stopped["status"] == "preempted" and stopped["frames"] < 300

    again = subprocess.run(command, cwd=REPO, env=app_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    status = job_status(run_dir)
    assert status["status"] == "finished" and status["attempts"] == 2 and status["frames"] == 300
    steps = scalar_steps(run_dir)
    assert steps == sorted(set(steps)) == list(range(10, 301, 10))


def test_expected_jobs_follow_hydras_job_numbers():
    jobs = expected_jobs(["btr.use_munchausen=true,false", "seed=0,1", "run_name=x"])
    assert jobs == [  # Hydra's sweep spells booleans True/False
        ["btr.use_munchausen=True", "seed=0", "run_name=x"],
        ["btr.use_munchausen=True", "seed=1", "run_name=x"],
        ["btr.use_munchausen=False", "seed=0", "run_name=x"],
        ["btr.use_munchausen=False", "seed=1", "run_name=x"],
    ]
    # An experiment file's hydra.sweeper.params come first, as Hydra's basic sweeper orders them.
    assert expected_jobs(["seed=0,1"], {"ablation": "none,no_noisy"})[1] == ["ablation=none", "seed=1"]


def _fake_job(sweep_dir, num, status, job_id=None, **extra):
    run_dir = sweep_dir / str(num)
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {num}\n    id: '{job_id or num}'\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text(f"- seed={num}\n")
    if status is not None:
        rundir.write_status(run_dir, status, frames=5, **extra)
    return run_dir


def test_summary_judges_jobs_by_their_own_status(tmp_path):
    _fake_job(tmp_path, 0, "finished")
    _fake_job(tmp_path, 1, "running", job_id="77_1")  # killed without a word: SLURM may still say COMPLETED
    _fake_job(tmp_path, 2, "failed", error="ValueError: bad")
    _fake_job(tmp_path, 3, None)
    logs = tmp_path / ".submitit" / "77_1"
    logs.mkdir(parents=True)
    (logs / "77_1_0_log.err").write_text("Killed\n")
    array_task = tmp_path / ".submitit" / "77_4"  # job 4 died before Hydra wrote its files: found by array index
    array_task.mkdir()
    (array_task / "77_4_0_log.err").write_text("ImportError\n")
    expected = [[f"seed={n}"] for n in range(5)]  # job 4 never got a directory

    results = collect(tmp_path, expected)
    assert [r.status for r in results] == ["finished", "running", "failed", "missing", "missing"]
    assert [r.ok for r in results] == [True, False, False, False, False]
    assert results[1].logs == [logs / "77_1_0_log.err"]
    assert results[4].run_dir is None and results[4].overrides == ["seed=4"]
    assert results[4].logs == [array_task / "77_4_0_log.err"]
    assert results[3].logs == [tmp_path / ".submitit"]  # no log of its own found: the folder that holds them
    text = format_summary(tmp_path, results)
    assert "1 of 5 jobs finished, 4 did not" in text
    assert "ValueError: bad" in text and str(logs / "77_1_0_log.err") in text


def test_sweep_benchmark_reports_launch_overhead_of_every_job(monkeypatch, capsys):
    from sweep_harness import CONF_DIR

    from tmexp.bench.sweep import main as bench_main

    monkeypatch.setenv("PYTHONPATH", app_env()["PYTHONPATH"])
    code = bench_main(
        ["--jobs", "2", "--json", "--module", TOY_APP, f"hydra.searchpath=[file://{CONF_DIR}]", "steps=3"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for mode in ("sweep", "sequential"):
        assert len(result[mode]["per_job_overhead_s"]) == 2 and not result[mode]["missing_first_step_at"]
        assert all(0 < o < result[mode]["wall_s"] for o in result[mode]["per_job_overhead_s"])


@pytest.mark.slow  # four training processes share the machine's cores: about 50 s on two
def test_training_app_smoke_sweep_2x2_on_the_local_launcher(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_sweep(
        REAL_APP, sweep_dir, LOCAL + ["+experiment=smoke", "btr.use_munchausen=true,false", "seed=0,1"], timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for num in range(4):
        run_dir = sweep_dir / str(num)
        status = job_status(run_dir)
        assert status["status"] == "finished" and status["frames"] >= 400
        steps = scalar_steps(run_dir)
        assert steps and steps == sorted(steps) and steps[-1] <= status["frames"]
    munchausen = {
        (sweep_dir / str(n) / "config_resolved.yaml").read_text().count("use_munchausen: true") for n in range(4)
    }
    assert munchausen == {0, 1}, "the sweep must run both values of btr.use_munchausen"


# ----- composing many jobs fast, and frozen configs (tmexp/launch/freeze.py) -------------------------------------
def _full(overrides):
    from omegaconf import OmegaConf, open_dict

    from tmexp.compose import compose_config

    composed = compose_config(overrides, return_hydra_config=True)
    with open_dict(composed):
        del composed["hydra"]
    return OmegaConf.to_container(composed, resolve=True, enum_to_str=True)


def test_fast_composition_gives_what_hydra_composes_for_every_kind_of_override():
    from tmexp.launch import freeze

    jobs = [
        [
            "+experiment=A01_btr_ablation",
            f"ablation={arm}",
            f"seed={seed}",
            f"btr.munchausen_alpha={alpha}",
            f"btr.use_munchausen={flag}",
            "run_name=x",
        ]
        for arm in ("none", "no_noisy")
        for seed in (0, 7)
        for alpha in (0.5, 0.9)
        for flag in ("True", "false")
    ]
    composed = list(freeze.composed_jobs(jobs))
    assert len(composed) == len(jobs)
    for job, (_, obj, key) in zip(jobs, composed):
        full = _full(job)
        assert key == freeze.check_key(full)  # the fast path's config is Hydra's, value for value
        assert obj.seed == full["seed"] and obj.btr.use_munchausen == full["btr"]["use_munchausen"]
    # two choices of config groups: composed in full twice each (the group, and Hydra's check of its first job)
    composer = freeze.JobComposer(
        lambda o: __import__("tmexp.compose").compose.compose_config(list(o), return_hydra_config=True),
        lambda name: name == "ablation",
    )
    for job in jobs:
        composer.job(job)
    assert (composer.fast, composer.exact, len(composer.groups)) == (len(jobs), 0, 2)


def test_fast_composition_refuses_what_hydra_refuses():
    from tmexp.launch import freeze
    from tmexp.launch.precheck import precheck
    from tmexp.validation import ConfigError

    composer = freeze.JobComposer(
        lambda o: __import__("tmexp.compose").compose.compose_config(list(o), return_hydra_config=True),
        lambda name: False,
    )
    composer.job(["seed=1"])
    with pytest.raises(Exception, match="seed"):
        composer.job(["seed=abc"])
    with pytest.raises(ConfigError, match="seed"):
        precheck(["--multirun", "seed=0,abc"])


def test_the_checks_never_read_the_seed():
    """freeze.check_key leaves the seed out: jobs that differ only in it are checked once."""
    import inspect

    from tmexp import validation

    assert "seed" not in inspect.getsource(validation)


def test_a_job_runs_its_frozen_config_and_says_what_changed(tmp_path, caplog):
    import logging

    import yaml
    from omegaconf import OmegaConf

    from tmexp.launch import freeze
    from tmexp.launch.slurm_launcher import Ledger

    sweep_dir = tmp_path / "sweep"
    composer = freeze.JobComposer(
        lambda o: __import__("tmexp.compose").compose.compose_config(list(o), return_hydra_config=True),
        lambda name: False,
    )
    code_id = freeze.freeze_jobs(None, sweep_dir, {0: ["seed=3"], 1: ["seed=4"]}, composer)
    Ledger(sweep_dir).record({0: "7_0", 1: "7_1"}, {0: ["seed=3"], 1: ["seed=4"]}, code_id)
    assert yaml.safe_load(freeze.frozen_path(sweep_dir, 1).read_text())["seed"] == 4

    now = OmegaConf.create(_full(["seed=3", "training.batch_size=32"]))  # the config files changed since
    with caplog.at_level(logging.INFO, logger="tmexp.launch.freeze"):
        frozen = freeze.load_frozen(sweep_dir, 0, now)
    assert frozen["seed"] == 3 and frozen["training"]["batch_size"] != 32
    assert "runs the config frozen at submission" in caplog.text
    assert "the config files now give other values for: training.batch_size" in caplog.text
    assert freeze.code_drift(sweep_dir, 0) is None  # the same checkout

    recorded = sweep_dir / ".frozen" / "code" / f"{code_id}.json"
    state = json.loads(recorded.read_text())
    recorded.write_text(json.dumps({**state, "commit": "0" * 40}))
    drift = freeze.code_drift(sweep_dir, 0)
    assert "the checkout changed since this job was submitted (commit 000000000000 ->" in drift
    assert freeze.load_frozen(sweep_dir, 5) is None  # a job that was never frozen (not a SLURM sweep)
