"""Loading TensorBoard runs: merging, labels, damaged files, exactness against TensorBoard's own reader."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tmexp.analysis import loading
from tmexp.analysis.eventfile import EventFileWarning, masked_crc32c, read_scalars
from tmexp.analysis.synthetic import write_events, write_run_dir
from tmexp.core import metrics

FIXTURES = Path(__file__).resolve().parent / "data" / "tensorboard"
T0 = 1_700_000_000.0


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
    write_run_dir(
        tmp_path / "0",
        rows("Training/loss", 2),
        overrides=["btr.use_munchausen=false", "seed=1"],
        config=cfg,
        status={"status": "finished"},
        meta={"gpu": None, "host": "h"},
    )
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
        length = int.from_bytes(data[pos : pos + 8], "little")
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
        event_pb2.Event(
            wall_time=1.0,
            step=0,
            summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="a", simple_value=1.5)]),
        ),
        event_pb2.Event(
            wall_time=2.0,
            step=5,
            summary=summary_pb2.Summary(
                value=[
                    summary_pb2.Summary.Value(tag=long_tag, simple_value=3.0),
                    summary_pb2.Summary.Value(tag="b", simple_value=-1.0),
                ]
            ),
        ),
        event_pb2.Event(wall_time=3.0, step=7, summary=summary_pb2.Summary(value=[tensor_value])),
        event_pb2.Event(
            wall_time=4.0,
            step=-3,
            summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="a", simple_value=0.25)]),
        ),
    ]
    for event in events:
        writer.add_event(event)
    writer.close()
    df = loading.load_scalars(tmp_path / "r", workers=1)
    got = list(zip(df["tag"].astype(str), df["step"], df["wall_time"], df["value"]))
    assert got == [
        ("a", 0, 1.0, 1.5),
        (long_tag, 5, 2.0, 3.0),
        ("b", 5, 2.0, -1.0),
        ("tensor_scalar", 7, 3.0, 2.25),
        ("a", -3, 4.0, 0.25),
    ]


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
        pos += 16 + int.from_bytes(data[pos : pos + 8], "little")
    data[pos : pos + 8] = (10**9).to_bytes(8, "little")
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


# --- logs of other Linesight-family versions: split folders, foreign units, runs without data ---------------------


def _records(path):
    """The raw TFRecords of an event file, in order."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 8], "little")
        out.append(data[pos : pos + 16 + length])
        pos += 16 + length
    return out


def split_like_rulka(source, runs_dir, parts=3):
    """The real Linesight log cut into ``<run>``, ``<run>_2``, ... folders, as rulka continues a run."""
    records = _records(source)
    header, body = records[0], records[1:]  # the file_version event opens every file
    cuts = np.array_split(np.arange(len(body)), parts)
    for k, idx in enumerate(cuts):
        folder = runs_dir / ("hock" if k == 0 else f"hock_{k + 1}")
        folder.mkdir(parents=True)
        (folder / f"events.out.tfevents.{1000 + k}.host").write_bytes(header + b"".join(body[i] for i in idx))


@pytest.mark.parametrize("given", ["run folder", "parent folder", "event-file glob"])
def test_split_folders_merge_however_the_run_is_given(tmp_path, given):
    (source,) = (FIXTURES / "linesight_default_hocko_run").glob("*tfevents*")
    runs_dir = tmp_path / "runs"
    split_like_rulka(source, runs_dir)
    write_events(runs_dir / "other", rows("loss", 3))
    paths = {
        "run folder": [runs_dir / "hock"],
        "parent folder": [runs_dir],
        "event-file glob": sorted(runs_dir.glob("hock*")),
    }[given]
    runs = loading.load_runs(paths, workers=1, canonical_tags=False)
    info = runs.runs["hock"]
    assert [f.name for f in info.folders] == ["hock", "hock_2", "hock_3"] and len(info.event_files) == 3
    assert not any(label.startswith("hock_") for label in runs.labels())  # the continuations are not runs
    whole = loading.load_scalars(source.parent, workers=1, canonical_tags=False)
    merged = runs.scalars[runs.scalars["run"] == "hock"]
    assert len(merged) == len(whole) == 228
    assert (
        merged[["step", "wall_time", "value"]].to_numpy().tolist()
        == whole[["step", "wall_time", "value"]].to_numpy().tolist()
    )
    assert info.first_wall_time == loading.load_runs(source.parent, workers=1).runs[source.parent.name].first_wall_time


