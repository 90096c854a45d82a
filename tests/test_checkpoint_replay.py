"""Checkpoints with the replay buffer: exact round trips, incremental and atomic writes, the previous checkpoint as a
fallback, corrupt parts dropped with a warning, TensorBoard steps kept monotonic across kills."""

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tmexp import rundir
from tmexp.core import checkpoint, replay_store
from tmexp.core.checkpoint import Checkpointer, Counters, has_checkpoint, load_checkpoint
from tmexp.core.optimization import SelfLossState
from tmexp.core.replay import STORED, ReplayBuffer, nstep_transitions

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 32  # rows per chunk in these tests: a 300-row buffer spans 10 chunks


# ----- a tiny learning state ---------------------------------------------------------------------------------------
class Parts:
    """What a checkpoint holds, tiny: a network pair, its optimiser, the self-loss state, replay and counters."""

    def __init__(self, seed: int = 0, capacity: int = 300):
        torch.manual_seed(seed)
        self.online, self.target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=1e-3)
        self.self_loss = SelfLossState()
        self.replay = ReplayBuffer(capacity, (1, 4, 4), 3, seed=seed, n_steps=3, prio_alpha=0.6, chunk_rows=CHUNK)
        self.counters = Counters()

    def kwargs(self) -> dict:
        return {
            "online": self.online,
            "target": self.target,
            "optimizer": self.optimizer,
            "scaler": None,
            "self_loss": self.self_loss,
            "replay": self.replay,
        }

    def save(self, checkpointer: Checkpointer, wait: bool = True) -> float:
        return checkpointer.save(**self.kwargs(), counters=self.counters, wait=wait)

    def resume(self, checkpointer: Checkpointer) -> None:
        self.counters = checkpointer.resume(torch.device("cpu"), **self.kwargs())

    def play(self, rng: np.random.Generator, count: int) -> None:
        """Add ``count`` transitions as races of random lengths, then train on a few priorities and weights."""
        while count > 0:
            t = int(min(count, rng.integers(1, 60)))
            self.replay.add(
                nstep_transitions(
                    rng.integers(0, 256, (t + 1, 1, 4, 4), dtype=np.uint8),
                    rng.standard_normal((t + 1, 3), np.float32),
                    rng.integers(0, 12, t),
                    rng.standard_normal(t).astype(np.float32),
                    rng.random(t) < 0.8,
                    bool(rng.random() < 0.5),
                    3,
                    0.99,
                    stuck_actions=int(rng.integers(0, 3)),
                    stuck_reward_per_action=-0.06,
                )
            )
            count -= t
            self.counters.frames += t
            self.counters.transitions_added += t
        _, idx = self.replay.sample(16)
        self.replay.update_priorities(idx, rng.standard_normal(16))
        self.online.weight.data += 0.1
        self.counters.batches += 1


def patch_writes(monkeypatch, write) -> None:
    """Every file a checkpoint writes (its replay's and its own) goes through ``write``."""
    monkeypatch.setattr(checkpoint, "write_atomic", write)
    monkeypatch.setattr(replay_store, "write_atomic", write)


def contents(replay: ReplayBuffer) -> dict:
    """Everything a resumed replay must reproduce."""
    out = {name: getattr(replay, name)[: replay.size].copy() for name in (*STORED, "priority")}
    out.update(
        size=replay.size,
        write_pos=replay.write_pos,
        capacity=replay.capacity,
        max_priority=replay.max_priority,
        rng=replay.rng.bit_generator.state,
    )
    return out


