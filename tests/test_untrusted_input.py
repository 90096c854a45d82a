"""Files tmexp reads that a user did not write: a report export that would unpack past any export's size, and event
files with records a TensorBoard writer never makes."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from tmexp.analysis import export


def test_an_export_that_would_unpack_past_the_limit_is_refused_before_filling_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "MAX_EXPORT_BYTES", 1 << 20)
    bomb = tmp_path / "runs_export.json.gz"
    unpacked = json.dumps({"format": 1, "runs": {}, "pad": " " * (4 << 20)}).encode()
    bomb.write_bytes(gzip.compress(unpacked))  # 4 MiB of blanks in a few kB
    assert bomb.stat().st_size < 64 << 10
    taken = []
    decompressobj = zlib.decompressobj

    class Counting:
        def __init__(self, *args, **kwargs):
            self.inner = decompressobj(*args, **kwargs)

        def decompress(self, data, max_length=0):
            out = self.inner.decompress(data, max_length)
            taken.append(len(out))
            return out

        @property
        def eof(self):
            return self.inner.eof

    monkeypatch.setattr(export.zlib, "decompressobj", Counting)
    with pytest.raises(export.ExportError, match=r"unpacks to more than 1 MiB"):
        export.read_export(bomb)
    assert max(taken) <= (1 << 20) + 1  # never more than the limit in memory


def test_an_export_within_the_limit_reads_and_a_truncated_one_is_one_line(tmp_path):
    path = tmp_path / "runs_export.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"format": 1, "runs": {"a": {"x": 1}}}).encode()))
    assert export.read_export(path) == {"a": {"x": 1}}
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(export.ExportError, match="is not a readable run export") as error:
        export.read_export(path)
    assert "\n" not in str(error.value)


# ----- event files ----------------------------------------------------------------------------------------------
def _record(payload: bytes) -> bytes:
    """A TFRecord with valid CRCs around any bytes."""
    import struct

    import google_crc32c

    def masked(data: bytes) -> int:
        crc = google_crc32c.value(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    header = struct.pack("<Q", len(payload))
    return header + struct.pack("<I", masked(header)) + payload + struct.pack("<I", masked(payload))


def _scalar_event(tag: bytes, step: int, value: float) -> bytes:
    """Event{wall_time, step, summary{value{tag, simple_value}}} as scalar writers lay it out, with any tag bytes."""
    import struct

    def varint(n: int) -> bytes:
        out = b""
        while n >= 0x80:
            out += bytes([n & 0x7F | 0x80])
            n >>= 7
        return out + bytes([n])

    value_msg = b"\x0a" + varint(len(tag)) + tag + b"\x15" + struct.pack("<f", value)
    summary = b"\x0a" + varint(len(value_msg)) + value_msg
    head = b"\x09" + struct.pack("<d", 1000.0 + step) + b"\x10" + varint(step)
    return head + b"\x2a" + varint(len(summary)) + summary


@pytest.fixture
def good_file(tmp_path):
    from tmexp.analysis.synthetic import write_events

    return write_events(tmp_path / "run", [("a", 10 * i, 1000.0 + i, i + 0.5) for i in range(50)])


@pytest.mark.parametrize(
    "bad, why",
    [
        (b"\xff\xff\xff\xff not a protobuf at all", "is no TensorBoard event"),
        (_scalar_event(b"loss\xff\xfe", 999, 1.0), "has a tag that is not UTF-8"),
    ],
)
def test_a_record_with_a_valid_crc_but_no_event_ends_that_file_with_one_warning(good_file, bad, why):
    from tmexp.analysis.eventfile import EventFileWarning, read_scalars

    data = good_file.read_bytes()
    good_file.write_bytes(data + _record(bad) + _record(_scalar_event(b"a", 10_000, 7.0)))
    with pytest.warns(EventFileWarning) as caught:
        scalars = read_scalars(good_file)
    (warning,) = caught
    assert str(good_file) in str(warning.message) and why in str(warning.message)
    assert "\n" not in str(warning.message)
    assert scalars.step.tolist() == [10 * i for i in range(50)]  # what came before it, and nothing after


def test_reading_in_small_blocks_gives_exactly_what_one_block_gives(tmp_path):
    """Streaming: blocks smaller than one record, blocks of a few records, one block for the file."""
    from tensorboard.compat.proto import event_pb2

    from tmexp.analysis.eventfile import read_scalars
    from tmexp.analysis.synthetic import write_events

    path = write_events(tmp_path / "run", [(f"tag{i % 7}", i, 1000.0 + i, i * 0.25) for i in range(400)])
    restart = event_pb2.Event(
        wall_time=2000.0, step=120, session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)
    )
    long_tag = "x" * 300  # a record the fast path leaves to protobuf
    path.write_bytes(
        path.read_bytes()
        + _record(restart.SerializeToString())
        + _record(_scalar_event(long_tag.encode(), 130, 2.0))
        + b"\x01\x02\x03"
    )  # a torn tail
    import warnings

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        whole = read_scalars(path, block_bytes=1 << 30)
        for block in (40, 333, 4096):
            part = read_scalars(path, block_bytes=block)
            assert [whole.tags[i] for i in whole.tag_index] == [part.tags[i] for i in part.tag_index]
            for name in ("step", "wall_time", "value"):
                assert getattr(part, name).tolist() == getattr(whole, name).tolist()
            assert part.purges == whole.purges == [(400, 120)]
            assert part.first_wall_time == whole.first_wall_time
    assert whole.step.tolist()[-1] == 130 and len(whole.step) == 401


def test_a_comparison_goes_on_without_the_damaged_part_of_one_run(tmp_path, capsys):
    from tmexp import compare
    from tmexp.analysis.synthetic import training_rows, write_run_dir

    for name, seed in (("a", 0), ("b", 1)):
        write_run_dir(
            tmp_path / name,
            training_rows(minutes=20, seed=seed),
            overrides=[f"seed={seed}"],
            config={"seed": seed},
            status={"status": "finished"},
            meta={"host": "h"},
        )
    (events,) = (tmp_path / "b" / "tensorboard").glob("events.*")
    from tmexp.analysis.eventfile import _walk_records

    data = events.read_bytes()
    starts, _, _ = _walk_records(data)
    cut = int(starts[len(starts) // 2])  # between two records
    events.write_bytes(data[:cut] + _record(b"\xff\xff garbage") + data[cut:])
    code = compare.main([str(tmp_path / "a"), str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 0
    lines = [line for line in err.splitlines() if "warning" in line]
    assert len(lines) == 1 and str(events) in lines[0] and "is no TensorBoard event" in lines[0], err
