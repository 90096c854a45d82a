"""The replay's on-disk store beside a checkpoint: generations of chunk files, each named by a manifest.

Under ``<run_dir>/checkpoint/replay/``::

    manifest-gN.json       a replay generation: the buffer's state (size, write position, capacity, largest priority),
                           for each chunk of ``CHUNK_ROWS`` rows its file, rows and CRC-32, and the spans a checkpoint
                           cut short by a preemption deadline left out
    chunkI-gN.npy          chunk I as written in generation N: its arrays, np.save records one after another
    priority-gN.npy        the priorities of generation N (saved whole: every batch changes some)

A generation writes only the chunks changed since the one before and names the others from it. ``ReplaySnapshot`` is
the replay as a checkpoint saw it; ``write_generation`` writes it, ``load_generation`` reads one back, dropping a
chunk that is missing or fails its checksum with a one-line warning. The checkpoint (``tmexp.core.checkpoint``)
decides which generations are kept: those its latest.pt and previous.pt name.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tmexp.core.replay import STORED, ReplayBuffer
from tmexp.rundir import sync_dir, write_atomic

log = logging.getLogger(__name__)

REPLAY_DIR = "replay"
# Before the disk rate is measured, the preemption deadline assumes this many bytes a second.
_ASSUMED_WRITE_RATE = 50e6


class ReplayMisfit(ValueError):
    """A saved replay that does not fit the buffer it would be loaded into."""

    def __init__(self, size: int, problem: str):
        super().__init__(problem)
        self.size, self.problem = size, problem


def _crc32(arrays: list[np.ndarray]) -> int:
    crc = 0
    for array in arrays:
        # .data (the array's memoryview): numpy's stubs give ndarray the buffer protocol only for Python >= 3.12
        crc = zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data, crc)
    return crc


def _save_arrays(f: BinaryIO, arrays: list[np.ndarray]) -> None:
    for array in arrays:
        np.save(f, array, allow_pickle=False)


def _load_arrays(path: Path, count: int) -> list[np.ndarray]:
    with open(path, "rb") as f:
        return [np.load(f, allow_pickle=False) for _ in range(count)]


def generation_of(name: str) -> int:
    """N of a replay file named ``...-gN.npy`` / ``...-gN.json`` (0 for any other name)."""
    stem = name.split(".", 1)[0]
    _, _, gen = stem.rpartition("-g")
    return int(gen) if gen.isdigit() else 0


def manifest_name(generation: int) -> str:
    return f"manifest-g{generation}.json"


def manifest_files(manifest: dict[str, Any] | None) -> set[str]:
    if manifest is None:
        return set()
    return {manifest_name(manifest["generation"]), manifest["priority"]["file"]} | {
        entry["file"] for entry in manifest["chunks"].values()
    }


# ----- the replay as a checkpoint saw it ---------------------------------------------------------------------------
class ReplaySnapshot:
    """The replay at the moment a checkpoint was taken, for the writer thread.

    Priorities and the buffer's state are copied at once; the chunks to write are copied when the writer takes them,
    or earlier, by the learner, when ``ReplayBuffer.add`` is about to overwrite one (``before_write``). Creating it
    changes nothing in the replay; ``begin`` does, and ``close(written=False)`` undoes it.
    """

    def __init__(self, replay: ReplayBuffer, table: dict[int, dict[str, Any]]):
        self.replay = replay
        self.state = {
            "size": replay.size,
            "write_pos": replay.write_pos,
            "capacity": replay.capacity,
            "max_priority": replay.max_priority,
            "chunk_rows": replay.chunk_rows,
        }
        self.fields = {
            name: [getattr(replay, name).dtype.str, list(getattr(replay, name).shape[1:])] for name in STORED
        }
        self.priority = replay.priority[: replay.size].copy()
        self.spans = {i: replay.chunk_span(i) for i in range(replay.chunk_count())}
        # A chunk is written again when rows of it were written, or when its row count changed (capacity changes).
        self.todo = [i for i, (a, b) in self.spans.items() if replay.dirty[i] or table.get(i, {}).get("rows") != b - a]
        next_row = replay.size if replay.size < replay.capacity else replay.write_pos
        hot, n = next_row // replay.chunk_rows, len(replay.dirty)
        self.todo.sort(key=lambda i: (i - hot) % n)  # the chunks the learner overwrites soonest first
        self.unsaved: list[int] = []  # chunks of ``todo`` left out to meet a deadline
        self.copy_seconds = 0.0  # the learner's time copying chunks it was about to overwrite
        self._pending = set(self.todo)
        self._copies: dict[int, dict[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def begin(self) -> None:
        """From now on the replay's changes count against the next checkpoint, and overwrites copy first."""
        self.replay.before_write = self._before_write
        self.replay.dirty[:] = False

    def _copy(self, i: int) -> dict[str, np.ndarray]:  # holding the lock
        self._pending.discard(i)
        return self.replay.copy_rows(*self.spans[i])

    def _before_write(self, chunks: np.ndarray) -> None:  # the learner's thread, inside ReplayBuffer.add
        with self._lock:
            for i in chunks.tolist():
                if i in self._pending:
                    t0 = time.perf_counter()
                    self._copies[i] = self._copy(i)
                    self.copy_seconds += time.perf_counter() - t0

    def take(self, i: int) -> dict[str, np.ndarray]:
        with self._lock:
            return self._copies.pop(i) if i in self._copies else self._copy(i)

    def close(self, written: bool) -> None:
        """Detach from the replay; the chunks not on disk (all of ``todo`` unless ``written``) stay marked changed,
        for the next checkpoint."""
        with self._lock:
            if self.replay.before_write == self._before_write:
                self.replay.before_write = None
            self.replay.dirty[self.todo if not written else self.unsaved] = True
            self._copies.clear()


