"""Find runs under directory trees and load all their scalars into one long DataFrame.

A run is a directory holding ``events.out.tfevents.*`` files, or a Hydra job directory whose ``tensorboard/`` holds
them. Every event file of a run is read (resumes write several); Linesight/rulka split directories ``<run>``,
``<run>_2`` ... ``<run>_N`` are merged into ``<run>``. Hydra runs are labelled by their overrides and carry their
resolved config, metadata and status. Nothing is subsampled.

The DataFrame has one row per logged scalar: ``run`` (label), ``tag`` (current tag name, old Linesight names mapped
by ``canonical_tag``), ``step`` (int64, frames played), ``wall_time`` (float64, Unix seconds), ``value`` (float64).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tmexp.analysis.eventfile import EventFileWarning, FileScalars, read_scalars
from tmexp.core.metrics import canonical_tag

COLUMNS = ["run", "tag", "step", "wall_time", "value"]
_SPLIT_SUFFIX = re.compile(r"^(?P<base>.+)_(?P<index>\d+)$")


class RunLoadError(Exception):
    """A path given to the analysis is missing or holds no TensorBoard event files."""


@dataclass
class RunInfo:
    """One run: where its logs are and what the run directory says about it."""

    label: str
    path: Path                               # the run directory (Hydra job dir, or the log dir itself)
    event_files: list[Path]                  # every event file, in merge order
    overrides: list[str] = field(default_factory=list)
    config: dict | None = None               # config_resolved.yaml, else .hydra/config.yaml
    meta: dict | None = None                 # run_meta.json
    status: dict | None = None               # status.json
    first_wall_time: float = float("nan")    # the run's first event of any kind: where relative time starts


@dataclass
class RunSet:
    """Loaded runs: metadata by label and the long scalar table."""

    runs: dict[str, RunInfo]
    scalars: pd.DataFrame

    def labels(self) -> list[str]:
        return list(self.runs)

    def starts(self) -> dict[str, float]:
        """Run label -> Unix time of its first event (the origin of relative wall time)."""
        return {label: info.first_wall_time for label, info in self.runs.items()}


def _is_event_file(name: str) -> bool:
    return "tfevents" in name


def _run_dir_of(log_dir: Path) -> Path:
    """The run directory owning a log directory: a Hydra job keeps its events in ``<job>/tensorboard``."""
    if log_dir.name == "tensorboard" and (
        (log_dir.parent / ".hydra").is_dir() or (log_dir.parent / "config_resolved.yaml").is_file()
        or (log_dir.parent / "status.json").is_file() or (log_dir.parent / "run_meta.json").is_file()
    ):
        return log_dir.parent
    return log_dir


def find_runs(root: str | Path) -> dict[Path, list[Path]]:
    """Run directories under ``root`` -> their event files (split directories merged, sorted by name)."""
    root = Path(root)
    if not root.exists():
        raise RunLoadError(f"{root} does not exist; pass a run or sweep directory.")
    found: dict[Path, list[Path]] = {}
    if root.is_file():
        if not _is_event_file(root.name):
            raise RunLoadError(f"{root} is not a TensorBoard event file; pass a run or sweep directory.")
        return {root.parent: [root]}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in {".submitit", "checkpoint", "best_runs"})
        files = sorted(Path(dirpath) / f for f in filenames if _is_event_file(f))
        if files:
            found.setdefault(_run_dir_of(Path(dirpath)), []).extend(files)
    return _merge_split_dirs(found)


def _merge_split_dirs(found: dict[Path, list[Path]]) -> dict[Path, list[Path]]:
    """Fold ``<run>_<k>`` into ``<run>`` when ``<run>`` is itself a run beside it (k ascending)."""
    parts: dict[Path, list[tuple[int, Path]]] = {d: [(1, d)] for d in found}
    for d in list(found):
        match = _SPLIT_SUFFIX.match(d.name)
        if match and int(match["index"]) >= 2:
            base = d.with_name(match["base"])
            if base in found:
                parts[base].append((int(match["index"]), d))
                del parts[d]
    return {base: [f for _, d in sorted(members) for f in found[d]] for base, members in sorted(parts.items())}


def _read_yaml(path: Path):
    if not path.is_file():
        return None
    with open(path) as f:
        return yaml.safe_load(f)


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        # A status file caught mid-write by a running job; treat it as absent rather than failing the analysis.
        return None


def describe_run(run_dir: Path, event_files: list[Path], label: str) -> RunInfo:
    """Read the Hydra and tmexp files of a run directory (all optional)."""
    overrides = _read_yaml(run_dir / ".hydra" / "overrides.yaml") or []
    config = _read_yaml(run_dir / "config_resolved.yaml")
    if config is None:
        config = _read_yaml(run_dir / ".hydra" / "config.yaml")
    return RunInfo(
        label=label,
        path=run_dir,
        event_files=event_files,
        overrides=[str(o) for o in overrides],
        config=config,
        meta=_read_json(run_dir / "run_meta.json"),
        status=_read_json(run_dir / "status.json"),
    )


def _default_label(run_dir: Path, root: Path, overrides: list[str]) -> str:
    """Overrides name a Hydra job best; otherwise its path below the root (or the directory name)."""
    if overrides:
        return ",".join(overrides)
    if run_dir == root:
        return run_dir.name
    return run_dir.relative_to(root).as_posix()


def _read_run(files: list[Path]) -> tuple[list[FileScalars], list[str]]:
    """Worker body: read one run's files; warnings travel back as text so the parent can re-issue them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EventFileWarning)
        parts = [read_scalars(f) for f in files]
    return parts, [str(w.message) for w in caught if issubclass(w.category, EventFileWarning)]


