"""What the machine did to wall time: each run's learner rate, launch and load, and a wall-time axis without it.

A comparison by wall time measures the machine as much as the arm when the runs shared it or ran in different
launches. Per run this module reads:

- the learner's rate in updates/s: the median of ``Performance/updates_per_second`` where logged, else of
  ``Performance/transitions_learned_per_second`` divided by the run's batch size (runs logged before the first tag);
- the launch it ran in: the sweep id of its ``status.json`` (a rerun of a sweep command is a new launch), and
  its start time from ``run_meta.json``;
- the median 1-minute load average (``Performance/load_average_1m``) where logged.

A run whose rate is more than ``RATE_TOLERANCE`` from its group's median is flagged. ``projected`` places each
group's curve by updates in time by its learner's cost per update, measured side by side on an idle machine
(``python -m tmexp.bench learner --vs-baseline --json``; runs.yaml ``cost_per_update``), so a group's speed and its
learning are measured apart and the comparison does not depend on the afternoon it ran.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tmexp.analysis import loading
from tmexp.core import metrics

RATE_TOLERANCE = 0.15  # a run's updates/s further than this from its group's median is flagged


def _median(scalars: pd.DataFrame, run: str, tag: str) -> float:
    values = scalars.loc[(scalars["run"] == run) & (scalars["tag"] == tag), "value"].to_numpy()
    values = values[np.isfinite(values) & (values > 0)] if tag != metrics.LOAD_AVERAGE else values
    return float(np.median(values)) if len(values) else float("nan")


def _batch_size(info: loading.RunInfo) -> float:
    try:
        return float(info.config["training"]["batch_size"])
    except (TypeError, KeyError, ValueError):
        return float("nan")


def machine_table(runset: loading.RunSet, groups: dict[str, list[str]]) -> pd.DataFrame:
    """One row per run of ``groups``: group, launch, started, updates/s (and where from), its deviation from the
    group's median, the flag, and the median load average."""
    scalars = runset.scalars
    rows = {}
    for g, members in groups.items():
        for run in members:
            info = runset.runs[run]
            rate, source = _median(scalars, run, metrics.UPDATES_PER_S), "updates_per_second"
            if np.isnan(rate):
                rate = _median(scalars, run, metrics.TRANSITIONS_LEARNED_PER_S) / _batch_size(info)
                source = "transitions_learned_per_second / batch_size"
            rows[run] = {
                "group": g,
                "launch": str((info.status or {}).get("sweep") or "-"),
                "started": str((info.meta or {}).get("started_at") or "-")[:16].replace("T", " "),
                "updates_per_s": rate,
                "from": source if np.isfinite(rate) else "-",
                "load_average": _median(scalars, run, metrics.LOAD_AVERAGE),
            }
    table = pd.DataFrame.from_dict(rows, orient="index")
    if table.empty:
        return table
    median = table.groupby("group")["updates_per_s"].transform("median")
    table["vs_group_median"] = table["updates_per_s"] / median - 1.0
    table["flag"] = np.where(
        table["vs_group_median"].abs() > RATE_TOLERANCE, f"> {RATE_TOLERANCE:.0%} from its group", ""
    )
    return table


MACHINE_FORMATS = {"updates_per_s": "{:.1f}", "load_average": "{:.2f}", "vs_group_median": "{:+.0%}"}


def machine_sentences(table: pd.DataFrame, baseline: str | None = None) -> list[str]:
    """What a reader of a wall-time comparison must know: flagged runs, launches per group, the load."""
    if table.empty:
        return []
    out = []
    flagged = table[table["flag"] != ""]
    rated = table["updates_per_s"].notna().sum()
    if not rated:
        out.append(
            "No run logged its learner's rate (updates_per_second, or transitions_learned_per_second with a "
            "batch size in its config), so no run can be flagged."
        )
    elif len(flagged):
        out.append(
            f"Learner rate more than {RATE_TOLERANCE:.0%} from its group's median (the machine, not the arm, "
            "set its pace): "
            + ", ".join(
                f"{run} ({row.updates_per_s:.1f} updates/s, {row.vs_group_median:+.0%})"
                for run, row in flagged.iterrows()
            )
            + "."
        )
    else:
        out.append(
            f"Every run's learner rate is within {RATE_TOLERANCE:.0%} of its group's median ({rated} of "
            f"{len(table)} runs logged it)."
        )
    launches = table.groupby("group")["launch"].agg(lambda s: sorted(set(s)))
    n_launches = table.loc[table["launch"] != "-", "launch"].nunique()
    if n_launches == 0:
        out.append("No run's status.json names its launch (sweep id), so whether the groups shared one is unknown.")
    elif n_launches > 1:
        per_group = "; ".join(f"{g}: {', '.join(v)}" for g, v in launches.items())
        out.append(
            f"The runs came from {n_launches} launches (sweep ids; {per_group}), so a wall-time comparison "
            "between groups compares launches too: the by-updates tables and the projected wall time do not "
            "depend on them."
        )
    else:
        out.append("Every run came from one launch.")
    load = table["load_average"].dropna()
    if len(load):
        out.append(
            f"Median 1-minute load average per run: {load.min():.2f} to {load.max():.2f} "
            f"({len(load)} of {len(table)} runs logged it)."
        )
    else:
        out.append(
            "No run logged the load average (Performance/load_average_1m came later), so how busy the machine "
            "was is unknown; the rates above are what shows it."
        )
    return out


def projected(data: pd.DataFrame, groups: dict[str, list[str]], cost_per_update: dict[str, float]) -> pd.DataFrame:
    """The rows of runs whose group has a cost per update, on the updates axis (``x``: updates), re-placed in
    minutes: updates x that group's learner seconds per update / 60."""
    parts = []
    for g, members in groups.items():
        if g not in cost_per_update:
            continue
        sub = data[data["run"].isin(members)].copy()
        sub["x"] = sub["x"] * cost_per_update[g] / 60.0
        parts.append(sub)
    return pd.concat(parts, ignore_index=True) if parts else data.iloc[0:0]