def write_generation(
    snapshot: ReplaySnapshot,
    replay_dir: Path,
    generation: int,
    table: dict[int, dict[str, Any]],
    deadline: float | None = None,
    other_bytes: int = 0,
) -> tuple[dict[str, Any], int]:
    """Write generation ``generation`` of the replay: the chunks ``snapshot`` lists (the others named from ``table``,
    the last committed manifest's entries), the priorities, then the manifest; return it and the bytes written.

    With a ``deadline`` (``time.monotonic()``), chunks are left out (``snapshot.unsaved``, the manifest's
    ``unsaved`` spans) once what remains, ``other_bytes`` of checkpoint included, would not be on disk by then.
    """
    replay_dir.mkdir(parents=True, exist_ok=True)
    todo = set(snapshot.todo)
    chunks = {i: table[i] for i in snapshot.spans if i not in todo}
    written, started = 0, time.monotonic()
    # what must follow the chunks: priorities, manifest, the checkpoint itself
    rest = snapshot.priority.nbytes + other_bytes + 4096
    for k, i in enumerate(snapshot.todo):
        if deadline is not None:
            elapsed = time.monotonic() - started
            rate = written / elapsed if written and elapsed > 0 else _ASSUMED_WRITE_RATE
            start, stop = snapshot.spans[i]
            chunk_bytes = (stop - start) * sum(getattr(snapshot.replay, name)[:1].nbytes for name in STORED)
            if time.monotonic() + 1.5 * (chunk_bytes + rest) / rate + 0.5 > deadline:
                snapshot.unsaved = snapshot.todo[k:]
                log.warning(
                    "final checkpoint: %d of %d changed replay chunks left out to finish before the "
                    "preemption deadline (training.preempt_save_deadline_s)",
                    len(snapshot.unsaved),
                    len(snapshot.todo),
                )
                break
        taken = snapshot.take(i)
        arrays = [taken[name] for name in STORED]
        name = f"chunk{i}-g{generation}.npy"
        written += write_atomic(replay_dir / name, functools.partial(_save_arrays, arrays=arrays), durable=True)
        chunks[i] = {"file": name, "rows": len(arrays[0]), "crc32": _crc32(arrays)}
        del taken, arrays
    priority = f"priority-g{generation}.npy"
    written += write_atomic(replay_dir / priority, lambda f: _save_arrays(f, [snapshot.priority]), durable=True)
    manifest = {
        "generation": generation,
        **snapshot.state,
        "fields": snapshot.fields,
        "chunks": {str(i): chunks[i] for i in sorted(chunks)},
        "unsaved": [list(snapshot.spans[i]) for i in sorted(snapshot.unsaved)],
        "priority": {"file": priority, "rows": len(snapshot.priority), "crc32": _crc32([snapshot.priority])},
    }
    text = json.dumps(manifest, indent=1).encode()
    written += write_atomic(replay_dir / manifest_name(generation), text, durable=True)
    sync_dir(replay_dir)
    return manifest, written


def read_manifest(replay_dir: Path, generation: int) -> dict[str, Any] | None:
    try:
        return json.loads((replay_dir / manifest_name(generation)).read_text())
    except (OSError, ValueError):
        return None


