"""One metric per figure, runs as lines, against relative time or steps (matplotlib, Agg backend).

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

from tmexp.analysis import tables  # noqa: E402
from tmexp.core import metrics  # noqa: E402

PLOT_FORMATS = ("jpg", "png")
AXIS_LABELS = {
    "wall": "wall minutes since the run's first event",
    "cumul_training_hours": "training minutes (cumul_training_hours x 60)",
    "frames": "frames played",
    "updates": "gradient updates",
}


def safe_name(text: str) -> str:
    """A file-name-safe version of a tag: 'Race/eval_race_time_trained_A01' -> 'Race_eval_race_time_trained_A01'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


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


def _mark_window(ax, axis: str, window: float | None) -> None:
    if window is not None:
        ax.axvline(window, color="grey", linestyle=":", linewidth=1, label="end of common window")


def _race_ylim(ax, finished: list[np.ndarray]) -> float | None:
    """Fit y to finished races; return the top edge where unfinished races are drawn (None if none finished)."""
    values = np.concatenate(finished) if finished else np.zeros(0)
    if len(values) == 0:
        return None
    low, high = float(values.min()), float(values.max())
    pad = max(0.05 * (high - low), 0.1)
    ax.set_ylim(low - pad, high + 2 * pad)
    return high + 1.5 * pad


def plot_metric(data: pd.DataFrame, metric: tables.ScalarMetric, runs: list[str], axis: str, out_dir: Path,
                fmt: str = "jpg", window: float | None = None, prefix: str = "") -> Path | None:
    """Line per run of a scalar metric (best and furthest so far as running extremes). None if no run logged it."""
    sub = data[data["tag"] == metric.tag]
    if sub.empty:
        return None
    unit = f" ({metric.unit})" if metric.unit else ""
    source = metric.tag + (" / 1000" if metric.scale == 1e-3 else "")
    fig, ax = _new_figure(f"{metric.name}{unit} from {source}", axis, metric.name + unit)
    finished = []
    for run in runs:
        df = sub[sub["run"] == run].sort_values("x", kind="stable")
        if df.empty:
            continue
        y = tables.running_value(df["value"].to_numpy() * metric.scale, metric.how)
        ax.plot(df["x"], y, label=run, linewidth=1.2, drawstyle="default" if metric.how == "last" else "steps-post")
        if metric.unit == "s":
            finished.append(y[y < metrics.RACE_CUTOFF_S])
    if metric.unit == "s":
        _race_ylim(ax, finished)
    _mark_window(ax, axis, window)
    ax.legend(fontsize=7)
    return _save(fig, out_dir / f"{prefix}{safe_name(metric.name)}_by_{axis}", fmt)


def plot_race_tag(data: pd.DataFrame, tag: str, runs: list[str], axis: str, out_dir: Path, fmt: str = "jpg",
                  window: float | None = None, prefix: str = "") -> Path | None:
    """Each race as a point and each run's best-so-far as a line; unfinished races as 'x' on the top edge."""
    sub = data[data["tag"] == tag]
    if sub.empty:
        return None
    fig, ax = _new_figure(f"{tag} (s): races and best so far", axis, "race time (s)")
    finished, unfinished = [], []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, run in enumerate(runs):
        df = sub[sub["run"] == run].sort_values("x", kind="stable")
        if df.empty:
            continue
        color = colors[k % len(colors)]
        x, v = df["x"].to_numpy(), df["value"].to_numpy()
        done = v < metrics.RACE_CUTOFF_S
        finished.append(v[done])
        unfinished.append((x[~done], color))
        ax.scatter(x[done], v[done], s=6, alpha=0.35, color=color)
        best = np.minimum.accumulate(np.where(done, v, np.inf))
        ax.plot(x[np.isfinite(best)], best[np.isfinite(best)], color=color, label=run, linewidth=1.2,
                drawstyle="steps-post")
    top = _race_ylim(ax, finished)
    if top is not None:
        for x, color in unfinished:
            ax.scatter(x, np.full(len(x), top), marker="x", s=12, color=color, alpha=0.6)
    _mark_window(ax, axis, window)
    ax.legend(fontsize=7)
    return _save(fig, out_dir / f"{prefix}{safe_name(tag)}_by_{axis}", fmt)


def plot_finish_rate(data: pd.DataFrame, race_tag: str, runs: list[str], axis: str, out_dir: Path,
                     fmt: str = "jpg", window: float | None = None, prefix: str = "", span: int = 10) -> Path | None:
    """Rolling finish rate over the last ``span`` races of the finished tag beside ``race_tag``."""
    tag = tables.finished_tag_for(race_tag)
    sub = data[data["tag"] == tag]
    if sub.empty:
        return None
    fig, ax = _new_figure(f"{tag}: finish rate over the last {span} races", axis, "finish rate")
    for run in runs:
        df = sub[sub["run"] == run].sort_values("x", kind="stable")
        if not df.empty:
            ax.plot(df["x"], df["value"].rolling(span, min_periods=1).mean(), label=run, linewidth=1.2)
    ax.set_ylim(-0.05, 1.05)
    _mark_window(ax, axis, window)
    ax.legend(fontsize=7)
    return _save(fig, out_dir / f"{prefix}{safe_name(tag)}_rate_by_{axis}", fmt)


def plot_comparison(comparison: tables.Comparison, maps: list[str], out_dir: Path, fmt: str = "jpg",
                    prefix: str = "") -> dict[str, Path]:
    """Every figure of one comparison; returns table key (metric name or race tag, + '_rate') -> figure path."""
    out: dict[str, Path] = {}
    data, runs, axis = comparison.data, comparison.runs, comparison.axis
    window = comparison.window
    for metric in tables.scalar_metrics(maps):
        path = plot_metric(data, metric, runs, axis, out_dir, fmt, window, prefix)
        if path is not None:
            out[metric.name] = path
    for tag in comparison.race_tables:
        path = plot_race_tag(data, tag, runs, axis, out_dir, fmt, window, prefix)
        if path is not None:
            out[tag] = path
        finished = tables.finished_tag_for(tag)
        if finished + "_rate" not in out:
            path = plot_finish_rate(data, tag, runs, axis, out_dir, fmt, window, prefix)
            if path is not None:
                out[finished + "_rate"] = path
    return out
