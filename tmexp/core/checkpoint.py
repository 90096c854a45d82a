"""Save and resume: everything a run needs to continue where it stopped, replay included, written atomically.

Under ``<run_dir>/checkpoint/``::

    latest.pt, previous.pt        the last two checkpoints (torch.save, read with weights_only): network pair,
                                  optimiser, grad scaler, target self-loss state, counters, random generators, the
                                  resume keys (``_RESUME_KEYS``: resuming with another network or task is refused)
                                  and the replay generation named
    replay/                       the replay's generations (``tmexp.core.replay_store``)

A checkpoint is taken in two steps. In the learner's thread (``Checkpointer.save``) the networks, optimiser and
priorities are copied and the chunks written since the last checkpoint are listed; a background thread writes them
(only those: the others are named from the generation before), then the manifest, then the checkpoint that names the
manifest's generation, each through a temporary file, fsync and rename; the old latest.pt becomes previous.pt. A run
killed at any moment keeps its last complete checkpoint and the replay that checkpoint names, and so does the one
before it. Chunks are not copied up front: the replay copies a listed chunk only when ``add`` is about to overwrite
it before the writer took it (``ReplayBuffer.before_write``), so the snapshot is exact without doubling the memory.
After each commit the files that neither kept checkpoint names are deleted.

On resume, a latest.pt that cannot be read falls back to previous.pt; a replay chunk that is missing or fails its
checksum is dropped with a one-line warning naming the file (its rows removed, the others kept in ring order) and
counted in ``Counters.replay_parts_dropped``; none of it stops the run.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import random
import threading
import time
from dataclasses import asdict, dataclass, field, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tmexp.core.replay import ReplayBuffer
from tmexp.core.replay_store import (
    REPLAY_DIR,
    ReplayMisfit,
    ReplaySnapshot,
    generation_of,
    load_generation,
    manifest_files,
    read_manifest,
    write_generation,
)
from tmexp.core.replay_store import reason as _reason
from tmexp.rundir import RunDir, sync_dir, write_atomic

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "latest.pt"
PREVIOUS_NAME = "previous.pt"


@dataclass
class Counters:
    """Everything that counts up over a run; saved in checkpoints so a resumed run continues them."""

    frames: int = 0
    batches: int = 0
    samples_used: int = 0
    transitions_added: int = 0
    races: int = 0
    eval_races: int = 0
    training_seconds: float = 0.0  # wall time spent inside this run, across resumes
    samples_since_target_update: int = 0
    alltime_min_ms: dict[str, int] = field(default_factory=dict)
    # rolling mean of finished eval race times (robust time) of checkpoints from before map cycles: the learner moves
    # it into eval_time_ema_by_map, which holds it per map
    eval_time_ema_s: float | None = None
    replay_parts_dropped: int = 0  # saved replay chunks (or priorities) found corrupt or missing on resume
    eval_time_ema_by_map: dict[str, float] = field(default_factory=dict)  # map -> its rolling mean, as above
    cycle_position: dict[int, int] = field(default_factory=dict)  # car number -> map-cycle position of its next race

    def status(self, map_name: str) -> dict[str, Any]:
        """The counters ``status.json`` reports."""
        return {
            "frames": self.frames,
            "batches": self.batches,
            "races": self.races,
            "training_hours": self.training_seconds / 3600,
            "wall_minutes": self.training_seconds / 60,
            "best_ms": {map_name: self.alltime_min_ms.get(map_name)},
            "replay_parts_dropped": self.replay_parts_dropped,
        }


class CheckpointError(RuntimeError):
    """A run directory holds checkpoints, none of which can be read."""


# ----- what may change between a run and its resumption -----------------------------------------------------------
class ResumeMismatch(ValueError):
    """A run directory holds a checkpoint of a run whose network or task differs from the config given."""


# Keys that must match to resume: the shapes of the network's tensors and of the replay's, what a stored transition
# means, and the task. Everything else (budgets, schedules, collectors) may change between a run and its resumption.
_RESUME_KEYS = (
    "nn",
    "btr",
    "map.short_name",
    "env.backend",
    "env.w_downsized",
    "env.h_downsized",  # the image input
    # the float input: 9 + 4 x previous actions + 3 x zone centres (tmexp/envs/observation.py), and what its
    # zone centres are (their spacing)
    "env.n_prev_actions_in_inputs",
    "env.n_zone_centers_in_inputs",
    "env.one_every_n_zone_centers_in_inputs",
    "training.temporal_mini_race_duration_ms",  # one more float, and the meaning of a stored time
    # what a stored transition is: its n-step return and its partial rewards (one column per step)
    "training.n_steps",
    "training.discard_non_greedy_actions_in_nsteps",
)


def _plain(node: Any) -> Any:
    """Enums as their value, so a typed config and its YAML form compare equal."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return node.value if isinstance(node, Enum) else node


