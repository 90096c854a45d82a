"""Searches (hydra/sweeper=optuna) through hydra/launcher=slurm on a real SLURM: each trial is its own SLURM job, a
trial that ends frees its worker at once, a rerun continues the study and its job numbers and asks again the trials
a killed sweep left running, and a pruned run stops cleanly through the shared filesystem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from sweep_harness import REPO, SLURM_TEST_RESOURCES, app_env, requires_slurm

from tmexp import rundir
from tmexp.launch import search

pytestmark = [pytest.mark.slurm, requires_slurm]

SLURM = ["hydra/launcher=slurm", *SLURM_TEST_RESOURCES]
STATES = optuna.trial.TrialState


def run_search(app: str, sweep_dir: Path, overrides: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        app,
        "--multirun",
        "hydra/sweeper=optuna",
        f"hydra.sweep.dir={sweep_dir}",
        *SLURM,
        *overrides,
    ]
    if app != "tmexp.train":
        command += ["x=interval(0.0, 1.0)", f"hydra.searchpath=[file://{REPO / 'conf'}]"]
    return subprocess.run(command, cwd=REPO, env=app_env(), capture_output=True, text=True, timeout=timeout)


def load(sweep_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=search.storage_for(None, sweep_dir)[0])


def trial_record(sweep_dir: Path, job: int) -> dict:
    return json.loads((sweep_dir / str(job) / "trial.json").read_text())


def test_slurm_trials_free_their_worker_at_once_and_a_rerun_continues_the_study(tmp_path):
    """Trial 0 runs until trial 3 has ended: only a sweeper that starts each trial as soon as a worker frees gets
    there. Then a sweep killed while trial 4 ran (left RUNNING) is run again: trial 4 failed and asked again."""
    sweep_dir = tmp_path / "search"
    common = ["tmexp.bench.search_trial", sweep_dir]
    first = run_search(
        *common,
        [
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=2",
            "seconds=[0]",
            "hold_job=0",
            "hold_until_job=3",
            "hold_timeout_s=300",
            "hydra.sweeper.poll_seconds=0.5",
        ],
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert trial_record(sweep_dir, 0)["saw_other_end"] is True
    assert [t.state for t in load(sweep_dir, "bench_search").trials] == [STATES.COMPLETE] * 4
    assert len([p for p in (sweep_dir / ".submitit").iterdir() if p.is_dir()]) == 4  # one SLURM job per trial

    killed = load(sweep_dir, "bench_search").ask(search.search_space(["x=interval(0.0, 1.0)"], {})[0])
    second = run_search(*common, ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "seconds=[0]"])
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    trials = load(sweep_dir, "bench_search").trials
    assert [t.state for t in trials] == [STATES.COMPLETE] * 4 + [STATES.FAIL] + [STATES.COMPLETE] * 2
    assert killed.number == 4 and trials[5].params == trials[4].params
    assert [trial_record(sweep_dir, n)["job"] for n in (5, 6)] == [5, 6]


def test_a_pruned_slurm_run_stops_cleanly(tmp_path):
    from tmexp.core.checkpoint import has_checkpoint

    sweep_dir = tmp_path / "search"
    result = run_search(
        "tmexp.train",
        sweep_dir,
        [
            "+experiment=smoke",
            "training.max_frames=1000000",
            "training.max_minutes=3",
            "objective=furthest_race",
            "seed=choice(0, 1)",
            "hydra.sweeper.n_trials=1",
            "hydra.sweeper.step_seconds=1",
            "hydra.sweeper.prune_after_minutes=0",
            "hydra.sweeper.poll_seconds=0.5",
            "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
            "+hydra.sweeper.pruner.lower=1e9",
        ],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert load(sweep_dir, "smoke").trials[0].state == STATES.PRUNED
    status = rundir.read_status(sweep_dir / "0")
    assert status["status"] == "pruned" and status["frames"] < 1000000 and has_checkpoint(sweep_dir / "0")
    assert "1 of 1 jobs finished (1 pruned)" in result.stdout