def test_split_run_given_by_folder_keeps_every_frame_and_its_final_best(tmp_path):
    # Given only runs/synA, the continuation runs/synA_2 beside it holds the second half of the run.
    best = metrics.alltime_min_ms("A01")
    write_events(tmp_path / "runs" / "synA", [(best, 1_000_000 * k, T0 + 60 * k, 30_000 - 500 * k) for k in range(4)])
    write_events(
        tmp_path / "runs" / "synA_2", [(best, 1_000_000 * k, T0 + 60 * k, 30_000 - 500 * k) for k in range(4, 7)]
    )
    write_events(tmp_path / "runs" / "synAB", rows(best, 2))  # a name that only starts like it: another run
    runs = loading.load_runs(tmp_path / "runs" / "synA", workers=1)
    assert runs.labels() == ["synA"]
    df = runs.scalars
    assert df["step"].max() == 6_000_000 and df["value"].min() == 27_000


def test_hydra_jobs_never_merge_as_split_folders(tmp_path):
    # A tmexp sweep whose job folders are named <run>_<n> is not a Linesight split run.
    write_run_dir(tmp_path / "A01_v2", rows("Training/loss", 2), overrides=["seed=0"])
    write_run_dir(tmp_path / "A01_v2_2", rows("Training/loss", 2), overrides=["seed=2"])
    assert loading.load_runs(tmp_path, workers=1).labels() == ["seed=0", "seed=2"]
    assert loading.load_runs(tmp_path / "A01_v2", workers=1).labels() == ["seed=0"]


def test_learner_fraction_of_other_linesight_versions_is_converted_to_percent(tmp_path):
    write_events(tmp_path / "linesight", [("learner_percentage_training", 10 * i, T0 + i, 0.61) for i in range(3)])
    write_events(tmp_path / "rulka", [(metrics.LEARNER_PERCENTAGE, 10 * i, T0 + i, 0.5 + 0.1 * i) for i in range(3)])
    write_run_dir(tmp_path / "tmexp_idle", [(metrics.LEARNER_PERCENTAGE, 0, T0, 0.4)], overrides=["seed=0"])
    write_events(tmp_path / "percent_already", [(metrics.LEARNER_PERCENTAGE, 0, T0, 61.0)])
    runs = loading.load_runs(tmp_path, workers=1)
    df = runs.scalars
    pct = df[df["tag"] == metrics.LEARNER_PERCENTAGE].groupby("run", observed=True)["value"].apply(list)
    assert pct["linesight"] == pytest.approx([61.0, 61.0, 61.0])
    assert pct["rulka"] == pytest.approx([50.0, 60.0, 70.0])
    assert pct["seed=0"] == pytest.approx([0.4])  # a tmexp run logs percent: 0.4 % stays 0.4 %
    assert pct["percent_already"] == [61.0]
    conversions = runs.conversions()
    how, converted = conversions[metrics.LEARNER_PERCENTAGE]
    assert sorted(converted) == ["linesight", "rulka"] and "0-1 fraction" in how and "%" in how
    raw = loading.load_scalars(tmp_path / "linesight", workers=1, canonical_tags=False)
    assert raw["value"].tolist() == pytest.approx([0.61] * 3)  # the logs as written


def test_runs_without_data_are_kept_with_the_reason(tmp_path):
    shutil.copytree(FIXTURES / "linesight_lay_mono", tmp_path / "lay_mono")  # a layout and no scalar
    write_run_dir(tmp_path / "crashed", [], overrides=["lr=3"], status={"status": "failed"})
    write_events(tmp_path / "ok", rows("loss", 2))
    runs = loading.load_runs(tmp_path, workers=1)
    assert runs.labels() == ["lr=3", "lay_mono", "ok"]
    assert runs.with_data() == ["ok"]
    assert runs.runs["lay_mono"].no_data == "no scalars in its 1 event file"
    assert runs.runs["lr=3"].no_data == "no event files (status: failed)"
    assert set(runs.scalars["run"].unique()) == {"ok"}


def test_a_run_is_named_by_the_folder_given_not_its_tensorboard_folder(tmp_path):
    from tmexp.analysis.synthetic import training_rows, write_events

    write_events(tmp_path / "runs" / "empty" / "tensorboard", training_rows(minutes=3))
    assert loading.load_runs(tmp_path / "runs" / "empty", workers=1).labels() == ["empty"]
    assert loading.load_runs(tmp_path / "runs", workers=1).labels() == ["empty"]