def resume_structure(cfg) -> dict[str, Any]:
    """The resume-relevant keys of a config (a ``Config`` or its plain-dict form); a key the config lacks (a config
    written before the key existed) is left out."""
    full = asdict(cfg) if is_dataclass(cfg) and not isinstance(cfg, type) else cfg
    out = {}
    for key in _RESUME_KEYS:
        node = full
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            out[key] = _plain(node)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else "another value"


def check_resumable(saved: dict[str, Any], current: dict[str, Any], run_dir: Path) -> None:
    """Raise ``ResumeMismatch`` naming the first resume key whose value differs."""
    for key in _RESUME_KEYS:
        if key in saved and key in current and _plain(saved[key]) != current[key]:
            values = "" if key in ("nn", "btr") else f" ({_short(saved[key])} there, {_short(current[key])} here)"
            raise ResumeMismatch(
                f"{run_dir} holds a run with a different {key}{values} than this command: resume it with the "
                "overrides it was started with (see its .hydra/overrides.yaml), or choose a new hydra.run.dir."
            )


def check_resume(
    run_dir: Path,
    structure: dict[str, Any],
    first_config: dict[str, Any] | None = None,
    replay_capacity: int | None = None,
    discard_replay: bool = False,
) -> None:
    """Check, before anything is built or written, that the checkpoint in ``run_dir`` can resume with this config.

    Compares with what the checkpoint was written with (its stored resume keys; for a key it lacks, a checkpoint
    older than the key, ``first_config``: the run's ``config_resolved.yaml``, which keeps its first start's).

    Args:
        structure: ``resume_structure`` of this command's config.
        replay_capacity: this config's largest replay capacity; a saved replay that does not fit is refused unless
            ``discard_replay`` (``training.resume_discards_replay``).
    Raises:
        CheckpointError: no checkpoint can be read.
        ResumeMismatch: a resume key differs, or the saved replay would be discarded.
    """
    if not has_checkpoint(run_dir):
        return
    checkpointer = Checkpointer(run_dir, structure)
    state, _ = checkpointer._read_state(torch.device("cpu"))
    saved = dict(resume_structure(first_config) if first_config else {})
    saved.update(state.get("config") or {})
    check_resumable(saved, structure, run_dir)
    generation = state.get("replay_generation")
    manifest = checkpointer._read_manifest(generation) if generation else None
    if manifest and replay_capacity is not None and not discard_replay and manifest.get("size", 0) > replay_capacity:
        raise ResumeMismatch(_discard_message(run_dir, manifest["size"], f"a buffer of at most {replay_capacity}"))


def _discard_message(run_dir: Path, size: int, why: str) -> str:
    return (
        f"{run_dir} holds a replay of {size} transitions that does not fit this command's buffer ({why}): "
        "resuming would discard it; resume with the settings it was saved with, or add "
        "training.resume_discards_replay=true to resume with an empty replay."
    )


# ----- files and random generators ---------------------------------------------------------------------------------
def checkpoint_path(run_dir: Path) -> Path:
    return RunDir(run_dir).checkpoint / CHECKPOINT_NAME


def previous_path(run_dir: Path) -> Path:
    return RunDir(run_dir).checkpoint / PREVIOUS_NAME


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run directory holds a checkpoint to resume from (the latest, or the one before it)."""
    return checkpoint_path(run_dir).is_file() or previous_path(run_dir).is_file()


def check_readable(run_dir: Path) -> None:
    """Raise ``CheckpointError`` (one line naming the files) when the run directory holds checkpoints none of which
    can be read; a run would otherwise fail only once built. Nothing to check without a checkpoint."""
    if has_checkpoint(run_dir):
        Checkpointer(run_dir, {})._read_state(torch.device("cpu"))


def load_checkpoint(run_dir: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The latest checkpoint's state, as ``torch.load`` reads it (tensors and plain values only)."""
    return _load(checkpoint_path(run_dir), map_location)


