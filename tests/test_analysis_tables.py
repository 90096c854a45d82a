"""Checkpoint tables on hand-built logs with known answers."""

import math

import numpy as np
import pytest

from tmexp.analysis import loading, tables
from tmexp.analysis.synthetic import write_events
from tmexp.core import metrics

T0 = 1_700_000_000.0
EVAL = metrics.eval_race_time("A01")
EVAL_DONE = metrics.eval_race_finished("A01")


def at(minute):
    return T0 + 60.0 * minute


@pytest.fixture
def two_runs(tmp_path):
    """Run A lasts 30 min, run B 20 min; frames = 1000 per minute; A does 2 updates per frame, B 1."""

    def counters(minutes, updates_per_frame):
        out = []
        for m in range(minutes + 1):
            out += [
                (metrics.CUMUL_BATCHES, 1000 * m, at(m), updates_per_frame * 1000 * m),
                (metrics.CUMUL_TRAINING_HOURS, 1000 * m, at(m), m / 60.0),
                (metrics.LOSS, 1000 * m, at(m), 100.0 - m),
            ]
        return out

    races = [(2, 300.0, 0), (4, 300.0, 0), (12, 27.5, 1), (18, 26.0, 1)]
    race_rows = []
    for m, t, done in races:
        race_rows += [(EVAL, 1000 * m, at(m), t), (EVAL_DONE, 1000 * m, at(m), done)]
    best = [
        (metrics.alltime_min_ms("A01"), 5000, at(5), 30000.0),
        (metrics.alltime_min_ms("A01"), 15000, at(15), 28000.0),
    ]
    write_events(tmp_path / "A", counters(30, 2) + race_rows + best)
    write_events(tmp_path / "B", counters(20, 1) + [(EVAL, 3000, at(3), 25.0), (EVAL_DONE, 3000, at(3), 1)])
    return loading.load_scalars(tmp_path, workers=1)


def test_common_window_and_time_checkpoints(two_runs):
    cmp = tables.compare(two_runs, "wall", interval=10)
    assert cmp.window == 20.0
    assert cmp.checkpoints == [10.0, 20.0]
    cmp = tables.compare(two_runs, "wall", interval=7)
    assert cmp.checkpoints == [7.0, 14.0, 20.0]  # the window's end closes the list


def test_best_so_far_in_seconds_at_checkpoints(two_runs):
    cmp = tables.compare(two_runs, "wall", interval=10)
    best = cmp.metric_tables["best_time_A01"]
    assert best.loc[10.0, "A"] == 30.0 and best.loc[20.0, "A"] == 28.0
    assert math.isnan(best.loc[10.0, "B"])  # never logged: missing, not invented
    assert cmp.metric_tables["loss"].loc[20.0, "B"] == 80.0


def test_race_statistics_finish_rate_and_first_finish(two_runs):
    cmp = tables.compare(two_runs, "wall", interval=10)
    race = cmp.race_tables[EVAL]
    early = race.loc[(10.0, "A")]
    assert early["races"] == 2 and early["best"] == 300.0 and early["finish_rate"] == 0.0
    assert math.isnan(early["best_finished"]) and math.isnan(early["first_finish"])
    late = race.loc[(20.0, "A")]
    times = np.array([300.0, 300.0, 27.5, 26.0])
    assert late["races"] == 4
    assert late["best"] == 26.0 and late["best_finished"] == 26.0
    assert late["mean"] == pytest.approx(times.mean())
    assert late["std"] == pytest.approx(times.std(ddof=1))
    assert late["finish_rate"] == 0.5
    assert late["first_finish"] == pytest.approx(12.0)
    b = race.loc[(10.0, "B")]
    assert b["races"] == 1 and b["finish_rate"] == 1.0 and b["first_finish"] == pytest.approx(3.0)


def test_furthest_race_is_the_maximum_so_far(tmp_path):
    # Progress of eval races in metres: 40 at minute 2, 120 at 8, then a worse race (60) at 14.
    progress = metrics.eval_race_progress("A01")
    rows = [(progress, 1000 * m, at(m), d) for m, d in ((2, 40.0), (8, 120.0), (14, 60.0))]
    rows += [(metrics.LOSS, 1000 * m, at(m), 1.0) for m in range(21)]
    write_events(tmp_path / "A", rows)
    df = loading.load_scalars(tmp_path, workers=1)
    cmp = tables.compare(df, "wall", interval=5, maps=["A01"])
    furthest = cmp.metric_tables["furthest_eval_A01"]
    assert list(furthest["A"]) == [40.0, 120.0, 120.0, 120.0]  # at 5, 10, 15, 20 min: never falls back
    assert "furthest_explo_A01" not in cmp.metric_tables  # not logged: no table
    metric = next(m for m in tables.scalar_metrics(["A01"]) if m.name == "furthest_eval_A01")
    assert tables.final_values(cmp.data, metric, ["A"])["A"] == 120.0


