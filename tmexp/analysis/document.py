"""Turn comparisons into titled tables (sections) that the compare CLI and the report both render."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tmexp.analysis import stats, tables
from tmexp.analysis.render import heading, render_table

METRIC_FORMATS = {
    "best_time": "{:.3f}",
    "furthest": "{:.1f}",
    "loss": "{:.2f}",
    "avg_q": "{:.4f}",
    "learner_pct": "{:.1f}",
    "tag": "{:.4g}",
}
METRIC_TITLES = {
    "best_time": "best time so far (s), from {tag} / 1000",
    "furthest": "furthest race so far (m along the centreline), from {tag}",
    "loss": "training loss ({tag}, last value)",
    "avg_q": "average Q ({tag}, last value)",
    "learner_pct": "learner busy time, % ({tag}, last value)",
    "tag": "{tag}{unit} (last value)",
}
STD = "std is the sample std (n-1)"
TIME_ORIGIN = (
    "minute 0 is each run's first event of any kind (its writer's start), not its first scalar, so it "
    "does not move with the tags shown"
)


def definitions(axis: str | None, methods: dict[str, str] | None = None) -> str:
    """The line under each table: where relative time starts (and what x is, placed how in which run), which std."""
    placed = f" ({tables.describe_methods(methods, axis)})" if methods else ""
    if axis == "cumul_training_hours":
        return (
            "Time: training minutes from the learner's training-time counter (0 where training started; time "
            f"the run was stopped does not count){placed}; {STD}."
        )
    if axis == tables.PROJECTED:
        return (
            "Time: projected wall minutes, each run's gradient updates x its group's learner seconds per update "
            f"measured on an idle machine (runs.yaml cost_per_update){placed}; {STD}."
        )
    if axis == "frames":
        return f"x: frames played (the TensorBoard step); by time, {TIME_ORIGIN}; {STD}."
    if axis == "updates":
        return f"x: gradient updates at each scalar's step{placed}; by time, {TIME_ORIGIN}; {STD}."
    return f"Time: {TIME_ORIGIN}; {STD}."


@dataclass
class Section:
    """One table with its title; ``key`` names it in files (CSV output, figure lookup)."""

    key: str
    title: str
    table: pd.DataFrame
    formats: dict[str, str] = field(default_factory=dict)
    default: str = "{:.3f}"
    note: str = ""
    index_name: str = ""
    figure: Path | None = None
    footer: str = ""  # one line under the table (the definitions a reader must know)
    comparisons: list = field(default_factory=list)  # (checkpoint label, stats.GroupComparison) behind the table


def _converted(tag: str, conversions: dict | None) -> str:
    """'; converted on load: <how> (runs a, b)' for a tag some runs logged in another unit, else ''."""
    if not conversions or tag not in conversions:
        return ""
    how, runs = conversions[tag]
    return f"; converted on load: {how} (runs {', '.join(runs)})"


def _axis_words(cmp: tables.Comparison) -> str:
    if cmp.axis == tables.PROJECTED:
        return "by projected wall time"
    if cmp.axis in tables.TIME_AXES:
        return "by wall time" if cmp.axis == "wall" else "by training time"
    return f"by {cmp.axis}"


def metric_sections(cmp: tables.Comparison, conversions: dict | None = None) -> list[Section]:
    """A section per scalar metric: checkpoints x runs; the title names the tag, its unit and any conversion."""
    out = []
    for name, table in cmp.metric_tables.items():
        metric = cmp.metrics[name]
        shown = table.copy()
        shown.index = [tables.checkpoint_label(c, cmp.axis, cmp.window) for c in table.index]
        fmt = METRIC_FORMATS[metric.kind]
        title = METRIC_TITLES[metric.kind].format(tag=metric.tag, unit=f", {metric.unit}" if metric.unit else "")
        out.append(
            Section(
                f"{name}_by_{cmp.axis}",
                f"{title} {_axis_words(cmp)}{_converted(metric.tag, conversions)}",
                shown,
                {c: fmt for c in shown.columns},
                fmt,
                index_name="checkpoint",
                footer=definitions(cmp.axis, cmp.methods),
            )
        )
    return out


def race_sections(cmp: tables.Comparison) -> list[Section]:
    """A section per race tag: (checkpoint, run) x race statistics."""
    out = []
    timed = cmp.axis in tables.TIME_AXES or cmp.axis == tables.PROJECTED
    first = "{:.1f}" if timed else "{:.0f}"
    unit = "min" if timed else cmp.axis
    for tag, table in cmp.race_tables.items():
        shown = table.copy()
        shown.index = pd.MultiIndex.from_tuples(
            [(tables.checkpoint_label(c, cmp.axis, cmp.window), r) for c, r in table.index]
        )
        shown = shown.rename(columns={"first_finish": f"first_finish ({unit})"})
        formats = {"races": "{:.0f}", "finish_rate": "{:.2f}", f"first_finish ({unit})": first}
        note = (
            "Races so far at each checkpoint; times in s; a race is finished under 300 s; the finish rate "
            "comes from the finished tag when logged."
        )
        out.append(
            Section(
                f"{tag}_by_{cmp.axis}",
                f"{tag} {_axis_words(cmp)}",
                shown,
                formats,
                "{:.3f}",
                note,
                index_name="checkpoint / run",
                footer=definitions(cmp.axis, cmp.methods),
            )
        )
    return out


def group_table(
    metric_table: pd.DataFrame,
    groups: dict[str, list[str]],
    axis: str,
    window: float | None = None,
    fmt: str = "{:.3f}",
) -> pd.DataFrame:
    """Rows: checkpoints; columns: groups; cells: each group's estimate (``GroupEstimate.describe``)."""
    out = pd.DataFrame(
        index=[tables.checkpoint_label(c, axis, window) for c in metric_table.index], columns=list(groups), dtype=object
    )
    for cp, label in zip(metric_table.index, out.index):
        for g, est in stats.group_estimates(metric_table.loc[cp], groups).items():
            out.loc[label, g] = est.describe(fmt)
    return out


