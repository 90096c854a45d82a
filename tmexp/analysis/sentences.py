"""Sentences generated from a study's tables: rankings at checkpoints and across-seed comparisons."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tmexp.analysis import stats, tables
from tmexp.analysis.study import ExperimentSpec
from tmexp.core import metrics


def _group_value(values: pd.Series, members: list[str]) -> tuple[float, str]:
    """A group's value (IQM across seeds, or the single run's value) and how to say it."""
    est = stats.estimate("", [values.get(m, np.nan) for m in members])
    if est.n_seeds == 0:
        return math.nan, "-"
    if est.n_seeds == 1:
        return est.iqm, f"{est.iqm:.3f} s"
    return est.iqm, f"IQM {est.iqm:.3f} s over {est.n_seeds} seeds"


def ranking_sentence(values: pd.Series, groups: dict[str, list[str]], where: str, what: str) -> str | None:
    """'At <where>, <what> is lowest for **A** (x s), then B (y s), ...' over groups with a value."""
    ranked = []
    for g, members in groups.items():
        value, text = _group_value(values, members)
        if not math.isnan(value):
            ranked.append((value, g, text))
    if not ranked:
        return None
    ranked.sort()
    if ranked[0][0] >= metrics.RACE_CUTOFF_S:
        return f"{where}, no run has finished a race yet ({what} is the {metrics.RACE_CUTOFF_S:.0f} s cutoff)."
    return _order_sentence(ranked, where, what, "lowest", [g for g in groups if g not in {r[1] for r in ranked}])


def _order_sentence(ranked: list[tuple[float, str, str]], where: str, what: str, word: str,
                    missing: list[str]) -> str:
    """From (sort key, group, text) sorted best first: '<where>, <what> is <word> for **A** (text), then ...';
    groups with nothing logged yet are named, not dropped."""
    best_value, best, best_text = ranked[0]
    ties = [g for v, g, _ in ranked[1:] if v == best_value]
    lead = f"**{best}**" + "".join(f" and **{g}** (tied)" for g in ties)
    rest = ", ".join(f"{g} ({t})" for v, g, t in ranked[1:] if v != best_value)
    text = f"{where}, {what} is {word} for {lead} ({best_text})" + (f", then {rest}" if rest else "")
    return text + (f"; none logged yet for {', '.join(missing)}." if missing else ".")


def distance_sentence(values: pd.Series, groups: dict[str, list[str]], where: str, what: str) -> str | None:
    """'At <where>, <what> is longest for **A** (x m), then B (y m), ...' over groups with a value."""
    ranked = []
    for g, members in groups.items():
        est = stats.estimate("", [values.get(m, np.nan) for m in members])
        if est.n_seeds:
            text = f"{est.iqm:.1f} m" + (f" IQM over {est.n_seeds} seeds" if est.n_seeds > 1 else "")
            ranked.append((-est.iqm, g, text))
    if not ranked:
        return None
    return _order_sentence(sorted(ranked), where, what, "longest",
                           [g for g in groups if g not in {r[1] for r in ranked}])


def distance_results(spec: ExperimentSpec, by_time: tables.Comparison, by_steps: tables.Comparison,
                     run_table: pd.DataFrame, groups: dict[str, list[str]], map_name: str) -> list[str]:
    """Sentences on the furthest greedy (eval) race, for experiments where some run never finished: before a
    first finish the best time is the cutoff and only the distance shows learning. At the end of the common
    window, at the last common step checkpoint, and across seeds over each whole run."""
    name = f"furthest_eval_{map_name}"
    final_best = run_table["final_best_s"]
    if name not in by_time.metric_tables or "furthest_eval_m" not in run_table or (
            (final_best < metrics.RACE_CUTOFF_S).all()):
        return []
    what = f"the furthest eval race so far ({metrics.eval_race_progress(map_name)})"
    window = f"At the end of the common window ({minutes(by_time.window)} {axis_unit(by_time.axis)})"
    out = [s for s in (
        distance_sentence(by_time.metric_tables[name].iloc[-1], groups, window, what),
        *(distance_sentence(by_steps.metric_tables[name].loc[cp], groups,
                            f"At {tables.format_steps(cp)} {by_steps.axis}", what)
          for cp in by_steps.checkpoints[-1:] if name in by_steps.metric_tables)) if s]
    furthest = run_table["furthest_eval_m"]
    for c in stats.group_comparisons(furthest, groups, spec.baseline, higher_is_better=True):
        if c.a.n_seeds > 1 and c.b.n_seeds > 1:
            out.append(f"Across seeds, the furthest eval race of {c.a.group} ({c.a.describe('{:.1f}')} m) against "
                       f"the baseline {c.b.group} ({c.b.describe('{:.1f}')} m): the 95 % intervals "
                       f"{'overlap' if c.overlap else 'do not overlap'}; P({c.a.group} further) = "
                       f"{c.p_improvement:.2f}.")
    return out


def key_results(spec: ExperimentSpec, by_time: tables.Comparison, by_steps: tables.Comparison,
                final: pd.Series, groups: dict[str, list[str]], maps: list[str],
                other_steps: list[tables.Comparison] = ()) -> list[str]:
    """Factual sentences from the tables: best at the end of the common window, at each step checkpoint of the first
    step axis and at the last common checkpoint of the others (``other_steps``: by updates after by frames)."""
    out = []
    if not maps:
        return ["No map metrics (alltime_min_ms_<map>, Race/*) were logged, so there is no best time to compare."]
    map_name = maps[0]
    best_name = f"best_time_{map_name}"
    unit = "wall minutes" if by_time.axis == "wall" else "training minutes"
    if best_name in by_time.metric_tables:
        end = by_time.metric_tables[best_name].iloc[-1]
        s = ranking_sentence(end, groups, f"At the end of the common window ({minutes(by_time.window)} {unit})",
                             f"the best {map_name} time so far (alltime_min_ms_{map_name})")
        if s:
            out.append(s)
    robust = metrics.eval_race_time_robust(map_name)
    for cp in by_steps.checkpoints:
        where = f"At {tables.format_steps(cp)} {by_steps.axis}"
        if robust in by_steps.race_tables:
            values = by_steps.race_tables[robust].xs(cp, level="checkpoint")["best"]
            s = ranking_sentence(values, groups, where, f"the best robust eval time ({robust})")
        elif best_name in by_steps.metric_tables:
            s = ranking_sentence(by_steps.metric_tables[best_name].loc[cp], groups, where,
                                 f"the best {map_name} time so far")
        else:
            s = None
        if s:
            out.append(s)
    for cmp in other_steps:
        if best_name in cmp.metric_tables and cmp.checkpoints:
            cp = cmp.checkpoints[-1]
            s = ranking_sentence(cmp.metric_tables[best_name].loc[cp], groups,
                                 f"At {tables.format_steps(cp)} {cmp.axis} (the last common checkpoint)",
                                 f"the best {map_name} time so far")
            if s:
                out.append(s)
    s = ranking_sentence(final, groups, "Over each whole run (not only the common window)",
                         f"the final best {map_name} time")
    if s:
        out.append(s)
    against = [("the baseline", spec.baseline)] + ([("the reference", spec.reference)] if spec.reference else [])
    for role, base in against:
        for c in stats.group_comparisons(final, groups, base):
            if c.a.n_seeds > 1 and c.b.n_seeds > 1 and not (role == "the reference" and c.a.group == spec.baseline):
                out.append(f"Across seeds, {c.a.group} ({c.a.describe()}) against {role} {c.b.group} "
                           f"({c.b.describe()}): the 95 % intervals {'overlap' if c.overlap else 'do not overlap'}; "
                           f"probability of improvement P({c.a.group} faster) = {c.p_improvement:.2f}.")
    singles = [g for g, m in groups.items() if len(m) == 1]
    if singles and any(len(m) > 1 for m in groups.values()):
        out.append("Single-seed runs (" + ", ".join(singles) + ") carry no interval: one run says nothing "
                   "about seed-to-seed variation.")
    return out



def minutes(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def axis_unit(axis: str) -> str:
    return "wall minutes" if axis == "wall" else "training minutes"
