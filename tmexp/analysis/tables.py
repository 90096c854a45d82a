"""Compare runs at common checkpoints: by relative time (minutes) and by steps (frames or gradient updates).

Every row of the long scalar table gets an x coordinate on the chosen axis:

- ``wall``: minutes since the run's first event (any tag);
- ``cumul_training_hours``: the run's training time in minutes at the row's step (robust to calendar gaps: a run
  stopped overnight does not age);
- ``frames``: the TensorBoard step (frames played: a race's step is the frames played at its end);
- ``updates``: the gradient updates done at the row's step.

Where the run logged them, the counters at each race's end (``Race/cumul_number_batches_done``,
``Race/cumul_training_seconds``) place every row at that step exactly ("exact"). Runs logged before those tags
(and Linesight/rulka logs) have only the periodic counters (``cumul_number_batches_done``, ``cumul_training_hours``,
every 30 s or so): a row between two of their logs is placed by linear interpolation of the counter between them
("interpolated"), not at the earlier log, which would credit the run with up to one log interval of learning.
Either way a row before the counter's first point has no place (NaN); one after its last point gets the last value.
``axis_methods`` says which method each run got, and the tables say so.

Time checkpoints run every ``interval`` minutes up to the common window (the shortest run's span) and end with the
window's end; step checkpoints are the requested ones that every run reached. At a checkpoint, a scalar metric is its
last value at or before it (best-so-far race time: the minimum so far), and a race tag is summarised over all its
races so far: count, best, mean, sample std, best among finished, finish rate, first finish.

Which tags: by default the metrics of the published comparison (``scalar_metrics``) and the race tags of each map;
``tags`` names any scalars instead, ``all_scalars`` adds every other tag logged (shown as logged, last value).
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tmexp.core import metrics

TIME_AXES = ("wall", "cumul_training_hours")
STEP_AXES = ("frames", "updates")
PROJECTED = "projected"  # minutes: updates x the group's learner seconds per update (tmexp.analysis.machine)


class TableError(Exception):
    """The runs cannot be tabulated as asked (missing counter, bad step list)."""


@dataclass(frozen=True)
class ScalarMetric:
    """A scalar metric shown at each checkpoint."""

    name: str  # short name used in table titles and figure file names
    tag: str
    how: str  # "min" (best so far, lower is better), "max" (furthest so far) or "last"
    scale: float = 1.0  # multiply values (ms -> s)
    unit: str = ""
    kind: str = "tag"  # best_time, furthest, avg_q, loss, learner_pct; "tag" for any other scalar, as logged


def parse_steps(text: str) -> list[int]:
    """'10M,20M' -> [10_000_000, 20_000_000]; accepts K, M, G/B suffixes and plain or decimal numbers."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGbB]?)", part)
        if not match:
            raise TableError(f"cannot read step count {part!r} in --steps {text!r}; write e.g. 10M,20M or 500K.")
        factor = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}[match[2].lower()]
        value = float(match[1]) * factor
        if value <= 0 or value != int(value):
            raise TableError(f"step count {part!r} in --steps must be a positive whole number of steps.")
        out.append(int(value))
    return sorted(set(out))


