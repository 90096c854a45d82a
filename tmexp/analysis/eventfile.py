"""Read every scalar of one TensorBoard event file, fast and without subsampling.

An event file is a sequence of TFRecords: ``uint64 length``, ``uint32 masked crc32c(length)``, ``length`` bytes of a
serialized ``tensorboard.Event``, ``uint32 masked crc32c(data)``. TensorBoard's own Python reader checks the CRCs
byte by byte in Python and parses every record with protobuf, which is what makes tbparse slow (see
``python -m tmexp.bench analysis``). Here the record walk is a tight loop over lengths, both CRCs are checked for all
records at once with numpy, and the records that have the exact layout scalar writers produce
(``Event{wall_time, step, summary{value{tag, simple_value}}}``) are decoded with numpy too; any other record goes
through protobuf, so the result is exactly what protobuf parsing of every record gives.

A truncated last record (a run still writing) or a record failing its CRC ends the readable part of the file: the
records before it are kept and a warning says where it stopped.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class EventFileWarning(UserWarning):
    """An event file was truncated or corrupt; the records before the damage were kept."""


@dataclass
class FileScalars:
    """Scalars of one file, in file order. Arrays all have shape (n,)."""

    tags: list[str]           # distinct tags; ``tag_index`` points into it
    tag_index: np.ndarray     # int32
    step: np.ndarray          # int64
    wall_time: np.ndarray     # float64
    value: np.ndarray         # float64
    first_wall_time: float = float("nan")  # of the file's first event of any kind (the writer's start)
    # Restarts (SessionLog START, written by SummaryWriter(purge_step=S) when a run resumes): (row, S) means
    # "scalars read before row ``row`` of this file, and in earlier files of the run, with step >= S are void",
    # as TensorBoard's own reader purges them.
    purges: list[tuple[int, int]] = field(default_factory=list)

    @staticmethod
    def empty(first_wall_time: float = float("nan")) -> "FileScalars":
        return FileScalars([], np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0), np.zeros(0),
                           first_wall_time)


def _crc32c_table() -> np.ndarray:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = np.zeros(256, np.uint32)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table[i] = crc
    return table


_CRC_TABLE = _crc32c_table()


def masked_crc32c(rows: np.ndarray) -> np.ndarray:
    """Masked CRC32C (the TFRecord checksum) of each row of a (n, width) uint8 matrix -> (n,) uint32."""
    crc = np.full(rows.shape[0], 0xFFFFFFFF, np.uint32)
    for col in range(rows.shape[1]):
        crc = _CRC_TABLE[(crc ^ rows[:, col]) & 0xFF] ^ (crc >> 8)
    crc ^= np.uint32(0xFFFFFFFF)
    return ((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)


def _walk_records(data: bytes) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Offsets and lengths of the records whose bytes are all present; a reason when the file ends early."""
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
        problem = f"truncated record at byte {pos} of {size}"
        if pos + 12 <= size:
            header = np.frombuffer(data, np.uint8, 8, pos)[None, :]
            if int(masked_crc32c(header)[0]) != struct.unpack_from("<I", data, pos + 8)[0]:
                problem = f"corrupt record length at byte {pos} (CRC mismatch)"
    return np.asarray(starts, np.int64), np.asarray(lengths, np.int64), problem