def test_by_steps_at_equal_updates(two_runs):
    # 20,000 updates: A (2 per frame) is at 10,000 frames = minute 10, B (1 per frame) at minute 20.
    cmp = tables.compare(two_runs, "updates", steps=[10_000, 20_000, 90_000])
    assert cmp.checkpoints == [10_000, 20_000]
    assert cmp.dropped == [90_000]  # beyond B's 20,000 updates: not a common checkpoint
    loss = cmp.metric_tables["loss"]
    assert loss.loc[20_000, "A"] == 90.0 and loss.loc[20_000, "B"] == 80.0
    frames = tables.compare(two_runs, "frames", step_interval=10_000)
    assert frames.checkpoints == [10_000, 20_000]
    assert frames.metric_tables["loss"].loc[20_000, "A"] == 80.0


def test_training_time_axis_uses_the_counter(tmp_path):
    # Wall clock has a 10-hour gap after minute 5 of training; training time does not.
    rows = []
    for m in range(11):
        wall = at(m) + (36000.0 if m > 5 else 0.0)
        rows += [(metrics.CUMUL_TRAINING_HOURS, 100 * m, wall, m / 60.0), (metrics.LOSS, 100 * m, wall, float(m))]
    write_events(tmp_path / "gap", rows)
    df = loading.load_scalars(tmp_path, workers=1)
    cmp = tables.compare(df, "cumul_training_hours", interval=5)
    assert cmp.checkpoints == [5.0, 10.0]
    assert cmp.metric_tables["loss"].loc[5.0, "gap"] == 5.0
    wall = tables.compare(df, "wall", interval=5)
    assert wall.window > 600


def test_missing_counter_is_a_clear_error(tmp_path):
    write_events(tmp_path / "r", [(metrics.LOSS, 0, T0, 1.0)])
    df = loading.load_scalars(tmp_path, workers=1)
    with pytest.raises(tables.TableError, match="cumul_number_batches_done"):
        tables.compare(df, "updates", steps=[1])


@pytest.mark.parametrize(
    "text,expected",
    [("10M,20M", [10_000_000, 20_000_000]), ("500K", [500_000]), ("1.5M, 2", [2, 1_500_000]), ("3G", [3_000_000_000])],
)
def test_parse_steps(text, expected):
    assert tables.parse_steps(text) == expected


@pytest.mark.parametrize("text", ["10X", "", "-5", "0.5"])
def test_parse_steps_rejects_bad_input(text):
    with pytest.raises(tables.TableError):
        tables.parse_steps(text)


def _jump_scalars(tmp_path, exact: bool):
    from tmexp.analysis import synthetic

    synthetic.write_events(tmp_path / ("exact" if exact else "old"), synthetic.jumping_counter_rows(exact))
    return loading.load_scalars(tmp_path / ("exact" if exact else "old"), workers=1)


@pytest.mark.parametrize("exact", [True, False])
def test_races_sit_at_the_counters_of_their_end_or_between_the_logs(tmp_path, exact):
    from tmexp.analysis import synthetic
    from tmexp.core import metrics

    scalars = _jump_scalars(tmp_path, exact)
    for axis, column, scale in (("updates", 1, 1.0), ("cumul_training_hours", 2, 1 / 60)):
        data = tables.with_axis(scalars, axis)
        races = data[data["tag"] == metrics.eval_race_time("A01")].sort_values("step")
        logs = synthetic.JUMP_LOGS
        expected = []
        for race in synthetic.JUMP_RACES:
            if exact:
                expected.append(race[column] * scale)
            else:  # linear between the two periodic logs around the race
                (s0, *v0), (s1, *v1) = next((a, b) for a, b in zip(logs, logs[1:]) if a[0] <= race[0] <= b[0])
                lo, hi = v0[column - 1], v1[column - 1]
                expected.append((lo + (hi - lo) * (race[0] - s0) / (s1 - s0)) * scale)
        assert races["x"].to_numpy() == pytest.approx(expected, abs=1e-3)
        assert tables.axis_methods(scalars, axis) == {races["run"].iloc[0]: "exact" if exact else "interpolated"}
    # exact: the first race ran at 1_900 updates, after the 1_500 checkpoint; interpolated, it reads as 1_100
    cmp = tables.compare(scalars, "updates", steps=[1_500, 2_200], maps=["A01"])
    best = cmp.metric_tables["best_time_A01"].iloc[:, 0]
    assert np.isnan(best.loc[1_500]) if exact else best.loc[1_500] == pytest.approx(26.0)
    assert best.loc[2_200] == pytest.approx(25.0)
    run = str(scalars["run"].iloc[0])  # the run table says which method the run got
    placed = tables.run_summary(scalars, [run], "A01").loc[run, "updates_placed"]
    assert placed == ("exact" if exact else "interpolated")
