"""The compare CLI: output formats, figures, sweep summary, user errors."""

import pickle
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
        write_run_dir(root / str(s), training_rows(minutes=30, seed=s), overrides=[f"seed={s}"],
                      config={"seed": s, "lr": 1}, status={"status": "finished", "frames": 3_000_000,
                                                          "batches": 750_000, "wall_minutes": 30.0,
                                                          "best_ms": {"A01": 25_000 + s}})
    write_run_dir(root / "2", training_rows(minutes=20, seed=7, best_end_s=24.0), overrides=["lr=2"],
                  config={"seed": 0, "lr": 2}, status={"status": "running"})
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


def test_seed_groups_get_iqm_and_intervals(sweep_dir, capsys):
    assert compare.main([str(sweep_dir / "0"), str(sweep_dir / "1"), str(sweep_dir / "2")]) == 0
    out = capsys.readouterr().out
    assert "final best time across seeds" in out
    assert "(2 seeds)" in out and "(single seed)" in out
    # groups: {seed=0, seed=1} (configs differ only in seed) and lr=2; compared at every checkpoint
    assert "best_time_A01: groups against base by wall time" in out
    assert "| lr=2 vs base |" in out and "single seed; P(better) " in out


def test_csv_and_figures_to_out_dir(sweep_dir, tmp_path):
    out = tmp_path / "cmp"
    rc = compare.main([str(sweep_dir / "0"), str(sweep_dir / "1"), "--format", "csv", "--out", str(out), "--plot",
                       "--step-interval", "1M"])
    assert rc == 0
    assert (out / "runs.csv").read_text().startswith("run,wall_minutes")
    assert (out / "best_time_A01_by_wall.csv").exists() and (out / "loss_by_frames.csv").exists()
    figures = sorted(p.name for p in out.glob("*.jpg"))
    assert "Race_eval_race_time_trained_A01_by_wall.jpg" in figures
    assert "Race_explo_race_time_trained_A01_by_wall.jpg" in figures  # eval and exploration kept apart
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
    monkeypatch.setattr(plots, "_save", lambda fig, path, fmt: (limits.append(fig.axes[0].get_ylim()),
                                                                 plt.close(fig), path)[-1])
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


@pytest.mark.parametrize("args,message", [
    (["/nonexistent/run"], "does not exist"),
    (["{empty}"], "no TensorBoard event files"),
    (["{run}", "--steps", "10Q"], "cannot read step count"),
    (["{run}", "--format", "xls"], "invalid choice"),
])
def test_user_errors_exit_2_with_one_line(sweep_dir, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty", run=sweep_dir / "0") for a in args]
    assert compare.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_module_runs(sweep_dir):
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "tmexp.compare", str(sweep_dir / "0"), "--steps", "1M"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and "| 1M |" in done.stdout
