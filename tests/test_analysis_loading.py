"""Loading TensorBoard runs: merging, labels, damaged files, exactness against TensorBoard's own reader."""

from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tmexp.analysis import loading
from tmexp.analysis.eventfile import EventFileWarning, masked_crc32c, read_scalars
from tmexp.analysis.synthetic import write_events, write_run_dir

FIXTURES = Path(__file__).resolve().parent / "data" / "tensorboard"


def rows(tag, n, step0=0, wall0=1000.0):
    return [(tag, step0 + 10 * i, wall0 + i, float(i) + 0.5) for i in range(n)]


def test_masked_crc32c_known_value():
    # CRC32C("123456789") = 0xE3069283 (the standard check value); TFRecord masks it.
    crc = 0xE3069283
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    got = masked_crc32c(np.frombuffer(b"123456789", np.uint8)[None, :])
    assert int(got[0]) == masked


def test_several_files_in_one_run_are_merged_in_name_order(tmp_path):
    write_events(tmp_path / "run", rows("a", 3))
    write_events(tmp_path / "run", rows("a", 2, step0=100, wall0=2000.0))
    df = loading.load_scalars(tmp_path / "run", workers=1)
    assert df["step"].tolist() == [0, 10, 20, 100, 110]
    assert set(df["run"]) == {"run"}


def test_split_directories_merge_into_one_run(tmp_path):
    write_events(tmp_path / "A01_long", rows("a", 2))
    write_events(tmp_path / "A01_long_3", rows("a", 2, step0=300))
    write_events(tmp_path / "A01_long_2", rows("a", 2, step0=200))
    write_events(tmp_path / "other_5", rows("a", 1))  # no "other" beside it: stays a run of its own
    runs = loading.load_runs(tmp_path, workers=1)
    assert sorted(runs.labels()) == ["A01_long", "other_5"]
    steps = runs.scalars[runs.scalars["run"] == "A01_long"]["step"].tolist()
    assert steps == [0, 10, 200, 210, 300, 310]
    assert len(runs.runs["A01_long"].event_files) == 3


def test_hydra_runs_are_labelled_by_overrides_and_expose_config(tmp_path):
    cfg = {"seed": 1, "btr": {"use_munchausen": False}}
    write_run_dir(tmp_path / "0", rows("Training/loss", 2), overrides=["btr.use_munchausen=false", "seed=1"],
                  config=cfg, status={"status": "finished"}, meta={"gpu": None, "host": "h"})
    runs = loading.load_runs(tmp_path, workers=1)
    (label,) = runs.labels()
    assert label == "btr.use_munchausen=false,seed=1"
    info = runs.runs[label]
    assert info.path == tmp_path / "0"  # the job dir, not its tensorboard/ folder
    assert info.config == cfg and info.status["status"] == "finished" and info.meta["host"] == "h"


def test_old_linesight_tags_map_to_current_names(tmp_path):
    write_events(tmp_path / "r", rows("eval_race_time_trained_A01", 2) + rows("loss", 1))
    df = loading.load_scalars(tmp_path / "r", workers=1)
    assert set(df["tag"]) == {"Race/eval_race_time_trained_A01", "Training/loss"}
    raw = loading.load_scalars(tmp_path / "r", workers=1, canonical_tags=False)
    assert set(raw["tag"]) == {"eval_race_time_trained_A01", "loss"}


def test_truncated_last_record_warns_and_keeps_the_rest(tmp_path):
    path = write_events(tmp_path / "r", rows("a", 5))
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.warns(EventFileWarning, match="truncated"):
        fs = read_scalars(path)
    assert fs.step.tolist() == [0, 10, 20, 30]


