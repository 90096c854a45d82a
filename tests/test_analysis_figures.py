"""The figures draw what the tables say: interval plots at the end of each common window, curves on the range where
the groups differ."""

import re

import numpy as np
import pytest

from tmexp.analysis import loading, pipeline, plots
from tmexp.analysis.synthetic import training_rows, write_run_dir


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for s in range(5):
        write_run_dir(
            root / f"a{s}", training_rows(minutes=20, seed=s, best_end_s=24.0 + 0.2 * s), config={"seed": s, "arm": "a"}
        )
    for s in range(3):
        write_run_dir(
            root / f"b{s}",
            training_rows(minutes=20, seed=10 + s, best_end_s=26.0 + 0.2 * s),
            config={"seed": s, "arm": "b"},
        )
    runset = loading.load_runs(root, workers=1)
    groups = {"a": [f"a{s}" for s in range(5)], "b": [f"b{s}" for s in range(3)]}
    return pipeline.analyse(runset, pipeline.Options(interval=5, step_axes=("frames", "updates"), baseline="b"), groups)


def test_interval_plots_draw_the_tables_values(analysis, tmp_path, monkeypatch):
    figures = {}
    real_save = plots._save
    monkeypatch.setattr(
        plots, "_save", lambda fig, path, fmt: figures.setdefault(path.name, fig) and real_save(fig, path, fmt)
    )
    sections = {s.key: s for cmp in analysis.comparisons for s in analysis.comparison_sections(cmp)}
    out = plots.interval_figures(analysis, sections, tmp_path, "png")
    assert out["best_time_A01_intervals"].suffix == ".png" and out["best_time_A01_intervals"].is_file()
    fig = figures["best_time_A01_intervals"]
    panels = fig.axes
    assert len(panels) == len(analysis.comparisons) + 1  # the end of each common window, and whole runs
    for ax, cmp in zip(panels, analysis.comparisons):
        table = sections[f"best_time_A01_seeds_by_{cmp.axis}"].table
        last_row = table.iloc[-1]
        values = cmp.metric_tables["best_time_A01"].iloc[-1]
        drawn = {a.get_gid(): a for a in ax.get_children() if a.get_gid()}
        for g, members in analysis.groups.items():
            estimate = drawn[f"estimate:{g}"].get_xdata()[0]
            cell = last_row[g]  # 'IQM x [low, high] (5 seeds)' or 'median x (seeds ...)'
            assert re.match(r"(IQM|median) ([\d.]+)", cell)[2] == f"{estimate:.3f}"
            seeds = drawn[f"seeds:{g}"].get_offsets()[:, 0]
            assert sorted(seeds) == pytest.approx(sorted(values[members].dropna()))
            if len(members) >= 5:  # the interval where the table gives one
                low, high = drawn[f"interval:{g}"].get_xdata()
                assert f"[{low:.3f}, {high:.3f}]" in cell
            else:
                assert f"interval:{g}" not in drawn
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["a", "b (baseline)"]  # the panels share it


def test_best_time_curves_sit_on_the_range_where_groups_differ(analysis, tmp_path):
    import matplotlib.pyplot as plt

    figures = analysis.plot(tmp_path, "png")
    assert all(p.suffix == ".png" for p in figures.values())
    captured = []
    original = plots._save
    try:
        plots._save = lambda fig, path, fmt: captured.append(fig) or path
        metric = analysis.by_time.metrics["best_time_A01"]
        plots.plot_metric(analysis.by_time.data, metric, analysis.runs, "wall", tmp_path, groups=analysis.groups)
    finally:
        plots._save = original
    low, high = captured[0].axes[0].get_ylim()
    final = analysis.by_time.metric_tables["best_time_A01"].iloc[-1]
    assert low < final.min() and final.max() < high < 40  # the best times, not the 300 s cutoff
    plt.close("all")
    assert any("finished" in key and key.endswith("rate_by_wall") for key in figures)  # the finish rate: own figure


def test_a_group_below_five_seeds_is_drawn_as_its_median_without_a_band():
    x = np.linspace(0, 10, 11)
    curves = [(x, x + k) for k in range(3)]
    grid, centre, low, high = plots.group_band(curves)
    assert low is None and high is None and centre == pytest.approx(grid + 1)
    grid, centre, low, high = plots.group_band(curves + [(x, x + 3), (x, x + 4)])
    assert low is not None and (low <= centre).all() and (centre <= high).all()


def test_a_group_stuck_at_the_cutoff_does_not_set_the_panels_range():
    """Six groups finish near 23 s; one has most seeds at the 300 s cutoff: the panel spans the six, and the far
    group's estimate and seeds are drawn at the right edge with their values noted."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from tmexp.analysis import stats

    groups = {f"g{k}": [f"g{k}_{s}" for s in range(5)] for k in range(7)}
    values = {f"g{k}_{s}": 22.5 + 0.3 * k + 0.1 * s for k in range(6) for s in range(5)}
    values.update({"g6_0": 23.0, "g6_1": 60.0, "g6_2": 300.0, "g6_3": 300.0, "g6_4": 300.0})
    series = pd.Series(values)
    fig, ax = plt.subplots()
    plots.draw_intervals(ax, series, groups, plots.group_colours(groups), "g0", None)
    drawn = {a.get_gid(): a for a in ax.get_children() if a.get_gid()}
    low, high = ax.get_xlim()
    assert low < 22.5 and 24.4 < high < 40  # the six groups' range, not the cutoff's
    far = stats.group_estimates(series, groups)["g6"]
    assert far.value > high and "clipped-estimate:g6" in drawn and "clipped:g6" in drawn
    assert not any(gid.startswith("clipped") for gid in drawn if not gid.endswith("g6"))
    notes = [t.get_text() for t in ax.texts]
    assert notes == [f"IQM {far.value:.3f}, 60.000, 300.000, 300.000, 300.000"]
    assert drawn["estimate:g6"].get_xdata()[0] == pytest.approx(far.value)  # the true value, drawn off the panel
    plt.close(fig)
