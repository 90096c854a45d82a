"""Find runs under directory trees and load all their scalars into one long DataFrame.

A run is a directory holding ``events.out.tfevents.*`` files, or a Hydra job directory (its events in
``tensorboard/``; a job that crashed before logging is a run too, with no data). Every event file of a run is read
(resumes write several). Linesight and rulka continue a run in split folders ``<run>_2`` ... ``<run>_N`` beside
``<run>``: they are merged into ``<run>`` in order, whether the parent folder or ``<run>`` itself is given. Hydra runs
are labelled by their overrides and carry their resolved config, metadata and status. Nothing is subsampled.

The DataFrame has one row per logged scalar: ``run`` (label), ``tag`` (current tag name, old Linesight names mapped
by ``canonical_tag``), ``step`` (int64, frames played), ``wall_time`` (float64, Unix seconds), ``value`` (float64,
in the tag's unit in ``tmexp.core.metrics``: logs of other Linesight-family versions are converted on load, see
``FOREIGN_UNITS``, and each conversion is recorded in ``RunInfo.conversions``).
"""

from __future__ import annotations

import os
import re
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from tmexp import rundir
from tmexp.analysis.eventfile import EventFileWarning, FileScalars, read_scalars
from tmexp.core import metrics

COLUMNS = ["run", "tag", "step", "wall_time", "value"]
_SKIPPED_DIRS = {rundir.SUBMITIT, rundir.CHECKPOINT, rundir.BEST_RUNS}
_RUN_FILES = (rundir.CONFIG_RESOLVED, rundir.STATUS, rundir.RUN_META)

# Tags that other Linesight-family versions (Linesight, rulka) log in another unit than tmexp's tag table:
# tag -> (what they log, factor to tmexp's unit). A run that is not a tmexp run directory and whose values of the
# tag all lie in the foreign range is converted on load.
FOREIGN_UNITS = {metrics.LEARNER_PERCENTAGE: ("a 0-1 fraction", 100.0)}


class RunLoadError(Exception):
    """A path given to the analysis is missing or holds no TensorBoard event files."""


@dataclass
class RunInfo:
    """One run: where its logs are and what the run directory says about it."""

    label: str
    path: Path  # the run directory (Hydra job dir, or the log dir itself)
    event_files: list[Path]  # every event file, in merge order
    overrides: list[str] = field(default_factory=list)
    config: dict | None = None  # config_resolved.yaml, else .hydra/config.yaml
    meta: dict | None = None  # run_meta.json
    status: dict | None = None  # status.json
    first_wall_time: float = float("nan")  # the run's first event of any kind: where relative time starts
    tmexp_run: bool = False  # a tmexp (Hydra) run directory, not another project's log folder
    conversions: dict[str, str] = field(default_factory=dict)  # tag -> how its values were converted on load
    no_data: str = ""  # why the run has no scalars ("" when it has some)

    @property
    def folders(self) -> list[Path]:
        """The log folders merged into this run, in order (a split run: ``<run>``, ``<run>_2``, ...)."""
        return list(dict.fromkeys(f.parent for f in self.event_files))


@dataclass
class RunSet:
    """Loaded runs: metadata by label and the long scalar table."""

    runs: dict[str, RunInfo]
    scalars: pd.DataFrame

    def labels(self) -> list[str]:
        return list(self.runs)

    def with_data(self) -> list[str]:
        """Labels of the runs that logged at least one scalar."""
        return [label for label, info in self.runs.items() if not info.no_data]

    def starts(self) -> dict[str, float]:
        """Run label -> Unix time of its first event (the origin of relative wall time)."""
        return {label: info.first_wall_time for label, info in self.runs.items()}

    def conversions(self) -> dict[str, tuple[str, list[str]]]:
        """Tag -> (how it was converted, the runs converted)."""
        out: dict[str, tuple[str, list[str]]] = {}
        for label, info in self.runs.items():
            for tag, how in info.conversions.items():
                out.setdefault(tag, (how, []))[1].append(label)
        return out


def _is_event_file(name: str) -> bool:
    return "tfevents" in name


def is_tmexp_run_dir(path: Path) -> bool:
    """A tmexp run directory: Hydra's ``.hydra/`` or one of the files training writes beside the logs."""
    return (path / rundir.HYDRA).is_dir() or any((path / name).is_file() for name in _RUN_FILES)