def load_generation(
    replay: ReplayBuffer, replay_dir: Path, generation: int | None, discard: bool = False
) -> tuple[dict[str, Any] | None, int]:
    """Fill ``replay`` from a saved generation; return its manifest and the number of parts dropped.

    Without one (``training.save_replay=false``, or a checkpoint from before replay was saved) the buffer stays
    empty, and the learner trains again once it holds ``memory_start_learn`` transitions. A generation that does not
    fit ``replay`` raises ``ReplayMisfit``, or, with ``discard``, is left out with a warning.
    """
    if generation is None:
        return None, 0
    path = replay_dir / manifest_name(generation)
    manifest = read_manifest(replay_dir, generation)
    if manifest is None:
        log.warning("%s could not be read: the run resumes with an empty replay", path)
        return None, 1
    problem = misfit(manifest, replay)
    if problem:
        if not discard:
            raise ReplayMisfit(manifest["size"], problem)
        log.warning(
            "the replay saved in %s does not fit this run's buffer (%s): the run resumes with an empty "
            "replay (training.resume_discards_replay=true)",
            path,
            problem,
        )
        return None, 0
    size = manifest["size"]
    replay.size, replay.write_pos = size, manifest["write_pos"]
    replay.capacity = max(size, min(manifest["capacity"], replay.max_capacity))
    replay.max_priority = manifest["max_priority"]
    unsaved = [tuple(span) for span in manifest.get("unsaved", [])]  # left out to meet a preemption deadline
    dropped, bad = 0, list(unsaved)
    for i in range(-(-size // replay.chunk_rows)):
        start, stop = replay.chunk_span(i, size)
        if (start, stop) in unsaved:
            continue
        entry = manifest["chunks"].get(str(i))
        try:
            if entry is None:
                raise ValueError("not in the manifest")
            arrays = checked_arrays(
                replay_dir / entry["file"],
                len(STORED),
                stop - start,
                entry["crc32"],
                [manifest["fields"][name] for name in STORED],
            )
        except Exception as error:
            where = replay_dir / entry["file"] if entry else f"chunk {i} of {path}"
            log.warning(
                "replay chunk %s dropped (%s): the run resumes without its %d transitions",
                where,
                reason(error),
                stop - start,
            )
            bad.append((start, stop))
            continue
        replay.put_rows(start, dict(zip(STORED, arrays)))
    if unsaved:
        log.warning(
            "the checkpoint in %s was cut short by a preemption deadline: the run resumes without the "
            "%d replay transitions it left out",
            replay_dir.parent,
            sum(b - a for a, b in unsaved),
        )
    entry = manifest["priority"]
    try:
        (priority,) = checked_arrays(replay_dir / entry["file"], 1, size, entry["crc32"], [["<f8", []]])
        replay.priority[:size] = priority
    except Exception as error:
        log.warning(
            "replay priorities %s dropped (%s): every transition gets the largest priority",
            replay_dir / entry["file"],
            reason(error),
        )
        replay.priority[:size] = replay.max_priority
        dropped += 1
    replay.dirty[:] = False
    replay.drop_spans(bad)
    return manifest, dropped + len(bad) - len(unsaved)


def reason(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return text if isinstance(error, ValueError) and text else f"{type(error).__name__}: {text}".rstrip(": ")


def misfit(manifest: dict[str, Any], replay: ReplayBuffer) -> str | None:
    """Why a saved replay cannot go into ``replay``, or None."""
    if manifest["chunk_rows"] != replay.chunk_rows:
        return f"chunks of {manifest['chunk_rows']} rows, not {replay.chunk_rows}"
    if manifest["size"] > replay.max_capacity:
        return f"{manifest['size']} transitions for a buffer of at most {replay.max_capacity}"
    for name in STORED:
        expected = [getattr(replay, name).dtype.str, list(getattr(replay, name).shape[1:])]
        if manifest["fields"].get(name) != expected:
            return f"{name} saved as {manifest['fields'].get(name)}, needed {expected}"
    return None


def checked_arrays(path: Path, count: int, rows: int, crc: int, fields: list) -> list[np.ndarray]:
    """The ``count`` arrays of a replay file, checked against their manifest entry (raises ValueError)."""
    arrays = _load_arrays(path, count)
    for array, (dtype, shape) in zip(arrays, fields):
        if array.dtype.str != dtype or list(array.shape) != [rows, *shape]:
            raise ValueError(f"{array.dtype.str} {list(array.shape)} where {dtype} {[rows, *shape]} was saved")
    if _crc32(arrays) != crc:
        raise ValueError("checksum mismatch")
    return arrays
