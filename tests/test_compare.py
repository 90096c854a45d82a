"""The compare CLI: output formats, figures, sweep summary, user errors."""

import pickle
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from tmexp import compare
from tmexp.analysis import loading, plots, tables
from tmexp.analysis.synthetic import training_rows, write_events, write_run_dir
from tmexp.core import metrics


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("multirun")
    for s in range(2):
        write_run_dir(
            root / str(s),
            training_rows(minutes=30, seed=s),
            overrides=[f"seed={s}"],
            config={"seed": s, "lr": 1},
            status={
                "status": "finished",
                "frames": 3_000_000,
                "batches": 750_000,
                "wall_minutes": 30.0,
                "best_ms": {"A01": 25_000 + s},
            },
        )
    write_run_dir(
        root / "2",
        training_rows(minutes=20, seed=7, best_end_s=24.0),
        overrides=["lr=2"],
        config={"seed": 0, "lr": 2},
        status={"status": "running"},
    )
    write_run_dir(root / "3", [], overrides=["lr=3"], config={"seed": 0, "lr": 3})  # crashed before logging
    log = root / ".submitit" / "123_3" / "123_3_0_log.err"
    log.parent.mkdir(parents=True)
    log.write_text("Traceback (most recent call last):\n  ...\nValueError: bad learning rate\n")
    write_run_dir(root / "4", [], overrides=["lr=4"], config={"seed": 0, "lr": 4})  # not started writing yet
    # the local executor names its folders by process id: job 5 is found by its overrides in the submission pickle
    write_run_dir(root / "5", [], overrides=["lr=5"], config={"seed": 0, "lr": 5})
    local = root / ".submitit" / "4242"
    local.mkdir(parents=True)
    (local / "4242_submitted.pkl").write_bytes(pickle.dumps((["lr=5"], "hydra.sweep.dir", 5, "job_id_for_5")))
    (local / "4242_0_log.err").write_text("Traceback (most recent call last):\nRuntimeError: out of memory\n")
    return root


def test_markdown_tables_to_stdout(sweep_dir, capsys):
    assert compare.main([str(sweep_dir / "0"), str(sweep_dir / "2"), "--interval", "10", "--steps", "1M,2M"]) == 0
    out = capsys.readouterr().out
    assert "## best time so far (s), from alltime_min_ms_A01 / 1000 by wall time" in out
    assert "| 20 min |" in out and "| 2M |" in out
    assert "Race/eval_race_time_robust_trained_A01 by frames" in out
    # the value in the table is the best-so-far in seconds at 20 minutes, as tables.compare computes it
    df = loading.load_scalars([sweep_dir / "0", sweep_dir / "2"], workers=1)
    best = tables.compare(df, "wall", interval=10).metric_tables["best_time_A01"]
    assert f"| 20 min | {best.loc[20.0].iloc[0]:.3f} | {best.loc[20.0].iloc[1]:.3f} |" in out


