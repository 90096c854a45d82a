"""One pipeline from loaded runs to tables and figures, shared by ``tmexp.compare`` and the experiment write-up.

``analyse`` decides which runs enter the tables (a run with no scalars, or none of the requested tags, is kept
in the run table with "no data" and the reason), the seed groups, the maps and tags, and builds one comparison
by relative time and one per step axis. ``Analysis`` turns them into titled sections and figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tmexp.analysis import document, loading, machine, plots, stats, tables


@dataclass
class Options:
    """What to compare and where (the compare CLI's flags, or a runs.yaml)."""

    time_axis: str = "wall"
    interval: float = 10.0  # minutes between time checkpoints
    step_axes: tuple[str, ...] = ("frames",)
    steps: list[int] | None = None  # checkpoints on the first step axis ...
    step_interval: int | None = None  # ... or one every N (default: a round interval, 4 to 10 checkpoints)
    maps: list[str] | None = None  # default: every map found in the logs
    tags: list[str] | None = None  # default: the published comparison's metrics and race tags
    all_scalars: bool = False  # add every other tag logged
    baseline: str | None = None  # the group others are compared with (default: the first)
    reference: str | None = None  # a second group others are compared with across seeds (optional)
    group_tests: bool = True  # each group against the baseline/reference: tests and verdicts
    difference: float | None = 0.5  # the seeds planner's difference of best time (s); None: no planner
    cost_per_update: dict[str, float] = field(default_factory=dict)  # group -> learner s/update: projected axis


@dataclass
class Analysis:
    """The comparisons of one set of runs and the tables built from them."""

    runset: loading.RunSet
    runs: list[str]  # the runs in the comparisons
    no_data: dict[str, str]  # run -> why it is only in the run table
    groups: dict[str, list[str]]  # seed groups of ``runs``
    maps: list[str]
    by_time: tables.Comparison
    by_steps: list[tables.Comparison]
    run_table: pd.DataFrame
    by_projected: tables.Comparison | None = None  # by updates placed in time by each group's cost per update
    baseline: str | None = None
    reference: str | None = None
    options: Options = field(default_factory=Options)
    figures: dict[str, Path] = field(default_factory=dict)  # section key -> figure (after ``plot``)

    @property
    def difference(self) -> float | None:
        return self.options.difference if self.options.group_tests else None

    @property
    def comparisons(self) -> list[tables.Comparison]:
        return [self.by_time, *self.by_steps] + ([self.by_projected] if self.by_projected is not None else [])

    def comparison_sections(self, cmp: tables.Comparison) -> list[document.Section]:
        """Metric tables, race tables and seed-group tables of one comparison, with their figures."""
        sections = (
            document.metric_sections(cmp, self.runset.conversions())
            + document.race_sections(cmp)
            + document.all_seed_sections(
                cmp, self.groups, self.maps, self.baseline, self.reference, self.options.group_tests, self.difference
            )
        )
        for s in sections:
            s.figure = self.figures.get(s.key)
        return sections

    def run_section(self) -> document.Section:
        return document.run_section(self.run_table)

    def final_sections(self) -> list[document.Section]:
        """Across seeds over each whole run (final best time, furthest eval race)."""
        if not self.maps:
            return []
        return document.final_seed_sections(
            self.run_table, self.groups, self.baseline, self.reference, self.options.group_tests, self.difference
        )

    def sections(self) -> list[document.Section]:
        """Every table in reading order: runs, each comparison, then across seeds."""
        out = [self.run_section()]
        for cmp in self.comparisons:
            out += self.comparison_sections(cmp)
        return out + self.final_sections()

    def plot(self, out_dir: Path, fmt: str = "png") -> dict[str, Path]:
        """Every figure (seed groups drawn as IQM lines with 95 % bands); returns section key -> figure."""
        for cmp in self.comparisons:
            self.figures |= plots.plot_comparison(cmp, out_dir, fmt, groups=self.groups)
        return self.figures


def analyse(
    runset: loading.RunSet, options: Options | None = None, groups: dict[str, list[str]] | None = None
) -> Analysis:
    """Tabulate ``runset`` as ``options`` say; ``groups`` (name -> run labels) default to the seed groups found.

    Raises TableError when no run has anything to compare or a requested tag was never logged.
    """
    options = options or Options()
    scalars = runset.scalars
    no_data = {r: info.no_data for r, info in runset.runs.items() if info.no_data}
    with_data = [r for r in runset.labels() if r not in no_data]
    if not with_data:
        reasons = "; ".join(f"{r}: {why}" for r, why in no_data.items())
        raise tables.TableError(f"no run holds scalars to compare ({reasons}); point at runs that have logged metrics.")
    maps = options.maps if options.maps else tables.detect_maps(scalars)
    if options.tags is not None:
        chosen, races = tables.select({str(t) for t in scalars["tag"].unique()}, maps, options.tags)
        wanted = {m.tag for m in chosen} | set(races)
        for r in with_data:
            logged = {str(t) for t in scalars.loc[scalars["run"] == r, "tag"].unique()}
            if not logged & wanted:
                no_data[r] = f"none of the requested tags ({', '.join(sorted(wanted))})"
    runs = [r for r in with_data if r not in no_data]

    if groups is None:
        groups = stats.seed_groups({r: runset.runs[r] for r in runs})
    else:
        groups = {g: [m for m in members if m in runs] for g, members in groups.items()}
        groups = {g: m for g, m in groups.items() if m}
    baseline = options.baseline if options.baseline in groups else None
    reference = options.reference if options.reference in groups and options.reference != baseline else None

    kwargs = dict(maps=maps, tags=options.tags, all_scalars=options.all_scalars)
    by_time = tables.compare(
        scalars, options.time_axis, runs, interval=options.interval, starts=runset.starts(), **kwargs
    )
    by_steps = []
    for k, axis in enumerate(options.step_axes):
        steps, step_interval = (options.steps, options.step_interval) if k == 0 else (None, None)
        if steps is None and step_interval is None:
            window = float(tables.spans(tables.with_axis(scalars[scalars["run"].isin(runs)], axis)).min())
            step_interval = document.auto_step_interval(window)
        by_steps.append(tables.compare(scalars, axis, runs, steps=steps, step_interval=step_interval, **kwargs))

    by_projected = None
    costed = {g: c for g, c in options.cost_per_update.items() if g in groups}
    if costed:
        placed = machine.projected(tables.with_axis(scalars[scalars["run"].isin(runs)], "updates"), groups, costed)
        by_projected = tables.compare(
            scalars,
            tables.PROJECTED,
            [r for g in costed for r in groups[g]],
            interval=options.interval,
            placed=placed,
            **kwargs,
        )
    run_table = tables.run_summary(
        scalars, runset.labels(), maps[0] if maps else None, runset.starts(), infos=runset.runs, no_data=no_data
    )
    return Analysis(
        runset, runs, no_data, groups, maps, by_time, by_steps, run_table, by_projected, baseline, reference, options
    )
