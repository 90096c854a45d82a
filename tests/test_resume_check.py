"""The resume check: every key that changes a tensor's shape or what a stored transition means, compared with what
the checkpoint was written with; a resume that would discard the replay asks for it explicitly; never retried."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_harness import REPO, app_env

from tmexp import rundir
from tmexp.compose import compose_config
from tmexp.core.checkpoint import ResumeMismatch
from tmexp.train import precheck, train
from tmexp.validation import ConfigError

SMOKE = ["+experiment=smoke", "training.max_frames=200"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A smoke run with a checkpoint and its replay (about 200 transitions)."""
    run_dir = tmp_path_factory.mktemp("resume") / "run"
    done = subprocess.run(
        [sys.executable, "-m", "tmexp.train", *SMOKE, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        env=app_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return run_dir


@pytest.fixture
def run_dir(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


@pytest.mark.parametrize(
    "override, key",
    [
        ("env.n_zone_centers_in_inputs=16", "env.n_zone_centers_in_inputs (40 there, 16 here)"),
        ("env.n_prev_actions_in_inputs=2", "env.n_prev_actions_in_inputs (5 there, 2 here)"),
        ("training.n_steps=1", "training.n_steps (5 there, 1 here)"),
    ],
)
def test_a_key_that_changes_a_shape_or_the_replays_meaning_is_refused(run_dir, override, key):
    precheck([*SMOKE, f"hydra.run.dir={run_dir}"])  # the same config resumes
    with pytest.raises(ConfigError, match="different " + key.replace("(", r"\(").replace(")", r"\)")):
        precheck([*SMOKE, override, f"hydra.run.dir={run_dir}"])


def test_the_check_compares_with_the_checkpoint_not_a_config_file_written_since(run_dir):
    # an earlier mismatched start could have rewritten it (it no longer can): the checkpoint's own keys decide
    (run_dir / "config_resolved.yaml").write_text(
        (run_dir / "config_resolved.yaml").read_text().replace("n_steps: 5", "n_steps: 1")
    )
    with pytest.raises(ConfigError, match="training.n_steps"):
        precheck([*SMOKE, "training.n_steps=1", f"hydra.run.dir={run_dir}"])


def test_a_mismatched_start_is_one_line_exit_2_and_leaves_the_config_as_written(run_dir):
    config = (run_dir / "config_resolved.yaml").read_bytes()
    status = (run_dir / "status.json").read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "tmexp.train", *SMOKE, "env.n_zone_centers_in_inputs=16", f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        env=app_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert (run_dir / "config_resolved.yaml").read_bytes() == config
    assert (run_dir / "status.json").read_bytes() == status


def test_a_mismatch_is_never_retried_and_writes_nothing(run_dir):
    cfg = compose_config([*SMOKE, "training.n_steps=1", "performance.max_retries=3"])
    before = rundir.read_status(run_dir)
    with pytest.raises(ResumeMismatch, match="training.n_steps"):
        train(cfg, run_dir)
    assert rundir.read_status(run_dir) == before  # no start recorded, let alone four
    assert rundir.read_starts(run_dir) == []


def test_a_smaller_replay_asks_for_an_explicit_override_to_discard_it(run_dir):
    smaller = "memory.memory_size_schedule=[[0,[50,50]]]"
    with pytest.raises(ConfigError, match=r"holds a replay of \d+ transitions .* training.resume_discards_replay=true"):
        precheck([*SMOKE, smaller, f"hydra.run.dir={run_dir}"])
    precheck([*SMOKE, smaller, "training.resume_discards_replay=true", f"hydra.run.dir={run_dir}"])

    from tmexp.core.build import build

    run = build(compose_config([*SMOKE, smaller, "training.resume_discards_replay=true"]), run_dir)
    try:
        assert run.resumed and run.counters.frames >= 200 and len(run.replay) == 0
    finally:
        run.close()


def test_a_later_start_keeps_the_first_config_and_records_what_changed(run_dir):
    first = rundir.read_resolved_config(run_dir)
    train(compose_config(["+experiment=smoke", "training.max_frames=260"]), run_dir)
    assert rundir.read_resolved_config(run_dir) == first
    (start,) = rundir.read_starts(run_dir)
    assert start["config_changes"] == {"training.max_frames": [200, 260]}
