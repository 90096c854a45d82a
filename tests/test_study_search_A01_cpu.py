"""The worked search (experiments/search_A01_cpu): the committed Optuna study is the one the confirmation's
"searched" arm took its settings from, the two arms differ in those settings only, and the report regenerates
from what the repository keeps."""

import shutil

import pytest
import yaml
from study_harness import EXPERIMENTS, check_report_regenerates, check_runs_finished_and_exported, exported_runs

STUDY = EXPERIMENTS / "search_A01_cpu"
SEARCH = EXPERIMENTS.parent / "conf" / "experiment" / "search_A01_cpu.yaml"


def _study(tmp_path):
    optuna = pytest.importorskip("optuna")
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "optuna.journal"
    shutil.copy(STUDY / "optuna.journal", journal)  # Optuna may write a lock beside the file it reads
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    return optuna.load_study(study_name="search_A01_cpu", storage=storage)


def _in_effect(key: str, value, frames: int):
    """A setting as the run saw it: a schedule's points up to the frames it played (the default's learning rate
    falls from frame 3M on, which no 10-minute run reaches), any other value as it is."""
    if key.endswith("_schedule"):
        return [point for point in value if point[0] <= frames]
    return value


def _arm(label: str) -> dict[int, dict]:
    """One arm's exported runs, by seed (runs/<label>/seed<N>)."""
    runs = exported_runs(STUDY).items()
    return {run["config"]["seed"]: run for path, run in runs if path.split("/")[1] == label}


def test_every_confirmation_run_finished_and_is_exported():
    check_runs_finished_and_exported(STUDY, minutes=10)
    assert len(_arm("default")) == len(_arm("searched")) == 5


def test_the_searched_arm_ran_the_best_trial_of_the_committed_study(tmp_path):
    study = _study(tmp_path)
    states = [t.state.name for t in study.trials]
    assert len(states) == 24 and set(states) == {"COMPLETE", "PRUNED"}
    best = study.best_trial
    assert best.value == min(t.value for t in study.trials if t.state.name == "COMPLETE")
    params = {key.removeprefix("training."): yaml.safe_load(str(v)) for key, v in best.params.items()}
    assert len(params) == 6
    for run in _arm("searched").values():
        assert {k: run["config"]["training"][k] for k in params} == params  # as the trial had them
    # the search was centred on the default of its day: each choice lists it second
    from hydra.core.override_parser.overrides_parser import OverridesParser

    space = yaml.safe_load(SEARCH.read_text())["hydra"]["sweeper"]["params"]
    parser = OverridesParser.create()
    centre = {k.removeprefix("training."): parser.parse_override(f"{k}={v}").value().list[1] for k, v in space.items()}
    for run in _arm("default").values():
        frames = run["status"]["frames"]
        assert {k: _in_effect(k, run["config"]["training"][k], frames) for k in params} == centre


def test_the_arms_differ_only_in_the_searched_settings_and_the_seed():
    searched = _arm("searched")
    changed = {"min_replay_ratio", "n_steps"}  # the best trial's settings that are not the default's
    for seed, run in _arm("default").items():
        default, other = run["config"], searched[seed]["config"]
        frames = max(run["status"]["frames"], searched[seed]["status"]["frames"])  # schedules as either run saw them
        for group in ("nn", "btr", "training", "memory", "exploration", "rewards", "env"):
            differs = {
                k
                for k in default[group]
                if _in_effect(k, default[group][k], frames) != _in_effect(k, other[group].get(k), frames)
            }
            assert differs == (changed if group == "training" else set()), group


def test_the_report_regenerates_from_a_fresh_clone(tmp_path, monkeypatch, capsys):
    check_report_regenerates(STUDY, tmp_path, monkeypatch, capsys)