def assert_same(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(actual[key], value, err_msg=key)
        else:
            assert actual[key] == value, key


def replay_files(run_dir: Path) -> set[str]:
    folder = run_dir / "checkpoint" / "replay"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def chunk_file(run_dir: Path, chunk: int) -> Path:
    """The file that the latest checkpoint's manifest names for ``chunk``."""
    import json

    generation = load_checkpoint(run_dir)["replay_generation"]
    manifest = json.loads((run_dir / "checkpoint" / "replay" / f"manifest-g{generation}.json").read_text())
    return run_dir / "checkpoint" / "replay" / manifest["chunks"][str(chunk)]["file"]


# ----- round trips ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("transitions", [0, 250, 700])  # empty, filling, wrapped around (the ring full)
def test_resume_restores_the_replay_of_the_checkpoint_exactly(tmp_path, transitions):
    a = Parts()
    if transitions:
        a.play(np.random.default_rng(1), transitions)
    saved = Checkpointer(tmp_path, {})
    a.save(saved)
    expected = contents(a.replay)
    b = Parts(seed=5)
    b.resume(Checkpointer(tmp_path, {}))
    assert_same(contents(b.replay), expected)
    assert b.counters == a.counters
    assert torch.equal(b.online.weight, a.online.weight)
    if transitions:  # the same random stream too: the resumed run draws the batches the first one would have
        np.testing.assert_array_equal(b.replay.sample(8)[1], a.replay.sample(8)[1])


def test_a_periodic_checkpoint_rewrites_only_the_chunks_written_since_the_last(tmp_path):
    parts, rng = Parts(), np.random.default_rng(2)
    parts.play(rng, 400)  # full (300), write position 100
    checkpointer = Checkpointer(tmp_path, {})
    parts.save(checkpointer)
    first = dict(checkpointer.last)
    assert first["chunks_written"] == 10
    start = parts.replay.write_pos
    parts.play(rng, 40)  # rows 100..139: chunks 3 and 4
    changed = {(start + k) % 300 // CHUNK for k in range(40)}
    assert changed == {3, 4}
    before = replay_files(tmp_path)
    parts.save(checkpointer)
    new = replay_files(tmp_path) - before
    assert {name for name in new if name.startswith("chunk")} == {f"chunk{i}-g2.npy" for i in changed}
    assert checkpointer.last["chunks_written"] == 2 and checkpointer.last["bytes"] < first["bytes"]
    folder = tmp_path / "checkpoint" / "replay"
    first_chunks = sum((folder / f"chunk{i}-g1.npy").stat().st_size for i in range(10))
    assert sum((folder / name).stat().st_size for name in new if name.startswith("chunk")) <= first_chunks / 4
    expected = contents(parts.replay)
    # a checkpoint without new transitions writes no chunk; the chunks only the first checkpoint named are deleted
    parts.save(checkpointer)
    assert checkpointer.last["chunks_written"] == 0
    files = replay_files(tmp_path)
    assert "chunk3-g1.npy" not in files and "chunk4-g1.npy" not in files and "chunk0-g1.npy" in files
    assert files == {
        "manifest-g2.json",
        "manifest-g3.json",
        "priority-g2.npy",
        "priority-g3.npy",
        *(f"chunk{i}-g{2 if i in changed else 1}.npy" for i in range(10)),
    }
    resumed, again = Parts(seed=5), Checkpointer(tmp_path, {})
    resumed.resume(again)
    assert_same(contents(resumed.replay), expected)
    resumed.play(rng, 10)  # rows 140..149, chunk 4: a resumed run's checkpoints are incremental too
    resumed.save(again)
    assert again.last["chunks_written"] == 1 and "chunk4-g4.npy" in replay_files(tmp_path)


def test_without_save_replay_no_replay_is_written_and_a_resume_starts_empty(tmp_path):
    parts = Parts()
    parts.play(np.random.default_rng(3), 200)
    parts.save(Checkpointer(tmp_path, {}, save_replay=False))
    assert replay_files(tmp_path) == set()
    assert load_checkpoint(tmp_path)["replay_generation"] is None
    resumed = Parts()
    resumed.resume(Checkpointer(tmp_path, {}))
    assert len(resumed.replay) == 0 and resumed.counters.frames == parts.counters.frames


def test_the_snapshot_is_exact_while_the_learner_overwrites_rows_during_the_write(tmp_path, monkeypatch):
    parts, rng = Parts(), np.random.default_rng(4)
    parts.play(rng, 500)
    release, writing = threading.Event(), threading.Event()
    save_arrays = replay_store._save_arrays

    def slow_save(f, arrays):  # the writer stalls on its first chunk until the learner has overwritten the ring
        writing.set()
        release.wait(30)
        save_arrays(f, arrays)

    monkeypatch.setattr(replay_store, "_save_arrays", slow_save)
    checkpointer = Checkpointer(tmp_path, {})
    expected = contents(parts.replay)
    parts.save(checkpointer, wait=False)
    assert writing.wait(30)
    parts.play(rng, 300)  # every row overwritten while the checkpoint is being written
    release.set()
    checkpointer.wait()
    assert checkpointer.last["copy_s"] > 0  # the learner copied chunks it was about to overwrite
    assert parts.replay.before_write is None
    resumed = Parts(seed=5)
    resumed.resume(Checkpointer(tmp_path, {}))
    assert_same(contents(resumed.replay), expected)


@pytest.mark.parametrize("policy", ["retry", "stop"])
def test_a_full_disk_removes_what_it_wrote_at_once_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch, caplog, policy
):
    parts, rng = Parts(), np.random.default_rng(5)
    parts.play(rng, 350)
    checkpointer = Checkpointer(tmp_path, {}, on_write_error=policy)
    parts.save(checkpointer)
    expected, frames = contents(parts.replay), parts.counters.frames
    before = replay_files(tmp_path)
    parts.play(rng, 100)
    write_file, calls = rundir.write_atomic, []

    def disk_full_after_two(path, write, **kwargs):
        calls.append(path.name)
        if len(calls) > 2:
            with open(path.with_name(path.name + ".tmp"), "wb") as f:
                f.write(b"half a chunk")  # what a full disk leaves: a part written
            raise OSError(28, "No space left on device")
        return write_file(path, write, **kwargs)

    patch_writes(monkeypatch, disk_full_after_two)
    with caplog.at_level(logging.ERROR):
        if policy == "stop":
            with pytest.raises(checkpoint.CheckpointWriteError, match="No space left.*on_checkpoint_error=stop"):
                parts.save(checkpointer)
        else:
            parts.save(checkpointer)  # the run goes on
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "not written" in errors[0] and "No space left" in errors[0], errors
    assert "\n" not in errors[0]
    # said at once, and what the failed checkpoint wrote is gone at once: the files are those of the one before
    assert replay_files(tmp_path) == before
    assert not list((tmp_path / "checkpoint").glob("*.tmp"))
    patch_writes(monkeypatch, write_file)
    resumed = Parts(seed=5)
    resumed.resume(Checkpointer(tmp_path, {}))
    assert_same(contents(resumed.replay), expected)
    assert resumed.counters.frames == frames and resumed.counters.replay_parts_dropped == 0
    # the next checkpoint writes what the failed one could not
    parts.save(checkpointer)
    after = Parts(seed=6)
    after.resume(Checkpointer(tmp_path, {}))
    assert_same(contents(after.replay), contents(parts.replay))
    assert after.counters.frames == parts.counters.frames


def test_a_resume_removes_what_a_killed_checkpoint_left(tmp_path, caplog):
    parts, rng = Parts(), np.random.default_rng(8)
    parts.play(rng, 200)
    parts.save(Checkpointer(tmp_path, {}))
    kept = replay_files(tmp_path)
    folder = tmp_path / "checkpoint"
    (folder / "replay" / "chunk0-g7.npy").write_bytes(b"x" * 1000)  # a generation no checkpoint names
    (folder / "replay" / "chunk1-g7.npy.tmp").write_bytes(b"x" * 1000)
    (folder / "latest.pt.tmp").write_bytes(b"x" * 1000)
    with caplog.at_level(logging.INFO):
        Parts(seed=5).resume(Checkpointer(tmp_path, {}))
    assert replay_files(tmp_path) == kept and not list(folder.glob("*.tmp"))
    assert any("removed 3 files" in r.getMessage() for r in caplog.records)


# ----- damaged files --------------------------------------------------------------------------------------------
def test_a_truncated_latest_checkpoint_resumes_from_the_previous_one_with_a_warning(tmp_path, caplog):
    parts, rng = Parts(), np.random.default_rng(6)
    parts.play(rng, 350)
    checkpointer = Checkpointer(tmp_path, {})
    parts.save(checkpointer)
    expected, counters = contents(parts.replay), Counters(**parts.counters.__dict__)
    parts.play(rng, 120)
    parts.save(checkpointer)
    latest = tmp_path / "checkpoint" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    resumed = Parts(seed=5)
    with caplog.at_level(logging.WARNING):
        resumed.resume(Checkpointer(tmp_path, {}))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "latest.pt" in warnings[0] and "previous.pt" in warnings[0]
    assert "\n" not in warnings[0]
    assert resumed.counters == counters
    assert_same(contents(resumed.replay), expected)  # its replay generation was kept with it
    # the next checkpoint replaces the unreadable one and keeps the good one as previous.pt
    checkpointer = Checkpointer(tmp_path, {})
    resumed.resume(checkpointer)
    resumed.play(rng, 10)
    resumed.save(checkpointer)
    assert (
        torch.load(tmp_path / "checkpoint" / "previous.pt", weights_only=False)["counters"]["frames"] == counters.frames
    )
    assert load_checkpoint(tmp_path)["counters"]["frames"] == counters.frames + 10


def test_no_readable_checkpoint_is_one_clear_error(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "latest.pt").write_bytes(b"not a checkpoint")
    assert has_checkpoint(tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match="no readable checkpoint.*latest.pt: .*previous.pt: missing"):
        Parts().resume(Checkpointer(tmp_path, {}))


def test_a_command_on_a_folder_of_unreadable_checkpoints_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "latest.pt").write_bytes(b"not a checkpoint")
    done = subprocess.run(
        [sys.executable, "-m", "tmexp.train", "+experiment=smoke", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no readable checkpoint" in lines[0] and "latest.pt" in lines[0], done.stderr
    assert (tmp_path / "checkpoint" / "latest.pt").read_bytes() == b"not a checkpoint"  # nothing touched


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "missing"])
def test_a_damaged_replay_chunk_is_dropped_with_a_warning_and_counted(tmp_path, caplog, damage):
    parts = Parts()
    parts.play(np.random.default_rng(7), 400)  # full, write position 100 (in chunk 3)
    parts.save(Checkpointer(tmp_path, {}))
    original = contents(parts.replay)
    path = chunk_file(tmp_path, 1)  # rows 32..63
    data = bytearray(path.read_bytes())
    if damage == "flipped byte":
        data[len(data) // 4] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        path.unlink()
    resumed, checkpointer = Parts(seed=5), Checkpointer(tmp_path, {})
    with caplog.at_level(logging.WARNING):
        resumed.resume(checkpointer)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and "32 transitions" in warnings[0]
    assert resumed.counters.replay_parts_dropped == 1
    kept = np.r_[0:32, 64:300]
    got = contents(resumed.replay)
    assert got["size"] == 268 and got["write_pos"] == 100 - 32
    for name in (*STORED, "priority"):
        np.testing.assert_array_equal(got[name], original[name][kept], err_msg=name)
    # the next checkpoint writes the moved rows again: a resume from it is whole, with no warning
    resumed.save(checkpointer)
    caplog.clear()
    final = Parts(seed=6)
    with caplog.at_level(logging.WARNING):
        final.resume(Checkpointer(tmp_path, {}))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert_same(contents(final.replay), contents(resumed.replay))
    assert final.counters.replay_parts_dropped == 1


# ----- the training core ----------------------------------------------------------------------------------------
def test_a_run_resumes_with_the_replay_of_its_last_checkpoint(tmp_path):
    from tmexp.core.build import build
    from tmexp.core.learner import Learner
    from tmexp.train import compose_config

    cfg = compose_config(["+experiment=smoke", "training.max_frames=300"])
    run = build(cfg, tmp_path)
    try:
        Learner(run).train()
        expected = contents(run.replay)
    finally:
        run.close()
    assert expected["size"] >= 300
    again = build(cfg, tmp_path)
    try:
        assert again.resumed
        assert_same(contents(again.replay), expected)
    finally:
        again.close()


def test_the_checkpoint_benchmark_refuses_a_bad_option_in_one_line(capsys):
    from tmexp.bench.checkpoint import main

    assert main(["--scales", "default,huge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--scales huge" in err[0] and "default, linesight" in err[0]


def test_the_checkpoint_benchmark_times_a_first_and_a_periodic_checkpoint(tmp_path, capsys):
    import json

    from tmexp.bench.checkpoint import main

    assert main(["--scales", "default", "--interval", "10000", "--rate", "0", "--dir", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (scale,) = result["scales"]
    assert scale["transitions"] == 50_000 and scale["img_shape"] == [1, 48, 48]
    assert scale["first"]["chunks_written"] == 7  # 50,000 rows in chunks of 8,192
    assert scale["periodic"]["chunks_written"] == 2  # rows 0..9,999 written again
    assert 0 < scale["periodic"]["bytes"] < scale["first"]["bytes"] / 2
    assert scale["periodic"]["learner_blocked_s"] >= scale["periodic"]["save_call_s"] > 0
    # on disk at most: the first checkpoint's replay, and the chunks the later ones rewrote
    written = sum(scale[kind]["bytes"] for kind in ("first", "periodic", "steady"))
    assert scale["first"]["bytes"] <= scale["peak_disk_bytes"] <= written
    assert result["meets_goal"] is None  # the goal is the 1,000,000-transition scale's
    assert list(tmp_path.iterdir()) == []  # what it wrote is deleted


def _scalar_steps(run_dir: Path) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _hparams_sessions(run_dir: Path) -> int:
    """How many hparams sessions TensorBoard's own reader (the one its HParams view reads through) keeps."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    return (
        len(acc.Tensors("_hparams_/session_start_info"))
        if "_hparams_/session_start_info" in acc.Tags()["tensors"]
        else 0
    )


def test_every_start_purges_what_an_earlier_process_logged_past_its_resume_point(tmp_path):
    from tmexp.core.build import build
    from tmexp.train import compose_config

    cfg = compose_config(["+experiment=smoke"])
    run = build(cfg, tmp_path)  # a process killed before its first checkpoint
    for step in (100, 200, 300):
        run.writer.add_scalar("Training/loss", 1.0, step)
    run.close()
    assert not has_checkpoint(tmp_path) and _hparams_sessions(tmp_path) == 1
    run = build(cfg, tmp_path)  # started again: from frame 0
    assert not run.resumed
    for step in (50, 150):
        run.writer.add_scalar("Training/loss", 2.0, step)
    run.counters.frames = 150
    run.checkpointer.save(
        online=run.online,
        target=run.target,
        optimizer=run.optimizer,
        scaler=run.scaler,
        self_loss=run.self_loss,
        replay=run.replay,
        counters=run.counters,
        wait=True,
    )
    run.writer.add_scalar("Training/loss", 2.0, 250)  # after the checkpoint, then killed
    run.close()
    assert _scalar_steps(tmp_path)["Training/loss"] == [50, 150, 250]
    run = build(cfg, tmp_path)  # resumed from the checkpoint at frame 150
    assert run.resumed and run.counters.frames == 150
    run.writer.add_scalar("Training/loss", 3.0, 200)
    run.close()
    assert _scalar_steps(tmp_path)["Training/loss"] == [50, 200]
    assert _hparams_sessions(tmp_path) == 1  # the fresh start's, written once


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(tmp_path):
    """A smoke run killed (SIGKILL) at seeded random moments, relaunched each time with the same command."""
    run_dir = tmp_path / "run"
    interval_s = 1.2
    cmd = [
        sys.executable,
        "-m",
        "tmexp.train",
        "+experiment=smoke",
        "training.max_frames=1000000",
        f"training.checkpoint_every_minutes={interval_s / 60}",
        "training.log_every_seconds=0.5",
        "training.console_every_seconds=0.5",
        f"hydra.run.dir={run_dir}",
    ]
    status_path = run_dir / "status.json"

    def status() -> dict:
        import json

        return json.loads(status_path.read_text()) if status_path.is_file() else {}

    rng = random.Random(17)
    checkpoints, killed_before_any_checkpoint = [], False
    for attempt in range(4):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if attempt == 0:  # once it has played and logged, before its first checkpoint (1.2 s of training)
            deadline = time.time() + 120
            while status().get("frames", 0) == 0 and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.5, 0.8))
        else:
            time.sleep(rng.uniform(3.0, 12.0))  # from before the relaunch trains to several checkpoints in
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        seconds_at_kill = 60 * status().get("wall_minutes", 0.0)
        if not has_checkpoint(run_dir):
            assert seconds_at_kill <= interval_s + 1.0, "a run that trained longer than an interval had no checkpoint"
            killed_before_any_checkpoint = killed_before_any_checkpoint or bool(_scalar_steps(run_dir))
            continue
        from tmexp.core.build import build
        from tmexp.train import compose_config

        resumed = build(compose_config(cmd[3:-1]), run_dir)  # what the relaunch will start from
        try:
            c = resumed.counters
            # past the last status line minus one interval (and the moment a background write takes)
            assert c.training_seconds >= seconds_at_kill - interval_s - 1.0
            assert c.replay_parts_dropped == 0
            assert len(resumed.replay) == min(resumed.replay.capacity, c.transitions_added)
            checkpoints.append(c.frames)
        finally:
            resumed.close()
    assert checkpoints, "no kill came after a checkpoint"
    assert killed_before_any_checkpoint, "no kill came between the first logged scalars and the first checkpoint"
    assert checkpoints == sorted(checkpoints)
    final = checkpoints[-1] + 300
    subprocess.run(
        cmd[:4] + [f"training.max_frames={final}"] + cmd[5:], cwd=ROOT, check=True, capture_output=True, timeout=300
    )
    assert load_checkpoint(run_dir)["counters"]["frames"] >= final
    steps = _scalar_steps(run_dir)
    assert len(steps) >= 10
    for tag, values in steps.items():
        assert values == sorted(values), tag