def test_corrupt_record_warns_and_keeps_records_before_it(tmp_path):
    path = write_events(tmp_path / "r", rows("a", 5))
    data = bytearray(path.read_bytes())
    # Flip one byte inside the value of the fourth scalar record (last 4 data bytes precede its 4-byte CRC).
    good = read_scalars(path)
    assert len(good.step) == 5
    offsets = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 8], "little")
        offsets.append((pos, length))
        pos += 16 + length
    start, length = offsets[4]  # record 0 is the file_version event
    data[start + 12 + length - 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(EventFileWarning, match="CRC"):
        fs = read_scalars(path)
    assert fs.step.tolist() == [0, 10, 20]


def test_file_without_scalars_gives_no_rows():
    runs = loading.load_runs(FIXTURES / "linesight_lay_mono", workers=1)
    assert len(runs.scalars) == 0
    assert list(runs.scalars.columns) == loading.COLUMNS


def test_fixture_matches_tensorboards_reader_exactly():
    (path,) = (FIXTURES / "linesight_default_hocko_run").glob("*tfevents*")
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    df = loading.load_scalars(path.parent, workers=1, canonical_tags=False)
    assert len(df) == sum(len(acc.Scalars(t)) for t in acc.Tags()["scalars"]) > 0
    for tag in acc.Tags()["scalars"]:
        mine = df[df["tag"] == tag]
        theirs = acc.Scalars(tag)
        assert mine["step"].tolist() == [e.step for e in theirs]
        assert mine["wall_time"].tolist() == [e.wall_time for e in theirs]
        assert mine["value"].tolist() == [e.value for e in theirs]
    unfinished = df[df["tag"] == "eval_race_time_trained_hock"]["value"]
    assert (unfinished == 300.0).any()


def test_nothing_is_subsampled(tmp_path):
    write_events(tmp_path / "r", rows("a", 10_050))
    df = loading.load_scalars(tmp_path / "r", workers=1)
    assert len(df) == 10_050
    assert df["value"].iloc[-1] == 10_049.5


def test_records_outside_the_fast_layout_read_like_protobuf(tmp_path):
    long_tag = "x" * 130  # longer than a one-byte length: the protobuf path
    writer = EventFileWriter(str(tmp_path / "r"))
    tensor_value = summary_pb2.Summary.Value(tag="tensor_scalar")
    tensor_value.metadata.plugin_data.plugin_name = "scalars"
    tensor_value.tensor.dtype = 2  # DT_DOUBLE
    tensor_value.tensor.double_val.append(2.25)
    events = [
        event_pb2.Event(wall_time=1.0, step=0, summary=summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="a", simple_value=1.5)])),
        event_pb2.Event(wall_time=2.0, step=5, summary=summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=long_tag, simple_value=3.0),
            summary_pb2.Summary.Value(tag="b", simple_value=-1.0)])),
        event_pb2.Event(wall_time=3.0, step=7, summary=summary_pb2.Summary(value=[tensor_value])),
        event_pb2.Event(wall_time=4.0, step=-3, summary=summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="a", simple_value=0.25)])),
    ]
    for event in events:
        writer.add_event(event)
    writer.close()
    df = loading.load_scalars(tmp_path / "r", workers=1)
    got = list(zip(df["tag"].astype(str), df["step"], df["wall_time"], df["value"]))
    assert got == [("a", 0, 1.0, 1.5), (long_tag, 5, 2.0, 3.0), ("b", 5, 2.0, -1.0),
                   ("tensor_scalar", 7, 3.0, 2.25), ("a", -3, 4.0, 0.25)]


def test_parallel_and_serial_reads_agree(tmp_path):
    for k in range(3):
        write_events(tmp_path / f"run{k}", rows(f"t{k}", 50 + k))
    serial = loading.load_scalars(tmp_path, workers=1)
    parallel = loading.load_scalars(tmp_path, workers=2)
    assert serial.equals(parallel)


def test_missing_or_empty_paths_raise_a_clear_error(tmp_path):
    with pytest.raises(loading.RunLoadError, match="does not exist"):
        loading.load_runs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(loading.RunLoadError, match="no TensorBoard event files"):
        loading.load_runs(tmp_path / "empty")


def test_relative_time_starts_at_the_first_event_of_any_kind():
    (path,) = (FIXTURES / "linesight_default_hocko_run").glob("*tfevents*")
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    runs = loading.load_runs(path.parent, workers=1)
    (start,) = runs.starts().values()
    assert start == acc.FirstEventTimestamp()
    assert start < runs.scalars["wall_time"].min()  # the writer's first event precedes the first scalar


def test_garbage_length_is_reported_as_corrupt_not_truncated(tmp_path):
    path = write_events(tmp_path / "r", rows("a", 4))
    data = bytearray(path.read_bytes())
    pos = 0
    for _ in range(3):  # skip file_version and two scalars; break the third scalar's length field
        pos += 16 + int.from_bytes(data[pos:pos + 8], "little")
    data[pos:pos + 8] = (10**9).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    with pytest.warns(EventFileWarning, match="corrupt record length"):
        fs = read_scalars(path)
    assert fs.step.tolist() == [0, 10]


def test_overrides_shared_by_all_jobs_are_left_out_of_labels(tmp_path):
    for s in range(2):
        write_run_dir(tmp_path / str(s), rows("a", 1), overrides=["+experiment=smoke", f"seed={s}"])
    assert loading.load_runs(tmp_path, workers=1).labels() == ["seed=0", "seed=1"]
    # one job alone keeps all its overrides
    assert loading.load_runs(tmp_path / "0", workers=1).labels() == ["+experiment=smoke,seed=0"]


def test_resumed_run_purges_what_the_killed_run_logged_after_the_checkpoint(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "run"
    first = SummaryWriter(str(run))
    for step in range(0, 100, 10):  # killed after step 90; its last checkpoint was at step 50
        first.add_scalar("Training/loss", float(step), step)
    first.close()
    resumed = SummaryWriter(str(run), purge_step=50)
    for step in range(50, 80, 10):
        resumed.add_scalar("Training/loss", 1000.0 + step, step)
    resumed.close()
    df = loading.load_scalars(run, workers=1)
    df = df[df.tag == "Training/loss"]
    assert df.step.tolist() == [0, 10, 20, 30, 40, 50, 60, 70]
    assert df.value.tolist() == [0, 10, 20, 30, 40, 1050, 1060, 1070]
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("Training/loss")] == df.step.tolist()
