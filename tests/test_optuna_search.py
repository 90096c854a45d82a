"""Searches with hydra/sweeper=optuna (tmexp's sweeper on Optuna >= 4): the search space the plugin's users know,
a study in a journal file that a rerun continues (or refuses in one line), trials that free their worker as soon as
they end, runs that report their objective and stop cleanly when pruned, and one line when Optuna is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from torch.utils.tensorboard import SummaryWriter

from tmexp import rundir
from tmexp.config import Objective
from tmexp.core import metrics
from tmexp.launch import objective, search
from tmexp.launch.summary import JobResult, format_summary
from tmexp.train import precheck
from tmexp.validation import ConfigError

REPO = Path(__file__).resolve().parents[1]
SEARCH = ["--multirun", "hydra/sweeper=optuna", "+experiment=smoke", "training.max_frames=200"]
TRIAL_APP = "tmexp.bench.search_trial"  # a Hydra app whose job N sleeps seconds[N]: scheduling without training


def run_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tmexp.train", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def run_trial_app(sweep_dir: Path, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        TRIAL_APP,
        "--multirun",
        "hydra/sweeper=optuna",
        f"hydra.sweep.dir={sweep_dir}",
        "x=interval(0.0, 1.0)",
        f"hydra.searchpath=[file://{REPO / 'conf'}]",
        *args,
    ]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def load(sweep_dir: Path, name: str = "smoke") -> optuna.Study:
    storage, _ = search.storage_for(None, sweep_dir)
    return optuna.load_study(study_name=name, storage=storage)


def trial_record(sweep_dir: Path, job: int) -> dict:
    return json.loads((sweep_dir / str(job) / "trial.json").read_text())


# ----- the search space ------------------------------------------------------------------------------------------
def test_the_search_space_is_read_as_the_plugin_read_it():
    distributions, fixed = search.search_space(
        [
            "a=interval(0.1, 0.9)",
            "b=tag(log, interval(1e-5, 1e-3))",
            "c=int(interval(1, 8))",
            "d=choice(x, y)",
            "e=range(2, 8, 2)",
            "f=1,2",
            "g=5",
            "hydra.sweeper.n_trials=3",
        ],
        {"params": {"g": "4", "h": "choice(0, 1)"}},
    )
    assert distributions == {
        "h": CategoricalDistribution([0, 1]),  # hydra.sweeper.params first
        "a": FloatDistribution(0.1, 0.9),
        "b": FloatDistribution(1e-5, 1e-3, log=True),
        "c": IntDistribution(1, 8),  # int(...): ints
        "d": CategoricalDistribution(["x", "y"]),
        "e": IntDistribution(2, 8, step=2),  # range: its end included
        "f": CategoricalDistribution([1, 2]),
    }
    assert fixed == ["g=5"]  # the command line's value wins over the params'; Hydra's own overrides are not trials'


def test_without_optuna_naming_the_sweeper_says_what_to_install(tmp_path):
    code = (
        "import sys; sys.modules['optuna'] = None\n"  # what an install without the search extra sees
        "from tmexp.train import cli\n"
        f"cli(['--multirun', 'hydra/sweeper=optuna', '+experiment=smoke', 'seed=choice(0, 1)', "
        f"'hydra.sweep.dir={tmp_path / 's'}'])"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "hydra/sweeper=optuna needs Optuna" in lines[0]
    assert "pip install -e '.[search]'" in lines[0]
    assert not (tmp_path / "s").exists()


# ----- scheduling, storage, continuation ---------------------------------------------------------------------------
def test_a_finished_trial_frees_its_worker_at_once(tmp_path):
    """Two workers, four trials: trial 0 runs until trial 3 has ended, which can only happen if trials 1, 2 and 3
    each started as soon as the one before them ended (a sweeper that waits for a batch never starts trial 3)."""
    sweep_dir = tmp_path / "search"
    result = run_trial_app(
        sweep_dir,
        [
            "hydra/launcher=submitit_local",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=2",
            "seconds=[0]",
            "hold_job=0",
            "hold_until_job=3",
            "hold_timeout_s=90",
            "hydra.sweeper.poll_seconds=0.2",
        ],
        timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert trial_record(sweep_dir, 0)["saw_other_end"] is True
    study = load(sweep_dir, "bench_search")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert (sweep_dir / "optuna.journal").is_file() and not list(sweep_dir.glob("*.db"))
    for trial in study.trials:  # trial N ran as job N and returned its x
        assert trial.value == pytest.approx(trial.params["x"])
        assert trial_record(sweep_dir, trial.number)["job"] == trial.number


def test_a_rerun_continues_the_study_its_job_numbers_and_reasks_trials_a_killed_sweep_left_running(tmp_path):
    sweep_dir = tmp_path / "search"
    common = ["hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2", "seconds=[0]", "hydra.sweeper.sampler.seed=0"]
    first = run_trial_app(sweep_dir, [*common, "hydra.sweeper.n_trials=3"])
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    before = {n: trial_record(sweep_dir, n) for n in range(3)}

    study = load(sweep_dir, "bench_search")  # a sweep killed while trial 3 ran
    killed = study.ask(search.search_space(["x=interval(0.0, 1.0)"], {})[0])
    assert killed.number == 3

    second = run_trial_app(sweep_dir, [*common, "hydra.sweeper.n_trials=2"])
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    trials = load(sweep_dir, "bench_search").trials
    states = optuna.trial.TrialState
    assert [t.state for t in trials] == [states.COMPLETE] * 3 + [states.FAIL] + [states.COMPLETE] * 2
    assert trials[4].params == trials[3].params and trials[4].user_attrs["retry_of"] == 3  # asked again first
    assert "left running by an earlier sweep" in second.stderr + second.stdout
    assert {n: trial_record(sweep_dir, n) for n in range(3)} == before  # the first trials' jobs untouched
    assert [trial_record(sweep_dir, n)["job"] for n in (4, 5)] == [4, 5]  # new trials, new job numbers


@pytest.mark.slow  # a smoke run until its first reports, then another
def test_a_search_stopped_by_ctrl_c_leaves_its_trial_to_be_failed_and_asked_again(tmp_path):
    """Ctrl-C (SIGINT) while a trial trains in-process: the run saves a checkpoint and stops, the sweep exits, the
    study still says RUNNING; the same command again marks that trial failed and runs its parameters first."""
    import signal
    import time

    sweep_dir = tmp_path / "search"
    command = [
        "--multirun",
        "hydra/sweeper=optuna",
        "+experiment=smoke",
        "seed=choice(0, 1, 2, 3)",
        "hydra.sweeper.sampler.seed=0",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.n_trials=1",
    ]
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen(
            [sys.executable, "-m", "tmexp.train", *command, "training.max_frames=1000000", "training.max_minutes=3"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        reports = sweep_dir / search.TRIALS_DIR / "0.jsonl"
        deadline = time.monotonic() + 240
        while not reports.is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert reports.is_file(), log_path.read_text()[-3000:]  # the run trains and has reported once
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=120) != 0
    from tmexp.core.checkpoint import has_checkpoint

    assert load(sweep_dir).trials[0].state == optuna.trial.TrialState.RUNNING
    assert rundir.read_status(sweep_dir / "0")["status"] == "stopped" and has_checkpoint(sweep_dir / "0")

    second = run_cli([*command, "training.max_frames=200"])
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    trials = load(sweep_dir).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"] and trials[1].params == trials[0].params
    assert rundir.read_status(sweep_dir / "1")["status"] == "finished"
    assert "1 of 1 jobs finished" in second.stdout  # this command's job; the stopped one is trial 0's FAIL line
    assert "2 trials (1 complete, 1 fail)" in second.stdout


@pytest.mark.slow  # three smoke runs, one after another
def test_a_study_finishes_reports_its_best_trial_and_a_rerun_continues_it(tmp_path):
    sweep_dir = tmp_path / "search"
    command = [
        *SEARCH,
        "objective=furthest_race",
        "btr.use_munchausen=true",
        "btr.munchausen_alpha=interval(0.5, 0.99)",
        "hydra.sweeper.sampler.seed=0",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    first = run_cli(command + ["hydra.sweeper.n_trials=2"])
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    study = load(sweep_dir)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE]  # furthest_race is a distance
    for trial in study.trials:  # trial N ran in job directory N and returned the metres its status.json records
        recorded = rundir.read_status(sweep_dir / str(trial.number))["objective"]
        assert recorded["name"] == "furthest_race" and recorded["value"] == pytest.approx(trial.value)
        assert any(o.startswith("btr.munchausen_alpha=") for o in rundir.read_overrides(sweep_dir / str(trial.number)))
    best = max(study.trials, key=lambda t: t.value)
    assert f"best trial: #{best.number}, furthest_race {best.value:.6g} m" in first.stdout
    overrides_line = first.stdout.split(f"best trial: #{best.number}", 1)[1].splitlines()[1]
    assert f"btr.munchausen_alpha={best.params['btr.munchausen_alpha']}" in overrides_line
    assert sum(line.startswith("job #") for line in first.stdout.splitlines()) == 2  # one line per job as it ends
    first_overrides = {n: rundir.read_overrides(sweep_dir / str(n)) for n in range(2)}

    second = run_cli(command + ["hydra.sweeper.n_trials=1"])
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    study = load(sweep_dir)
    assert len(study.trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert {n: rundir.read_overrides(sweep_dir / str(n)) for n in range(2)} == first_overrides
    assert rundir.read_status(sweep_dir / "2")["status"] == "finished"
    assert "3 trials (3 complete)" in second.stdout


@pytest.mark.slow
def test_a_failed_run_is_a_failed_trial_and_the_study_goes_on(tmp_path):
    """env=tmi with a launch command that exits fails at start; env=sim trains. The grid sampler draws both."""
    sweep_dir = tmp_path / "search"
    result = run_cli(
        [
            *SEARCH,
            "hydra/sweeper/sampler=grid",
            "env=choice(sim, tmi)",
            "env.tmi.launch_command='false {port}'",
            "hydra.sweeper.n_trials=2",
            f"hydra.sweep.dir={sweep_dir}",
        ]
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]  # a job did not finish
    study = load(sweep_dir)
    states = {t.params["env"]: t.state for t in study.trials}
    assert states == {"sim": optuna.trial.TrialState.COMPLETE, "tmi": optuna.trial.TrialState.FAIL}
    tmi_job = next(t.number for t in study.trials if t.params["env"] == "tmi")
    status = rundir.read_status(sweep_dir / str(tmi_job))
    assert status["status"] == "failed" and "GameUnavailable" in status["error"]
    assert "1 of 2 jobs finished, 1 did not" in result.stdout
    assert "2 trials (1 complete, 1 fail)" in result.stdout and "best trial: #" in result.stdout


# ----- pruning ------------------------------------------------------------------------------------------------------
class _NoLauncher:
    pass


def _scheduler(study, sweep_dir: Path, **settings) -> search._Scheduler:
    settings = {"n_trials": 1, "n_jobs": 1, "step_seconds": 1.0, "prune_after_minutes": 0.0, **settings}
    (sweep_dir / search.TRIALS_DIR).mkdir(parents=True, exist_ok=True)
    return search._Scheduler(optuna, study, settings, _NoLauncher(), sweep_dir, {}, [])


def _report(item: search.Running, *reports: tuple[float, float]) -> None:
    with open(item.reports, "a") as out:
        for seconds, value in reports:
            out.write(json.dumps({"seconds": seconds, "frames": 0, "value": value}) + "\n")


def test_reports_become_one_intermediate_value_per_step_and_the_pruner_stops_a_worse_trial(tmp_path):
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
    for value in (10.0, 12.0):  # two finished trials: values 10 and 12 at steps 0, 1, 2
        trial = study.ask()
        for step in range(3):
            trial.report(value, step)
        study.tell(trial, value)
    scheduler = _scheduler(study, tmp_path)
    worse, better = scheduler._ask(), scheduler._ask()
    _report(worse, (0.5, 50.0), (0.9, 40.0), (1.2, 45.0))  # two reports within step 0: the first one counts
    _report(better, (0.5, 5.0), (1.5, 4.0))
    scheduler._follow(worse)
    scheduler._follow(better)
    assert study.trials[worse.trial.number].intermediate_values == {0: 50.0, 1: 45.0}
    assert worse.prune_requested and worse.prune_file.is_file()  # the run's signal to stop
    assert not better.prune_requested and not better.prune_file.exists()


def test_no_trial_is_pruned_before_its_minimum_training_time(tmp_path):
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    scheduler = _scheduler(study, tmp_path, prune_after_minutes=0.05)  # 3 s
    item = scheduler._ask()
    _report(item, (1.0, 99.0), (2.5, 99.0))
    scheduler._follow(item)
    assert not item.prune_requested
    _report(item, (3.5, 99.0))
    scheduler._follow(item)
    assert item.prune_requested


def _job_return(status, value):
    from hydra.core.utils import JobReturn

    job_return = JobReturn()
    job_return.status = status
    job_return._return_value = value  # what the launcher hands back: the value, or the job's exception
    return job_return


def test_an_ended_trial_is_told_its_value_its_failure_or_its_pruning(tmp_path):
    from concurrent.futures import Future

    from hydra.core.utils import JobStatus

    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    scheduler = _scheduler(study, tmp_path)
    ended, failed, pruned = scheduler._ask(), scheduler._ask(), scheduler._ask()
    _report(ended, (1.0, 99.0))  # its last report arrives with its end: recorded, but an ended run is no prune
    _report(pruned, (1.0, 99.0))
    scheduler._follow(pruned)
    for item, job_return in (
        (ended, _job_return(JobStatus.COMPLETED, 99.0)),
        (failed, _job_return(JobStatus.FAILED, RuntimeError("boom"))),
        (pruned, _job_return(JobStatus.COMPLETED, 99.0)),
    ):
        future = Future()
        future.set_result(job_return)
        scheduler._end(item, future)
    trials = study.trials
    states = optuna.trial.TrialState
    assert [t.state for t in trials] == [states.COMPLETE, states.FAIL, states.PRUNED]
    assert trials[0].value == 99.0 and trials[0].intermediate_values == {1: 99.0}
    assert not ended.prune_file.exists() and pruned.prune_file.is_file()
    assert (scheduler.ended, scheduler.failed) == (3, 1)


@pytest.mark.slow  # a smoke run until its first reports
def test_a_pruned_run_stops_cleanly_and_the_summary_counts_it(tmp_path):
    """A threshold no run reaches prunes the trial at its first report: the run ends "pruned", with a final
    checkpoint, its logs and its objective; the study says pruned; the summary counts it as a result."""
    from tmexp.core.checkpoint import has_checkpoint

    sweep_dir = tmp_path / "search"
    result = run_cli(
        [
            "--multirun",
            "hydra/sweeper=optuna",
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
            f"hydra.sweep.dir={sweep_dir}",
        ]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trial = load(sweep_dir).trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values
    status = rundir.read_status(sweep_dir / "0")
    assert status["status"] == "pruned" and status["objective"]["name"] == "furthest_race"
    assert status["frames"] < 1000000 and has_checkpoint(sweep_dir / "0")
    assert list((sweep_dir / "0" / "tensorboard").glob("events.out.tfevents.*"))
    assert "1 of 1 jobs finished (1 pruned)" in result.stdout and "1 trials (1 pruned)" in result.stdout


def test_the_summary_counts_pruned_runs_as_results():
    results = [
        JobResult(num=0, overrides=["seed=0"], status="pruned", run_dir=None),
        JobResult(num=1, overrides=["seed=1"], status="finished", run_dir=None),
    ]
    text = format_summary("s", results)
    assert text.splitlines()[0] == "sweep s: 2 of 2 jobs finished (1 pruned)"
    assert results[0].outcome == "pruned" and results[1].outcome == "finished"


def test_a_trial_reporter_appends_its_objective_and_sees_the_prune_request(tmp_path):
    run_dir = write_run(tmp_path / "run", [(metrics.alltime_min_ms("A01"), 31250, 20)])
    reporter = search.TrialReporter(run_dir, tmp_path, 7, "best_time", "A01", every_s=10.0, check_every_s=0.0)
    (tmp_path / search.TRIALS_DIR).mkdir()

    class Counters:
        training_seconds, frames = 4.0, 100

    reporter.update({}, Counters, "")  # before the first interval: nothing
    Counters.training_seconds = 10.5
    reporter.update({}, Counters, "")
    lines = [json.loads(line) for line in reporter.reports.read_text().splitlines()]
    assert lines == [{"seconds": 10.5, "frames": 100, "value": pytest.approx(31.25)}]
    assert not reporter.prune_requested()
    reporter.prune_file.write_text("{}")
    assert reporter.prune_requested()


def test_the_tiny_search_of_the_worked_example_composes(tmp_path):
    """conf/experiment/search_A01_cpu.yaml: every candidate value of its search space composes and checks."""
    assert precheck(["--multirun", "+experiment=search_A01_cpu", f"hydra.sweep.dir={tmp_path / 's'}"]) >= 8


# ----- objective values from logs ---------------------------------------------------------------------------------
def test_a_run_without_a_finished_race_returns_the_cutoff_and_says_so(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(["+experiment=smoke", "training.max_frames=200", f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    recorded = rundir.read_status(run_dir)["objective"]
    assert recorded == {
        "name": "best_time",
        "value": 300.0,
        "unit": "s",
        "note": "no race finished: 300 s, the race cutoff",
    }
    assert "objective: best_time 300 s (no race finished" in result.stdout + result.stderr


def write_run(run_dir: Path, scalars: list[tuple[str, float, int]]) -> Path:
    writer = SummaryWriter(str(rundir.RunDir(run_dir).tensorboard))
    for tag, value, step in scalars:
        writer.add_scalar(tag, value, step)
    writer.close()
    return run_dir


def test_objectives_read_the_runs_own_logs(tmp_path):
    run = write_run(
        tmp_path / "run",
        [
            (metrics.alltime_min_ms("A01"), 300000, 10),
            (metrics.alltime_min_ms("A01"), 31250, 20),
            (metrics.eval_race_time("A01"), 300.0, 15),
            (metrics.eval_race_time("A01"), 33.5, 25),
            (metrics.eval_race_progress("A01"), 412.0, 15),
            (metrics.explo_race_progress("A01"), 650.5, 18),
        ],
    )
    assert objective.measure(run, "best_time", "A01").value == pytest.approx(31.25)
    assert objective.measure(run, "best_eval_time", "A01").value == pytest.approx(33.5)
    assert objective.measure(run, "furthest_eval", "A01").value == pytest.approx(412.0)
    assert objective.measure(run, "furthest_race", "A01").value == pytest.approx(650.5)
    no_robust = objective.measure(run, "robust_eval_time", "A01")  # no robust eval time logged: the cutoff
    assert no_robust.value == 300.0 and no_robust.note.startswith("no eval race finished")
    other_map = objective.measure(run, "furthest_eval", "B02")
    assert other_map.value == 0.0 and other_map.note.startswith("no eval race played")


def test_a_map_cycles_objective_totals_its_maps_and_names_the_map_without_a_value(tmp_path):
    run = write_run(
        tmp_path / "run",
        [(metrics.alltime_min_ms("A01"), 31250, 20), (metrics.alltime_min_ms("hock"), 300000, 25)],
    )
    both = objective.measure(run, "best_time", ["A01", "hock"])
    assert both.value == pytest.approx(31.25 + metrics.RACE_CUTOFF_S)
    assert both.note.startswith("hock: no race finished") and "A01" not in both.note
    assert objective.measure(run, "best_time", ["A01"]).value == pytest.approx(31.25)


def test_a_run_without_event_files_returns_the_no_data_value(tmp_path):
    (tmp_path / "run").mkdir()
    assert objective.measure(tmp_path / "run", "best_time", "A01").value == metrics.RACE_CUTOFF_S
    assert objective.measure(tmp_path / "run", "furthest_race", "A01").value == 0.0


def test_every_objective_of_the_schema_is_defined_with_its_direction():
    assert set(objective.OBJECTIVES) == {o.value for o in Objective}
    assert {n: objective.direction(n) for n in ("best_time", "furthest_eval")} == {
        "best_time": "minimize",
        "furthest_eval": "maximize",
    }


# ----- mistakes: one line, before anything starts -------------------------------------------------------------------
ALPHA = "btr.munchausen_alpha=interval(0.5, 0.99)"


@pytest.mark.parametrize(
    "overrides, must_contain",
    [
        (["objective=fastest", ALPHA], "objective is 'fastest': choose one of best_time, best_eval_time"),
        (["hydra.sweeper.n_trials=0", ALPHA], "hydra.sweeper.n_trials is 0"),
        (["hydra.sweeper.n_jobs=0", ALPHA], "hydra.sweeper.n_jobs is 0"),
        (["hydra.sweeper.step_seconds=0", ALPHA], "hydra.sweeper.step_seconds is 0"),
        ([], "has nothing to search"),
        (
            ["hydra.sweeper.direction=maximize", ALPHA],
            "hydra.sweeper.direction is maximize but objective best_time is minimized",
        ),
        (["objective=choice(best_time, furthest_eval)", ALPHA], "objective is what the search optimises"),
        (["btr.munchausen_alpha=interval(0.5, 1.5)"], "btr.munchausen_alpha"),  # a candidate value out of range
        (["nn.iqn_n=range(7, 9)"], "nn.iqn_n"),  # 7 is odd
        (["hydra/sweeper/sampler=grid", ALPHA], "sampler=grid cannot search btr.munchausen_alpha over an interval"),
    ],
)
def test_search_mistakes_are_one_line(overrides, must_contain, tmp_path):
    with pytest.raises(ConfigError) as info:
        precheck(
            ["--multirun", "hydra/sweeper=optuna", "+experiment=smoke", *overrides, f"hydra.sweep.dir={tmp_path / 's'}"]
        )
    assert must_contain in str(info.value) and "\n" not in str(info.value)


def test_an_interval_without_the_optuna_sweeper_says_which_sweeper(tmp_path):
    with pytest.raises(ConfigError, match="add hydra/sweeper=optuna"):
        precheck(["--multirun", "+experiment=smoke", ALPHA, f"hydra.sweep.dir={tmp_path / 's'}"])


def _existing_study(sweep_dir: Path, objective_name: str | None, space: list[str], direction: str = "minimize"):
    storage, _ = search.storage_for(None, sweep_dir)
    study = optuna.create_study(study_name="smoke", storage=storage, direction=direction)
    if objective_name is not None:  # None: a study made by hand, without tmexp's record of its objective
        study.set_user_attr(search.OBJECTIVE_ATTR, objective_name)
    study.set_user_attr(search.SPACE_ATTR, search._space_json(search.search_space(space, {})[0]))
    return study


def test_a_study_is_continued_only_with_its_own_objective_direction_and_space(tmp_path):
    sweep_dir = tmp_path / "s"
    _existing_study(sweep_dir, "best_time", [ALPHA])
    common = ["--multirun", "hydra/sweeper=optuna", "+experiment=smoke", f"hydra.sweep.dir={sweep_dir}"]
    assert precheck(common + [ALPHA]) == 2  # the same objective and space: the interval's two ends are composed
    with pytest.raises(ConfigError, match="optimises objective best_time, not best_eval_time"):
        precheck(common + [ALPHA, "objective=best_eval_time"])
    with pytest.raises(
        ConfigError,
        match=r"searched btr.munchausen_alpha as FloatDistribution\(.*low=0.5.*\), this "
        r"command as FloatDistribution\(.*low=0.6",
    ):
        precheck(common + ["btr.munchausen_alpha=interval(0.6, 0.99)"])
    with pytest.raises(ConfigError, match="did not search seed, this command searches it as CategoricalDistribution"):
        precheck(common + [ALPHA, "seed=choice(0, 1)"])
    other = tmp_path / "other"
    _existing_study(other, None, [ALPHA], direction="maximize")
    with pytest.raises(ConfigError, match="is maximized, but this search is minimized"):
        precheck(["--multirun", "hydra/sweeper=optuna", "+experiment=smoke", f"hydra.sweep.dir={other}", ALPHA])


def test_the_cli_refuses_another_search_space_in_one_line_and_changes_nothing(tmp_path):
    sweep_dir = tmp_path / "s"
    _existing_study(sweep_dir, "best_time", [ALPHA])
    before = (sweep_dir / "optuna.journal").read_bytes()
    result = run_cli(
        [
            "--multirun",
            "hydra/sweeper=optuna",
            "+experiment=smoke",
            "nn.iqn_n=choice(8, 16)",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tmexp.train: error: study 'smoke' in ")
    assert (sweep_dir / "optuna.journal").read_bytes() == before


def test_the_cli_refuses_zero_trials_with_exit_code_2_and_no_sweep_directory(tmp_path):
    sweep_dir = tmp_path / "s"
    result = run_cli(
        [
            "--multirun",
            "hydra/sweeper=optuna",
            "+experiment=smoke",
            ALPHA,
            "hydra.sweeper.n_trials=0",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tmexp.train: error: hydra.sweeper.n_trials is 0")
    assert not sweep_dir.exists()


def test_the_documented_searches_compose_before_they_start(tmp_path):
    from test_examples import commands

    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    searches = [
        argv
        for page in pages
        for argv in commands(page.read_text(), "tmexp.train")
        if "hydra/sweeper=optuna" in argv and "hydra/launcher=slurm" not in argv
    ]
    assert len(searches) >= 2
    for argv in searches:
        assert (
            precheck([a for a in argv if not a.startswith("hydra.sweep.dir=")] + [f"hydra.sweep.dir={tmp_path / 's'}"])
            >= 2
        )
