"""A study's runs kept in one compact file beside its runs.yaml, so that its report regenerates without them.

``python -m tmexp.report <study> --export`` writes ``<study>/runs_export.json.gz``: for each run path of runs.yaml
(the key is the path as runs.yaml spells it), what the report reads from that run and nothing more (no checkpoints,
no event files)::

    {"format": 1, "runs": {"outputs/btr_A01_cpu/A01_cpu_v2/seed0": {
        "event_files": [...], "first_wall_time": ..., "tmexp_run": true, "no_data": "", "conversions": {},
        "overrides": [...], "config": {...}, "meta": {...}, "status": {...},
        "tags": [...], "tag": [...], "step": [...], "wall_time": [...], "value": [...],
        "best_races": {"A01": {"ms": 24310, "actions": [5, 5, 1, ...]}}}}}

The scalars are every row the loader kept, in its order, after purges and unit conversions; ``tag`` indexes
``tags``. Floats are written in full (shortest round-trip repr), so the tables made from the export are the tables
made from the event files. ``event_files`` are relative to the run directory (the run table counts them).
``best_races`` (absent when the run saved none) holds the fastest ``best_runs/<map>_<ms>.npy`` of each map: its
time and its action indices, which the report replays on the simulator with the run's ``config``.
"""

from __future__ import annotations

import gzip
import json
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tmexp import rundir
from tmexp.analysis import loading
from tmexp.envs.base import N_ACTIONS
from tmexp.envs.sim import playback

EXPORT_FILE = "runs_export.json.gz"
FORMAT = 1
# The most an export may hold, unpacked: far above a study's (the A01 study's is about 10 MB), and a file that would
# unpack to more (a decompression bomb) is refused before it fills memory.
MAX_EXPORT_BYTES = 1 << 30


class ExportError(Exception):
    """An export file that cannot be read back (damaged, or written by another format version)."""


@dataclass(frozen=True)
class BestRace:
    """A run's fastest saved race of one map: its recorded time and the actions that drove it."""

    ms: int
    actions: np.ndarray  # (T,) int64 action indices, one per action step


def run_best_races(run_dir: str | Path) -> dict[str, BestRace]:
    """The fastest saved race of each map in the run's ``best_runs/`` ({} when it saved none).

    An unreadable race file is passed over (with a warning naming it) for the next fastest of its map.
    """
    out: dict[str, BestRace] = {}
    for map_name, ms, path in playback.best_races(run_dir):  # fastest first
        if map_name in out:
            continue
        try:
            out[map_name] = BestRace(ms, playback.load_actions(path))
        except playback.PlaybackError as err:
            warnings.warn(f"{err} It is left out of the report's best races.", stacklevel=2)
    return out


def encode_best_races(races: dict[str, BestRace]) -> dict:
    """Map -> {"ms", "actions"}: a list of small ints (about 2 bytes an action, before compression)."""
    return {name: {"ms": race.ms, "actions": race.actions.tolist()} for name, race in races.items()}


def decode_best_races(entry: dict) -> dict[str, BestRace]:
    """The best races of an export entry ({} in one written before they were kept). Raises ValueError when one
    is not a positive time and a list of action indices."""
    raw = entry.get("best_races", {})
    if not isinstance(raw, dict):
        raise ValueError("its best_races is not a mapping of maps")
    out = {}
    for name, race in raw.items():
        race = race if isinstance(race, dict) else {}
        ms, actions = race.get("ms"), race.get("actions")
        if (
            type(ms) is not int
            or ms <= 0
            or not isinstance(actions, list)
            or not actions
            or not all(type(a) is int and 0 <= a < N_ACTIONS for a in actions)
        ):
            raise ValueError(f"its best race of {name!r} is not a time in ms and a list of action indices")
        out[str(name)] = BestRace(ms, np.asarray(actions, dtype=np.int64))
    return out


def _run_rows(scalars: pd.DataFrame, label: str) -> pd.DataFrame:
    return scalars[scalars["run"] == label]


def encode_run(info: loading.RunInfo, rows: pd.DataFrame, best_races: dict[str, BestRace] | None = None) -> dict:
    """One run's entry: its metadata, its scalar rows (``rows``: the long table's rows of this run, in order) and its
    best race of each map."""
    codes = rows["tag"].cat.codes.to_numpy()
    used, tag_index = np.unique(codes, return_inverse=True)
    entry = {
        "event_files": [os.path.relpath(f, info.path) for f in info.event_files],
        "first_wall_time": info.first_wall_time,
        "tmexp_run": info.tmexp_run,
        "no_data": info.no_data,
        "conversions": info.conversions,
        "overrides": info.overrides,
        "config": info.config,
        "meta": info.meta,
        "status": info.status,
        "tags": [str(rows["tag"].cat.categories[c]) for c in used],
        "tag": tag_index.tolist(),
        "step": rows["step"].tolist(),
        "wall_time": rows["wall_time"].tolist(),
        "value": rows["value"].tolist(),
    }
    if best_races:  # absent when none: a study without best races exports as it did before they were kept
        entry["best_races"] = encode_best_races(best_races)
    return entry