def format_steps(n: float) -> str:
    """10_000_000 -> '10M' (the inverse of parse_steps for round numbers)."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= factor and n % factor == 0:
            return f"{int(n // factor)}{suffix}"
        if n >= factor:
            return f"{n / factor:.3g}{suffix}"
    return str(int(n))


def detect_maps(scalars: pd.DataFrame) -> list[str]:
    """Map short names present in the logs (from alltime_min_ms_<map> and Race/* tags)."""
    maps = set()
    for tag in scalars["tag"].unique():
        tag = str(tag)
        if tag.startswith("alltime_min_ms_"):
            maps.add(tag[len("alltime_min_ms_") :])
        elif tag.startswith("Race/") and "_trained_" in tag:
            maps.add(tag.split("_trained_", 1)[1])
    return sorted(maps)


def scalar_metrics(maps: list[str]) -> list[ScalarMetric]:
    """The scalar metrics of the published comparison: best time and avg Q per map, then loss and learner %.

    Before a run's first finish its best time is the 300 s cutoff and says nothing, so the furthest race so far
    (metres along the centreline, greedy eval races and exploration races) is tabulated beside it, where logged.
    """
    out = [ScalarMetric(f"best_time_{m}", metrics.alltime_min_ms(m), "min", 1e-3, "s", "best_time") for m in maps]
    out += [
        ScalarMetric(f"furthest_eval_{m}", metrics.eval_race_progress(m), "max", 1.0, "m", "furthest") for m in maps
    ]
    out += [
        ScalarMetric(f"furthest_explo_{m}", metrics.explo_race_progress(m), "max", 1.0, "m", "furthest") for m in maps
    ]
    out += [ScalarMetric(f"avg_q_{m}", metrics.avg_q(m), "last", kind="avg_q") for m in maps]
    return out + [
        ScalarMetric("loss", metrics.LOSS, "last", kind="loss"),
        ScalarMetric(
            "learner_pct",
            metrics.LEARNER_PERCENTAGE,
            "last",
            1.0,
            metrics.unit(metrics.LEARNER_PERCENTAGE),
            "learner_pct",
        ),
    ]


def tag_metric(tag: str) -> ScalarMetric:
    """Any scalar, shown as logged (its last value at each checkpoint), in its unit from the tag table."""
    return ScalarMetric(tag, tag, "last", 1.0, metrics.unit(tag) or "", "tag")


_RACE_KINDS = ("eval_race_time_robust_trained_", "eval_race_time_trained_", "explo_race_time_trained_")


def is_race_tag(tag: str) -> bool:
    """A race-time tag (one value per race, summarised by race_table)."""
    return any(tag.startswith("Race/" + kind) and len(tag) > len("Race/" + kind) for kind in _RACE_KINDS)


def select(
    present: set[str], maps: list[str], tags: list[str] | None = None, all_scalars: bool = False
) -> tuple[list[ScalarMetric], list[str]]:
    """(scalar metrics, race tags) to tabulate among the tags ``present`` in the logs.

    Args:
        tags: tags (or metric names such as best_time_A01) to tabulate instead of the default set; old Linesight
            names are accepted. A tag no run logged raises TableError.
        all_scalars: the default set plus every other tag logged.
    """
    known = scalar_metrics(maps)
    if tags is None:
        chosen = [m for m in known if m.tag in present]
        races = [t for m in maps for t in race_tags(present, m)]
        if all_scalars:
            covered = {m.tag for m in chosen} | set(races)
            chosen += [tag_metric(t) for t in sorted(present) if t not in covered and not is_race_tag(t)]
            races += [t for t in sorted(present) if is_race_tag(t) and t not in covered]
        return chosen, races
    by_name = {m.name: m for m in known} | {m.tag: m for m in known}
    chosen, races = [], []
    for text in dict.fromkeys(tags):
        tag = metrics.canonical_tag(text)
        metric = by_name.get(text) or by_name.get(tag)
        if metric is not None and metric.tag in present:
            chosen.append(metric)
        elif tag not in present:
            close = difflib.get_close_matches(tag, sorted(present), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TableError(
                f"no run logged the requested tag {text!r}{hint}; --all-scalars (all_scalars: true "
                f"in runs.yaml) tabulates every tag logged."
            )
        elif is_race_tag(tag):
            races.append(tag)
        else:
            chosen.append(tag_metric(tag))
    return chosen, list(dict.fromkeys(races))


def race_tags(scalars, map_name: str | None = None) -> list[str]:
    """Race-time tags present (eval robust, eval, exploration), for one map or all; ``scalars`` is the long
    table or the set of its tags."""
    present = scalars if isinstance(scalars, (set, frozenset)) else {str(t) for t in scalars["tag"].unique()}
    out = []
    for kind in _RACE_KINDS:
        for tag in sorted(present):
            if tag.startswith("Race/" + kind) and (map_name is None or tag == f"Race/{kind}{map_name}"):
                out.append(tag)
    return out


def finished_tag_for(race_tag: str) -> str:
    """The 0/1 finished tag logged beside a race-time tag (robust eval times count eval races)."""
    map_name = race_tag.split("_trained_", 1)[1]
    if "/explo_" in race_tag:
        return metrics.explo_race_finished(map_name)
    return metrics.eval_race_finished(map_name)


# --- the x axis ---------------------------------------------------------------------------------------------------

# axis -> (the periodic counter, the counter at each race's end, factor from the race counter to the periodic one)
COUNTERS = {
    "updates": (metrics.CUMUL_BATCHES, metrics.RACE_BATCHES, 1.0),
    "cumul_training_hours": (metrics.CUMUL_TRAINING_HOURS, metrics.RACE_TRAINING_S, 1.0 / 3600.0),
}
EXACT, INTERPOLATED = "exact", "interpolated"


def _last_per_step(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique steps and the value written last at each (several writes at one step: the last one wins, like
    TensorBoard's own display)."""
    if len(steps) == 0:
        return steps, values
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    last = np.r_[steps[1:] != steps[:-1], True]
    return steps[last], values[last]


def counter_at(periodic: pd.DataFrame, at_races: pd.DataFrame, steps: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """A counter at each of ``steps``: exact where the run logged it at that step (a race's end, or a periodic log),
    linearly interpolated between its points elsewhere; NaN before its first point, its last value after its last.

    ``periodic`` and ``at_races`` are the rows (step, value) of the periodic counter and of the race-end counter
    (``factor`` converts the latter to the former's unit); a race-end value wins over a periodic one at one step.
    """
    s_log, v_log = _last_per_step(periodic["step"].to_numpy(), periodic["value"].to_numpy(np.float64))
    s_race, v_race = _last_per_step(at_races["step"].to_numpy(), at_races["value"].to_numpy(np.float64) * factor)
    keep = ~np.isin(s_log, s_race)
    cs, cv = _last_per_step(np.r_[s_log[keep], s_race], np.r_[v_log[keep], v_race])
    out = np.full(len(steps), np.nan)
    if len(cs) == 0:
        return out
    ok = steps >= cs[0]
    out[ok] = np.interp(steps[ok].astype(np.float64), cs.astype(np.float64), cv)
    return out


def axis_methods(scalars: pd.DataFrame, axis: str) -> dict[str, str]:
    """Run -> how its rows are placed on a counter axis: EXACT (it logged the counters at each race's end) or
    INTERPOLATED (between its periodic counter logs); {} for the wall and frames axes, which need no counter."""
    if axis not in COUNTERS:
        return {}
    race_tag = COUNTERS[axis][1]
    out = {}
    for run, df in scalars.groupby("run", observed=True, sort=False):
        out[str(run)] = EXACT if (df["tag"] == race_tag).any() else INTERPOLATED
    return out


def describe_methods(methods: dict[str, str], axis: str) -> str:
    """'exact (...) in every run' / 'interpolated (...) in runs a, b; exact in c' for a table's footer."""
    if not methods:
        return ""
    # the projected axis places races by their updates, then scales them by the group's cost per update
    periodic, race_tag, _ = COUNTERS["updates" if axis == PROJECTED else axis]
    words = {
        EXACT: f"exact ({race_tag} at each race's end)",
        INTERPOLATED: f"linear interpolation between the {periodic} logs",
    }
    by_method: dict[str, list[str]] = {}
    for run, method in methods.items():
        by_method.setdefault(method, []).append(run)
    if len(by_method) == 1:
        return f"{words[next(iter(by_method))]} in every run"
    return "; ".join(f"{words[m]} in {', '.join(runs)}" for m, runs in by_method.items())


def with_axis(scalars: pd.DataFrame, axis: str, starts: dict[str, float] | None = None) -> pd.DataFrame:
    """The long table plus an ``x`` column on ``axis`` (minutes for time axes, counts for step axes).

    ``starts`` (run -> Unix time of its first event of any kind, see RunSet.starts) sets the origin of wall time;
    without it, the run's first scalar is the origin.
    """
    if axis not in TIME_AXES + STEP_AXES:
        raise TableError(f"unknown axis {axis!r}; use one of {', '.join(TIME_AXES + STEP_AXES)}.")
    parts = []
    for run, df in scalars.groupby("run", observed=True, sort=False):
        df = df.copy()
        if axis == "wall":
            origin = df["wall_time"].min()
            if starts and not np.isnan(starts.get(str(run), np.nan)):
                origin = min(origin, starts[str(run)])
            df["x"] = (df["wall_time"] - origin) / 60.0
        elif axis == "frames":
            df["x"] = df["step"].astype(np.float64)
        else:
            periodic, race_tag, factor = COUNTERS[axis]
            counter, at_races = df[df["tag"] == periodic], df[df["tag"] == race_tag]
            if counter.empty and at_races.empty:
                raise TableError(
                    f"run {run!r} has no {periodic} scalar, so it cannot be placed on the {axis} axis; "
                    f"use --time-axis wall or --by frames."
                )
            x = counter_at(counter, at_races, df["step"].to_numpy(), factor)
            # TensorBoard stores scalars as float32: hours carry ~1e-7 relative error, so 10 min logged as 1/6 h
            # reads back as 10.0000004 min. Rounding to 1/1000 min (below float32 resolution up to ~100 h) puts
            # such values back on their whole-minute checkpoints.
            df["x"] = np.round(x * 60.0, 3) if axis == "cumul_training_hours" else x
        parts.append(df)
    if not parts:
        return scalars.assign(x=np.zeros(0))
    return pd.concat(parts, ignore_index=True)


def spans(data: pd.DataFrame) -> pd.Series:
    """Largest x of each run (its duration in minutes, or its last step)."""
    return data.groupby("run", observed=True)["x"].max()


def time_checkpoints(data: pd.DataFrame, interval: float) -> tuple[list[float], float]:
    """(checkpoints every ``interval`` minutes within the common window, ending with the window's end; window)."""
    if interval <= 0:
        raise TableError(f"--interval must be a positive number of minutes, not {interval}.")
    window = float(spans(data).min())
    points = [float(interval * k) for k in range(1, int(math.floor(window / interval + 1e-9)) + 1)]
    if not points or window - points[-1] > 1e-9:
        points.append(window)
    return points, window


def step_checkpoints(
    data: pd.DataFrame, steps: list[int] | None = None, step_interval: int | None = None
) -> tuple[list[int], list[int], float]:
    """(checkpoints every run reached, requested ones beyond the common window, common window in steps)."""
    window = float(spans(data).min())
    if steps is None:
        if not step_interval or step_interval <= 0:
            raise TableError("give --steps (e.g. 10M,20M) or a positive --step-interval.")
        steps = list(range(step_interval, int(window) + 1, step_interval))
    kept = [s for s in steps if s <= window]
    return kept, [s for s in steps if s > window], window


# --- values at checkpoints -----------------------------------------------------------------------------------------


def _sorted_values(data: pd.DataFrame, tag: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """run -> (x ascending, values in that order) for one tag."""
    out = {}
    sub = data[data["tag"] == tag]
    for run, df in sub.groupby("run", observed=True, sort=False):
        df = df.sort_values("x", kind="stable")
        out[str(run)] = (df["x"].to_numpy(), df["value"].to_numpy())
    return out


def running_value(values: np.ndarray, how: str) -> np.ndarray:
    """The metric as shown at each point: the minimum so far ("min"), the maximum so far ("max"), or as logged."""
    if how == "min":
        return np.minimum.accumulate(values)
    if how == "max":
        return np.maximum.accumulate(values)
    return values


def metric_table(data: pd.DataFrame, metric: ScalarMetric, checkpoints, runs: list[str]) -> pd.DataFrame:
    """Rows: checkpoints; columns: runs; cells: the metric at the checkpoint (NaN when nothing logged yet)."""
    series = _sorted_values(data, metric.tag)
    table = pd.DataFrame(np.nan, index=list(checkpoints), columns=runs)
    for run in runs:
        if run not in series:
            continue
        x, v = series[run]
        v = v * metric.scale
        running = running_value(v, metric.how)
        idx = np.searchsorted(x, np.asarray(checkpoints, np.float64), side="right") - 1
        table[run] = np.where(idx >= 0, running[np.maximum(idx, 0)], np.nan)
    return table


def final_values(data: pd.DataFrame, metric: ScalarMetric, runs: list[str]) -> pd.Series:
    """The metric at the end of each run (its own end, not the common window)."""
    series = _sorted_values(data, metric.tag)
    out = pd.Series(np.nan, index=runs, dtype=np.float64)
    for run, (_, v) in series.items():
        if run in out.index and len(v):
            out[run] = running_value(v, metric.how)[-1] * metric.scale
    return out


RACE_COLUMNS = ["races", "best", "mean", "std", "best_finished", "finish_rate", "first_finish"]


def race_table(data: pd.DataFrame, race_tag: str, checkpoints, runs: list[str]) -> pd.DataFrame:
    """Per (checkpoint, run): races so far, best, mean, std (sample), best among finished, finish rate, first finish.

    A race is finished when its time is under the cutoff (300 s). The finish rate comes from the 0/1 finished tag
    logged beside the times when present (robust eval times only log finished races, so their own values cannot
    give a rate), else from the times themselves. ``first_finish`` is the x of the first finished race.
    """
    times = _sorted_values(data, race_tag)
    finished = _sorted_values(data, finished_tag_for(race_tag))
    rows = []
    for cp in checkpoints:
        for run in runs:
            row = dict.fromkeys(RACE_COLUMNS, np.nan)
            row["races"] = 0
            if run in times:
                x, v = times[run]
                v = v[x <= cp]
                row["races"] = len(v)
                if len(v):
                    done = v < metrics.RACE_CUTOFF_S
                    row["best"] = v.min()
                    row["mean"] = v.mean()
                    row["std"] = v.std(ddof=1) if len(v) > 1 else np.nan
                    row["best_finished"] = v[done].min() if done.any() else np.nan
                    first = np.nonzero(done)[0]  # v is a prefix of the x-sorted series
                    row["first_finish"] = x[first[0]] if len(first) else np.nan
                    row["finish_rate"] = done.mean()
            if run in finished:
                fx, fv = finished[run]
                fv = fv[fx <= cp]
                row["finish_rate"] = fv.mean() if len(fv) else np.nan
            rows.append({"checkpoint": cp, "run": run, **row})
    return pd.DataFrame(rows, columns=["checkpoint", "run", *RACE_COLUMNS]).set_index(["checkpoint", "run"])


@dataclass
class Comparison:
    """Everything a compare run produces: axis data, checkpoints and the tables."""

    axis: str
    checkpoints: list
    window: float
    runs: list[str]
    metric_tables: dict[str, pd.DataFrame]  # metric name -> checkpoints x runs
    race_tables: dict[str, pd.DataFrame]  # race tag -> (checkpoint, run) x RACE_COLUMNS
    dropped: list  # requested step checkpoints beyond the common window
    data: pd.DataFrame  # the long table with its x column (for plots)
    metrics: dict[str, ScalarMetric] = field(default_factory=dict)  # metric name -> its definition
    methods: dict[str, str] = field(default_factory=dict)  # run -> EXACT or INTERPOLATED (counter axes only)


def compare(
    scalars: pd.DataFrame,
    axis: str,
    runs: list[str] | None = None,
    interval: float = 10.0,
    steps: list[int] | None = None,
    step_interval: int | None = None,
    maps: list[str] | None = None,
    starts: dict[str, float] | None = None,
    tags: list[str] | None = None,
    all_scalars: bool = False,
    placed: pd.DataFrame | None = None,
) -> Comparison:
    """Tables of the chosen scalar metrics and race tags (see ``select``) at the checkpoints of one axis; ``placed``
    is the long table already on ``axis`` (the PROJECTED axis, whose x the caller computes)."""
    if runs is None:
        runs = [str(r) for r in pd.unique(scalars["run"])]
    data = placed if placed is not None else with_axis(scalars[scalars["run"].isin(runs)], axis, starts)
    if data.empty:
        raise TableError("the runs hold no scalars to compare.")
    dropped: list = []
    if axis in TIME_AXES or axis == PROJECTED:
        checkpoints, window = time_checkpoints(data, interval)
    else:
        checkpoints, dropped, window = step_checkpoints(data, steps, step_interval)
    maps = maps if maps is not None else detect_maps(scalars)
    chosen, race_list = select({str(t) for t in data["tag"].unique()}, maps, tags, all_scalars)
    tables = {m.name: metric_table(data, m, checkpoints, runs) for m in chosen}
    races = {tag: race_table(data, tag, checkpoints, runs) for tag in race_list}
    return Comparison(
        axis,
        checkpoints,
        window,
        runs,
        tables,
        races,
        dropped,
        data,
        {m.name: m for m in chosen},
        axis_methods(data, "updates" if axis == PROJECTED else axis),
    )


# --- one row per run ------------------------------------------------------------------------------------------------


def run_summary(
    scalars: pd.DataFrame,
    runs: list[str],
    map_name: str | None,
    starts: dict[str, float] | None = None,
    infos: dict | None = None,
    no_data: dict[str, str] | None = None,
) -> pd.DataFrame:
    """One row per run: wall minutes (from ``starts`` when given, see RunSet.starts), training hours, frames,
    updates and how its races sit on the updates axis (EXACT or INTERPOLATED), final best time (s) over the whole
    run, and the furthest eval race (m) where progress was logged.

    With ``infos`` (label -> RunInfo), the row starts with the log folders and event files merged and the scalars
    read, or "no data: <reason>" (from ``no_data``, else the run's own), so a run without data is listed, not lost.
    """
    rows = []
    for run in runs:
        df = scalars[scalars["run"] == run]
        row = {}
        if infos is not None:
            info = infos[run]
            reason = (no_data or {}).get(run) or info.no_data
            row = {
                "folders": len(info.folders),
                "files": len(info.event_files),
                "data": f"no data: {reason}" if reason else f"{len(df)} scalars",
            }
        row |= {
            "wall_minutes": np.nan,
            "training_hours": np.nan,
            "frames": np.nan,
            "updates": np.nan,
            "updates_placed": "-",
            "final_best_s": np.nan,
            "furthest_eval_m": np.nan,
        }
        if not df.empty:
            origin = df["wall_time"].min()
            if starts and not np.isnan(starts.get(run, np.nan)):
                origin = min(origin, starts[run])
            row["wall_minutes"] = (df["wall_time"].max() - origin) / 60.0
            row["frames"] = int(df["step"].max())
            for name, tag in (("training_hours", metrics.CUMUL_TRAINING_HOURS), ("updates", metrics.CUMUL_BATCHES)):
                counter = df[df["tag"] == tag]
                if not counter.empty:
                    row[name] = counter.sort_values("step", kind="stable")["value"].iloc[-1]
            if (df["tag"] == metrics.RACE_BATCHES).any():  # how its races sit on the updates axis (see with_axis)
                row["updates_placed"] = EXACT
            elif not np.isnan(row["updates"]):
                row["updates_placed"] = INTERPOLATED
            if map_name is not None:
                best = df[df["tag"] == metrics.alltime_min_ms(map_name)]["value"]
                if not best.empty:
                    row["final_best_s"] = best.min() / 1000.0
                progress = df[df["tag"] == metrics.eval_race_progress(map_name)]["value"]
                if not progress.empty:
                    row["furthest_eval_m"] = progress.max()
        rows.append({"run": run, **row})
    out = pd.DataFrame(rows).set_index("run")
    if out["furthest_eval_m"].isna().all():  # logs without progress tags (e.g. Linesight's): no empty column
        out = out.drop(columns="furthest_eval_m")
    for col in ("frames", "updates"):
        out[col] = out[col].astype("Int64") if out[col].notna().all() else out[col]
    return out


RUN_FORMATS = {
    "folders": "{:.0f}",
    "files": "{:.0f}",
    "wall_minutes": "{:.1f}",
    "training_hours": "{:.2f}",
    "frames": "{:.0f}",
    "updates": "{:.0f}",
    "final_best_s": "{:.3f}",
    "furthest_eval_m": "{:.1f}",
}


def checkpoint_label(value: float, axis: str, window: float | None = None) -> str:
    """How a checkpoint is written in tables: '20 min', 'end 50.02 min' (the common window's end), or '10M'."""
    if axis in TIME_AXES or axis == PROJECTED:
        whole = abs(value - round(value)) < 1e-9
        text = f"{value:.0f} min" if whole else f"{value:.2f} min"
        return f"end {text}" if window is not None and value == window and not whole else text
    return format_steps(value)
