"""Checkpoints against the hard cases: a planted file that would run code, Ctrl-C at each step of ``save()``, and a
final checkpoint against a preemption deadline."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_checkpoint_replay import Parts, assert_same, contents, patch_writes, replay_files

from tmexp import rundir
from tmexp.core import checkpoint, replay_store
from tmexp.core.checkpoint import Checkpointer, CheckpointError, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


# ----- no code runs from a checkpoint -----------------------------------------------------------------------------
class _RunsCode:
    """Unpickling this runs a command: what a planted checkpoint could hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _plant(run_dir: Path, marker: Path) -> None:
    (run_dir / "checkpoint").mkdir(parents=True)
    torch.save({"online": _RunsCode(marker), "counters": {}}, run_dir / "checkpoint" / "latest.pt")


def test_a_checkpoint_whose_unpickling_would_run_code_is_refused_unread(tmp_path):
    marker = tmp_path / "ran"
    _plant(tmp_path / "run", marker)
    with pytest.raises(CheckpointError, match="latest.pt: refused: it holds objects other than tensors") as error:
        Parts().resume(Checkpointer(tmp_path / "run", {}))
    assert "\n" not in str(error.value)
    with pytest.raises(CheckpointError):
        checkpoint.check_readable(tmp_path / "run")  # what the pre-flight check of every job directory calls
    assert not marker.exists()


