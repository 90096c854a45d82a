"""Searches with hydra/sweeper=optuna: trials return their objective, a study continues in its sweep directory,
failed runs are failed trials, and mistakes are one line before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from torch.utils.tensorboard import SummaryWriter

from tmexp import rundir
from tmexp.config import Objective
from tmexp.core import metrics
from tmexp.launch import objective
from tmexp.train import precheck
from tmexp.validation import ConfigError

REPO = Path(__file__).resolve().parents[1]
SEARCH = ["--multirun", "hydra/sweeper=optuna", "+experiment=smoke", "training.max_frames=200"]


def run_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tmexp.train", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def load(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="smoke", storage=f"sqlite:///{sweep_dir}/optuna.db")


def test_a_study_finishes_reports_its_best_trial_and_a_rerun_continues_it(tmp_path):
    sweep_dir = tmp_path / "search"
    command = [*SEARCH, "objective=furthest_race", "btr.use_munchausen=true",
               "btr.munchausen_alpha=interval(0.5, 0.99)", "hydra.sweeper.sampler.seed=0",
               f"hydra.sweep.dir={sweep_dir}"]
    first = run_cli(command + ["hydra.sweeper.n_trials=4"])
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    study = load(sweep_dir)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE]  # furthest_race is a distance
    for trial in study.trials:  # trial N ran in job directory N and returned the metres its status.json records
        recorded = rundir.read_status(sweep_dir / str(trial.number))["objective"]
        assert recorded["name"] == "furthest_race" and recorded["value"] == pytest.approx(trial.value)
        assert any(o.startswith("btr.munchausen_alpha=") for o in rundir.read_overrides(sweep_dir / str(trial.number)))
    best = max(study.trials, key=lambda t: t.value)
    assert f"best trial: #{best.number}, furthest_race {best.value:.6g} m" in first.stdout
    overrides_line = first.stdout.split(f"best trial: #{best.number}", 1)[1].splitlines()[1]
    assert f"btr.munchausen_alpha={best.params['btr.munchausen_alpha']}" in overrides_line
    assert sum(line.startswith("job #") for line in first.stdout.splitlines()) == 4  # one line per job as it ends
    first_overrides = {n: rundir.read_overrides(sweep_dir / str(n)) for n in range(4)}

    second = run_cli(command + ["hydra.sweeper.n_trials=2"])
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    study = load(sweep_dir)
    assert len(study.trials) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert sorted(p.name for p in sweep_dir.glob("*.db")) == ["optuna.db"]
    # the new trials got new job directories; the first four kept theirs
    assert {n: rundir.read_overrides(sweep_dir / str(n)) for n in range(4)} == first_overrides
    assert all(rundir.read_status(sweep_dir / str(n))["status"] == "finished" for n in (4, 5))
    assert "6 trials (6 complete)" in second.stdout


def test_a_failed_run_is_a_failed_trial_and_the_study_goes_on(tmp_path):
    """env=tmi with a launch command that exits fails at start; env=sim trains. The grid sampler draws both."""
    sweep_dir = tmp_path / "search"
    result = run_cli([*SEARCH, "hydra/sweeper/sampler=grid", "env=choice(sim, tmi)",
                      "env.tmi.launch_command='false {port}'", "hydra.sweeper.n_trials=2",
                      f"hydra.sweep.dir={sweep_dir}"])
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]  # a job did not finish
    study = load(sweep_dir)
    states = {t.params["env"]: t.state for t in study.trials}
    assert states == {"sim": optuna.trial.TrialState.COMPLETE, "tmi": optuna.trial.TrialState.FAIL}
    tmi_job = next(t.number for t in study.trials if t.params["env"] == "tmi")
    status = rundir.read_status(sweep_dir / str(tmi_job))
    assert status["status"] == "failed" and "GameUnavailable" in status["error"]
    assert "1 of 2 jobs finished, 1 did not" in result.stdout
    assert "2 trials (1 complete, 1 fail)" in result.stdout and "best trial: #" in result.stdout


def test_a_run_without_a_finished_race_returns_the_cutoff_and_says_so(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(["+experiment=smoke", "training.max_frames=200", f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    recorded = rundir.read_status(run_dir)["objective"]
    assert recorded == {"name": "best_time", "value": 300.0, "unit": "s",
                        "note": "no race finished: 300 s, the race cutoff"}
    assert "objective: best_time 300 s (no race finished" in result.stdout + result.stderr


# ----- objective values from logs ---------------------------------------------------------------------------------
def write_run(run_dir: Path, scalars: list[tuple[str, float, int]]) -> Path:
    writer = SummaryWriter(str(rundir.RunDir(run_dir).tensorboard))
    for tag, value, step in scalars:
        writer.add_scalar(tag, value, step)
    writer.close()
    return run_dir


def test_objectives_read_the_runs_own_logs(tmp_path):
    run = write_run(tmp_path / "run", [
        (metrics.alltime_min_ms("A01"), 300000, 10), (metrics.alltime_min_ms("A01"), 31250, 20),
        (metrics.eval_race_time("A01"), 300.0, 15), (metrics.eval_race_time("A01"), 33.5, 25),
        (metrics.eval_race_progress("A01"), 412.0, 15), (metrics.explo_race_progress("A01"), 650.5, 18),
    ])
    assert objective.measure(run, "best_time", "A01").value == pytest.approx(31.25)
    assert objective.measure(run, "best_eval_time", "A01").value == pytest.approx(33.5)
    assert objective.measure(run, "furthest_eval", "A01").value == pytest.approx(412.0)
    assert objective.measure(run, "furthest_race", "A01").value == pytest.approx(650.5)
    no_robust = objective.measure(run, "robust_eval_time", "A01")  # no robust eval time logged: the cutoff
    assert no_robust.value == 300.0 and no_robust.note.startswith("no eval race finished")
    other_map = objective.measure(run, "furthest_eval", "B02")
    assert other_map.value == 0.0 and other_map.note.startswith("no eval race played")


def test_a_run_without_event_files_returns_the_no_data_value(tmp_path):
    (tmp_path / "run").mkdir()
    assert objective.measure(tmp_path / "run", "best_time", "A01").value == metrics.RACE_CUTOFF_S
    assert objective.measure(tmp_path / "run", "furthest_race", "A01").value == 0.0


def test_every_objective_of_the_schema_is_defined_with_its_direction():
    assert set(objective.OBJECTIVES) == {o.value for o in Objective}
    assert {n: objective.direction(n) for n in ("best_time", "furthest_eval")} == {"best_time": "minimize",
                                                                                  "furthest_eval": "maximize"}


# ----- mistakes: one line, before anything starts -------------------------------------------------------------------
ALPHA = "btr.munchausen_alpha=interval(0.5, 0.99)"


@pytest.mark.parametrize("overrides, must_contain", [
    (["objective=fastest", ALPHA], "objective is 'fastest': choose one of best_time, best_eval_time"),
    (["hydra.sweeper.n_trials=0", ALPHA], "hydra.sweeper.n_trials is 0"),
    (["hydra.sweeper.n_jobs=0", ALPHA], "hydra.sweeper.n_jobs is 0"),
    ([], "has nothing to search"),
    (["hydra.sweeper.direction=maximize", ALPHA], "hydra.sweeper.direction is maximize but objective best_time is "
                                                  "minimized"),
    (["objective=choice(best_time, furthest_eval)", ALPHA], "objective is what the search optimises"),
    (["btr.munchausen_alpha=interval(0.5, 1.5)"], "btr.munchausen_alpha"),  # a candidate value out of range
    (["nn.iqn_n=range(7, 9)"], "nn.iqn_n"),  # 7 is odd
])
def test_search_mistakes_are_one_line(overrides, must_contain, tmp_path):
    with pytest.raises(ConfigError) as info:
        precheck(["--multirun", "hydra/sweeper=optuna", "+experiment=smoke", *overrides,
                  f"hydra.sweep.dir={tmp_path / 's'}"])
    assert must_contain in str(info.value) and "\n" not in str(info.value)


def test_an_interval_without_the_optuna_sweeper_says_which_sweeper(tmp_path):
    with pytest.raises(ConfigError, match="add hydra/sweeper=optuna"):
        precheck(["--multirun", "+experiment=smoke", ALPHA, f"hydra.sweep.dir={tmp_path / 's'}"])


def test_a_study_is_continued_only_with_its_own_objective(tmp_path):
    sweep_dir = tmp_path / "s"
    sweep_dir.mkdir()
    study = optuna.create_study(study_name="smoke", storage=f"sqlite:///{sweep_dir}/optuna.db")
    study.set_user_attr("tmexp_objective", "best_time")
    common = ["--multirun", "hydra/sweeper=optuna", "+experiment=smoke", ALPHA, f"hydra.sweep.dir={sweep_dir}"]
    assert precheck(common) == 2  # the same objective: the interval's two ends are composed
    with pytest.raises(ConfigError, match="optimises objective best_time, not best_eval_time"):
        precheck(common + ["objective=best_eval_time"])
    with pytest.raises(ConfigError, match="is minimized, but objective furthest_eval is maximized"):
        optuna.delete_study(study_name="smoke", storage=f"sqlite:///{sweep_dir}/optuna.db")
        optuna.create_study(study_name="smoke", storage=f"sqlite:///{sweep_dir}/optuna.db")
        precheck(common + ["objective=furthest_eval"])


def test_the_cli_refuses_zero_trials_with_exit_code_2_and_no_sweep_directory(tmp_path):
    sweep_dir = tmp_path / "s"
    result = run_cli(["--multirun", "hydra/sweeper=optuna", "+experiment=smoke", ALPHA, "hydra.sweeper.n_trials=0",
                      f"hydra.sweep.dir={sweep_dir}"], timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tmexp.train: error: hydra.sweeper.n_trials is 0")
    assert not sweep_dir.exists()


def test_the_readme_searches_compose_before_they_start(tmp_path):
    from test_examples import commands

    searches = [argv for argv in commands((REPO / "README.md").read_text(), "tmexp.train")
                if "hydra/sweeper=optuna" in argv]
    assert len(searches) >= 2
    for argv in searches:
        assert precheck([a for a in argv if not a.startswith("hydra.sweep.dir=")]
                        + [f"hydra.sweep.dir={tmp_path / 's'}"]) >= 2
