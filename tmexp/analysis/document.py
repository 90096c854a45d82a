"""Turn comparisons into titled tables (sections) that the compare CLI and the report both render."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tmexp.analysis import stats, tables
from tmexp.analysis.render import heading, render_table

METRIC_FORMATS = {"best_time": "{:.3f}", "furthest": "{:.1f}", "loss": "{:.2f}", "avg_q": "{:.4f}",
                  "learner_pct": "{:.1f}", "tag": "{:.4g}"}
METRIC_TITLES = {
    "best_time": "best time so far (s), from {tag} / 1000",
    "furthest": "furthest race so far (m along the centreline), from {tag}",
    "loss": "training loss ({tag}, last value)",
    "avg_q": "average Q ({tag}, last value)",
    "learner_pct": "learner busy time, % ({tag}, last value)",
    "tag": "{tag}{unit} (last value)",
}
STD = "std is the sample std (n-1)"
TIME_ORIGIN = ("minute 0 is each run's first event of any kind (its writer's start), not its first scalar, so it "
               "does not move with the tags shown")


def definitions(axis: str | None, methods: dict[str, str] | None = None) -> str:
    """The line under each table: where relative time starts (and what x is, placed how in which run), which std."""
    placed = f" ({tables.describe_methods(methods, axis)})" if methods else ""
    if axis == "cumul_training_hours":
        return ("Time: training minutes from the learner's training-time counter (0 where training started; time "
                f"the run was stopped does not count){placed}; {STD}.")
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
    footer: str = ""          # one line under the table (the definitions a reader must know)


def _converted(tag: str, conversions: dict | None) -> str:
    """'; converted on load: <how> (runs a, b)' for a tag some runs logged in another unit, else ''."""
    if not conversions or tag not in conversions:
        return ""
    how, runs = conversions[tag]
    return f"; converted on load: {how} (runs {', '.join(runs)})"


def _axis_words(cmp: tables.Comparison) -> str:
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
        out.append(Section(f"{name}_by_{cmp.axis}",
                           f"{title} {_axis_words(cmp)}{_converted(metric.tag, conversions)}", shown,
                           {c: fmt for c in shown.columns}, fmt, index_name="checkpoint",
                           footer=definitions(cmp.axis, cmp.methods)))
    return out


def race_sections(cmp: tables.Comparison) -> list[Section]:
    """A section per race tag: (checkpoint, run) x race statistics."""
    out = []
    first = "{:.1f}" if cmp.axis in tables.TIME_AXES else "{:.0f}"
    unit = "min" if cmp.axis in tables.TIME_AXES else cmp.axis
    for tag, table in cmp.race_tables.items():
        shown = table.copy()
        shown.index = pd.MultiIndex.from_tuples(
            [(tables.checkpoint_label(c, cmp.axis, cmp.window), r) for c, r in table.index])
        shown = shown.rename(columns={"first_finish": f"first_finish ({unit})"})
        formats = {"races": "{:.0f}", "finish_rate": "{:.2f}", f"first_finish ({unit})": first}
        note = ("Races so far at each checkpoint; times in s; a race is finished under 300 s; the finish rate "
                "comes from the finished tag when logged.")
        out.append(Section(f"{tag}_by_{cmp.axis}", f"{tag} {_axis_words(cmp)}", shown, formats, "{:.3f}", note,
                           index_name="checkpoint / run", footer=definitions(cmp.axis, cmp.methods)))
    return out


def group_table(metric_table: pd.DataFrame, groups: dict[str, list[str]], axis: str, window: float | None = None,
                fmt: str = "{:.3f}") -> pd.DataFrame:
    """Rows: checkpoints; columns: groups; cells: 'IQM [low, high] (n seeds)' or 'value (single seed)'."""
    out = pd.DataFrame(index=[tables.checkpoint_label(c, axis, window) for c in metric_table.index],
                       columns=list(groups), dtype=object)
    for cp, label in zip(metric_table.index, out.index):
        for g, est in stats.group_estimates(metric_table.loc[cp], groups).items():
            out.loc[label, g] = est.describe(fmt) if est.n_seeds else "-"
    return out


def seed_sections(cmp: tables.Comparison, groups: dict[str, list[str]], best_metric: str | None,
                  baseline: str | None = None, higher_is_better: bool = False) -> list[Section]:
    """IQM [95 % CI] across seeds of a metric (the best time by default; ``higher_is_better`` for distances) at
    each checkpoint, and each group against the baseline group (do the intervals overlap, probability of
    improvement), when some group has several seeds."""
    if best_metric is None or best_metric not in cmp.metric_tables:
        return []
    if not any(len(m) > 1 for m in groups.values()):
        return []
    metric_table = cmp.metric_tables[best_metric]
    fmt = METRIC_FORMATS[cmp.metrics[best_metric].kind]
    table = group_table(metric_table, groups, cmp.axis, cmp.window, fmt=fmt)
    note = ("IQM across seeds with a 95 % stratified bootstrap interval (rliable's definitions); "
            "a single-seed group shows its value only.")
    out = [Section(f"{best_metric}_seeds_by_{cmp.axis}", f"{best_metric} across seeds {_axis_words(cmp)}",
                   table, note=note, index_name="checkpoint", footer=definitions(cmp.axis, cmp.methods))]
    if len(groups) > 1:
        base = baseline if baseline in groups else next(iter(groups))
        versus = pd.DataFrame(index=table.index, columns=[f"{g} vs {base}" for g in groups if g != base],
                              dtype=object)
        for cp, label in zip(metric_table.index, table.index):
            for c in stats.group_comparisons(metric_table.loc[cp], groups, base,
                                               higher_is_better=higher_is_better):
                if c.a.n_seeds == 0 or c.b.n_seeds == 0:
                    versus.loc[label, f"{c.a.group} vs {base}"] = "-"  # nothing logged yet
                    continue
                overlap = "single seed" if c.overlap is None else ("CIs overlap" if c.overlap else "CIs disjoint")
                versus.loc[label, f"{c.a.group} vs {base}"] = f"{overlap}; P(better) {c.p_improvement:.2f}"
        better = "a longer distance" if higher_is_better else "a lower time"
        out.append(Section(f"{best_metric}_seeds_vs_baseline_by_{cmp.axis}",
                           f"{best_metric}: groups against {base} {_axis_words(cmp)}", versus,
                           note=f"P(better) is the probability of improvement ({better} is better).",
                           index_name="checkpoint", footer=definitions(cmp.axis, cmp.methods)))
    return out


def final_seed_section(final_best: pd.Series, groups: dict[str, list[str]], baseline: str | None, what: str = "final best time (s)", higher_is_better: bool = False,
                       key: str = "final_best_seeds", reference: str | None = None) -> list[Section]:
    """A final per-run value per group (IQM [CI]; by default the best time) and each group against the baseline
    (and against the ``reference`` group, when given: an ablation study's full bundle)."""
    if not any(len(m) > 1 for m in groups.values()):
        return []
    estimates = stats.group_estimates(final_best, groups)
    fmt = "{:.1f}" if higher_is_better else "{:.3f}"
    rows = {g: {"seeds": e.n_seeds, what: e.describe(fmt) if e.n_seeds else "-"} for g, e in estimates.items()}
    against = [("baseline", baseline)] + ([(reference, reference)] if reference in groups and reference != baseline
                                           else [])
    for name, base in against:
        versus = {c.a.group: c for c in stats.group_comparisons(final_best, groups, base,
                                                                  higher_is_better=higher_is_better)}
        for g in rows:
            c = versus.get(g)
            rows[g][f"vs {name}"] = "-" if c is None else (
                "single seed" if c.overlap is None else ("CIs overlap" if c.overlap else "CIs disjoint"))
            rows[g][f"P(better than {name})"] = "-" if c is None or math.isnan(c.p_improvement) \
                else f"{c.p_improvement:.2f}"
    table = pd.DataFrame.from_dict(rows, orient="index")
    better = "a longer distance" if higher_is_better else "a lower time"
    note = (f"{what[0].upper() + what[1:]} over each whole run; IQM across seeds with a 95 % stratified bootstrap "
            f"interval; P(better) is rliable's probability of improvement ({better} is better).")
    title = what.split(" (")[0]
    return [Section(key, f"{title} across seeds", table, note=note, index_name="group", footer=definitions(None))]


def all_seed_sections(cmp: tables.Comparison, groups: dict[str, list[str]], maps: list[str],
                      baseline: str | None = None) -> list[Section]:
    """Seed-group sections of the first map's best time, then of its furthest eval race (before any finish, the
    one that moves)."""
    if not maps:
        return []
    return (seed_sections(cmp, groups, f"best_time_{maps[0]}", baseline)
            + seed_sections(cmp, groups, f"furthest_eval_{maps[0]}", baseline, higher_is_better=True))


def final_seed_sections(run_table: pd.DataFrame, groups: dict[str, list[str]],
                        baseline: str | None, reference: str | None = None) -> list[Section]:
    """Across seeds, from a run_summary table: the final best time, then the furthest eval race where logged."""
    out = final_seed_section(run_table["final_best_s"], groups, baseline, reference=reference)
    if "furthest_eval_m" in run_table:
        out += final_seed_section(run_table["furthest_eval_m"], groups, baseline, what="furthest eval race (m)",
                                  higher_is_better=True, key="furthest_eval_seeds", reference=reference)
    return out


def run_section(summary_table: pd.DataFrame) -> Section:
    note = ("folders / files: the log folders (a split run's <run>, <run>_2, ...) and event files merged into each "
            "run; wall_minutes from its first to its last event; counters are the last values logged.")
    return Section("runs", "runs", summary_table, tables.RUN_FORMATS, note=note, index_name="run",
                   footer=definitions(None))


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