def test_seed_groups_get_their_estimates_and_with_groups_their_verdicts(sweep_dir, capsys):
    paths = [str(sweep_dir / "0"), str(sweep_dir / "1"), str(sweep_dir / "2")]
    assert compare.main(paths) == 0
    out = capsys.readouterr().out
    assert "final best time across seeds" in out
    assert "median " in out and "(single seed)" in out  # 2 seeds: the median and both seeds, no interval
    assert "verdict" not in out and "disjoint" not in out  # tests only with --groups
    # groups: {seed=0, seed=1} (configs differ only in seed) and lr=2; compared at every checkpoint
    assert compare.main(paths + ["--groups", "--baseline", "base", "--difference", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "best_time_A01: groups against the baseline base by wall time" in out
    assert "| checkpoint / group | difference | 95 % CI | p | p (Holm) | P(better) | verdict |" in out
    assert re.search(
        r"\| 20 min / lr=2 \| [+-]\d+\.\d{3} \| - \| \d\.\d{3} \| \d\.\d{3} \| \d\.\d{2} \| "
        r"too few seeds \|",
        out,
    )
    assert "seeds needed for a 0.25 s difference against base" in out and "disjoint" not in out
    assert compare.main(paths + ["--groups", "--baseline", "nobody"]) == 2
    assert "--baseline 'nobody' is not a group of these runs" in capsys.readouterr().err


def test_csv_and_figures_to_out_dir(sweep_dir, tmp_path):
    out = tmp_path / "cmp"
    rc = compare.main(
        [
            str(sweep_dir / "0"),
            str(sweep_dir / "1"),
            "--format",
            "csv",
            "--out",
            str(out),
            "--plot",
            "--step-interval",
            "1M",
        ]
    )
    assert rc == 0
    assert (out / "runs.csv").read_text().startswith("run,folders,files,data,wall_minutes")
    assert (out / "best_time_A01_by_wall.csv").exists() and (out / "loss_by_frames.csv").exists()
    figures = sorted(p.name for p in out.glob("*.png"))
    assert "Race_eval_race_time_trained_A01_by_wall.png" in figures
    assert "Race_explo_race_time_trained_A01_by_wall.png" in figures  # eval and exploration kept apart
    assert all((out / f).stat().st_size < 200_000 for f in figures)


def test_rst_output(sweep_dir, capsys):
    assert compare.main([str(sweep_dir / "0"), "--format", "rst", "--step-interval", "1M"]) == 0
    out = capsys.readouterr().out
    assert "+====" in out and "runs\n~~~~" in out


def test_unfinished_races_do_not_set_the_y_scale(tmp_path, monkeypatch):
    tag = metrics.eval_race_time("A01")
    write_events(tmp_path / "r", [(tag, i, 1000.0 + 60 * i, v) for i, v in enumerate([300.0, 25.0, 24.5, 300.0])])
    df = tables.with_axis(loading.load_scalars(tmp_path, workers=1), "wall")
    limits = []
    monkeypatch.setattr(
        plots, "_save", lambda fig, path, fmt: (limits.append(fig.axes[0].get_ylim()), plt.close(fig), path)[-1]
    )
    plots.plot_race_tag(df, tag, ["r"], "wall", tmp_path)
    low, high = limits[0]
    assert 24.0 < low < 24.5 and 25.0 < high < 30.0


def test_sweep_summary_statuses(sweep_dir, capsys):
    assert compare.main([str(sweep_dir), "--sweep"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ") and "job" not in line}
    assert "| finished |" in row["0"] and "25.000" in row["0"]
    assert "| running |" in row["2"]
    assert "| failed |" in row["3"] and "ValueError: bad learning rate" in row["3"]
    assert "| running |" in row["4"]
    assert "| failed |" in row["5"] and "RuntimeError: out of memory" in row["5"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["/nonexistent/run"], "does not exist"),
        (["{empty}"], "no TensorBoard event files"),
        (["{run}", "--steps", "10Q"], "cannot read step count"),
        (["{run}", "--format", "xls"], "invalid choice"),
        (["{run}", "--metrics", "Training/loss", "--all-scalars"], "not allowed with argument --metrics"),
    ],
)
def test_user_errors_exit_2_with_one_line(sweep_dir, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty", run=sweep_dir / "0") for a in args]
    assert compare.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_module_runs(sweep_dir):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "tmexp.compare", str(sweep_dir / "0"), "--steps", "1M"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0 and "| 1M |" in done.stdout


# --- runs users already have: split folders, foreign units, empty runs, any tag ------------------------------------

T0 = 1_700_000_000.0
FIXTURES = Path(__file__).resolve().parent / "data" / "tensorboard"


def linesight_rows(minutes, best_ms, custom_from=0):
    """A Linesight-style log: old tag names, the learner time as a 0-1 fraction, a tag tmexp does not know."""
    out = []
    for k in range(minutes + 1):
        t, frames = T0 + 60 * k, 100_000 * k
        out += [
            ("cumul_number_frames_played", frames, t, frames),
            ("cumul_number_batches_done", frames, t, frames // 4),
            ("loss", frames, t, 10.0 / (k + 1)),
            ("learner_percentage_training", frames, t, 0.61),
            (metrics.alltime_min_ms("A01"), frames, t, best_ms - 100 * k),
        ]
        if k >= custom_from:
            out.append(("Custom/lap_quality", frames, t, float(k)))
    return out


@pytest.fixture
def legacy_runs(tmp_path):
    runs = tmp_path / "runs"
    rows = linesight_rows(59, 30_000)
    write_events(runs / "synA", rows[: len(rows) // 2])
    write_events(runs / "synA_2", rows[len(rows) // 2 :])
    write_events(runs / "synB", linesight_rows(44, 29_000, custom_from=5))
    write_events(runs / "noisy", [("loss", 0, T0, 1.0), ("loss", 100, T0 + 600, 0.5)])  # none of the custom tag
    (runs / "lay_mono").mkdir()
    (src,) = (FIXTURES / "linesight_lay_mono").glob("*tfevents*")
    (runs / "lay_mono" / src.name).write_bytes(src.read_bytes())
    return runs


def sections(text):
    """'## title' -> the text up to the next heading."""
    parts = text.split("\n## ")
    return {p.split("\n", 1)[0].lstrip("# "): p.split("\n", 1)[1] for p in parts if "\n" in p}


def test_split_run_given_by_folder_is_merged_and_counted(legacy_runs, capsys):
    assert compare.main([str(legacy_runs / "synA"), str(legacy_runs / "synB"), "--steps", "2M"]) == 0
    out = capsys.readouterr().out
    runs = sections(out)["runs"]
    assert re.search(r"\| synA \| 2 \| 2 \| \d+ scalars \| 59\.0 \| - \| 5900000 \|.*\| 24\.100 \|", runs)
    assert re.search(r"\| synB \| 1 \| 1 \|", runs) and "synA_2" not in out


def test_foreign_learner_fraction_is_shown_in_percent_and_says_so(legacy_runs, capsys):
    assert compare.main([str(legacy_runs / "synA"), "--steps", "2M"]) == 0
    out = sections(capsys.readouterr().out)
    (title,) = [t for t in out if t.startswith("learner busy time, %") and "by wall time" in t]
    assert title.endswith("converted on load: logged as a 0-1 fraction, x100 to % (runs synA)")
    assert "| 10 min | 61.0 |" in out[title]


def test_runs_without_data_are_listed_with_the_reason(legacy_runs, capsys):
    assert compare.main([str(legacy_runs), "--metrics", "Custom/lap_quality", "--steps", "1M"]) == 0
    out = sections(capsys.readouterr().out)
    assert "| lay_mono | 1 | 1 | no data: no scalars in its 1 event file |" in out["runs"]
    assert "| noisy | 1 | 1 | no data: none of the requested tags (Custom/lap_quality) |" in out["runs"]
    table = out["Custom/lap_quality (last value) by wall time"]
    assert "| checkpoint | synA | synB |" in table  # the runs without it take no column and set no window


def test_any_tag_by_time_and_by_steps_with_figures(legacy_runs, tmp_path, capsys):
    out_dir = tmp_path / "cmp"
    assert (
        compare.main(
            [
                str(legacy_runs / "synA"),
                str(legacy_runs / "synB"),
                "--metrics",
                "Custom/lap_quality",
                "loss",
                "--steps",
                "1M,2M",
                "--by",
                "updates",
                "--plot",
                "--out",
                str(out_dir),
            ]
        )
        == 0
    )
    text = sections((out_dir / "comparison.md").read_text())
    assert list(text)[1:] == [
        "Custom/lap_quality (last value) by wall time",
        "training loss (Training/loss, last value) by wall time",
        "Custom/lap_quality (last value) by updates",
        "training loss (Training/loss, last value) by updates",
    ]
    # the custom tag starts at minute 5 in synB, and minute 0 stays its first event: 10 min reads k = 10
    assert "| 10 min | 10 | 10 |" in text["Custom/lap_quality (last value) by wall time"]
    assert "| 1M | 40 | 40 |" in text["Custom/lap_quality (last value) by updates"]  # 1M updates = 4M frames
    assert (out_dir / "Custom_lap_quality_by_wall.png").is_file()
    assert (out_dir / "Custom_lap_quality_by_updates.png").is_file()


def test_all_scalars_tabulates_every_tag(legacy_runs, capsys):
    assert compare.main([str(legacy_runs / "synB"), "--all-scalars", "--steps", "1M"]) == 0
    titles = list(sections(capsys.readouterr().out))
    for tag in ("Custom/lap_quality", "cumul_number_batches_done", "cumul_number_frames_played"):
        assert f"{tag} (last value) by wall time" in titles and f"{tag} (last value) by frames" in titles
    assert any(t.startswith("best time so far") for t in titles)


def test_a_tag_no_run_logged_is_a_user_error(legacy_runs, capsys):
    assert compare.main([str(legacy_runs / "synA"), "--metrics", "Custom/lap_qualty"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no run logged the requested tag 'Custom/lap_qualty' (did you mean 'Custom/lap_quality'?)" in err


def test_every_table_states_time_origin_and_std(legacy_runs, capsys):
    assert compare.main([str(legacy_runs), "--steps", "1M"]) == 0
    out = sections(capsys.readouterr().out)
    assert len(out) > 5
    for title, body in out.items():
        last = body.strip().splitlines()[-1]
        assert "first event of any kind" in last and "std is the sample std (n-1)" in last, title


def test_real_linesight_logs(capsys):
    assert compare.main([str(FIXTURES), "--step-interval", "1K"]) == 0
    out = sections(capsys.readouterr().out)
    assert "| linesight_lay_mono | 1 | 1 | no data: no scalars in its 1 event file |" in out["runs"]
    assert "| linesight_default_hocko_run | 1 | 1 | 228 scalars |" in out["runs"]
    # old tag names read as the current ones: the eval races of map 'hock', none finished
    table = out["Race/eval_race_time_trained_hock by wall time"]
    assert re.search(r"\| end 0\.\d+ min / linesight_default_hocko_run \| 3 \| 300\.000 \|", table)
    assert "training loss" not in " ".join(out)  # the fixture logs no loss: no table invented


def test_seed_groups_are_drawn_as_iqm_bands_one_colour_each(sweep_dir, tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, fmt: (drawn.append(fig), path)[-1])
    runs = loading.load_runs([sweep_dir / "0", sweep_dir / "1", sweep_dir / "2"], workers=1)
    groups = {"base": ["seed=0", "seed=1"], "lr=2": ["lr=2"]}
    cmp = tables.compare(runs.scalars, "wall", interval=10)
    metric = cmp.metrics["best_time_A01"]
    plots.plot_metric(cmp.data, metric, cmp.runs, "wall", tmp_path, groups=groups)
    (ax,) = drawn[0].axes
    lines = [line for line in ax.get_lines() if len(line.get_xdata())]
    thick = [line for line in lines if line.get_linewidth() > 2]
    thin = [line for line in lines if line.get_linewidth() < 1]
    assert len(thick) == 1 and len(thin) == 2  # base: its median (2 seeds) and its two seeds
    assert all(line.get_color() == thick[0].get_color() for line in thin)
    single = [line for line in lines if line not in thick and line not in thin]
    assert len(single) == 1 and single[0].get_color() != thick[0].get_color()  # lr=2: a plain line of its own colour
    assert len(ax.collections) == 0  # no band below 5 seeds, as the tables give no interval
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["base: median of 2 seeds", "lr=2"]
    plt.close("all")


def test_compare_plots_the_seed_groups_it_finds(sweep_dir, tmp_path, monkeypatch):
    legends = {}

    def keep(fig, path, fmt):
        legends[path.name] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        plt.close(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    assert (
        compare.main(
            [
                str(sweep_dir / "0"),
                str(sweep_dir / "1"),
                str(sweep_dir / "2"),
                "--plot",
                "--out",
                str(tmp_path),
                "--steps",
                "1M",
            ]
        )
        == 0
    )
    assert legends["best_time_A01_by_wall"][:2] == ["base: median of 2 seeds", "lr=2"]
    assert legends["Race_eval_race_time_trained_A01_by_frames"][:2] == ["base: median of 2 seeds", "lr=2"]
