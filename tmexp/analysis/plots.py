"""One metric per figure against relative time or steps, seed groups drawn so a reader takes them in at a glance.

Each group gets one colour: its IQM across seeds as a thick line with the 95 % stratified bootstrap band (where
every seed has a value), its seeds as thin lines of the same colour. A group of one run is a plain line. Runs that
form no seed group are each a group of their own.

File names carry the full tag and the axis, so eval and exploration figures never overwrite each other. Race-time
figures take their y-range from finished races only and draw unfinished ones (the 300 s cutoff) as markers on the
top edge, so one unfinished race does not crush the scale.

``best_race_figures`` draws, per map, each group's best race replayed on the track in the group's colour
(``tmexp.envs.sim.playback``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tmexp.analysis import stats, tables  # noqa: E402
from tmexp.core import metrics  # noqa: E402
from tmexp.envs.sim import playback  # noqa: E402
from tmexp.envs.track import TrackError  # noqa: E402

PLOT_FORMATS = ("png", "jpg")
AXIS_LABELS = {
    "wall": "wall minutes since the run's first event",
    "cumul_training_hours": "training minutes (cumul_training_hours x 60)",
    "frames": "frames played",
    "updates": "gradient updates",
    "projected": "projected wall minutes (updates x the learner's idle-machine seconds per update)",
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


def group_band(
    curves: list[tuple[np.ndarray, np.ndarray]], steps: bool = False, points: int = BAND_POINTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None] | None:
    """(x grid, centre, low, high) across curves (x ascending) over the x range where every curve has a value, each
    curve read between its points as it is drawn: held until the next point (``steps``) or linearly. The centre is
    the IQM with its 95 % band at ``stats.MIN_SEEDS`` curves or more, else the median with no band (low, high None),
    as the tables estimate a group. None when the curves share no range."""
    start = max(float(x[0]) for x, _ in curves)
    end = min(float(x[-1]) for x, _ in curves)
    if not end > start:
        return None
    grid = np.linspace(start, end, points)
    if steps:
        values = [y[np.searchsorted(x, grid, side="right") - 1] for x, y in curves]
    else:
        values = [np.interp(grid, x, y) for x, y in curves]
    values = np.stack(values)  # (seeds, points)
    if len(curves) < stats.MIN_SEEDS:
        return grid, np.median(values, axis=0), None, None
    return (grid, *stats.iqm_band(values))


def draw_groups(
    ax,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    groups: dict[str, list[str]],
    colours: dict[str, tuple],
    steps: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Draw each group's runs (``curves``: run -> (x ascending, y)) in its colour, and its centre (and band);
    returns group -> its centre curve (grid, values)."""
    style = "steps-post" if steps else "default"
    centres = {}
    for g, members in groups.items():
        have = [m for m in members if m in curves and len(curves[m][0])]
        if not have:
            continue
        colour = colours[g]
        if len(have) == 1:
            x, y = curves[have[0]]
            ax.plot(x, y, color=colour, linewidth=1.4, drawstyle=style, label=g)
            centres[g] = (x, y)
            continue
        for m in have:
            x, y = curves[m]
            ax.plot(x, y, color=colour, linewidth=0.7, alpha=0.45, drawstyle=style)
        band = group_band([curves[m] for m in have], steps)
        if band is None:  # the seeds share no x range: no centre to draw, name the group on its seeds
            ax.plot([], [], color=colour, linewidth=0.7, label=f"{g} ({len(have)} seeds, no common range)")
            continue
        grid, centre, low, high = band
        centres[g] = (grid, centre)
        if low is None:
            ax.plot(grid, centre, color=colour, linewidth=2.2, label=f"{g}: median of {len(have)} seeds")
            continue
        ax.fill_between(grid, low, high, color=colour, alpha=0.2, linewidth=0)
        ax.plot(grid, centre, color=colour, linewidth=2.2, label=f"{g}: IQM of {len(have)} seeds, 95% CI")
    return centres


