"""Read every scalar of one TensorBoard event file, fast and without subsampling.

An event file is a sequence of TFRecords: ``uint64 length``, ``uint32 masked crc32c(length)``, ``length`` bytes of a
serialized ``tensorboard.Event``, ``uint32 masked crc32c(data)``. TensorBoard's own Python reader checks the CRCs
byte by byte in Python and parses every record with protobuf, which is what makes tbparse slow (see
``python -m tmexp.bench analysis``). Here the file is read in blocks of whole records (about ``BLOCK_BYTES``, so a
worker's memory does not grow with the file), the record walk is a tight loop over lengths, both CRCs are checked
with ``google-crc32c`` (C, hardware CRC32C where the CPU has it), and the records that have the exact layout scalar
writers produce (``Event{wall_time, step, summary{value{tag, simple_value}}}``) are decoded with numpy for a whole
block at once; any other record goes through protobuf, so the result is exactly what protobuf parsing of every
record gives.

A truncated last record (a run still writing), a record failing its CRC, and a record whose bytes pass the CRC but
are no Event (invalid protobuf, a tag that is not UTF-8: a file tmexp did not write) end the readable part of the
file: the records before it are kept and one warning names the file and says where it stopped.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import google_crc32c
import numpy as np


class EventFileWarning(UserWarning):
    """An event file was truncated or corrupt; the records before the damage were kept."""


@dataclass
class FileScalars:
    """Scalars of one file, in file order. Arrays all have shape (n,)."""

    tags: list[str]  # distinct tags; ``tag_index`` points into it
    tag_index: np.ndarray  # int32
    step: np.ndarray  # int64
    wall_time: np.ndarray  # float64
    value: np.ndarray  # float64
    first_wall_time: float = float("nan")  # of the file's first event of any kind (the writer's start)
    # Restarts (SessionLog START, written by SummaryWriter(purge_step=S) when a run resumes): (row, S) means
    # "scalars read before row ``row`` of this file, and in earlier files of the run, with step >= S are void",
    # as TensorBoard's own reader purges them.
    purges: list[tuple[int, int]] = field(default_factory=list)

    @staticmethod
    def empty(first_wall_time: float = float("nan")) -> FileScalars:
        return FileScalars([], np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0), np.zeros(0), first_wall_time)


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _mask(crc: np.ndarray) -> np.ndarray:
    """TFRecord's mask of (n,) uint32 CRCs."""
    return ((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)


def masked_crc32c(rows: np.ndarray) -> np.ndarray:
    """Masked CRC32C (the TFRecord checksum) of each row of a (n, width) uint8 matrix -> (n,) uint32."""
    rows = np.ascontiguousarray(rows, np.uint8)
    return np.array([_masked(google_crc32c.value(row.tobytes())) for row in rows], np.uint32)


def _walk_records(data: bytes, offset: int = 0) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Offsets and lengths of the records whose bytes are all present; a reason when the file ends early (``data``
    starting at byte ``offset`` of the file)."""
    unpack = struct.Struct("<Q").unpack_from
    size = len(data)
    starts: list[int] = []
    lengths: list[int] = []
    pos = 0
    while pos + 12 <= size:
        (length,) = unpack(data, pos)
        if pos + 16 + length > size:
            break
        starts.append(pos)
        lengths.append(length)
        pos += 16 + length
    problem = None
    if pos != size:
        problem = f"truncated record at byte {pos + offset} of {size + offset}"
        if pos + 12 <= size and not _header_ok(data, pos):
            problem = f"corrupt record length at byte {pos + offset} (CRC mismatch)"
    return np.asarray(starts, np.int64), np.asarray(lengths, np.int64), problem


def _header_ok(data: bytes, pos: int) -> bool:
    return _masked(google_crc32c.value(data[pos : pos + 8])) == struct.unpack_from("<I", data, pos + 8)[0]


def _gather(buf: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """(n, width) matrix of the bytes ``buf[offsets[i] + j]``; offsets must leave ``width`` bytes in ``buf``."""
    return buf[offsets[:, None] + np.arange(width)]


def _first_bad_crc(data: bytes, starts: np.ndarray, lengths: np.ndarray) -> int | None:
    """Index of the first record whose length or data CRC is wrong, or None."""
    crc, n = google_crc32c.value, len(starts)
    header = np.fromiter((crc(data[a : a + 8]) for a in starts.tolist()), np.uint32, n)
    body = np.fromiter(
        (crc(data[a + 12 : a + 12 + length]) for a, length in zip(starts.tolist(), lengths.tolist())), np.uint32, n
    )
    buf = np.frombuffer(data, np.uint8)
    bad = _mask(header) != _gather(buf, starts + 8, 4).copy().view("<u4")[:, 0]
    bad |= _mask(body) != _gather(buf, starts + 12 + lengths, 4).copy().view("<u4")[:, 0]
    hits = np.nonzero(bad)[0]
    return int(hits[0]) if len(hits) else None


def _decode_varints(buf: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Varints starting at ``offsets`` -> (value as int64, byte length). Length 0 marks an invalid varint."""
    raw = _gather(buf, offsets, 10).astype(np.uint64)
    is_last = raw < 0x80
    has_end = is_last.any(axis=1)
    nbytes = np.where(has_end, is_last.argmax(axis=1) + 1, 0)
    keep = np.arange(10)[None, :] < nbytes[:, None]
    parts = (raw & np.uint64(0x7F)) << (np.uint64(7) * np.arange(10, dtype=np.uint64))[None, :]
    value = np.bitwise_or.reduce(np.where(keep, parts, np.uint64(0)), axis=1)
    return value.view(np.int64), nbytes


def _fast_scalars(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray):
    """Decode records laid out as Event{1: wall_time, 2: step, 5: summary{1: value{1: tag, 2: simple_value}}}.

    Returns (matched mask, wall_time, step, tag start, tag length, value) for all records; only entries under the
    mask are meaningful. Every byte of a matched record is accounted for, so protobuf would decode it identically.
    """
    data_start = starts + 12
    end = data_start + lengths
    # Pad so that fixed-width gathers near the end of the buffer stay inside it.
    padded = np.concatenate([buf, np.zeros(32, np.uint8)])
    ok = lengths >= 21
    ok &= padded[data_start] == 0x09
    ok &= padded[data_start + 9] == 0x10
    step, step_len = _decode_varints(padded, data_start + 10)
    ok &= step_len > 0
    p = data_start + 10 + step_len
    ok &= padded[p] == 0x2A
    summary_len = padded[p + 1].astype(np.int64)
    ok &= padded[p + 2] == 0x0A
    value_len = padded[p + 3].astype(np.int64)
    ok &= padded[p + 4] == 0x0A
    tag_len = padded[p + 5].astype(np.int64)
    # Single-byte lengths only (tags shorter than 118 bytes); longer ones take the protobuf path.
    ok &= (summary_len < 0x80) & (value_len < 0x80) & (tag_len < 0x80)
    ok &= value_len == tag_len + 7
    ok &= summary_len == value_len + 2
    ok &= p + 2 + summary_len == end
    ok &= padded[np.minimum(p + 6 + tag_len, len(padded) - 1)] == 0x15
    wall_time = _gather(padded, np.where(ok, data_start + 1, 0), 8).copy().view("<f8")[:, 0]
    value = _gather(padded, np.where(ok, end - 4, 0), 4).copy().view("<f4")[:, 0].astype(np.float64)
    return ok, wall_time, step, p + 6, tag_len, value


def _restart_step(record: bytes) -> int | None:
    """The step of a SessionLog START event (a resumed writer's purge step), else None."""
    from tensorboard.compat.proto import event_pb2

    event = event_pb2.Event.FromString(record)
    if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
        return int(event.step)
    return None


def _protobuf_scalars(record: bytes) -> list[tuple[str, int, float, float]]:
    """(tag, step, wall_time, value) of every scalar in one serialized Event, through protobuf."""
    from tensorboard.compat.proto import event_pb2

    event = event_pb2.Event.FromString(record)
    if not event.HasField("summary"):
        return []
    rows = []
    for item in event.summary.value:
        if item.HasField("simple_value"):
            rows.append((item.tag, event.step, event.wall_time, float(item.simple_value)))
        elif item.HasField("tensor") and item.metadata.plugin_data.plugin_name == "scalars":
            rows.append((item.tag, event.step, event.wall_time, _tensor_scalar(item.tensor)))
    return rows


def _tensor_scalar(tensor) -> float:
    """The value of a rank-0 TensorProto written by tf.summary.scalar (float or double)."""
    from tensorboard.util import tensor_util

    return float(tensor_util.make_ndarray(tensor).item())


BLOCK_BYTES = 8 << 20  # records are read and decoded this many bytes at a time (a longer record: alone)


def _blocks(f, block_bytes: int):
    """Runs of whole records of an open event file: (bytes, file offset); the last run holds whatever the file
    ends with (a truncated record included) and comes with True."""
    unpack = struct.Struct("<Q").unpack_from
    pending, offset = b"", 0
    while True:
        chunk = f.read(block_bytes)
        data = pending + chunk
        if len(chunk) < block_bytes:
            yield data, offset, True
            return
        pos = 0
        while pos + 12 <= len(data):
            (length,) = unpack(data, pos)
            if pos + 16 + length > len(data):
                break
            pos += 16 + length
        if pos == 0:  # one record longer than a block: read it whole, once its length is known to be right
            if len(data) < 12 or not _header_ok(data, 0):
                yield data + f.read(), offset, True  # the walk says where and why it stops
                return
            (length,) = unpack(data, 0)
            data += f.read(16 + length - len(data))
            if len(data) < 16 + length:  # the file ends inside it
                yield data, offset, True
                return
            pos = 16 + length
        yield data[:pos], offset, False
        offset += pos
        pending = data[pos:]


class _Tags:
    """Tag names in order of first appearance in a file."""

    def __init__(self):
        self.ids: dict[str, int] = {}

    def id(self, name: str) -> int:
        return self.ids.setdefault(name, len(self.ids))


def read_scalars(path: str | Path, block_bytes: int = BLOCK_BYTES) -> FileScalars:
    """All scalars of one event file, in file order; damage ends the read with one EventFileWarning naming the
    file."""
    from tensorboard.compat.proto import event_pb2

    tags = _Tags()
    parts: list[tuple[np.ndarray, ...]] = []
    purges: list[tuple[int, int]] = []
    first_wall_time, rows, kept, problem = float("nan"), 0, 0, None
    with open(path, "rb") as f:
        for data, offset, _last in _blocks(f, block_bytes):
            starts, lengths, problem = _walk_records(data, offset)  # a problem only in the last block
            block, block_purges, stop = _block_scalars(data, starts, lengths, tags, offset)
            if len(starts) and first_wall_time != first_wall_time and (stop is None or stop[0] > 0):
                first_wall_time = event_pb2.Event.FromString(data[12 : 12 + int(lengths[0])]).wall_time
            parts.append(block)
            purges += [(rows + row, step) for row, step in block_purges]
            rows += len(block[0])
            kept += len(starts) if stop is None else stop[0]
            if stop is not None:
                problem = stop[1]
                break
    if problem is not None:
        warnings.warn(f"{path}: {problem}; kept the {kept} records before it.", EventFileWarning, stacklevel=2)
    if not rows:
        return (
            FileScalars(
                list(tags.ids),
                np.zeros(0, np.int32),
                np.zeros(0, np.int64),
                np.zeros(0),
                np.zeros(0),
                first_wall_time,
                purges,
            )
            if tags.ids or purges
            else FileScalars.empty(first_wall_time)
        )
    tag_index, step, wall_time, value = (np.concatenate(column) for column in zip(*parts))
    return FileScalars(list(tags.ids), tag_index, step, wall_time, value, first_wall_time, purges)


def _block_scalars(data: bytes, starts: np.ndarray, lengths: np.ndarray, tags: _Tags, offset: int):
    """The scalars of a run of whole records: ((tag_index, step, wall_time, value), purges, stop).

    ``stop`` is None, or (index of the first record that cannot be read, why): the rows of the records before it
    only are returned.
    """
    empty = (np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    stop = None
    bad = _first_bad_crc(data, starts, lengths) if len(starts) else None
    if bad is not None:
        stop = (bad, f"corrupt record (CRC mismatch at byte {int(starts[bad]) + offset})")
        starts, lengths = starts[:bad], lengths[:bad]
    if len(starts) == 0:
        return empty, [], stop
    buf = np.frombuffer(data, np.uint8)
    ok, wall_time, step, tag_start, tag_len, value = _fast_scalars(buf, starts, lengths)

    # Distinct tags of the fast records: hash-free grouping by the tag bytes themselves.
    fast = np.nonzero(ok)[0]
    limit = len(starts)  # records from here on are not read (a bad one)
    local_ids = np.zeros(0, np.int32)
    inverse = np.zeros(0, np.int64)
    if len(fast):
        width = int(tag_len[fast].max())
        tag_bytes = _gather(np.concatenate([buf, np.zeros(width, np.uint8)]), tag_start[fast], width)
        tag_bytes[np.arange(width)[None, :] >= tag_len[fast][:, None]] = 0
        keys = np.ascontiguousarray(tag_bytes).view(f"V{width}")[:, 0]
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        local_ids = np.full(len(uniq), -1, np.int32)
        for k in np.argsort(first):  # in order of appearance: a tag past a bad record is never named
            try:
                name = bytes(uniq[k]).rstrip(b"\0").decode("utf-8")
            except UnicodeDecodeError:
                limit = int(fast[first[k]])
                stop = (limit, f"record at byte {int(starts[limit]) + offset} has a tag that is not UTF-8")
                break
            local_ids[k] = tags.id(name)

    # Everything else (file_version, graphs, tensor scalars, multi-value summaries) through protobuf.
    extra: list[tuple[int, str, int, float, float]] = []
    restarts: list[tuple[int, int]] = []  # (record index, purge step)
    for i in np.nonzero(~ok)[0].tolist():
        if i >= limit:
            break
        s = int(starts[i]) + 12
        record = data[s : s + int(lengths[i])]
        try:
            rows = _protobuf_scalars(record)
            restart = _restart_step(record)
        except Exception as error:  # DecodeError, or a value protobuf cannot convert: no Event a writer makes
            limit = i
            stop = (i, f"record at byte {int(starts[i]) + offset} is no TensorBoard event ({type(error).__name__})")
            break
        extra += [(i, *row) for row in rows]
        if restart is not None:
            restarts.append((i, restart))

    kept = fast < limit  # ``fast`` is sorted: a prefix
    fast, inverse = fast[kept], inverse[: int(kept.sum())]
    order_key = np.concatenate([fast.astype(np.float64), [r[0] + 0.5 for r in extra]])
    order = np.argsort(order_key, kind="stable")
    all_tag = np.concatenate([local_ids[inverse], np.array([tags.id(r[1]) for r in extra], np.int32)])[order]
    all_step = np.concatenate([step[fast], np.array([r[2] for r in extra], np.int64)])[order]
    all_wall = np.concatenate([wall_time[fast], np.array([r[3] for r in extra], np.float64)])[order]
    all_value = np.concatenate([value[fast], np.array([r[4] for r in extra], np.float64)])[order]
    sorted_keys = order_key[order]
    purges = [(int(np.searchsorted(sorted_keys, i)), step_) for i, step_ in restarts]
    return (all_tag, all_step, all_wall, all_value), purges, stop
