"""Write an experiment's README.md (and figures) from its runs.yaml, with the structure of the published write-ups.

``experiments/<name>/runs.yaml``::

    title: BTR on A01                  # optional; default: the folder name
    description: >                     # optional; opens the overview (what was tested and why)
      Does the full BTR recipe improve the best A01 time?
    map: A01                           # optional; default: every map found in the logs
    interval: 10                       # optional; minutes between time checkpoints (default 10)
    time_axis: wall                    # optional; wall | cumul_training_hours
    steps: [10M, 20M]                  # optional; step checkpoints (or step_interval: 5M; default: automatic)
    by: frames                         # optional; frames | updates | [frames, updates] (a step table each;
                                       #   steps / step_interval apply to the first, the others are automatic)
    plot_format: jpg                   # optional; jpg | png
    metrics: [Training/loss]           # optional; tags to tabulate instead of the default set (any scalar)
    all_scalars: false                 # optional; add a table of every other tag logged
    runs:
      - label: v2                      # name used in tables and figures
        path: outputs/2026-11-24/10-00-00
        baseline: true                 # at most one baseline (default: the first entry)
      - label: btr_no_munchausen
        path: outputs/2026-11-24/12-00-00
      - label: btr_full
        path: outputs/2026-11-24/13-00-00
        reference: true                # optional, at most one, not the baseline: a second group every other
                                       #   is compared with across seeds (an ablation study's full bundle)
      - label: btr
        paths:                         # several run directories = one seed group (IQM and 95 % CI across them)
          - outputs/multirun/2026-11-24/11-00-00/0
          - outputs/multirun/2026-11-24/11-00-00/1

Paths are relative to the runs.yaml folder, else to the current directory (the repository root), or absolute.
A run whose directory is missing is read from the study's export (``runs_export.json.gz`` beside runs.yaml,
written by ``python -m tmexp.report <study> --export``; ``tmexp.analysis.export``), so a fresh clone regenerates
the report without the runs.
The README gets: overview, key results (sentences generated from the tables), run analysis (durations, common
window, runs without data and why), detailed metrics (each table followed by its figure), configuration changes
(the diff of the resolved configs), hardware (run_meta.json), and a conclusions section left for the researcher.
The tables and figures come from the same pipeline as ``python -m tmexp.compare`` (``tmexp.analysis.pipeline``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tmexp.analysis import document, export, loading, pipeline, plots, stats, tables
from tmexp.analysis.render import render_table
from tmexp.core import metrics


class ReportError(Exception):
    """runs.yaml is missing or malformed, or names runs that cannot be loaded."""


@dataclass
class RunEntry:
    label: str
    paths: list[Path]
    baseline: bool = False
    written: list[str] = field(default_factory=list)  # the paths as runs.yaml spells them
    reference: bool = False


@dataclass
class ExperimentSpec:
    folder: Path
    title: str
    description: str
    runs: list[RunEntry]
    map: str | None = None
    interval: float = 10.0
    time_axis: str = "wall"
    steps: list[int] | None = None
    step_interval: int | None = None
    by: list[str] = field(default_factory=lambda: ["frames"])
    plot_format: str = "jpg"
    tags: list[str] | None = None
    all_scalars: bool = False

    @property
    def baseline(self) -> str:
        return next((r.label for r in self.runs if r.baseline), self.runs[0].label)

    @property
    def reference(self) -> str | None:
        return next((r.label for r in self.runs if r.reference), None)

    @property
    def export_file(self) -> Path:
        return self.folder / export.EXPORT_FILE

    def options(self) -> pipeline.Options:
        return pipeline.Options(self.time_axis, self.interval, tuple(self.by), self.steps, self.step_interval,
                                [self.map] if self.map else None, self.tags, self.all_scalars, self.baseline,
                                self.reference)


def _resolve(folder: Path, text: str) -> Path:
    """Where a run path of runs.yaml is; beside runs.yaml when it is nowhere (then the export may hold the run)."""
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    for candidate in (folder / path, Path.cwd() / path):
        if candidate.exists():
            return candidate
    return folder / path


def read_spec(folder: str | Path) -> ExperimentSpec:
    """Parse and check ``<folder>/runs.yaml``."""
    folder = Path(folder)
    path = folder / "runs.yaml"
    if not path.is_file():
        raise ReportError(f"{path} not found; create it with a 'runs:' list (see tmexp.analysis.writeup).")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ReportError(f"{path} is not valid YAML ({err.__class__.__name__}); fix its syntax.") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("runs"), list) or not raw["runs"]:
        raise ReportError(f"{path} needs a non-empty 'runs:' list of {{label, path or paths, baseline}}.")
    entries = []
    for k, item in enumerate(raw["runs"]):
        if not isinstance(item, dict) or "label" not in item or ("path" in item) == ("paths" in item):
            raise ReportError(f"entry {k} of 'runs:' in {path} needs a label and exactly one of path / paths.")
        texts = [item["path"]] if "path" in item else list(item["paths"] or [])
        if not texts:
            raise ReportError(f"entry {item['label']!r} in {path} has an empty 'paths:' list; add run directories.")
        entries.append(RunEntry(str(item["label"]), [_resolve(folder, str(t)) for t in texts],
                                bool(item.get("baseline", False)), [str(t) for t in texts],
                                bool(item.get("reference", False))))
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise ReportError(f"labels in {path} must be unique; rename the repeated one.")
    if sum(e.baseline for e in entries) > 1:
        raise ReportError(f"{path} marks more than one run as baseline; keep one 'baseline: true'.")
    if sum(e.reference for e in entries) > 1:
        raise ReportError(f"{path} marks more than one run as reference; keep one 'reference: true'.")
    baseline = next((e for e in entries if e.baseline), entries[0])
    if baseline.reference:
        raise ReportError(f"{path}: the reference group is the baseline; mark another entry 'baseline: true', or "
                          "drop 'reference: true'.")
    steps = raw.get("steps")
    if isinstance(steps, list):
        steps = ",".join(str(s) for s in steps)
    step_interval = raw.get("step_interval")
    try:
        parsed_steps = tables.parse_steps(str(steps)) if steps is not None else None
        parsed_interval = tables.parse_steps(str(step_interval))[0] if step_interval is not None else None
    except tables.TableError as err:
        raise ReportError(f"{path}: {err}") from None
    time_axis = str(raw.get("time_axis", "wall"))
    by = raw.get("by", "frames")
    by = [str(b) for b in by] if isinstance(by, list) else [str(by)]
    plot_format = str(raw.get("plot_format", "jpg"))
    checks = [("time_axis", time_axis, tables.TIME_AXES), ("plot_format", plot_format, plots.PLOT_FORMATS)]
    for name, value, allowed in checks + [("by", b, tables.STEP_AXES) for b in by]:
        if value not in allowed:
            raise ReportError(f"{path}: {name} must be one of {', '.join(allowed)}, not {value!r}.")
    if not by or len(set(by)) != len(by):
        raise ReportError(f"{path}: by must name frames, updates or both, each once, not {by!r}.")
    tags = raw.get("metrics")
    if tags is not None and (not isinstance(tags, list) or not tags):
        raise ReportError(f"{path}: metrics must be a non-empty list of tags, e.g. [Training/loss].")
    all_scalars = raw.get("all_scalars", False)
    if not isinstance(all_scalars, bool):
        raise ReportError(f"{path}: all_scalars must be true or false, not {all_scalars!r}.")
    if tags and all_scalars:
        raise ReportError(f"{path}: give metrics (these tags) or all_scalars (every tag), not both.")
    return ExperimentSpec(folder, str(raw.get("title", folder.name)), str(raw.get("description", "")).strip(),
                          entries, raw.get("map"), float(raw.get("interval", 10)), time_axis, parsed_steps,
                          parsed_interval, by, plot_format, [str(t) for t in tags] if tags else None, all_scalars)


# --- loading and groups --------------------------------------------------------------------------------------------

@dataclass
class LoadedExperiment:
    runset: loading.RunSet
    groups: dict[str, list[str]]              # entry label -> its run labels
    keys: dict[str, str]                      # run label -> its path as runs.yaml spells it (its export key)
    from_export: list[str] = field(default_factory=list)  # run labels read from the export (no logs on disk)

    def source_line(self, export_file: Path) -> str:
        """Which runs were read from where, in one line."""
        n_dirs = len(self.runset.runs) - len(self.from_export)
        if not self.from_export:
            return f"read {_runs(n_dirs)} from their directories"
        where = f"{_runs(len(self.from_export))} from {export_file} (their directories are missing or hold no event files)"
        return f"read {_runs(n_dirs)} from their directories and {where}" if n_dirs else f"read {where}"


def _runs(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


def load_experiment(spec: ExperimentSpec) -> LoadedExperiment:
    """Load every run, from its directory, or from the study's export where the directory is missing or holds no
    event files (a study keeps only its jobs' status.json, for its sweep to resume); a seed-group entry's members are
    labelled '<label>/<k>'."""
    on_disk, missing, groups, keys = [], [], {}, {}
    for entry in spec.runs:
        if len(entry.paths) == 1:
            members = [entry.label]
        else:
            members = [f"{entry.label}/{k}" for k in range(len(entry.paths))]
        groups[entry.label] = members
        for label, path, text in zip(members, entry.paths, entry.written):
            keys[label] = text
            logged = path.exists() and any(loading.find_runs(path).values())
            (on_disk if logged else missing).append((label, path))
    try:
        stored = export.read_export(spec.export_file) if missing else {}
    except export.ExportError as err:
        raise ReportError(str(err)) from None
    # a directory without logs that the export does not hold is read as it is (the run table says it has no data)
    unlogged = [(label, path) for label, path in missing if path.exists() and keys[label] not in stored]
    on_disk += unlogged
    missing = [m for m in missing if m not in unlogged]
    absent = [keys[label] for label, _ in missing if keys[label] not in stored]
    if absent:
        names = ", ".join(repr(t) for t in absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        held = (f"{spec.export_file} does not hold {'it' if len(absent) == 1 else 'them'}" if spec.export_file.is_file()
                else f"there is no export ({spec.export_file})")
        raise ReportError(f"run path{'s' if len(absent) > 1 else ''} {names} in {spec.folder / 'runs.yaml'} "
                          f"exist{'s' if len(absent) == 1 else ''} neither beside runs.yaml nor in the current "
                          f"directory, and {held}; fix the path, or export the study where its runs are "
                          f"(python -m tmexp.report {spec.folder} --export).")
    try:
        runset = loading.load_runs([p for _, p in on_disk], labels=[label for label, _ in on_disk])
        runset = export.with_exported(runset, {label: (keys[label], stored[keys[label]]) for label, _ in missing},
                                      order=list(keys))
    except loading.RunLoadError as err:
        raise ReportError(str(err)) from None
    except export.ExportError as err:
        raise ReportError(f"{spec.export_file}: {err}") from None
    return LoadedExperiment(runset, groups, keys, [label for label, _ in missing])


# --- sentences -----------------------------------------------------------------------------------------------------

def _group_value(values: pd.Series, members: list[str]) -> tuple[float, str]:
    """A group's value (IQM across seeds, or the single run's value) and how to say it."""
    est = stats.estimate("", [values.get(m, np.nan) for m in members], reps=2000)
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
        est = stats.estimate("", [values.get(m, np.nan) for m in members], reps=2000)
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
    window = f"At the end of the common window ({_minutes(by_time.window)} {_axis_unit(by_time.axis)})"
    out = [s for s in (
        distance_sentence(by_time.metric_tables[name].iloc[-1], groups, window, what),
        *(distance_sentence(by_steps.metric_tables[name].loc[cp], groups,
                            f"At {tables.format_steps(cp)} {by_steps.axis}", what)
          for cp in by_steps.checkpoints[-1:] if name in by_steps.metric_tables)) if s]
    furthest = run_table["furthest_eval_m"]
    for c in stats.group_comparisons(furthest, groups, spec.baseline, reps=20_000, higher_is_better=True):
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
        s = ranking_sentence(end, groups, f"At the end of the common window ({_minutes(by_time.window)} {unit})",
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
        for c in stats.group_comparisons(final, groups, base, reps=20_000):
            if c.a.n_seeds > 1 and c.b.n_seeds > 1 and not (role == "the reference" and c.a.group == spec.baseline):
                out.append(f"Across seeds, {c.a.group} ({c.a.describe()}) against {role} {c.b.group} "
                           f"({c.b.describe()}): the 95 % intervals {'overlap' if c.overlap else 'do not overlap'}; "
                           f"probability of improvement P({c.a.group} faster) = {c.p_improvement:.2f}.")
    singles = [g for g, m in groups.items() if len(m) == 1]
    if singles and any(len(m) > 1 for m in groups.values()):
        out.append("Single-seed runs (" + ", ".join(singles) + ") carry no interval: one run says nothing "
                   "about seed-to-seed variation.")
    return out


# --- configuration and hardware ------------------------------------------------------------------------------------

def config_diff(runset: loading.RunSet, groups: dict[str, list[str]]) -> tuple[pd.DataFrame, list[str]]:
    """Keys whose resolved values differ between groups (seed ignored); groups without a config listed apart."""
    flat, missing = {}, []
    for g, members in groups.items():
        config = runset.runs[members[0]].config
        if config is None:
            missing.append(g)
            continue
        flat[g] = {k: v for k, v in stats.flatten(config).items() if k.split(".")[-1] != "seed"}
    keys = sorted({k for f in flat.values() for k in f})
    rows = {}
    for key in keys:
        values = [repr(flat[g].get(key, "(absent)")) if key in flat[g] else "(absent)" for g in flat]
        if len(set(values)) > 1:
            rows[key] = {g: str(flat[g].get(key, "(absent)")) for g in flat}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(flat)), missing


HARDWARE_KEYS = ["host", "platform", "cpu", "cpu_count", "gpu", "torch", "python", "tmexp", "git_commit",
                 "git_dirty", "started_at"]


def hardware_table(runset: loading.RunSet) -> tuple[pd.DataFrame, list[str]]:
    rows, missing = {}, []
    for label, info in runset.runs.items():
        if info.meta is None:
            missing.append(label)
            continue
        rows[label] = {k: "-" if info.meta.get(k) is None else str(info.meta.get(k)) for k in HARDWARE_KEYS}
    return pd.DataFrame.from_dict(rows, orient="index", columns=HARDWARE_KEYS), missing


def collector_settings(runset: loading.RunSet) -> pd.DataFrame:
    """Config values that shape throughput (collector counts, game speed), where the configs have them."""
    wanted = ("gpu_collectors_count", "running_speed", "collectors", "num_collectors")
    rows = {}
    for label, info in runset.runs.items():
        if info.config:
            found = {k: v for k, v in stats.flatten(info.config).items() if k.split(".")[-1] in wanted}
            if found:
                rows[label] = found
    return pd.DataFrame.from_dict(rows, orient="index")


# --- the document --------------------------------------------------------------------------------------------------

def build_readme(spec: ExperimentSpec, runset: loading.RunSet, groups: dict[str, list[str]]) -> str:
    """Tabulate, plot (into ``<folder>/figures``) and return the README text."""
    try:
        analysis = pipeline.analyse(runset, spec.options(), groups)
    except tables.TableError as err:
        raise ReportError(f"{spec.folder / 'runs.yaml'}: {err}") from None
    by_time, step_comparisons = analysis.by_time, analysis.by_steps
    by_steps = step_comparisons[0]  # the key results speak of the first step axis
    groups, maps, run_table = analysis.groups, analysis.maps, analysis.run_table
    final = run_table["final_best_s"]
    analysis.plot(spec.folder / "figures", spec.plot_format)
    comparisons = [("By relative time", by_time)] + [(f"By steps ({c.axis})", c) for c in step_comparisons]

    out: list[str] = [f"# Experiment: {spec.title}", ""]

    # Overview
    out += ["## Experiment overview", ""]
    if spec.description:
        out += [spec.description, ""]
    out.append("Compared runs:")
    out.append("")
    for entry in spec.runs:
        role = (" (baseline)" if entry.label == spec.baseline
                else " (reference)" if entry.label == spec.reference else "")
        where = ", ".join(f"`{p}`" for p in entry.written)
        seeds = f"{len(entry.paths)} seeds: " if len(entry.paths) > 1 else ""
        out.append(f"- **{entry.label}**{role}: {seeds}{where}")
    out += ["", "Generated by `python -m tmexp.report`; numbers come from the runs' TensorBoard logs.", ""]

    # Key results
    out += ["## Key results", ""]
    shortest = run_table.loc[analysis.runs, "wall_minutes"].idxmin()
    out.append(f"**Important:** the runs last different times, so every by-time statement holds only within the "
               f"common window shared by all runs ({_minutes(by_time.window)} {_axis_unit(by_time.axis)}; the shortest "
               f"run is {shortest}).")
    out.append("")
    out += [f"- {s}" for s in key_results(spec, by_time, by_steps, final, groups, maps, step_comparisons[1:])]
    if maps:
        out += [f"- {s}" for s in distance_results(spec, by_time, by_steps, run_table, groups, maps[0])]
    out.append("")

    # Run analysis
    runs_section = analysis.run_section()
    out += ["## Run analysis", "", runs_section.note, "",
            render_table(run_table, "md", tables.RUN_FORMATS, index_name="run"), "", runs_section.footer, "",
            f"- Common window by time: {by_time.window:.1f} {_axis_unit(by_time.axis)} "
            f"(checkpoints every {spec.interval:g} min, the last one at the window's end).",
            *(f"- Common window by {c.axis}: {tables.format_steps(c.window)} {c.axis} "
              f"(checkpoints: {', '.join(tables.format_steps(cp) for cp in c.checkpoints) or 'none'})."
              for c in step_comparisons)]
    for c in step_comparisons:
        if c.dropped:
            out.append(f"- {c.axis} checkpoints beyond the common window, left out: "
                       f"{', '.join(tables.format_steps(s) for s in c.dropped)}.")
    if analysis.no_data:
        out.append("- Runs with no data (in the run table only): "
                   + "; ".join(f"{r} ({why})" for r, why in analysis.no_data.items()) + ".")
    out.append("")

    # Detailed metrics
    out += ["## Detailed metrics", "",
            "By relative time: minutes from each run's first event"
            + (" (training time from cumul_training_hours)" if by_time.axis == "cumul_training_hours" else "")
            + "; a scalar at a checkpoint is its last value at or before it (best time: the minimum so far). "
            "By steps: the same at common step checkpoints. Race tables summarise all races so far.", ""]
    for title, cmp in comparisons:
        out += [f"### {title}", ""]
        sections = analysis.comparison_sections(cmp)
        out.append(document.render_sections(sections, "md", level=4, figure_dir=spec.folder))
        shown = {s.key for s in sections}
        for key, path in analysis.figures.items():  # figures without a table of their own (finish rates)
            if key.endswith(f"_by_{cmp.axis}") and key not in shown:
                out += [f"![{key.replace('_by_', ' by ')}]({path.relative_to(spec.folder).as_posix()})", ""]
    final_sections = analysis.final_sections()
    if final_sections:
        out += ["### Across seeds", "", document.render_sections(final_sections, "md", level=4)]

    # Configuration changes
    out += ["## Configuration changes", ""]
    diff, missing = config_diff(runset, groups)
    if diff.empty and not missing:
        out.append("The resolved configs do not differ (apart from seeds).")
    elif not diff.empty:
        out += ["Resolved config keys whose values differ between the compared runs (seed ignored; for a seed "
                "group, its first run):", "", render_table(diff, "md", index_name="key")]
    if missing:
        out += ["", f"No resolved config found for: {', '.join(missing)}."]
    out.append("")

    # Hardware
    out += ["## Hardware", ""]
    hardware, no_meta = hardware_table(runset)
    if not hardware.empty:
        out += ["From each run's run_meta.json:", "", render_table(hardware, "md", index_name="run"), ""]
    if no_meta:
        out += [f"Not recorded (no run_meta.json): {', '.join(no_meta)}.", ""]
    settings = collector_settings(runset)
    if not settings.empty:
        out += ["Collector settings from the configs:", "",
                render_table(settings, "md", default="{:g}", index_name="run"), ""]

    # Conclusions
    out += ["## Conclusions", "",
            "<!-- Left for the researcher: what the results mean, what to try next. The sections above are "
            "regenerated by `python -m tmexp.report`; keep your text here. -->", "",
            "_To be written by the researcher._", ""]
    return "\n".join(out)


def _minutes(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _axis_unit(axis: str) -> str:
    return "wall minutes" if axis == "wall" else "training minutes"


@dataclass
class Written:
    """What ``write_report`` wrote and read."""

    readme: Path
    source: str                      # one line: which runs came from their directories, which from the export
    export_file: Path | None = None  # set when the export was written
    export_bytes: int = 0
    n_runs: int = 0


def write_report(folder: str | Path, export_runs: bool = False) -> Written:
    """Write ``<folder>/README.md`` (and ``<folder>/figures/``); with ``export_runs``, also the study's export of
    exactly the runs the report read (a run read from the previous export keeps its entry)."""
    spec = read_spec(folder)
    loaded = load_experiment(spec)
    text = build_readme(spec, loaded.runset, loaded.groups)
    written = Written(spec.folder / "README.md", loaded.source_line(spec.export_file),
                      n_runs=len(set(loaded.keys.values())))
    if export_runs:
        written.export_file = spec.export_file
        try:
            written.export_bytes = export.write_export(spec.export_file, loaded.runset, loaded.keys)
        except OSError as err:
            raise ReportError(f"cannot write {spec.export_file} ({err.strerror or err}); make its folder "
                              f"writable.") from None
    previous = written.readme.read_text() if written.readme.is_file() else ""
    written.readme.write_text(_keep_conclusions(text, previous))
    return written


def _keep_conclusions(text: str, previous: str) -> str:
    """Regenerating keeps the researcher's conclusions (everything after '## Conclusions' in the old README)."""
    marker = "## Conclusions"
    if marker not in previous or "_To be written by the researcher._" in previous.split(marker, 1)[1]:
        return text
    return text.split(marker, 1)[0] + marker + previous.split(marker, 1)[1]
