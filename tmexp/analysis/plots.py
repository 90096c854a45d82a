"""One metric per figure against relative time or steps, seed groups drawn so a reader takes them in at a glance.

Each group gets one colour: its IQM across seeds as a thick line with the 95 % stratified bootstrap band (where
every seed has a value), its seeds as thin lines of the same colour. A group of one run is a plain line. Runs that
form no seed group are each a group of their own.

File names carry the full tag and the axis, so eval and exploration figures never overwrite each other. Race-time
figures take their y-range from finished races only and draw unfinished ones (the 300 s cutoff) as markers on the
top edge, so one unfinished race does not crush the scale.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tmexp.analysis import stats, tables  # noqa: E402
from tmexp.core import metrics  # noqa: E402

PLOT_FORMATS = ("jpg", "png")
AXIS_LABELS = {
    "wall": "wall minutes since the run's first event",
    "cumul_training_hours": "training minutes (cumul_training_hours x 60)",
    "frames": "frames played",
    "updates": "gradient updates",
}
BAND_POINTS = 200  # x positions where a group's IQM and band are computed


def safe_name(text: str) -> str:
    """A file-name-safe version of a tag: 'Race/eval_race_time_trained_A01' -> 'Race_eval_race_time_trained_A01'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def group_colours(groups: dict[str, list[str]]) -> dict[str, tuple]:
    """One colour per group: tab10 up to 10 groups, tab20 up to 20 (then repeating)."""
    cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    return {g: cmap(k % cmap.N) for k, g in enumerate(groups)}