def _gather(buf: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """(n, width) matrix of the bytes ``buf[offsets[i] + j]``; offsets must leave ``width`` bytes in ``buf``."""
    return buf[offsets[:, None] + np.arange(width)]


def _first_bad_crc(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> int | None:
    """Index of the first record whose length or data CRC is wrong, or None."""
    bad = np.zeros(len(starts), bool)
    header = _gather(buf, starts, 8)
    stored = _gather(buf, starts + 8, 4).copy().view("<u4")[:, 0]
    bad |= masked_crc32c(header) != stored
    # Records of equal length share one vectorised pass over their bytes.
    for length in np.unique(lengths):
        same = np.nonzero(lengths == length)[0]
        # Chunks bound the (records, length) byte matrix to a few tens of MB however long the run.
        for idx in np.array_split(same, max(1, len(same) * int(length) // (32 << 20) + 1)):
            body = _gather(buf, starts[idx] + 12, int(length))
            stored = _gather(buf, starts[idx] + 12 + length, 4).copy().view("<u4")[:, 0]
            bad[idx] |= masked_crc32c(body) != stored
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
    n = len(starts)
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


def read_scalars(path: str | Path) -> FileScalars:
    """All scalars of one event file, in file order; damage ends the read with an EventFileWarning."""
    data = Path(path).read_bytes()
    buf = np.frombuffer(data, np.uint8)
    starts, lengths, problem = _walk_records(data)
    bad = _first_bad_crc(buf, starts, lengths) if len(starts) else None
    if bad is not None:
        problem = f"corrupt record {bad} (CRC mismatch at byte {int(starts[bad])})"
        starts, lengths = starts[:bad], lengths[:bad]
    if problem is not None:
        warnings.warn(f"{path}: {problem}; kept the {len(starts)} records before it.", EventFileWarning,
                      stacklevel=2)
    if len(starts) == 0:
        return FileScalars.empty()
    from tensorboard.compat.proto import event_pb2

    first_wall_time = event_pb2.Event.FromString(data[12:12 + int(lengths[0])]).wall_time

    ok, wall_time, step, tag_start, tag_len, value = _fast_scalars(buf, starts, lengths)

    # Distinct tags of the fast records: hash-free grouping by the tag bytes themselves.
    fast = np.nonzero(ok)[0]
    tags: list[str] = []
    tag_ids: dict[str, int] = {}
    tag_index = np.full(len(starts), -1, np.int32)
    if len(fast):
        width = int(tag_len[fast].max())
        tag_bytes = _gather(np.concatenate([buf, np.zeros(width, np.uint8)]), tag_start[fast], width)
        tag_bytes[np.arange(width)[None, :] >= tag_len[fast][:, None]] = 0
        keys = np.ascontiguousarray(tag_bytes).view(f"V{width}")[:, 0]
        uniq, inverse = np.unique(keys, return_inverse=True)
        local_ids = np.empty(len(uniq), np.int32)
        for k, key in enumerate(uniq):
            name = bytes(key).rstrip(b"\0").decode("utf-8")
            local_ids[k] = tag_ids.setdefault(name, len(tag_ids))
        tags = list(tag_ids)
        tag_index[fast] = local_ids[inverse.ravel()]

    # Everything else (file_version, graphs, tensor scalars, multi-value summaries) through protobuf.
    extra: list[tuple[int, str, int, float, float]] = []
    restarts: list[tuple[int, int]] = []  # (record index, purge step)
    for i in np.nonzero(~ok)[0]:
        s = int(starts[i]) + 12
        record = data[s:s + int(lengths[i])]
        for row in _protobuf_scalars(record):
            extra.append((int(i), *row))
        restart = _restart_step(record)
        if restart is not None:
            restarts.append((int(i), restart))

    if not extra:
        keep = fast
        purges = [(int(np.searchsorted(fast, i)), step_) for i, step_ in restarts]
        return FileScalars(tags, tag_index[keep], step[keep], wall_time[keep], value[keep], first_wall_time, purges)

    # Interleave protobuf rows with fast rows in record order (a record may hold several scalars).
    order_key = np.concatenate([fast.astype(np.float64), [r[0] + 0.5 for r in extra]])
    for _, tag, *_ in extra:
        tag_ids.setdefault(tag, len(tag_ids))
    tags = list(tag_ids)
    all_tag = np.concatenate([tag_index[fast], np.array([tag_ids[r[1]] for r in extra], np.int32)])
    all_step = np.concatenate([step[fast], np.array([r[2] for r in extra], np.int64)])
    all_wall = np.concatenate([wall_time[fast], np.array([r[3] for r in extra], np.float64)])
    all_value = np.concatenate([value[fast], np.array([r[4] for r in extra], np.float64)])
    order = np.argsort(order_key, kind="stable")
    sorted_keys = order_key[order]
    purges = [(int(np.searchsorted(sorted_keys, i)), step_) for i, step_ in restarts]
    return FileScalars(tags, all_tag[order], all_step[order], all_wall[order], all_value[order], first_wall_time,
                       purges)
