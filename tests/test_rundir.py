"""The run directory module: status, metadata, config files and a job's submitit logs."""

from __future__ import annotations

import pickle
from enum import Enum

import yaml

from tmexp import rundir


def test_write_status_keeps_earlier_keys_and_read_status_returns_them(tmp_path):
    rundir.write_status(tmp_path, "running", frames=10, first_step_at=123.0)
    data = rundir.write_status(tmp_path, "finished", frames=20)
    assert data == rundir.read_status(tmp_path)
    assert data["status"] == "finished" and data["frames"] == 20
    assert data["first_step_at"] == 123.0  # written once, at the first step; later writes keep it
    assert data["error"] is None and "updated_at" in data
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed over status.json


def test_write_status_records_and_clears_the_error(tmp_path):
    assert rundir.write_status(tmp_path, "failed", error="ValueError: x")["error"] == "ValueError: x"
    assert rundir.write_status(tmp_path, "running")["error"] is None


def test_read_status_is_none_without_a_readable_file(tmp_path):
    assert rundir.read_status(tmp_path) is None
    (tmp_path / "status.json").write_text('{"status": "runn')
    assert rundir.read_status(tmp_path) is None
    (tmp_path / "status.json").write_text("[1, 2]")
    assert rundir.read_status(tmp_path) is None


def test_run_meta_keeps_the_first_start_and_appends_the_later_ones(tmp_path):
    first = rundir.write_run_meta(tmp_path, {"host": "a", "started_at": "2026-01-01T00:00:00", "git_commit": "c1"})
    assert "resumed_at" not in first and rundir.read_starts(tmp_path) == []
    second = rundir.write_run_meta(
        tmp_path,
        {"host": "b", "started_at": "2026-01-02T00:00:00", "git_commit": "c2"},
        config_changes={"training.max_frames": [100, 200]},
    )
    assert second == {
        "host": "a",
        "started_at": "2026-01-01T00:00:00",
        "git_commit": "c1",
        "resumed_at": "2026-01-02T00:00:00",
    }
    assert rundir.read_run_meta(tmp_path) == second
    assert rundir.read_starts(tmp_path) == [
        {
            "host": "b",
            "started_at": "2026-01-02T00:00:00",
            "git_commit": "c2",
            "config_changes": {"training.max_frames": [100, 200]},
        }
    ]


def test_the_resolved_config_is_the_first_starts_and_later_starts_get_their_changes(tmp_path):
    assert rundir.write_resolved_config(tmp_path, {"seed": 1, "training": {"max_frames": 100, "n": (1, 2)}}) == {}
    changes = rundir.write_resolved_config(
        tmp_path, {"seed": 1, "training": {"max_frames": 200, "n": (1, 2)}, "extra": 3}
    )
    assert changes == {"training.max_frames": [100, 200], "extra": [None, 3]}
    assert rundir.read_resolved_config(tmp_path)["training"]["max_frames"] == 100


def test_run_metadata_names_the_host_and_versions():
    meta = rundir.run_metadata()
    for key in ("host", "cpu", "torch", "python", "tmexp", "git_commit", "git_dirty", "started_at", "command"):
        assert key in meta


class _Kind(Enum):
    CUDA = "cuda"


def test_resolved_config_round_trips_with_enums_by_name(tmp_path):
    config = {"seed": 3, "nn": {"dims": (1, 2), "device": _Kind.CUDA}, "name": "null"}
    rundir.write_resolved_config(tmp_path, config)
    assert rundir.read_resolved_config(tmp_path) == {
        "seed": 3,
        "nn": {"dims": [1, 2], "device": "CUDA"},
        "name": "null",
    }
    assert rundir.read_config(tmp_path)["seed"] == 3


def test_read_config_falls_back_to_hydras_config(tmp_path):
    assert rundir.read_config(tmp_path) is None
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 7\n")
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- seed=7\n")
    assert rundir.read_config(tmp_path) == {"seed": 7}
    assert rundir.read_overrides(tmp_path) == ["seed=7"]


def test_float_stats_round_trip(tmp_path):
    assert rundir.read_float_stats(tmp_path) is None
    rundir.write_float_stats(tmp_path, [0.5, 1.0], [2.0, 3.0])
    assert rundir.read_float_stats(tmp_path) == ([0.5, 1.0], [2.0, 3.0])


def _job(sweep, name, num, job_id=None, overrides=()):
    run_dir = sweep / name
    (run_dir / ".hydra").mkdir(parents=True)
    job = {"num": num, **({"id": job_id} if job_id is not None else {})}
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": job}}))
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    return run_dir


def _log(sweep, folder, name, text=""):
    path = sweep / ".submitit" / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_submitit_logs_by_the_job_id_hydra_recorded(tmp_path):
    run_dir = _job(tmp_path, "seed0", 1, job_id="4242")
    mine = [_log(tmp_path, "4242", "4242_0_log.err"), _log(tmp_path, "4242", "4242_0_log.out")]
    _log(tmp_path, "4343", "4343_0_log.err")
    assert rundir.submitit_logs(tmp_path, run_dir) == mine


def test_submitit_logs_by_slurm_array_task_number(tmp_path):
    mine = _log(tmp_path, "77_3", "77_3_0_log.err")
    _log(tmp_path, "77_13", "77_13_0_log.err")
    assert rundir.submitit_logs(tmp_path, job_num=3) == [mine]
    # a job directory named by its number, without Hydra's files (the job died before writing them)
    (tmp_path / "3").mkdir()
    assert rundir.submitit_logs(tmp_path, tmp_path / "3") == [mine]
    # hydra.job.num names it when the directory has another name
    assert rundir.submitit_logs(tmp_path, _job(tmp_path, "lr5", 3)) == [mine]


def test_submitit_logs_by_overrides_in_the_submission_pickle(tmp_path):
    run_dir = _job(tmp_path, "0", 0, overrides=["lr=5"])
    mine = _log(tmp_path, "4242", "4242_0_log.err")
    (tmp_path / ".submitit" / "4242" / "4242_submitted.pkl").write_bytes(pickle.dumps((["lr=5"], "x")))
    (tmp_path / ".submitit" / "4343").mkdir()
    (tmp_path / ".submitit" / "4343" / "4343_submitted.pkl").write_bytes(pickle.dumps((["lr=50"], "x")))
    _log(tmp_path, "4343", "4343_0_log.err")
    assert rundir.submitit_logs(tmp_path, run_dir) == [mine]  # overrides read from .hydra/overrides.yaml
    assert rundir.submitit_logs(tmp_path, overrides=["lr=50"]) == [tmp_path / ".submitit" / "4343" / "4343_0_log.err"]
    assert rundir.submitit_logs(tmp_path, overrides=["lr=6"]) == []


def test_submitit_logs_without_a_submitit_folder(tmp_path):
    assert rundir.submitit_logs(tmp_path, _job(tmp_path, "0", 0, job_id="1")) == []