def _save(fig, path: Path, fmt: str) -> Path:
    path = path.with_suffix("." + fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jpg":
        fig.savefig(path, dpi=90, pil_kwargs={"quality": 80, "optimize": True})
    else:
        fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _new_figure(title: str, axis: str, ylabel: str):
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _finish(ax, axis: str, window: float | None) -> None:
    if window is not None:
        ax.axvline(window, color="grey", linestyle=":", linewidth=1, label="end of common window")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _race_ylim(ax, finished: list[np.ndarray]) -> float | None:
    """Fit y to finished races; return the top edge where unfinished races are drawn (None if none finished)."""
    values = np.concatenate(finished) if finished else np.zeros(0)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    low, high = float(values.min()), float(values.max())
    pad = max(0.05 * (high - low), 0.1)
    ax.set_ylim(low - pad, high + 2 * pad)
    return high + 1.5 * pad


def group_band(curves: list[tuple[np.ndarray, np.ndarray]], steps: bool = False,
               points: int = BAND_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(x grid, IQM, low, high) across curves (x ascending) over the x range where every curve has a value, each
    curve read between its points as it is drawn: held until the next point (``steps``) or linearly.
    None when the curves share no range."""
    start = max(float(x[0]) for x, _ in curves)
    end = min(float(x[-1]) for x, _ in curves)
    if not end > start:
        return None
    grid = np.linspace(start, end, points)
    if steps:
        values = [y[np.searchsorted(x, grid, side="right") - 1] for x, y in curves]
    else:
        values = [np.interp(grid, x, y) for x, y in curves]
    return (grid, *stats.iqm_band(np.stack(values)))  # values: (seeds, points)


def draw_groups(ax, curves: dict[str, tuple[np.ndarray, np.ndarray]], groups: dict[str, list[str]],
                colours: dict[str, tuple], steps: bool = False) -> None:
    """Draw each group's runs (``curves``: run -> (x ascending, y)) in its colour, and its IQM and band."""
    style = "steps-post" if steps else "default"
    for g, members in groups.items():
        have = [m for m in members if m in curves and len(curves[m][0])]
        if not have:
            continue
        colour = colours[g]
        if len(have) == 1:
            x, y = curves[have[0]]
            ax.plot(x, y, color=colour, linewidth=1.4, drawstyle=style, label=g)
            continue
        for m in have:
            x, y = curves[m]
            ax.plot(x, y, color=colour, linewidth=0.7, alpha=0.45, drawstyle=style)
        band = group_band([curves[m] for m in have], steps)
        if band is None:  # the seeds share no x range: no IQM to draw, name the group on its seeds
            ax.plot([], [], color=colour, linewidth=0.7, label=f"{g} ({len(have)} seeds, no common range)")
            continue
        grid, iqm, low, high = band
        ax.fill_between(grid, low, high, color=colour, alpha=0.2, linewidth=0)
        ax.plot(grid, iqm, color=colour, linewidth=2.2, label=f"{g}: IQM of {len(have)} seeds, 95% CI")


def _singletons(runs: list[str], groups: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """The groups to draw: the given ones, plus each run in none of them as a group of its own."""
    groups = dict(groups or {})
    grouped = {m for members in groups.values() for m in members}
    for run in runs:
        if run not in grouped:
            groups[run if run not in groups else f"{run} (run)"] = [run]
    return groups


def _series(sub: pd.DataFrame, run: str) -> tuple[np.ndarray, np.ndarray]:
    df = sub[sub["run"] == run].sort_values("x", kind="stable")
    return df["x"].to_numpy(), df["value"].to_numpy()


def plot_metric(data: pd.DataFrame, metric: tables.ScalarMetric, runs: list[str], axis: str, out_dir: Path,
                fmt: str = "jpg", window: float | None = None, prefix: str = "",
                groups: dict[str, list[str]] | None = None) -> Path | None:
    """A scalar metric (best and furthest so far as running extremes) per group. None if no run logged it."""
    sub = data[data["tag"] == metric.tag]
    if sub.empty:
        return None
    unit = f" ({metric.unit})" if metric.unit else ""
    source = metric.tag + (" / 1000" if metric.scale == 1e-3 else "")
    fig, ax = _new_figure(f"{metric.name}{unit} from {source}", axis, metric.name + unit)
    groups = _singletons(runs, groups)
    curves = {}
    for run in runs:
        x, v = _series(sub, run)
        if len(x):
            curves[run] = (x, tables.running_value(v * metric.scale, metric.how))
    draw_groups(ax, curves, groups, group_colours(groups), steps=metric.how != "last")
    if metric.unit == "s":
        _race_ylim(ax, [y[y < metrics.RACE_CUTOFF_S] for _, y in curves.values()])
    _finish(ax, axis, window)
    return _save(fig, out_dir / f"{prefix}{safe_name(metric.name)}_by_{axis}", fmt)


def plot_race_tag(data: pd.DataFrame, tag: str, runs: list[str], axis: str, out_dir: Path, fmt: str = "jpg",
                  window: float | None = None, prefix: str = "",
                  groups: dict[str, list[str]] | None = None) -> Path | None:
    """Each race as a point and the best finished race so far as a line, per group; unfinished races as 'x' on
    the top edge."""
    sub = data[data["tag"] == tag]
    if sub.empty:
        return None
    fig, ax = _new_figure(f"{tag} (s): races and best so far", axis, "race time (s)")
    groups = _singletons(runs, groups)
    colours = group_colours(groups)
    colour_of = {m: colours[g] for g, members in groups.items() for m in members}
    finished, unfinished, best_curves = [], [], {}
    for run in runs:
        x, v = _series(sub, run)
        if not len(x):
            continue
        done = v < metrics.RACE_CUTOFF_S
        finished.append(v[done])
        unfinished.append((x[~done], colour_of[run]))
        ax.scatter(x[done], v[done], s=6, alpha=0.3, color=colour_of[run])
        best = np.minimum.accumulate(np.where(done, v, np.inf))
        if np.isfinite(best).any():
            best_curves[run] = (x[np.isfinite(best)], best[np.isfinite(best)])
    draw_groups(ax, best_curves, groups, colours, steps=True)
    top = _race_ylim(ax, finished)
    if top is not None:
        for x, colour in unfinished:
            ax.scatter(x, np.full(len(x), top), marker="x", s=12, color=colour, alpha=0.6)
    _finish(ax, axis, window)
    return _save(fig, out_dir / f"{prefix}{safe_name(tag)}_by_{axis}", fmt)


def plot_finish_rate(data: pd.DataFrame, race_tag: str, runs: list[str], axis: str, out_dir: Path,
                     fmt: str = "jpg", window: float | None = None, prefix: str = "", span: int = 10,
                     groups: dict[str, list[str]] | None = None) -> Path | None:
    """Rolling finish rate over the last ``span`` races of the finished tag beside ``race_tag``, per group."""
    tag = tables.finished_tag_for(race_tag)
    sub = data[data["tag"] == tag]
    if sub.empty:
        return None
    fig, ax = _new_figure(f"{tag}: finish rate over the last {span} races", axis, "finish rate")
    groups = _singletons(runs, groups)
    curves = {}
    for run in runs:
        x, v = _series(sub, run)
        if len(x):
            curves[run] = (x, pd.Series(v).rolling(span, min_periods=1).mean().to_numpy())
    draw_groups(ax, curves, groups, group_colours(groups))
    ax.set_ylim(-0.05, 1.05)
    _finish(ax, axis, window)
    return _save(fig, out_dir / f"{prefix}{safe_name(tag)}_rate_by_{axis}", fmt)


def plot_comparison(comparison: tables.Comparison, out_dir: Path, fmt: str = "jpg", prefix: str = "",
                    groups: dict[str, list[str]] | None = None) -> dict[str, Path]:
    """Every figure of one comparison; returns the key of the table each belongs to (``<metric name or race
    tag>_by_<axis>``, and ``<finished tag>_rate_by_<axis>`` for finish rates, which have no table) -> figure."""
    out: dict[str, Path] = {}
    data, runs, axis, window = comparison.data, comparison.runs, comparison.axis, comparison.window
    for metric in comparison.metrics.values():
        path = plot_metric(data, metric, runs, axis, out_dir, fmt, window, prefix, groups)
        if path is not None:
            out[f"{metric.name}_by_{axis}"] = path
    for tag in comparison.race_tables:
        path = plot_race_tag(data, tag, runs, axis, out_dir, fmt, window, prefix, groups)
        if path is not None:
            out[f"{tag}_by_{axis}"] = path
        rate_key = f"{tables.finished_tag_for(tag)}_rate_by_{axis}"
        if rate_key not in out:
            path = plot_finish_rate(data, tag, runs, axis, out_dir, fmt, window, prefix, groups=groups)
            if path is not None:
                out[rate_key] = path
    return out