ESTIMATE_NOTE = (
    "Each group's estimate across its seeds: the IQM with its 95 % stratified bootstrap interval at "
    f"{stats.MIN_SEEDS} seeds or more (rliable's definitions); below that, the median and every seed's "
    "value, with no interval (a bootstrap of 3 seeds is only their range)."
)
COMPARISON_COLUMNS = ["difference", "95 % CI", "p", "p (Holm)", "P(better)", "verdict"]


def comparison_note(base_role: str, better: str) -> str:
    return (
        f"Each group against the {base_role}: the difference of their estimates (group - {base_role}); its 95 % "
        f"stratified bootstrap interval where both have {stats.MIN_SEEDS} seeds or more (per row, not adjusted for "
        "the table's other rows, so it can exclude 0 where the adjusted verdict does not establish); the two-sided "
        "permutation test's p (exact over every relabelling of the seeds where they are few enough, else "
        f"{stats.PERMUTATIONS} sampled), Holm-adjusted across every row of this table; P(better), rliable's "
        f"probability of improvement ({better} is better); the verdict: {stats.ESTABLISHED} (adjusted p < "
        f"{stats.ALPHA:g}, both groups at {stats.MIN_SEEDS} seeds or more), {stats.NOT_ESTABLISHED}, or "
        f"{stats.TOO_FEW_SEEDS}. Seeds are never paired across groups."
    )


def comparison_rows(
    values_at: dict[str, pd.Series],
    groups: dict[str, list[str]],
    base: str,
    higher_is_better: bool = False,
    skip: tuple[str, ...] = (),
) -> list[tuple[str, stats.GroupComparison]]:
    """(checkpoint label, comparison) of every group against ``base`` at every checkpoint (``values_at``: label ->
    per-run values), Holm-adjusted across all of them: one table's family."""
    rows = [
        (label, c)
        for label, values in values_at.items()
        for c in stats.group_comparisons(values, groups, base, higher_is_better=higher_is_better, skip=skip)
    ]
    stats.adjust([c for _, c in rows])
    return rows


def comparison_frame(rows: list[tuple[str, stats.GroupComparison]], fmt: str = "{:.3f}") -> pd.DataFrame:
    """Rows (checkpoint, group); the COMPARISON_COLUMNS as text."""
    index = pd.MultiIndex.from_tuples([(label, c.a.group) for label, c in rows]) if rows else None
    signed = fmt.replace("{:", "{:+")
    data = [
        [
            signed.format(c.difference),
            "-" if c.low is None else f"[{fmt.format(c.low)}, {fmt.format(c.high)}]",
            f"{c.p_value:.3f}",
            f"{c.p_adjusted:.3f}",
            f"{c.p_improvement:.2f}",
            c.verdict,
        ]
        for _, c in rows
    ]
    return pd.DataFrame(data, index=index, columns=COMPARISON_COLUMNS, dtype=object)