def _differing_ylim(ax, centres: dict[str, tuple[np.ndarray, np.ndarray]], curves) -> bool:
    """Put a race-time figure's y-axis on the range where the groups differ: the groups' centres at their end (the
    best times, not the 300 s cutoff), with room above for the curves to come in. False when some group's centre
    never got under the cutoff (the caller falls back to the finished races' range)."""
    if len(centres) < 2:
        return False
    ends = [float(y[-1]) for _, y in centres.values()]
    if max(ends) >= metrics.RACE_CUTOFF_S:
        return False
    cutoff = metrics.RACE_CUTOFF_S
    lows = [float(np.min(y[y < cutoff])) for _, y in curves.values() if (y < cutoff).any()]
    low, high = min(lows + ends), max(ends)
    spread = max(high - low, 0.5)
    ax.set_ylim(low - 0.15 * spread, high + 2.0 * spread)
    ax.set_title(ax.get_title() + "\n(y: where the groups end; earlier, higher times run off the top)", fontsize=9)
    return True


def _singletons(runs: list[str], groups: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """The groups to draw: the given ones, plus each run in none of them as a group of its own."""
    groups = dict(groups or {})
    grouped = {m for members in groups.values() for m in members}
    for run in runs:
        if run not in grouped:
            groups[run if run not in groups else f"{run} (run)"] = [run]
    return groups


def _series(sub: pd.DataFrame, run: str) -> tuple[np.ndarray, np.ndarray]:
    df = sub[(sub["run"] == run) & np.isfinite(sub["x"])].sort_values("x", kind="stable")  # no place: not drawn
    return df["x"].to_numpy(), df["value"].to_numpy()


def plot_metric(
    data: pd.DataFrame,
    metric: tables.ScalarMetric,
    runs: list[str],
    axis: str,
    out_dir: Path,
    fmt: str = "png",
    window: float | None = None,
    prefix: str = "",
    groups: dict[str, list[str]] | None = None,
) -> Path | None:
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
    centres = draw_groups(ax, curves, groups, group_colours(groups), steps=metric.how != "last")
    if metric.unit == "s" and not _differing_ylim(ax, centres, curves):
        _race_ylim(ax, [y[y < metrics.RACE_CUTOFF_S] for _, y in curves.values()])
    _finish(ax, axis, window)
    return _save(fig, out_dir / f"{prefix}{safe_name(metric.name)}_by_{axis}", fmt)


def plot_race_tag(
    data: pd.DataFrame,
    tag: str,
    runs: list[str],
    axis: str,
    out_dir: Path,
    fmt: str = "png",
    window: float | None = None,
    prefix: str = "",
    groups: dict[str, list[str]] | None = None,
) -> Path | None:
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


def plot_finish_rate(
    data: pd.DataFrame,
    race_tag: str,
    runs: list[str],
    axis: str,
    out_dir: Path,
    fmt: str = "png",
    window: float | None = None,
    prefix: str = "",
    span: int = 10,
    groups: dict[str, list[str]] | None = None,
) -> Path | None:
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


def plot_comparison(
    comparison: tables.Comparison,
    out_dir: Path,
    fmt: str = "png",
    prefix: str = "",
    groups: dict[str, list[str]] | None = None,
) -> dict[str, Path]:
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


def interval_points(analysis, metric: str) -> list[tuple[str, pd.Series, str]]:
    """(panel title, per-run values, checkpoint label) of a metric at the end of each comparison's common window
    (the last common checkpoint of a step axis), and over each whole run for the first map's best time."""
    out = []
    for cmp in analysis.comparisons:
        if metric in cmp.metric_tables and cmp.checkpoints:
            cp = cmp.checkpoints[-1]
            label = tables.checkpoint_label(cp, cmp.axis, cmp.window)
            out.append((f"by {cmp.axis}, at {label}", cmp.metric_tables[metric].loc[cp], label))
    if analysis.maps and metric == f"best_time_{analysis.maps[0]}":
        out.append(("over each whole run", analysis.run_table["final_best_s"], "whole run"))
    return out


def draw_intervals(
    ax,
    values: pd.Series,
    groups: dict[str, list[str]],
    colours: dict[str, tuple],
    baseline: str | None,
    reference: str | None,
    fmt: str = "{:.3f}",
) -> None:
    """One row per group: every seed a dot, the estimate (IQM at 5 seeds or more, else the median) a bar, its 95 %
    interval a line where there is one; the baseline's estimate a dashed vertical line. Artists carry gids
    ('seeds:<group>', 'estimate:<group>', 'interval:<group>') so tests read back what was drawn."""
    estimates = stats.group_estimates(values, groups)
    names = [g for g in groups if estimates[g].n_seeds]
    if not names:
        ax.text(0.5, 0.5, "nothing logged yet", transform=ax.transAxes, ha="center", fontsize=8)
        return
    for row, g in enumerate(names):
        est = estimates[g]
        colour = colours[g]
        ax.scatter(est.values, np.full(est.n_seeds, row), s=18, color=colour, alpha=0.6, zorder=3, gid=f"seeds:{g}")
        ax.plot(
            [est.value],
            [row],
            marker="|",
            markersize=16,
            markeredgewidth=2.5,
            color="black",
            zorder=4,
            gid=f"estimate:{g}",
        )
        if est.low is not None:
            ax.plot([est.low, est.high], [row, row], color=colour, linewidth=3, alpha=0.8, gid=f"interval:{g}")
    if baseline in estimates and estimates[baseline].n_seeds:
        ax.axvline(estimates[baseline].value, color="grey", linestyle="--", linewidth=1)
    # x on the range where the groups' estimates sit: a far seed (a run stuck at the cutoff), or a group whose
    # estimate lies far beyond the others' (most of its seeds stuck there), is drawn at the right edge, its value noted
    seeds = np.concatenate([estimates[g].values for g in names])
    limit = _far_limit([estimates[g].value for g in names])
    near = [g for g in names if estimates[g].value <= limit]
    shown = [v for g in near for v in (estimates[g].value, estimates[g].low, estimates[g].high) if v is not None]
    low, high = min(min(shown), float(seeds.min())), max(shown)
    spread = max(high - low, 0.5)
    edge = high + 0.6 * spread
    if seeds.max() <= edge:
        ax.set_xlim(low - 0.1 * spread, max(high, float(seeds.max())) + 0.1 * spread)
    else:
        for row, g in enumerate(names):
            est = estimates[g]
            far = est.values[est.values > edge]
            notes = [fmt.format(v) for v in far]
            if est.value > edge:  # the estimate itself is off the panel: an arrow in black, its value first
                ax.scatter([edge], [row], marker=">", s=40, color="black", zorder=4, gid=f"clipped-estimate:{g}")
                notes.insert(0, f"{'IQM' if est.n_seeds >= stats.MIN_SEEDS else 'median'} {fmt.format(est.value)}")
            if len(far):
                ax.scatter([edge], [row], marker=">", s=30, color=colours[g], gid=f"clipped:{g}")
            if notes:
                ax.annotate(
                    ", ".join(notes), (edge, row), xytext=(-4, 5), textcoords="offset points", fontsize=6, ha="right"
                )
        ax.set_xlim(low - 0.1 * spread, edge + 0.1 * spread)
    labels = [g + (" (baseline)" if g == baseline else " (reference)" if g == reference else "") for g in names]
    ax.set_yticks(range(len(names)), labels, fontsize=7)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)


