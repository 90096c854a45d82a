"""Per-run summary (durations, counters, final best) and seed-group statistics tables built on stats.py."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tmexp.analysis import stats, tables
from tmexp.core import metrics


def run_summary(scalars: pd.DataFrame, runs: list[str], map_name: str | None,
                starts: dict[str, float] | None = None, infos: dict | None = None,
                no_data: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per run: wall minutes (from ``starts`` when given, see RunSet.starts), training hours, frames,
    updates, final best time (s) over the whole run, and the furthest eval race (m) where progress was logged.

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
            row = {"folders": len(info.folders), "files": len(info.event_files),
                   "data": f"no data: {reason}" if reason else f"{len(df)} scalars"}
        row |= {"wall_minutes": np.nan, "training_hours": np.nan, "frames": np.nan, "updates": np.nan,
                "final_best_s": np.nan, "furthest_eval_m": np.nan}
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


SUMMARY_FORMATS = {"folders": "{:.0f}", "files": "{:.0f}", "wall_minutes": "{:.1f}", "training_hours": "{:.2f}",
                   "frames": "{:.0f}", "updates": "{:.0f}", "final_best_s": "{:.3f}", "furthest_eval_m": "{:.1f}"}


def group_values(values: pd.Series, groups: dict[str, list[str]]) -> dict[str, list[float]]:
    """Per-run values (indexed by run) -> group -> list of its seeds' values."""
    return {g: [float(values.get(r, np.nan)) for r in members] for g, members in groups.items()}


def group_estimates(values: pd.Series, groups: dict[str, list[str]], reps: int = 50_000,
                    seed: int = 0) -> dict[str, stats.GroupEstimate]:
    return {g: stats.estimate(g, v, reps=reps, seed=seed) for g, v in group_values(values, groups).items()}


def group_table(metric_table: pd.DataFrame, groups: dict[str, list[str]], axis: str, window: float | None = None,
                fmt: str = "{:.3f}", reps: int = 10_000) -> pd.DataFrame:
    """Rows: checkpoints; columns: groups; cells: 'IQM [low, high] (n seeds)' or 'value (single seed)'."""
    out = pd.DataFrame(index=[tables.checkpoint_label(c, axis, window) for c in metric_table.index],
                       columns=list(groups), dtype=object)
    for cp, label in zip(metric_table.index, out.index):
        for g, est in group_estimates(metric_table.loc[cp], groups, reps=reps).items():
            out.loc[label, g] = est.describe(fmt) if est.n_seeds else "-"
    return out


def group_comparisons(values: pd.Series, groups: dict[str, list[str]], baseline: str | None = None,
                      reps: int = 50_000, higher_is_better: bool = False) -> list[stats.GroupComparison]:
    """Each group against the baseline group (default: the first); values are lower-is-better (times) unless
    ``higher_is_better`` (distances)."""
    names = list(groups)
    if len(names) < 2:
        return []
    baseline = baseline if baseline in groups else names[0]
    per_group = group_values(values, groups)
    estimates = group_estimates(values, groups, reps=reps)
    return [stats.compare_groups(estimates[g], per_group[g], estimates[baseline], per_group[baseline],
                                 higher_is_better) for g in names if g != baseline]