def planner_section(
    key: str, values: pd.Series, groups: dict[str, list[str]], base: str, difference: float, where: str
) -> Section | None:
    """Seeds per arm to detect ``difference`` seconds of best time against ``base`` with 80 % power, from each pair's
    observed spread (pooled sd of their seeds) at ``where``."""
    per_group = {
        g: np.asarray([v for v in vals if np.isfinite(v)]) for g, vals in stats.group_values(values, groups).items()
    }
    if base not in per_group or len(per_group[base]) == 0:
        return None
    arms = [g for g in groups if g != base and len(per_group[g])]
    k = max(len(arms), 1)
    rows = {}
    for g in arms:
        spread = stats.pooled_spread(per_group[g], per_group[base])
        one = stats.seeds_needed(spread, difference)
        family = stats.seeds_needed(spread, difference, alpha=stats.ALPHA / k)
        rows[g] = {
            "seeds now": len(per_group[g]),
            "pooled sd (s)": "-" if np.isnan(spread) else f"{spread:.3f}",
            "seeds per arm": "-" if one is None else str(one),
            f"seeds per arm, Holm over {k}": "-" if family is None else str(family),
        }
    if not rows:
        return None
    table = pd.DataFrame.from_dict(rows, orient="index")
    note = (
        f"Seeds planner: the seeds per arm (and as many of {base}) a two-sided test needs to detect a difference "
        f"of {difference:g} s in {where} with 80 % power, from the pooled standard deviation of the two groups' "
        f"seeds (the two-sample t-test's power, close to the permutation test's for roughly normal seeds; "
        f"at least {stats.MIN_SEEDS}, below which no verdict is drawn). 'Holm over k' is the worst case of the "
        f"correction across the k arms (alpha {stats.ALPHA:g} / k); one outlying seed inflates the spread."
    )
    return Section(
        key, f"seeds needed for a {difference:g} s difference against {base}", table, note=note, index_name="group"
    )


def _bases(groups: dict[str, list[str]], baseline: str | None, reference: str | None) -> list[tuple[str, str]]:
    """(role, group) the others are compared with: the baseline (default: the first group), then the reference."""
    base = baseline if baseline in groups else next(iter(groups))
    out = [("baseline", base)]
    if reference in groups and reference != base:
        out.append(("reference", reference))
    return out


def seed_sections(
    cmp: tables.Comparison,
    groups: dict[str, list[str]],
    best_metric: str | None,
    baseline: str | None = None,
    higher_is_better: bool = False,
    reference: str | None = None,
    tests: bool = True,
    difference: float | None = None,
) -> list[Section]:
    """A metric across seeds (the best time by default; ``higher_is_better`` for distances) at each checkpoint and,
    with ``tests``, each group against the baseline (and the reference) with its verdict, when some group has
    several seeds."""
    if best_metric is None or best_metric not in cmp.metric_tables:
        return []
    if not any(len(m) > 1 for m in groups.values()):
        return []
    metric_table = cmp.metric_tables[best_metric]
    fmt = METRIC_FORMATS[cmp.metrics[best_metric].kind]
    table = group_table(metric_table, groups, cmp.axis, cmp.window, fmt=fmt)
    footer = definitions(cmp.axis, cmp.methods)
    out = [
        Section(
            f"{best_metric}_seeds_by_{cmp.axis}",
            f"{best_metric} across seeds {_axis_words(cmp)}",
            table,
            note=ESTIMATE_NOTE,
            index_name="checkpoint",
            footer=footer,
        )
    ]
    if not tests or len(groups) < 2:
        return out
    values_at = {label: metric_table.loc[cp] for cp, label in zip(metric_table.index, table.index)}
    better = "a longer distance" if higher_is_better else "a lower time"
    for role, base in _bases(groups, baseline, reference):
        skip = (_bases(groups, baseline, None)[0][1],) if role == "reference" else ()
        rows = comparison_rows(values_at, groups, base, higher_is_better, skip)
        out.append(
            Section(
                f"{best_metric}_seeds_vs_{role}_by_{cmp.axis}",
                f"{best_metric}: groups against the {role} {base} {_axis_words(cmp)}",
                comparison_frame(rows, fmt),
                note=comparison_note(role, better),
                index_name="checkpoint / group",
                footer=footer,
                comparisons=rows,
            )
        )
    if difference is not None and not higher_is_better:
        last = metric_table.index[-1]
        planner = planner_section(
            f"{best_metric}_planner_by_{cmp.axis}",
            metric_table.loc[last],
            groups,
            _bases(groups, baseline, None)[0][1],
            difference,
            f"{best_metric} at {table.index[-1]} ({_axis_words(cmp)})",
        )
        if planner is not None:
            out.append(planner)
    return out