def _far_limit(values: list[float]) -> float:
    """Above this an estimate is far from the others (Tukey's far-out fence, the quartiles plus 3 interquartile
    ranges, at least 0.5 wide): a group whose seeds mostly sit at the cutoff would otherwise set the panel's range."""
    if len(values) < 4:
        return float("inf")
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 + 3 * max(q3 - q1, 0.5))


def interval_figures(analysis, sections: dict, out_dir: Path, fmt: str = "png") -> dict[str, Path]:
    """Per metric (each map's best time, then its furthest eval race), one figure of interval panels at the end of
    each common window (``interval_points``); returns '<metric>_intervals' -> figure."""
    groups = analysis.groups
    if not any(len(m) > 1 for m in groups.values()):
        return {}
    colours = group_colours(groups)
    out = {}
    for m in analysis.maps:
        for metric, unit in ((f"best_time_{m}", "s"), (f"furthest_eval_{m}", "m")):
            points = interval_points(analysis, metric)
            if not points:
                continue
            fig, axes = plt.subplots(
                1, len(points), figsize=(3.2 * len(points) + 1.2, 0.35 * len(groups) + 1.6), sharey=True, squeeze=False
            )
            for ax, (title, values, _) in zip(axes[0], points):
                draw_intervals(
                    ax,
                    values,
                    groups,
                    colours,
                    analysis.baseline,
                    analysis.reference,
                    "{:.3f}" if unit == "s" else "{:.1f}",
                )
                ax.set_title(title, fontsize=8)
                ax.set_xlabel(f"{metric} ({unit})", fontsize=7)
                ax.tick_params(axis="x", labelsize=7)
            fig.suptitle(
                f"{metric}: each seed a dot, the estimate a bar (IQM at {stats.MIN_SEEDS}+ seeds, else the "
                "median) with its 95 % interval where there is one; the dashed line: the baseline; far "
                "seeds and far estimates at the right edge, their values noted",
                fontsize=8,
            )
            fig.tight_layout()
            out[f"{metric}_intervals"] = _save(fig, out_dir / f"{safe_name(metric)}_intervals", fmt)
    return out


