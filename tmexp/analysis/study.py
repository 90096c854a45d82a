"""A study: its runs.yaml (what to compare) and its runs, loaded from their directories or from its export.

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
    plot_format: png                   # optional; png (default) | jpg
    difference: 0.5                    # optional; the seeds planner's difference of best time to detect (s)
    published:                         # optional; what a published report found, set beside this study's verdicts
      source: the real-game BTR report #   (the reference group against the baseline, by wall time and by steps)
      by_wall: BTR better early (60-90 min), worse at the end
      by_steps: the baseline ahead at 10M and 20M steps
    cost_per_update:                   # optional; per group, the learner's seconds per update on an idle machine,
      v2: 0.021                        #   a number or the JSON file `python -m tmexp.bench learner --json` wrote
      btr: bench/btr.json              #   (batch_size / loop_samples_per_s): the projected wall-time axis
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
``tmexp.analysis.writeup`` turns a study into its README.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tmexp.analysis import export, loading, pipeline, plots, tables


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
    plot_format: str = "png"
    tags: list[str] | None = None
    all_scalars: bool = False
    difference: float = 0.5
    published: dict[str, str] = field(default_factory=dict)
    cost_per_update: dict[str, float] = field(default_factory=dict)  # group -> learner seconds per update

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
        return pipeline.Options(
            self.time_axis,
            self.interval,
            tuple(self.by),
            self.steps,
            self.step_interval,
            [self.map] if self.map else None,
            self.tags,
            self.all_scalars,
            self.baseline,
            self.reference,
            True,
            self.difference,
            self.cost_per_update,
        )


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
        raise ReportError(f"{path} not found; create it with a 'runs:' list (see tmexp.analysis.study).")
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
        entries.append(
            RunEntry(
                str(item["label"]),
                [_resolve(folder, str(t)) for t in texts],
                bool(item.get("baseline", False)),
                [str(t) for t in texts],
                bool(item.get("reference", False)),
            )
        )
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise ReportError(f"labels in {path} must be unique; rename the repeated one.")
    if sum(e.baseline for e in entries) > 1:
        raise ReportError(f"{path} marks more than one run as baseline; keep one 'baseline: true'.")
    if sum(e.reference for e in entries) > 1:
        raise ReportError(f"{path} marks more than one run as reference; keep one 'reference: true'.")
    baseline = next((e for e in entries if e.baseline), entries[0])
    if baseline.reference:
        raise ReportError(
            f"{path}: the reference group is the baseline; mark another entry 'baseline: true', or "
            "drop 'reference: true'."
        )
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
    plot_format = str(raw.get("plot_format", "png"))
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
    difference = raw.get("difference", 0.5)
    if isinstance(difference, bool) or not isinstance(difference, (int, float)) or difference <= 0:
        raise ReportError(f"{path}: difference must be a positive number of seconds, not {difference!r}.")
    published = raw.get("published") or {}
    if not isinstance(published, dict) or not all(isinstance(v, str) for v in published.values()):
        raise ReportError(f"{path}: published must map source / by_wall / by_steps to sentences.")
    costs = _costs(path, raw.get("cost_per_update") or {}, labels)
    return ExperimentSpec(
        folder,
        str(raw.get("title", folder.name)),
        str(raw.get("description", "")).strip(),
        entries,
        raw.get("map"),
        float(raw.get("interval", 10)),
        time_axis,
        parsed_steps,
        parsed_interval,
        by,
        plot_format,
        [str(t) for t in tags] if tags else None,
        all_scalars,
        float(difference),
        {str(k): str(v).strip() for k, v in published.items()},
        costs,
    )


def _costs(path: Path, raw, labels: list[str]) -> dict[str, float]:
    """cost_per_update: group -> seconds per update, given as a number or as the learner benchmark's JSON output."""
    if not isinstance(raw, dict):
        raise ReportError(f"{path}: cost_per_update must map group labels to seconds per update or to JSON files.")
    out = {}
    for label, value in raw.items():
        if label not in labels:
            raise ReportError(f"{path}: cost_per_update names {label!r}, which is not a label of 'runs:'.")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            out[label] = float(value)
            continue
        bench = _resolve(path.parent, str(value))
        try:
            result = json.loads(bench.read_text())
            out[label] = float(result["batch_size"]) / float(result["loop_samples_per_s"])
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            raise ReportError(
                f"{path}: cost_per_update of {label!r} is neither a positive number of seconds nor "
                f"a readable file of `python -m tmexp.bench learner --json` output ({bench})."
            ) from None
    return out


# --- loading and groups --------------------------------------------------------------------------------------------


@dataclass
class LoadedExperiment:
    runset: loading.RunSet
    groups: dict[str, list[str]]  # entry label -> its run labels
    keys: dict[str, str]  # run label -> its path as runs.yaml spells it (its export key)
    from_export: list[str] = field(default_factory=list)  # run labels read from the export (no logs on disk)

    def source_line(self, export_file: Path) -> str:
        """Which runs were read from where, in one line."""
        n_dirs = len(self.runset.runs) - len(self.from_export)
        if not self.from_export:
            return f"read {_runs(n_dirs)} from their directories"
        where = (
            f"{_runs(len(self.from_export))} from {export_file} (their directories are missing or hold no event files)"
        )
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
        held = (
            f"{spec.export_file} does not hold {'it' if len(absent) == 1 else 'them'}"
            if spec.export_file.is_file()
            else f"there is no export ({spec.export_file})"
        )
        raise ReportError(
            f"run path{'s' if len(absent) > 1 else ''} {names} in {spec.folder / 'runs.yaml'} "
            f"exist{'s' if len(absent) == 1 else ''} neither beside runs.yaml nor in the current "
            f"directory, and {held}; fix the path, or export the study where its runs are "
            f"(python -m tmexp.report {spec.folder} --export)."
        )
    try:
        runset = loading.load_runs([p for _, p in on_disk], labels=[label for label, _ in on_disk])
        runset = export.with_exported(
            runset, {label: (keys[label], stored[keys[label]]) for label, _ in missing}, order=list(keys)
        )
    except loading.RunLoadError as err:
        raise ReportError(str(err)) from None
    except export.ExportError as err:
        raise ReportError(f"{spec.export_file}: {err}") from None
    return LoadedExperiment(runset, groups, keys, [label for label, _ in missing])