def _concat_run(parts: list[FileScalars], canonical: bool) -> tuple[list[str], np.ndarray, np.ndarray,
                                                                   np.ndarray, np.ndarray]:
    """Join a run's files into one set of arrays with a shared tag list."""
    names: dict[str, int] = {}
    tag_index = []
    for part in parts:
        remap = np.array([names.setdefault(canonical_tag(t) if canonical else t, len(names)) for t in part.tags]
                         + [0], np.int32)
        tag_index.append(remap[part.tag_index])
    steps = np.concatenate([p.step for p in parts])
    keep = np.ones(len(steps), bool)
    offset = 0
    for part in parts:  # a resumed run voids what its killed predecessor logged at or after the resume step
        for row, purge_step in part.purges:
            keep[:offset + row] &= steps[:offset + row] < purge_step
        offset += len(part.step)
    return (list(names), np.concatenate(tag_index)[keep], steps[keep],
            np.concatenate([p.wall_time for p in parts])[keep], np.concatenate([p.value for p in parts])[keep])


def load_runs(paths, labels: list[str] | None = None, workers: int | None = None,
              canonical_tags: bool = True) -> RunSet:
    """Load every run found under ``paths`` (run or sweep directories, or event files).

    Args:
        paths: one path or a list of them.
        labels: one label per path, for paths that each hold exactly one run (e.g. from runs.yaml).
        workers: processes to read runs in parallel (one run per task); default min(runs, CPUs); 1 reads in-process.
        canonical_tags: map old Linesight tag names onto the current ones.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    runs: dict[str, RunInfo] = {}
    for k, root in enumerate(Path(p) for p in paths):
        found = find_runs(root)
        if not found:
            raise RunLoadError(f"no TensorBoard event files found under {root}; check the path.")
        if labels is not None and len(found) != 1:
            raise RunLoadError(f"{root} holds {len(found)} runs, so it cannot take the single label "
                               f"{labels[k]!r}; point at one run directory.")
        infos = [describe_run(run_dir, files, "") for run_dir, files in found.items()]
        # Overrides shared by every job of a sweep say nothing about which job is which: leave them out of labels.
        common = set.intersection(*(set(i.overrides) for i in infos)) if len(infos) > 1 else set()
        for info in infos:
            run_dir = info.path
            distinct = [o for o in info.overrides if o not in common]
            label = labels[k] if labels is not None else _default_label(run_dir, root, distinct)
            base, n = label, 2
            while label in runs:  # two sweeps with the same overrides: keep both, distinguishably
                label = f"{base} ({n})"
                n += 1
            info.label = label
            runs[label] = info
    starts: dict[str, float] = {}
    scalars = read_event_files({k: v.event_files for k, v in runs.items()}, workers, canonical_tags, starts)
    for label, start in starts.items():
        runs[label].first_wall_time = start
    return RunSet(runs, scalars)


def read_event_files(files_by_run: dict[str, list[Path]], workers: int | None = None,
                     canonical_tags: bool = True, starts: dict[str, float] | None = None) -> pd.DataFrame:
    """Read runs' event files (one process per run) into the long DataFrame; fills ``starts`` (first event time)."""
    items = list(files_by_run.items())
    if workers is None:
        workers = min(len(items), os.cpu_count() or 1)
    if workers > 1 and len(items) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_read_run, [files for _, files in items]))
    else:
        results = [_read_run(files) for _, files in items]

    frames = []
    for (label, _), (parts, messages) in zip(items, results):
        for message in messages:
            warnings.warn(message, EventFileWarning, stacklevel=2)
        if not parts:
            continue
        if starts is not None:
            firsts = [p.first_wall_time for p in parts if not np.isnan(p.first_wall_time)]
            starts[label] = min(firsts) if firsts else float("nan")
        tags, tag_index, step, wall_time, value = _concat_run(parts, canonical_tags)
        frames.append((label, tags, tag_index, step, wall_time, value))
    return _to_frame(frames, [label for label, _ in items])


def _to_frame(frames, run_order: list[str]) -> pd.DataFrame:
    """Build the long table with categorical run/tag columns (compact, and fast to group by)."""
    all_tags = sorted({t for f in frames for t in f[1]})
    tag_code = {t: i for i, t in enumerate(all_tags)}
    run_code = {r: i for i, r in enumerate(run_order)}
    run_codes, tag_codes, steps, walls, values = [], [], [], [], []
    for label, tags, tag_index, step, wall_time, value in frames:
        remap = np.array([tag_code[t] for t in tags] + [0], np.int32)
        run_codes.append(np.full(len(step), run_code[label], np.int32))
        tag_codes.append(remap[tag_index])
        steps.append(step)
        walls.append(wall_time)
        values.append(value)

    def cat(chunks, dtype):
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype)

    return pd.DataFrame({
        "run": pd.Categorical.from_codes(cat(run_codes, np.int32), categories=run_order),
        "tag": pd.Categorical.from_codes(cat(tag_codes, np.int32), categories=all_tags),
        "step": cat(steps, np.int64),
        "wall_time": cat(walls, np.float64),
        "value": cat(values, np.float64),
    })


def empty_frame() -> pd.DataFrame:
    """The long table with no rows (and the right columns and dtypes)."""
    return _to_frame([], [])


def load_scalars(paths, **kwargs) -> pd.DataFrame:
    """Shortcut: the long DataFrame of every run under ``paths``."""
    return load_runs(paths, **kwargs).scalars