def decode_run(entry: dict, label: str, path: Path) -> tuple[loading.RunInfo, loading.RunArrays]:
    """A run as the loader would have given it: its RunInfo (at ``path``) and its scalar arrays."""
    info = loading.RunInfo(
        label=label,
        path=path,
        event_files=[path / f for f in entry["event_files"]],
        overrides=list(entry["overrides"]),
        config=entry["config"],
        meta=entry["meta"],
        status=entry["status"],
        first_wall_time=float(entry["first_wall_time"]),
        tmexp_run=bool(entry["tmexp_run"]),
        conversions=dict(entry["conversions"]),
        no_data=str(entry["no_data"]),
    )
    columns = [
        np.asarray(entry[name], dtype)
        for name, dtype in (("tag", np.int32), ("step", np.int64), ("wall_time", np.float64), ("value", np.float64))
    ]
    tag_index = columns[0]
    if len({len(c) for c in columns}) != 1 or (
        len(tag_index) and not 0 <= tag_index.min() <= tag_index.max() < len(entry["tags"])
    ):
        raise ValueError("its scalar columns do not match")
    return info, loading.RunArrays(label, list(entry["tags"]), *columns)


def write_export(
    path: str | Path,
    runset: loading.RunSet,
    keys: dict[str, str],
    best_races: dict[str, dict[str, BestRace]] | None = None,
) -> int:
    """Write every run of ``runset`` under its key (run label -> key), with its best races (run label -> map ->
    race; ``best_races_of``); returns the file's size in bytes.

    The file is replaced atomically, and the same runs always give the same bytes (no time stamp in the gzip header).
    """
    path = Path(path)
    best_races = best_races or {}
    runs = {
        keys[label]: encode_run(info, _run_rows(runset.scalars, label), best_races.get(label))
        for label, info in runset.runs.items()
    }
    text = json.dumps({"format": FORMAT, "runs": runs}, separators=(",", ":"))
    data = gzip.compress(text.encode(), compresslevel=9, mtime=0)
    return rundir.write_atomic(path, data)


def read_export(path: str | Path) -> dict[str, dict]:
    """The entries of an export file, by key; {} when there is no file. Raises ExportError when it is unreadable."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        raw = json.loads(_gunzip(path, MAX_EXPORT_BYTES))
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise ExportError(
            f"{path} is not a readable run export ({err.__class__.__name__}); restore it from version "
            f"control, or export again where the runs are."
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("runs"), dict):
        raise ExportError(
            f"{path} is not a run export of format {FORMAT}; export again where the runs are "
            f"(python -m tmexp.report <study> --export)."
        )
    return raw["runs"]


def _gunzip(path: Path, limit: int) -> bytes:
    """The gzip file's contents, refused (ExportError) past ``limit`` bytes, compressed or unpacked."""
    too_big = ExportError(
        f"{path} unpacks to more than {limit >> 20} MiB, more than any run export holds: it is not "
        "one; restore it from version control, or export again where the runs are."
    )
    if path.stat().st_size > limit:
        raise too_big
    unpacker = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
    data = unpacker.decompress(path.read_bytes(), limit + 1)
    if len(data) > limit:
        raise too_big
    if not unpacker.eof:
        raise EOFError("the file ends before its compressed stream does")
    return data


def with_exported(runset: loading.RunSet, exported: dict[str, tuple[str, dict]], order: list[str]) -> loading.RunSet:
    """``runset`` (the runs read from their directories) joined with runs from an export, in ``order`` of labels.

    Args:
        exported: run label -> (its key, its export entry); the key stands for the missing run directory.
    Raises:
        ExportError: an entry lacks a field or its columns disagree.
    """
    if not exported:
        return runset
    infos, parts = {}, []
    for label in order:
        if label in exported:
            key, entry = exported[label]
            try:
                infos[label], part = decode_run(entry, label, Path(key))
            except (KeyError, TypeError, ValueError) as err:
                raise ExportError(
                    f"the entry {key!r} is damaged ({err.__class__.__name__}: {err}); restore the "
                    f"export from version control, or export again where the runs are."
                ) from None
        else:
            infos[label] = runset.runs[label]
            rows = _run_rows(runset.scalars, label)
            part = loading.RunArrays(
                label,
                [str(t) for t in rows["tag"].cat.categories],
                rows["tag"].cat.codes.to_numpy(np.int32),
                rows["step"].to_numpy(),
                rows["wall_time"].to_numpy(),
                rows["value"].to_numpy(),
            )
        parts.append(part)
    return loading.RunSet(infos, loading.scalar_frame(parts, order))


def best_races_of(runset: loading.RunSet, exported: dict[str, tuple[str, dict]]) -> dict[str, dict[str, BestRace]]:
    """Each run's best race of each map (run label -> map -> race): from its export entry where the run was read
    from the export, else from its directory's ``best_runs/``.

    Args:
        exported: run label -> (its key, its export entry), as for ``with_exported``.
    Raises:
        ExportError: an entry's best races are damaged.
    """
    out = {}
    for label, info in runset.runs.items():
        if label in exported:
            key, entry = exported[label]
            try:
                out[label] = decode_best_races(entry)
            except ValueError as err:
                raise ExportError(
                    f"the entry {key!r} is damaged ({err}); restore the export from version control, or export "
                    f"again where the runs are."
                ) from None
        else:
            out[label] = run_best_races(info.path)
    return out
