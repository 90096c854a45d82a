"""The learning benchmark: its figures from logs with known contents, a tiny real run, and bad options."""

import json

import pytest

from tmexp.analysis.synthetic import write_run_dir
from tmexp.bench import learning
from tmexp.bench.__main__ import main as bench_main
from tmexp.core import metrics

M = "A01"
START = 1.7e9


def run_rows(races, minutes=15, frames_per_min=6000, updates_from_min=2, updates_per_min=1200, pct=90.0):
    """Counters every minute (frames grow linearly with training time), races as (minute, metres, seconds or None,
    is_eval); a race's step is its minute's frames plus one."""
    rows, best = [], None
    for k in range(minutes + 1):
        frames = frames_per_min * k
        batches = max(0, k - updates_from_min) * updates_per_min
        rows += [
            (metrics.CUMUL_FRAMES, frames, START + 60 * k, frames),
            (metrics.CUMUL_BATCHES, frames, START + 60 * k, batches),
            (metrics.CUMUL_TRAINING_HOURS, frames, START + 60 * k, k / 60),
            (metrics.LEARNER_PERCENTAGE, frames, START + 60 * k, pct if batches else 0.0),
        ]
    for minute, metres, seconds, is_eval in races:
        step = int(frames_per_min * minute) + 1
        wall = START + 60 * minute
        finished = seconds is not None
        if finished:
            best = min(best or 1e9, seconds)
        time_tag = metrics.eval_race_time(M) if is_eval else metrics.explo_race_time(M)
        done_tag = metrics.eval_race_finished(M) if is_eval else metrics.explo_race_finished(M)
        prog_tag = metrics.eval_race_progress(M) if is_eval else metrics.explo_race_progress(M)
        rows += [
            (time_tag, step, wall, seconds if finished else 300.0),
            (done_tag, step, wall, float(finished)),
            (prog_tag, step, wall, metres),
            (metrics.alltime_min_ms(M), step, wall, round(1000 * best) if best else 300_000),
        ]
    return sorted(rows, key=lambda r: (r[1], r[2]))


RACES = [
    (1.0, 20.0, None, False),
    (3.0, 400.0, None, False),  # before minute 5: never counted as stalls
    (5.5, 10.0, None, False),
    (6.25, 1073.0, 40.0, False),
    (7.0, 30.0, None, True),
    (9.0, 1073.0, 30.0, True),
    (11.0, 1073.0, 26.5, False),
    (14.0, 600.0, None, False),
]


def test_the_figures_of_a_run_are_the_ones_its_logs_say(tmp_path):
    run = write_run_dir(tmp_path / "run", run_rows(RACES), config={"seed": 3, "map": {"short_name": M}})
    [fig] = learning.figures_of_runs([run], minutes=15)
    assert fig.seed == 3 and fig.run == str(run)
    assert fig.first_finish_min == pytest.approx(6.25, abs=1e-3) and fig.first_finish_s == pytest.approx(40.0)
    assert fig.best_s == {"5": None, "10": pytest.approx(30.0), "15": pytest.approx(26.5)}
    # After minute 5: six races, two of them ended within 50 m of the start (10 m and 30 m).
    assert fig.races_after_5_min == 6 and fig.stall_fraction == pytest.approx(2 / 6)
    assert fig.minutes == pytest.approx(15.0)
    assert fig.frames_per_s == pytest.approx(100.0)  # 6000 frames per minute
    assert fig.updates_per_s == pytest.approx(20.0)  # 1200 per minute from minute 3 on
    assert fig.learner_pct == pytest.approx(90.0)  # the intervals before the first update are left out


def test_medians_count_an_unfinished_run_as_the_slowest(tmp_path):
    runs = [
        write_run_dir(tmp_path / "a", run_rows(RACES), config={"seed": 0}),
        write_run_dir(
            tmp_path / "b", run_rows([(6.0, 20.0, None, False), (8.0, 1073.0, 25.0, True)]), config={"seed": 1}
        ),
        write_run_dir(
            tmp_path / "c", run_rows([(6.0, 20.0, None, False), (7.0, 40.0, None, False)]), config={"seed": 2}
        ),
    ]
    figures = learning.figures_of_runs(runs, minutes=15)
    summary = learning.medians(figures)
    assert [f.first_finish_min for f in figures][2] is None
    assert summary["first_finish_min"] == pytest.approx(8.0, abs=1e-3)  # 6.25, 8, never -> 8
    assert summary["best_s"]["15"] == pytest.approx(26.5)  # 26.5, 25, never -> 26.5
    assert summary["stall_fraction"] == pytest.approx(0.5)  # 1/3, 1/2, 1
    assert summary["finished_runs"] == 2 and summary["runs"] == 3
    # Two runs of three never finished: the median run never finished.
    runs.append(write_run_dir(tmp_path / "d", run_rows([(6.0, 20.0, None, False)]), config={"seed": 3}))
    assert learning.medians(learning.figures_of_runs(runs[1:], minutes=15))["first_finish_min"] is None


def test_runs_given_as_directories_print_a_table_and_json(tmp_path, capsys):
    write_run_dir(tmp_path / "runs" / "0", run_rows(RACES), config={"seed": 0})
    write_run_dir(tmp_path / "runs" / "1", run_rows(RACES[:4]), config={"seed": 1})
    assert bench_main(["learning", "--runs", str(tmp_path / "runs"), "--minutes", "12"]) == 0
    out = capsys.readouterr().out
    assert "best at 10 min (s)" in out and "best at 12 min (s)" in out and "median (2 of 2 finished)" in out
    assert learning.main(["--runs", str(tmp_path / "runs"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    assert result["median"]["first_finish_min"] == pytest.approx(6.25, abs=1e-3)


def test_a_tiny_real_run_per_seed_is_trained_then_measured(tmp_path, capsys):
    out = tmp_path / "bench"
    code = learning.main(
        [
            "--seeds",
            "0,1",
            "--minutes",
            "0.5",
            "--out",
            str(out),
            "--json",
            "+experiment=smoke",
            "training.max_frames=300",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    for seed in (0, 1):
        assert (out / f"seed{seed}" / "tensorboard").is_dir() and (out / f"seed{seed}.log").is_file()
    for run in result["runs"]:
        assert run["frames_per_s"] > 0 and run["minutes"] > 0
    # The same figures again from the run directories, without training.
    assert learning.main(["--runs", str(out / "seed0"), str(out / "seed1"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [r["frames_per_s"] for r in again["runs"]] == [r["frames_per_s"] for r in result["runs"]]


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--seeds", "0,x"], "--seeds"),
        (["--seeds", "1,1"], "--seeds"),
        (["--minutes", "0"], "--minutes"),
        (["training.batch_sise=3"], "batch_sise"),
        (["training.batch_size=-1"], "training.batch_size"),
    ],
)
def test_bad_options_are_one_line_exit_2_and_start_nothing(tmp_path, capsys, argv, names):
    out = tmp_path / "bench"
    assert learning.main(["--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and names in err and err.startswith("tmexp.bench learning: error:")
    assert not out.exists()


def test_runs_that_do_not_exist_or_hold_no_logs_are_one_line_exit_2(tmp_path, capsys):
    assert learning.main(["--runs", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert learning.main(["--runs", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no TensorBoard event files" in err