def _load(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """``torch.load`` with ``weights_only``: a checkpoint holds tensors and plain values, nothing whose unpickling
    could run code; a file that holds anything else is refused unread (ValueError, one line)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower() or "weights_only" in str(error):
            raise ValueError(
                "refused: it holds objects other than tensors and plain values, which loading could "
                "run code from (tmexp never writes such a file)"
            ) from None
        raise


def rng_state() -> dict[str, Any]:
    """The random generators' states as tensors and plain values (``weights_only`` loads them)."""
    numpy = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy["state"]["key"].astype(np.int64)),
            "pos": numpy["state"]["pos"],
            "has_gauss": numpy["has_gauss"],
            "gauss": numpy["gauss"],
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": int(numpy["pos"])},
            "has_gauss": int(numpy["has_gauss"]),
            "gauss": float(numpy["gauss"]),
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----- a run's checkpoints -----------------------------------------------------------------------------------------
class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint failed (a full disk, a lost mount) and ``training.on_checkpoint_error`` is "stop"."""


class Checkpointer:
    """Writes a run's checkpoints (in a background thread) and resumes a run from them.

    Args:
        structure: ``resume_structure`` of the run's config, stored in each checkpoint.
        save_replay: ``training.save_replay``: write the replay buffer with each checkpoint.
        on_write_error: ``training.on_checkpoint_error``: what a checkpoint that could not be written (an
            ``OSError``: a full disk) does to the run: "retry" (said at once in one line, its files removed, the
            next checkpoint tries again) or "stop" (the next ``save``/``wait`` raises ``CheckpointWriteError``).
        discard_replay: ``training.resume_discards_replay``: a saved replay that does not fit this run's buffer is
            dropped on resume (else ``resume`` refuses it).
    """

    def __init__(
        self,
        run_dir: str | Path,
        structure: dict[str, Any],
        save_replay: bool = True,
        on_write_error: str = "retry",
        discard_replay: bool = False,
    ):
        self.run_dir = Path(run_dir)
        self.dir = RunDir(self.run_dir).checkpoint
        self.replay_dir = self.dir / REPLAY_DIR
        self.structure = structure
        self.save_replay = save_replay
        self.on_write_error = str(on_write_error)
        self.discard_replay = discard_replay
        self.last: dict[str, Any] = {}  # the last checkpoint's figures: blocked_s, wall_s, bytes, chunks_written
        self.write_failures = 0  # checkpoints that could not be written (and were let go: "retry")
        self._generation = 0  # the last replay generation used
        self._table: dict[int, dict[str, Any]] = {}  # chunk -> its entry in the last committed manifest
        self._kept: dict[str, dict[str, Any] | None] = {"latest": None, "previous": None}  # their manifests
        self._latest_good = True  # latest.pt may become previous.pt (not after resuming from previous.pt)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # ----- saving --------------------------------------------------------------------------------------------------
    def save(
        self,
        *,
        online,
        target,
        optimizer,
        scaler,
        self_loss,
        replay: ReplayBuffer,
        counters: Counters,
        wait: bool = False,
        deadline: float | None = None,
    ) -> float:
        """Take a checkpoint of the learning state; return the seconds the caller was held.

        It is written in the background; the next ``save`` (or ``wait``, or ``wait=True``) waits for it and raises
        what went wrong writing it. An exception or signal (Ctrl-C) at any point leaves this checkpoint not taken
        and the replay's record of what changed as it was, so the next ``save`` is complete.

        Args:
            deadline: ``time.monotonic()`` by which it must be on disk (the final checkpoint after a preemption
                signal): what fits is written (networks, optimiser, counters, priorities and the replay chunks
                already on disk first, then as many changed chunks as time allows); the others are left out of this
                checkpoint, and the resumed run goes on without their transitions.
        """
        t0 = time.perf_counter()
        self.wait()
        state = _capture(
            online=online,
            target=target,
            optimizer=optimizer,
            scaler=scaler,
            self_loss=self_loss,
            counters=counters,
            replay=replay,
            structure=self.structure,
        )
        snapshot = ReplaySnapshot(replay, self._table) if self.save_replay else None
        thread = None
        try:
            if snapshot is not None:
                snapshot.begin()
            self.last = {}
            thread = threading.Thread(
                target=self._write, args=(state, snapshot, t0, deadline), name="checkpoint-writer"
            )
            thread.start()
        except BaseException:
            if thread is not None and thread.ident is not None:  # it runs: it writes, and tidies up after itself
                self._thread = thread
            elif snapshot is not None:
                snapshot.close(written=False)
            raise
        self._thread = thread
        blocked = time.perf_counter() - t0
        self.last["blocked_s"] = blocked
        if wait:
            self.wait()
        return blocked

    def writing(self) -> bool:
        """Whether a checkpoint is being written."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> None:
        """Wait until the checkpoint being written is on disk; raise what went wrong writing it (a failed write
        only under ``on_write_error="stop"``: else it was said when it happened, and the run goes on)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            if not isinstance(error, OSError):
                raise error
            if self.on_write_error == "stop":
                raise CheckpointWriteError(
                    f"a checkpoint could not be written to {self.dir} ({_reason(error)}); "
                    "the run stopped (training.on_checkpoint_error=stop): free space there "
                    "and run the same command again to resume from the last checkpoint"
                ) from error

    def close(self) -> None:
        """Wait for the checkpoint being written; log (not raise) an error, for clean-up paths."""
        try:
            self.wait()
        except Exception as error:  # already failing elsewhere, or after the final save reported it
            log.error("writing the last checkpoint failed: %s: %s", type(error).__name__, error)

    def _write(self, state: dict[str, Any], snapshot: ReplaySnapshot | None, t0: float, deadline: float | None) -> None:
        """The writer thread: replay chunks, manifest, then the checkpoint that names them; then clean-up. A failure
        removes what this checkpoint wrote, at once."""
        manifest, generation, committed = None, None, False
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            written = 0
            if snapshot is not None:
                self._generation += 1
                generation = self._generation
                manifest, written = write_generation(
                    snapshot, self.replay_dir, generation, self._table, deadline, _nbytes(state)
                )
            latest, previous = self.dir / CHECKPOINT_NAME, self.dir / PREVIOUS_NAME
            rotate = self._latest_good and latest.is_file()
            kept_before = self._kept["latest"] if rotate else self._kept["previous"]
            state["replay_generation"] = manifest["generation"] if manifest else None
            state["previous_replay_generation"] = kept_before["generation"] if kept_before else None

            def rotate_latest() -> None:  # written, not yet renamed: latest.pt becomes previous.pt
                if rotate:
                    os.replace(latest, previous)
                    self._kept = {"latest": None, "previous": kept_before}

            written += write_atomic(latest, lambda f: torch.save(state, f), durable=True, before_replace=rotate_latest)
            committed = True
            sync_dir(self.dir)
            # committed: latest.pt names ``manifest``
            self._kept["latest"] = manifest
            self._latest_good = True
            if manifest is not None:
                self._table = {int(i): entry for i, entry in manifest["chunks"].items()}
            self._remove_unnamed()
            self.last.update(
                wall_s=time.perf_counter() - t0,
                bytes=written,
                chunks_written=len(snapshot.todo) - len(snapshot.unsaved) if snapshot else 0,
                chunks_unsaved=len(snapshot.unsaved) if snapshot else 0,
                copy_s=snapshot.copy_seconds if snapshot else 0.0,
            )
        except BaseException as error:  # raised in the learner's thread by ``wait``
            self._error = error
            if not committed:
                self._discard(generation)
            if isinstance(error, OSError):
                self.write_failures += 1
                goes_on = (
                    "the run goes on and the next checkpoint tries again"
                    if self.on_write_error != "stop"
                    else "the run stops (training.on_checkpoint_error=stop)"
                )
                log.error(
                    "checkpoint at frame %s not written to %s (%s): its files were removed, the last "
                    "complete checkpoint stays; %s",
                    state["counters"].get("frames"),
                    self.dir,
                    _reason(error),
                    goes_on,
                )
        finally:
            if snapshot is not None:
                snapshot.close(written=self._error is None)

    def _discard(self, generation: int | None) -> None:
        """Remove what a checkpoint that failed had written: its replay generation's files, temporary files."""
        try:
            for tmp in self.dir.glob("*.tmp"):  # the lock makes them this process's
                tmp.unlink(missing_ok=True)
            if generation is not None and self.replay_dir.is_dir():
                for path in self.replay_dir.iterdir():
                    if generation_of(path.name) == generation:
                        path.unlink(missing_ok=True)
        except OSError as error:  # the mount itself may be gone; the next resume removes them
            log.warning("could not remove the files of a failed checkpoint in %s: %s", self.dir, _reason(error))

    def _remove_unnamed(self) -> None:
        """Delete the replay files that neither kept checkpoint names (older generations, an interrupted write)."""
        if not self.replay_dir.is_dir():
            return
        keep = manifest_files(self._kept["latest"]) | manifest_files(self._kept["previous"])
        for path in self.replay_dir.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    # ----- resuming ------------------------------------------------------------------------------------------------
    def resume(
        self, device: torch.device, *, online, target, optimizer, scaler, self_loss, replay: ReplayBuffer
    ) -> Counters:
        """Load the run's checkpoint into the freshly built parts given; return its counters. Files that neither
        kept checkpoint names (a write that failed or was killed) are removed.

        Raises:
            ResumeMismatch: the checkpoint's network or task differs from this run's, or its replay does not fit
                this run's buffer (unless ``discard_replay``).
            CheckpointError: neither latest.pt nor previous.pt can be read.
        """
        state, from_latest = self._read_state(device)
        check_resumable(state.get("config", {}), self.structure, self.run_dir)
        online.load_state_dict(state["online"])
        target.load_state_dict(state["target"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        self_loss.load_state_dict(state["self_loss"])
        counters = Counters(**state["counters"])
        restore_rng_state(state["rng"])
        replay.rng.bit_generator.state = state["replay_rng"]
        manifest, dropped = self._resume_replay(replay, state.get("replay_generation"))
        counters.replay_parts_dropped += dropped
        # the next checkpoint names these files again for the chunks not written since (dropped ones are rewritten)
        self._table = {int(i): entry for i, entry in manifest["chunks"].items()} if manifest else {}
        if from_latest:
            previous_generation = state.get("previous_replay_generation")
            self._kept = {
                "latest": manifest,
                "previous": self._read_manifest(previous_generation) if previous_generation else None,
            }
        else:  # latest.pt is unreadable: the next checkpoint replaces it, previous.pt stays
            self._kept = {"latest": None, "previous": manifest}
            self._latest_good = False
        names = os.listdir(self.replay_dir) if self.replay_dir.is_dir() else []
        self._generation = max([generation_of(name) for name in names] + [0])  # never reuse a name on disk
        self._remove_leftovers()
        log.info(
            "resumed from checkpoint: %d frames, %d batches, %d transitions in replay",
            counters.frames,
            counters.batches,
            len(replay),
        )
        return counters

    def _remove_leftovers(self) -> None:
        """What a checkpoint that failed or was killed left: temporary files, replay files no checkpoint names."""
        removed = [path for path in self.dir.glob("*.tmp")]
        keep = manifest_files(self._kept["latest"]) | manifest_files(self._kept["previous"])
        if self.replay_dir.is_dir():
            removed += [path for path in self.replay_dir.iterdir() if path.name not in keep]
        if not removed:
            return
        freed = 0
        for path in removed:
            try:
                freed += path.stat().st_size
                path.unlink()
            except OSError:
                continue
        log.info("removed %d files of an unfinished checkpoint from %s (%.1f MB)", len(removed), self.dir, freed / 1e6)

    def _read_state(self, device: torch.device) -> tuple[dict[str, Any], bool]:
        """The newest readable checkpoint, and whether it is latest.pt."""
        problems = {}
        for path in (self.dir / CHECKPOINT_NAME, self.dir / PREVIOUS_NAME):
            if not path.is_file():
                problems[path.name] = "missing"
                continue
            try:
                state = _load(path, device)
                if not isinstance(state, dict) or "online" not in state:
                    raise ValueError("not a tmexp checkpoint")
            except Exception as error:
                problems[path.name] = _reason(error)
                continue
            if problems:
                log.warning(
                    "%s could not be read (%s): resuming from %s, the checkpoint before it",
                    self.dir / CHECKPOINT_NAME,
                    problems[CHECKPOINT_NAME],
                    path.name,
                )
            return state, not problems
        listed = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
        raise CheckpointError(
            f"{self.dir} holds no readable checkpoint ({listed}): move that folder away to start "
            "this run afresh, or choose another hydra.run.dir."
        )

    def _read_manifest(self, generation: int) -> dict[str, Any] | None:
        return read_manifest(self.replay_dir, generation)

    def _resume_replay(self, replay: ReplayBuffer, generation: int | None) -> tuple[dict[str, Any] | None, int]:
        try:
            return load_generation(replay, self.replay_dir, generation, discard=self.discard_replay)
        except ReplayMisfit as misfit:
            raise ResumeMismatch(_discard_message(self.run_dir, misfit.size, misfit.problem)) from None


def _nbytes(node: Any) -> int:
    """The bytes of the tensors in a state."""
    if isinstance(node, torch.Tensor):
        return node.nbytes
    if isinstance(node, dict):
        return sum(_nbytes(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return sum(_nbytes(v) for v in node)
    return 0


def _capture(
    *, online, target, optimizer, scaler, self_loss, counters: Counters, replay: ReplayBuffer, structure: dict[str, Any]
) -> dict[str, Any]:
    """A checkpoint's state, copied: the live tensors go on changing while the writer works."""
    return copy.deepcopy(
        {
            "online": online.state_dict(),
            "target": target.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "self_loss": self_loss.state_dict(),
            "counters": counters.__dict__,
            "rng": rng_state(),
            "replay_rng": replay.rng.bit_generator.state,
            "config": structure,
        }
    )