def _run_dir_of(log_dir: Path) -> Path:
    """The run directory owning a log directory: a run keeps its events in ``<run>/tensorboard``, so a folder of
    that name is never the run (a Hydra job's, or a copied run's without its other files)."""
    if log_dir.name == rundir.TENSORBOARD:
        return log_dir.parent
    return log_dir


def _event_files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _is_event_file(p.name))


def find_runs(root: str | Path) -> dict[Path, list[Path]]:
    """Run directories under ``root`` -> their event files (split folders merged in order, files sorted by name).

    Hydra job directories without event files are runs with no files. A plain log folder's split continuations
    ``<run>_N`` beside it are merged in even when they lie outside ``root`` (``root`` is the run folder itself).
    """
    root = Path(root)
    if not root.exists():
        raise RunLoadError(f"{root} does not exist; pass a run or sweep directory.")
    if root.is_file():
        if not _is_event_file(root.name):
            raise RunLoadError(f"{root} is not a TensorBoard event file; pass a run or sweep directory.")
        return {_run_dir_of(root.parent): [root]}
    found: dict[Path, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if rundir.HYDRA in dirnames:  # a Hydra job: a run even before (or without) its first event file
            found.setdefault(here, [])
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        files = sorted(here / f for f in filenames if _is_event_file(f))
        if files:
            found.setdefault(_run_dir_of(here), []).extend(files)
    _add_continuations(found)
    return _merge_split_dirs(found)


def _split_index(folder: Path, base: Path) -> int | None:
    """k when ``folder`` is named ``<base>_<k>`` beside ``base`` with k >= 2, else None."""
    if folder.parent != base.parent or not folder.name.startswith(base.name + "_"):
        return None
    rest = folder.name[len(base.name) + 1 :]
    return int(rest) if rest.isdigit() and int(rest) >= 2 else None


def _add_continuations(found: dict[Path, list[Path]]) -> None:
    """Add the split continuations ``<run>_N`` beside each plain log folder that the walk did not reach."""
    listings: dict[Path, list[str]] = {}
    for run in list(found):
        if is_tmexp_run_dir(run):  # tmexp resumes write new files in the same folder; they never split
            continue
        if run.parent not in listings:
            listings[run.parent] = sorted(os.listdir(run.parent))
        for name in listings[run.parent]:
            sibling = run.parent / name
            if sibling not in found and _split_index(sibling, run) is not None and sibling.is_dir():
                files = _event_files_in(sibling)
                if files:
                    found[sibling] = files


def _merge_split_dirs(found: dict[Path, list[Path]]) -> dict[Path, list[Path]]:
    """Fold ``<run>_<k>`` into ``<run>`` when both are plain log folders found side by side (k ascending)."""
    parts: dict[Path, list[tuple[int, Path]]] = {d: [(1, d)] for d in found}
    plain = {d for d in found if not is_tmexp_run_dir(d)}
    for d in sorted(plain):
        match = re.fullmatch(r"(?P<base>.+)_(?P<index>\d+)", d.name)
        if match and int(match["index"]) >= 2:
            base = d.with_name(match["base"])
            if base in plain and d in parts:
                parts[base].append((int(match["index"]), d))
                del parts[d]
    return {
        base: [f for _, d in sorted(members) for f in found[d]]
        for base, members in sorted(parts.items(), key=lambda item: _natural_key(item[0]))
    }


def _natural_key(path: Path) -> list:
    """Sort job folders 0, 1, 2, ..., 10 (not 0, 1, 10, 2): digit runs compare as numbers."""
    return [
        [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", part) if t] for part in path.parts
    ]


def describe_run(run_dir: Path, event_files: list[Path], label: str) -> RunInfo:
    """Read the Hydra and tmexp files of a run directory (all optional)."""
    return RunInfo(
        label=label,
        path=run_dir,
        event_files=event_files,
        overrides=rundir.read_overrides(run_dir),
        config=rundir.read_config(run_dir),
        meta=rundir.read_run_meta(run_dir),
        status=rundir.read_status(run_dir),  # None while a running job's file is unreadable, never an error
        tmexp_run=is_tmexp_run_dir(run_dir),
    )


def _default_label(run_dir: Path, root: Path, overrides: list[str]) -> str:
    """Overrides name a Hydra job best; otherwise its path below the root (or the directory name)."""
    if overrides:
        return ",".join(overrides)
    if run_dir == root or not run_dir.is_relative_to(root):
        return run_dir.name
    return run_dir.relative_to(root).as_posix()


def _drop_repeats(found: list[tuple[int, Path, list[Path]]]) -> list[tuple[int, Path, list[Path]]]:
    """Leave out a run whose event files another given path already holds (``runs/synA`` and ``runs/synA_2`` both
    given: the second is part of the first), so no scalar is counted twice."""
    keys = [frozenset(files) if files else frozenset([run_dir]) for _, run_dir, files in found]
    keep = []
    for i, item in enumerate(found):
        if not any(keys[i] < keys[j] or (keys[i] == keys[j] and j < i) for j in range(len(found)) if j != i):
            keep.append(item)
    return keep


def load_runs(
    paths, labels: list[str] | None = None, workers: int | None = None, canonical_tags: bool = True
) -> RunSet:
    """Load every run found under ``paths`` (run or sweep directories, or event files).

    Args:
        paths: one path or a list of them.
        labels: one label per path, for paths that each hold exactly one run (e.g. from runs.yaml).
        workers: processes to read runs in parallel (one run per task); default min(runs, CPUs); 1 reads in-process.
        canonical_tags: map old Linesight tag names onto the current ones and convert other Linesight-family
            units to tmexp's (False: the logs exactly as written).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: list[tuple[int, Path, list[Path]]] = []
    for k, root in enumerate(Path(p) for p in paths):
        runs_here = find_runs(root)
        if not runs_here:
            raise RunLoadError(f"no TensorBoard event files found under {root}; check the path.")
        if labels is not None and len(runs_here) != 1:
            raise RunLoadError(
                f"{root} holds {len(runs_here)} runs, so it cannot take the single label "
                f"{labels[k]!r}; point at one run directory."
            )
        found += [(k, run_dir, files) for run_dir, files in runs_here.items()]
    if labels is None and len(paths) > 1:
        found = _drop_repeats(found)

    runs: dict[str, RunInfo] = {}
    for k, root in enumerate(Path(p) for p in paths):
        infos = [describe_run(run_dir, files, "") for j, run_dir, files in found if j == k]
        # Overrides shared by every job of a sweep say nothing about which job is which: leave them out of labels.
        common = set.intersection(*(set(i.overrides) for i in infos)) if len(infos) > 1 else set()
        for info in infos:
            distinct = [o for o in info.overrides if o not in common]
            label = labels[k] if labels is not None else _default_label(info.path, root, distinct)
            base, n = label, 2
            while label in runs:  # two sweeps with the same overrides: keep both, distinguishably
                label = f"{base} ({n})"
                n += 1
            info.label = label
            runs[label] = info
    read = read_event_files(
        {k: v.event_files for k, v in runs.items()},
        workers,
        canonical_tags,
        foreign={k for k, v in runs.items() if not v.tmexp_run},
    )
    for label, info in runs.items():
        info.first_wall_time = read.starts.get(label, float("nan"))
        info.conversions = read.conversions.get(label, {})
        info.no_data = _no_data_reason(info, read.rows.get(label, 0), read.damaged.get(label, []))
    return RunSet(runs, read.scalars)


def _no_data_reason(info: RunInfo, rows: int, damaged: list[str]) -> str:
    if rows:
        return ""
    if not info.event_files:
        return "no event files" + (f" (status: {info.status['status']})" if (info.status or {}).get("status") else "")
    n = len(info.event_files)
    files = f"{n} event file{'s' if n > 1 else ''}"
    if damaged:
        return f"no readable scalars in its {files} (damaged: {len(damaged)} warned)"
    return f"no scalars in its {files}"


def _read_run(files: list[Path]) -> tuple[list[FileScalars], list[str]]:
    """Worker body: read one run's files; warnings travel back as text so the parent can re-issue them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EventFileWarning)
        parts = [read_scalars(f) for f in files]
    return parts, [str(w.message) for w in caught if issubclass(w.category, EventFileWarning)]


def _concat_run(
    parts: list[FileScalars], canonical: bool
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Join a run's files into one set of arrays with a shared tag list."""
    names: dict[str, int] = {}
    tag_index = []
    for part in parts:
        remap = np.array(
            [names.setdefault(metrics.canonical_tag(t) if canonical else t, len(names)) for t in part.tags] + [0],
            np.int32,
        )
        tag_index.append(remap[part.tag_index])
    steps = np.concatenate([p.step for p in parts])
    keep = np.ones(len(steps), bool)
    offset = 0
    for part in parts:  # a resumed run voids what its killed predecessor logged at or after the resume step
        for row, purge_step in part.purges:
            keep[: offset + row] &= steps[: offset + row] < purge_step
        offset += len(part.step)
    return (
        list(names),
        np.concatenate(tag_index)[keep],
        steps[keep],
        np.concatenate([p.wall_time for p in parts])[keep],
        np.concatenate([p.value for p in parts])[keep],
    )


def _convert_units(tags: list[str], tag_index: np.ndarray, value: np.ndarray) -> dict[str, str]:
    """Convert, in place, the tags of FOREIGN_UNITS whose values all lie in the foreign range; say how."""
    done = {}
    for tag, (logged_as, factor) in FOREIGN_UNITS.items():
        if tag not in tags:
            continue
        rows = tag_index == tags.index(tag)
        values = value[rows]
        if len(values) and values.min() >= 0.0 and values.max() <= 1.0:
            value[rows] = values * factor
            done[tag] = f"logged as {logged_as}, x{factor:g} to {metrics.unit(tag)}"
    return done


@dataclass
class EventRead:
    """What reading the event files of several runs gives, by run label."""

    scalars: pd.DataFrame
    starts: dict[str, float]  # Unix time of the run's first event of any kind
    rows: dict[str, int]  # scalars kept
    conversions: dict[str, dict[str, str]]  # tag -> how it was converted
    damaged: dict[str, list[str]]  # the warnings of truncated or corrupt files


def read_event_files(
    files_by_run: dict[str, list[Path]], workers: int | None = None, canonical_tags: bool = True, foreign=()
) -> EventRead:
    """Read runs' event files (one process per run) into the long DataFrame.

    ``foreign`` names the runs logged by other Linesight-family versions, whose units are converted (with
    ``canonical_tags``). Damaged files are re-issued as EventFileWarning.
    """
    items = [(label, files) for label, files in files_by_run.items()]
    with_files = [(label, files) for label, files in items if files]
    if workers is None:
        workers = min(len(with_files), os.cpu_count() or 1)
    if workers > 1 and len(with_files) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_read_run, [files for _, files in with_files]))
    else:
        results = [_read_run(files) for _, files in with_files]

    read = EventRead(empty_frame(), {}, {}, {}, {})
    frames = []
    for (label, _), (parts, messages) in zip(with_files, results):
        for message in messages:
            warnings.warn(message, EventFileWarning, stacklevel=2)
        if messages:
            read.damaged[label] = messages
        firsts = [p.first_wall_time for p in parts if not np.isnan(p.first_wall_time)]
        read.starts[label] = min(firsts) if firsts else float("nan")
        tags, tag_index, step, wall_time, value = _concat_run(parts, canonical_tags)
        if canonical_tags and label in foreign:
            converted = _convert_units(tags, tag_index, value)
            if converted:
                read.conversions[label] = converted
        read.rows[label] = len(step)
        frames.append(RunArrays(label, tags, tag_index, step, wall_time, value))
    read.scalars = scalar_frame(frames, [label for label, _ in items])
    return read


class RunArrays(NamedTuple):
    """One run's scalars as arrays, in the order they were read; ``tag_index`` indexes ``tags``."""

    label: str
    tags: list[str]
    tag_index: np.ndarray  # int32
    step: np.ndarray  # int64
    wall_time: np.ndarray  # float64
    value: np.ndarray  # float64


def scalar_frame(frames: list[RunArrays], run_order: list[str]) -> pd.DataFrame:
    """Build the long table with categorical run/tag columns (compact, and fast to group by); the runs' rows follow
    ``frames``' order, the run categories ``run_order``."""
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

    return pd.DataFrame(
        {
            "run": pd.Categorical.from_codes(cat(run_codes, np.int32), categories=run_order),
            "tag": pd.Categorical.from_codes(cat(tag_codes, np.int32), categories=all_tags),
            "step": cat(steps, np.int64),
            "wall_time": cat(walls, np.float64),
            "value": cat(values, np.float64),
        }
    )


def empty_frame() -> pd.DataFrame:
    """The long table with no rows (and the right columns and dtypes)."""
    return scalar_frame([], [])


def load_scalars(paths, **kwargs) -> pd.DataFrame:
    """Shortcut: the long DataFrame of every run under ``paths``."""
    return load_runs(paths, **kwargs).scalars