def test_the_command_refuses_a_planted_checkpoint_in_one_line_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    _plant(tmp_path / "run", marker)
    done = subprocess.run(
        [sys.executable, "-m", "tmexp.train", "+experiment=smoke", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused" in lines[0] and "latest.pt" in lines[0], done.stderr
    assert not marker.exists()


def test_a_checkpoint_round_trips_every_random_generator_with_weights_only(tmp_path):
    np.random.seed(3)
    torch.manual_seed(3)
    parts = Parts()
    parts.play(np.random.default_rng(0), 50)
    parts.save(Checkpointer(tmp_path, {}))
    expected = (np.random.rand(4), torch.rand(4))
    np.random.seed(99)
    torch.manual_seed(99)
    Parts(seed=4).resume(Checkpointer(tmp_path, {}))
    np.testing.assert_array_equal(np.random.rand(4), expected[0])
    assert torch.equal(torch.rand(4), expected[1])
    torch.load(tmp_path / "checkpoint" / "latest.pt", weights_only=True)  # plain tensors and values only


# ----- Ctrl-C at each step of save() -------------------------------------------------------------------------------
class _Interrupt(KeyboardInterrupt):
    pass


def _raise(*args, **kwargs):
    raise _Interrupt()


def _interrupting_thread(after_start: bool):
    class Thread(threading.Thread):
        def start(self):
            if after_start:
                super().start()
            raise _Interrupt()

    return Thread


class _Threading:
    """``threading`` as the checkpoint module sees it, with a ``Thread`` that is interrupted."""

    def __init__(self, thread):
        self.Thread, self.Lock = thread, threading.Lock


def _interrupt_at(step: str, monkeypatch) -> None:
    snapshot = replay_store.ReplaySnapshot
    if step == "copying the state":
        monkeypatch.setattr(checkpoint, "_capture", _raise)
    elif step == "listing the chunks":
        init = snapshot.__init__

        def listed_then_interrupted(self, *args):
            init(self, *args)
            raise _Interrupt()

        monkeypatch.setattr(snapshot, "__init__", listed_then_interrupted)
    elif step == "between hooking the replay and clearing its marks":

        def half_begun(self):
            self.replay.before_write = self._before_write
            raise _Interrupt()

        monkeypatch.setattr(snapshot, "begin", half_begun)
    elif step == "after clearing the marks":
        begin = snapshot.begin

        def begun_then_interrupted(self):
            begin(self)
            raise _Interrupt()

        monkeypatch.setattr(snapshot, "begin", begun_then_interrupted)
    elif step == "creating the writer":
        monkeypatch.setattr(checkpoint, "threading", _Threading(_raise))
    elif step in ("before the writer starts", "as the writer starts"):
        monkeypatch.setattr(
            checkpoint, "threading", _Threading(_interrupting_thread(after_start=step == "as the writer starts"))
        )
    else:  # inside the writer, as it writes a file: "writing <the file's name starts with> <nth such file>"
        _, prefix, n = step.split()
        write_file, calls = rundir.write_atomic, []

        def nth_interrupted(path, write, **kwargs):
            if path.name.startswith(prefix):
                calls.append(path)
                if len(calls) == int(n):
                    raise _Interrupt()
            return write_file(path, write, **kwargs)

        patch_writes(monkeypatch, nth_interrupted)


STEPS = [
    "copying the state",
    "listing the chunks",
    "between hooking the replay and clearing its marks",
    "after clearing the marks",
    "creating the writer",
    "before the writer starts",
    "as the writer starts",
    "writing chunk 1",
    "writing chunk 3",
    "writing priority 1",
    "writing manifest 1",
    "writing latest 1",
]


@pytest.mark.parametrize("step", STEPS)
def test_ctrl_c_at_any_step_of_save_leaves_the_next_save_complete(tmp_path, monkeypatch, step):
    """An interrupted checkpoint is not taken; the rows written after it and before the next one are all saved,
    the next checkpoint is exact (the probe of issue 28: a manifest naming stale chunks with valid checksums)."""
    parts, rng = Parts(), np.random.default_rng(11)
    parts.play(rng, 350)  # past the ring's 300 rows: overwrites
    checkpointer = Checkpointer(tmp_path, {})
    parts.save(checkpointer)
    parts.play(rng, 120)
    with monkeypatch.context() as patched:
        _interrupt_at(step, patched)
        with pytest.raises(_Interrupt):
            parts.save(checkpointer, wait=True)
        try:
            checkpointer.wait()  # a writer that started finishes (or fails) on its own
        except _Interrupt:
            pass
    assert parts.replay.before_write is None
    parts.play(rng, 40)
    parts.save(checkpointer)
    resumed = Parts(seed=5)
    resumed.resume(Checkpointer(tmp_path, {}))
    assert_same(contents(resumed.replay), contents(parts.replay))
    assert resumed.counters == parts.counters
    assert not any(name.endswith(".tmp") for name in replay_files(tmp_path))


# ----- the final checkpoint against a deadline ---------------------------------------------------------------------
def _slow_writes(monkeypatch, seconds: float) -> None:
    write_file = rundir.write_atomic

    def slow(path, write, **kwargs):
        if path.name.startswith("chunk"):
            time.sleep(seconds)
        return write_file(path, write, **kwargs)

    patch_writes(monkeypatch, slow)


def test_a_first_checkpoint_against_a_deadline_keeps_counters_and_the_chunks_it_wrote(tmp_path, monkeypatch, caplog):
    parts = Parts(capacity=3000)
    parts.play(np.random.default_rng(2), 3000)  # 94 chunks of 32 rows, at 50 ms each: far past the deadline
    expected = contents(parts.replay)
    _slow_writes(monkeypatch, 0.05)
    checkpointer = Checkpointer(tmp_path, {})
    checkpointer.save(**parts.kwargs(), counters=parts.counters, wait=True, deadline=time.monotonic() + 0.6)
    generation = load_checkpoint(tmp_path)["replay_generation"]
    manifest = json.loads((tmp_path / "checkpoint" / "replay" / f"manifest-g{generation}.json").read_text())
    unsaved = [tuple(span) for span in manifest["unsaved"]]
    assert unsaved and len(manifest["chunks"]) + len(unsaved) == 94
    assert checkpointer.last["chunks_unsaved"] == len(unsaved)

    resumed = Parts(seed=5, capacity=3000)
    resumed.resume(Checkpointer(tmp_path, {}))
    assert resumed.counters == parts.counters  # counters, networks, optimiser: all of them
    assert torch.equal(resumed.online.weight, parts.online.weight)
    kept = np.ones(3000, dtype=bool)
    for a, b in unsaved:
        kept[a:b] = False
    assert len(resumed.replay) == kept.sum()
    for name in ("img", "action", "reward", "priority"):  # the saved rows, in their order
        np.testing.assert_array_equal(getattr(resumed.replay, name)[: kept.sum()], expected[name][kept], err_msg=name)
    assert resumed.counters.replay_parts_dropped == 0  # left out on purpose, not found damaged


def test_a_later_checkpoint_against_a_deadline_keeps_the_complete_one_before_it(tmp_path, monkeypatch):
    parts, rng = Parts(capacity=3000), np.random.default_rng(3)
    parts.play(rng, 2000)
    checkpointer = Checkpointer(tmp_path, {})
    parts.save(checkpointer)
    complete = contents(parts.replay)
    frames = parts.counters.frames
    parts.play(rng, 900)
    _slow_writes(monkeypatch, 0.05)
    checkpointer.save(**parts.kwargs(), counters=parts.counters, wait=True, deadline=time.monotonic() + 0.6)
    assert checkpointer.last["chunks_unsaved"] > 0
    previous = torch.load(tmp_path / "checkpoint" / "previous.pt", weights_only=True)
    assert previous["counters"]["frames"] == frames
    # the complete checkpoint is still whole: read it as a resume from previous.pt would
    (tmp_path / "checkpoint" / "latest.pt").unlink()
    resumed = Parts(seed=5, capacity=3000)
    resumed.resume(Checkpointer(tmp_path, {}))
    assert_same(contents(resumed.replay), complete)


@pytest.mark.slow
def test_sigterm_during_a_first_checkpoint_then_resume(tmp_path):
    """A real run: SIGTERM while its first checkpoint of a large replay would take longer than the deadline (forced
    here by a deadline of 0), then the same command again."""
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "tmexp.train",
        "+experiment=smoke",
        "training.max_frames=1000000",
        "training.checkpoint_every_minutes=60",
        "training.console_every_seconds=0.3",
        "training.preempt_save_deadline_s=0",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    status_path = run_dir / "status.json"
    deadline = time.time() + 180
    while time.time() < deadline:
        status = json.loads(status_path.read_text()) if status_path.is_file() else {}
        if status.get("frames", 0) >= 600:
            break
        time.sleep(0.1)
    proc.send_signal(15)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + 15, err
    saved = load_checkpoint(run_dir)
    assert saved["counters"]["frames"] >= 600
    manifest = json.loads(
        (run_dir / "checkpoint" / "replay" / f"manifest-g{saved['replay_generation']}.json").read_text()
    )
    assert manifest["unsaved"] and not manifest["chunks"]  # nothing fit a deadline of 0 s but the networks

    from tmexp.core.build import build
    from tmexp.train import compose_config

    resumed = build(compose_config(cmd[3:-1]), run_dir)
    try:
        assert resumed.counters.frames == saved["counters"]["frames"]
        assert resumed.counters.batches == saved["counters"]["batches"]
        assert len(resumed.replay) == 0
    finally:
        resumed.close()