@dataclass
class BestRaceFigure:
    """One map's figure of each group's best race, and what the README says of it."""

    map: str
    path: Path | None  # None when no group's race could be drawn
    shown: dict[str, playback.Trace] = field(default_factory=dict)  # legend label -> the race as replayed
    recorded_ms: dict[str, int] = field(default_factory=dict)  # legend label -> the time its run recorded
    not_shown: dict[str, str] = field(default_factory=dict)  # group -> why its race is not in the figure


NO_BEST_RACE = "no recorded best race"


def best_race_figures(analysis, best_races: dict, out_dir: Path, fmt: str = "png") -> list[BestRaceFigure]:
    """Per map, each group's best race (the fastest over its seeds) replayed with its run's settings and drawn on
    one track in the group's colour (``playback.draw_best_races``).

    Args:
        best_races: run label -> map -> ``export.BestRace`` (``export.best_races_of``).
    """
    colours = group_colours(analysis.groups)
    out = []
    for m in analysis.maps:
        figure = BestRaceFigure(m, None)
        races, race_colours = {}, {}
        for group, members in analysis.groups.items():
            recorded = [(best_races[r][m].ms, k, r) for k, r in enumerate(members) if m in best_races.get(r, {})]
            if not recorded:
                figure.not_shown[group] = NO_BEST_RACE
                continue
            ms, _, run = min(recorded)
            info = analysis.runset.runs[run]
            if not isinstance(info.config, dict):
                figure.not_shown[group] = "no resolved config of its run to replay it with"
                continue
            settings = playback.settings_from_config(info.config, info.path)
            if settings.backend != "sim":
                figure.not_shown[group] = f"raced on the game (env={settings.backend}), not on the simulator"
                continue
            try:
                settings.track(m)
            except (playback.PlaybackError, TrackError) as err:
                figure.not_shown[group] = f"cannot be replayed here: {err}"
                continue
            label = f"{group} (seed {info.config.get('seed', run)})"
            races[label] = settings, best_races[run][m].actions
            race_colours[label] = colours[group]
            figure.recorded_ms[label] = ms
        if races:
            figure.path, figure.shown = playback.draw_best_races(
                races,
                m,
                out_dir / f"best_races_{safe_name(m)}.{fmt}",
                f"{m}: each group's best race (its fastest seed), replayed",
                race_colours,
            )
        out.append(figure)
    return out