def final_seed_section(
    final_best: pd.Series,
    groups: dict[str, list[str]],
    baseline: str | None,
    what: str = "final best time (s)",
    higher_is_better: bool = False,
    key: str = "final_best_seeds",
    reference: str | None = None,
    tests: bool = True,
    difference: float | None = None,
) -> list[Section]:
    """A final per-run value per group (by default the best time), and with ``tests`` each group against the
    baseline (and the ``reference`` group: an ablation study's full bundle) and, with ``difference``, the planner."""
    if not any(len(m) > 1 for m in groups.values()):
        return []
    fmt = "{:.1f}" if higher_is_better else "{:.3f}"
    estimates = stats.group_estimates(final_best, groups)
    table = pd.DataFrame.from_dict(
        {g: {"seeds": e.n_seeds, what: e.describe(fmt)} for g, e in estimates.items()}, orient="index"
    )
    title = what.split(" (")[0]
    note = f"{what[0].upper() + what[1:]} over each whole run. {ESTIMATE_NOTE}"
    out = [Section(key, f"{title} across seeds", table, note=note, index_name="group", footer=definitions(None))]
    if not tests or len(groups) < 2:
        return out
    better = "a longer distance" if higher_is_better else "a lower time"
    bases = _bases(groups, baseline, reference)
    for role, base in bases:
        skip = (bases[0][1],) if role == "reference" else ()
        rows = comparison_rows({"whole run": final_best}, groups, base, higher_is_better, skip)
        if not rows:
            continue
        out.append(
            Section(
                f"{key}_vs_{role}",
                f"{title}: groups against the {role} {base}",
                comparison_frame(rows, fmt).droplevel(0),
                note=comparison_note(role, better),
                index_name="group",
                footer=definitions(None),
                comparisons=rows,
            )
        )
    if difference is not None and not higher_is_better:
        planner = planner_section(f"{key}_planner", final_best, groups, bases[0][1], difference, "the final best time")
        if planner is not None:
            out.append(planner)
    return out


def all_seed_sections(
    cmp: tables.Comparison,
    groups: dict[str, list[str]],
    maps: list[str],
    baseline: str | None = None,
    reference: str | None = None,
    tests: bool = True,
    difference: float | None = None,
) -> list[Section]:
    """Seed-group sections of each map's best time (with the planner at the last checkpoint, given a
    ``difference``), then of its furthest eval race (before any finish, the one that moves)."""
    out = []
    for m in maps:
        out += seed_sections(
            cmp, groups, f"best_time_{m}", baseline, reference=reference, tests=tests, difference=difference
        ) + seed_sections(
            cmp, groups, f"furthest_eval_{m}", baseline, higher_is_better=True, reference=reference, tests=tests
        )
    return out


def final_seed_sections(
    run_table: pd.DataFrame,
    groups: dict[str, list[str]],
    baseline: str | None,
    reference: str | None = None,
    tests: bool = True,
    difference: float | None = None,
) -> list[Section]:
    """Across seeds, from a run_summary table: the final best time, then the furthest eval race where logged."""
    out = final_seed_section(
        run_table["final_best_s"], groups, baseline, reference=reference, tests=tests, difference=difference
    )
    if "furthest_eval_m" in run_table:
        out += final_seed_section(
            run_table["furthest_eval_m"],
            groups,
            baseline,
            what="furthest eval race (m)",
            higher_is_better=True,
            key="furthest_eval_seeds",
            reference=reference,
            tests=tests,
        )
    return out


def run_section(summary_table: pd.DataFrame) -> Section:
    note = (
        "folders / files: the log folders (a split run's <run>, <run>_2, ...) and event files merged into each "
        "run; wall_minutes from its first to its last event; counters are the last values logged; updates_placed: "
        "exact where the run logged its counters at each race's end, else interpolated between its counter logs."
    )
    return Section(
        "runs", "runs", summary_table, tables.RUN_FORMATS, note=note, index_name="run", footer=definitions(None)
    )


def render_sections(sections: list[Section], fmt: str, level: int = 2, figure_dir: Path | None = None) -> str:
    """All sections as one text: heading, note, table, then the figure link (md/rst) when there is one."""
    parts = []
    for s in sections:
        parts.append(heading(s.title, level, fmt))
        if s.note and fmt != "csv":
            parts.append(s.note)
        parts.append(render_table(s.table, fmt, s.formats, s.default, s.index_name))
        if s.footer:
            parts.append(s.footer if fmt != "csv" else "# " + s.footer)
        if s.figure is not None and fmt != "csv":
            rel = s.figure.name if figure_dir is None else s.figure.relative_to(figure_dir).as_posix()
            parts.append(f"![{s.title}]({rel})" if fmt == "md" else f".. image:: {rel}\n   :alt: {s.title}")
    return "\n\n".join(parts) + "\n"


def auto_step_interval(window: float) -> int:
    """A round step interval (1, 2 or 5 x 10^k) giving 4 to 10 checkpoints in the common step window."""
    if window < 4:
        return 1
    k = 10 ** max(int(math.floor(math.log10(window / 4))) - 1, 0)
    while True:
        for m in (1, 2, 5):
            if window / (m * k) <= 10:
                return int(m * k)
        k *= 10
