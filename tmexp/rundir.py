"""The run directory: one directory is one run, and this module is the one place that names what is inside it.

::

    <run_dir>/
        tensorboard/            event files (a resumed run adds one per start)
        checkpoint/latest.pt    the resume checkpoint (tmexp.core.checkpoint); previous.pt, the one before it
        checkpoint/replay/      the replay buffer both name: chunk files and one manifest per checkpoint
        best_runs/              the actions of each new best race, <map>_<ms>.npy
        status.json             the job's own account: running / finished / failed / preempted, counters, and
                                what the latest command did with it (started, resumed, retried, skipped)
        run_meta.json           host, hardware, versions, git commit of the first start, and the latest start's time
        config_resolved.yaml    the composed config of the first start, interpolations resolved (kept as written)
        starts.jsonl            one line per later start: when, where, which commit, and the config keys it changed
        .lock                   held (flock) by the one process working in the directory; names it (host, pid)
        float_stats.json        the float-input statistics the network was built with, when it uses them
        .hydra/                 Hydra's own files (config.yaml, hydra.yaml, overrides.yaml)

A multirun's job directories sit under its sweep directory, with submitit's logs in ``<sweep_dir>/.submitit`` and
``<sweep_dir>/.sweep_command.json``, the id of the latest command that ran the sweep.
Plain paths and dicts only: no Hydra here, so the core and the analysis can both use it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import yaml

import tmexp

log = logging.getLogger(__name__)

TENSORBOARD = "tensorboard"
CHECKPOINT = "checkpoint"
BEST_RUNS = "best_runs"
STATUS = "status.json"
RUN_META = "run_meta.json"
CONFIG_RESOLVED = "config_resolved.yaml"
FLOAT_STATS = "float_stats.json"
HYDRA = ".hydra"
SUBMITIT = ".submitit"
SWEEP_COMMAND = ".sweep_command.json"
STARTS = "starts.jsonl"
LOCK = ".lock"


@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT

    @property
    def best_runs(self) -> Path:
        return self.root / BEST_RUNS

    @property
    def status(self) -> Path:
        return self.root / STATUS

    @property
    def run_meta(self) -> Path:
        return self.root / RUN_META

    @property
    def config_resolved(self) -> Path:
        return self.root / CONFIG_RESOLVED

    @property
    def float_stats(self) -> Path:
        return self.root / FLOAT_STATS

    @property
    def starts(self) -> Path:
        return self.root / STARTS

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def hydra(self) -> Path:
        return self.root / HYDRA

    @property
    def hydra_config(self) -> Path:
        return self.root / HYDRA / "config.yaml"

    @property
    def hydra_yaml(self) -> Path:
        return self.root / HYDRA / "hydra.yaml"

    @property
    def overrides(self) -> Path:
        return self.root / HYDRA / "overrides.yaml"


# ----- small readers and an atomic writer ------------------------------------------------------------------------
def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or written by something that is not this module's atomic writer
        return None
    return data if isinstance(data, dict) else None


def _read_yaml(path: Path) -> Any:
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None


def write_atomic(
    path: str | Path,
    data: bytes | str | Callable[[BinaryIO], Any],
    *,
    durable: bool = False,
    before_replace: Callable[[], Any] | None = None,
) -> int:
    """Write ``path`` so that readers see the old file or the new one, never part of one: through a temporary file
    beside it (``<name>.<pid>.<thread>.tmp``), renamed over it. The one atomic writer of tmexp.

    Args:
        data: the bytes, a text (UTF-8), or a function that writes to the open binary file.
        durable: flush the file to disk (fsync) before the rename, for what a crash must not lose (checkpoints);
            ``sync_dir`` of its folder then makes the rename itself durable.
        before_replace: called once the file is written, before the rename (a checkpoint rotates latest.pt there).
    Returns:
        The bytes written. A failure (a full disk, an interrupt) removes the temporary file and raises.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
            size = f.tell()
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size


def sync_dir(path: str | Path) -> None:
    """Make the renames inside the folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----- one process per run directory ----------------------------------------------------------------------------
class RunDirInUse(RuntimeError):
    """Another live process works in the run directory (it holds its lock)."""


_held: dict[Path, list] = {}  # the run directories this process holds: path -> [file descriptor, holds]


def _holder_text(data: dict | None) -> str:
    if not data:
        return "another process"
    return (
        f"process {data.get('pid')} on {data.get('host')} (started {data.get('since', '?')}: "
        f"{data.get('command', '?')})"
    )


def lock_holder(run_dir: str | Path) -> str | None:
    """Who holds the run directory's lock, in words; None when no live process does (a lock left by a process
    that died is released by the operating system, so it never counts)."""
    path = RunDir(run_dir).lock
    if Path(run_dir).resolve() in _held:
        return None  # this process
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder_text(_read_json(path))
    except OSError:  # a file system without locks: nothing to tell
        return None
    finally:
        os.close(fd)
    return None


class RunLock:
    """This process's hold on a run directory (``lock``); ``release()`` or a ``with`` block ends it."""

    def __init__(self, root: Path):
        self.root = root

    def release(self) -> None:
        entry = _held.get(self.root)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[self.root]
            os.close(entry[0])  # releases the flock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock(run_dir: str | Path) -> RunLock:
    """Hold ``run_dir`` for this process: an exclusive ``flock`` on its ``.lock`` file, which records the holder's
    host, pid and command for the message a second process gets. The operating system releases it when the
    process ends, however it ends, so a lock never outlives its process (on NFS, a lost node's lock lapses with
    its lease). Holding it again in the same process nests.

    Raises:
        RunDirInUse: another live process holds it; one line naming the directory and the holder.
    """
    root = Path(run_dir).resolve()
    if root in _held:
        _held[root][1] += 1
        return RunLock(root)
    root.mkdir(parents=True, exist_ok=True)
    path = RunDir(root).lock
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for wait_s in (0.05, 0.2, None):  # a look by ``lock_holder`` (a shared lock, for an instant) is no holder
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if wait_s is None:
                    raise
                time.sleep(wait_s)
    except BlockingIOError:
        os.close(fd)
        raise RunDirInUse(
            f"{run_dir} is in use by {_holder_text(_read_json(path))}: wait for it to end or stop "
            "it, or choose another hydra.run.dir (hydra.sweep.dir for a sweep)."
        ) from None
    except OSError as error:
        if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            os.close(fd)
            raise
        log.warning(
            "%s: this file system does not support locks; nothing stops a second process from using the "
            "same run directory",
            run_dir,
        )
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    _held[root] = [fd, 1]
    return RunLock(root)


# ----- status.json --------------------------------------------------------------------------------------------------
def write_status(run_dir: str | Path, status: str, error: str | None = None, **fields: Any) -> dict:
    """Update ``status.json`` atomically: the previous keys stay unless ``fields`` replaces them.

    Args:
        status: "running", "finished", "failed" or "preempted".
        error: one line saying why a run failed (None clears it).
        fields: counters and anything else to record (e.g. frames, batches, best_ms, first_step_at).
    Returns:
        The dict written.
    """
    path = RunDir(run_dir).status
    data = {
        **(_read_json(path) or {}),
        "status": status,
        **fields,
        "error": error,
        "updated_at": datetime.now(timezone.utc).isoformat(),
    }
    write_atomic(path, json.dumps(data, indent=2))
    return data


def read_status(run_dir: str | Path) -> dict | None:
    """The run's ``status.json``, or None when it has none (the job never started training) or it is unreadable."""
    return _read_json(RunDir(run_dir).status)


def record_start(run_dir: str | Path, sweep: str | None, resumed: bool, retry_error: str | None = None) -> dict:
    """Record in ``status.json`` that training starts (status "running") and what the start means for the command
    that runs the job, so that the sweep summary can say per job: finished, resumed, retried (N) or skipped.

    Fields (besides the status): ``starts``, every start the run directory has seen (attempts, retries, requeues,
    reruns); ``sweep``, the id of the command (``write_sweep_command``; None for a single run); and, for that
    command, ``resumed`` (a start found a checkpoint), ``retries`` with ``retry_errors`` (starts after a failure)
    and ``skipped`` (false here, see ``record_skip``).

    Args:
        sweep: the running command's id; a start with the id already recorded (a requeued job) keeps its fields,
            another id (a command run again) starts them afresh.
        resumed: this start resumes from a checkpoint.
        retry_error: the error of the attempt this start retries, one line; None for a first start.
    """
    previous = read_status(run_dir) or {}
    fields: dict[str, Any] = {"starts": int(previous.get("starts", 0)) + 1, "sweep": sweep, "skipped": False}
    if retry_error is not None:  # a retry resumes too, but "retried" is what the summary says of it
        fields["retries"] = int(previous.get("retries", 0)) + 1
        fields["retry_errors"] = [*previous.get("retry_errors", []), retry_error]
    elif sweep is not None and previous.get("sweep") == sweep:
        fields["resumed"] = bool(previous.get("resumed")) or resumed
    else:
        fields.update(resumed=resumed, retries=0, retry_errors=[])
    return write_status(run_dir, "running", **fields)


def record_skip(run_dir: str | Path, sweep: str | None, **fields: Any) -> dict:
    """Record that the command ``sweep`` found the run finished, its targets reached, and did not start it.

    Args:
        fields: anything else to record (the objective, when the command asks for another one).
    """
    return write_status(
        run_dir, "finished", sweep=sweep, skipped=True, resumed=False, retries=0, retry_errors=[], **fields
    )


# ----- a multirun's command ---------------------------------------------------------------------------------------
def write_sweep_command(sweep_dir: str | Path) -> str:
    """Record that a command starts the multirun in ``sweep_dir`` (again, when the directory was swept before);
    return the command's id, which its jobs record in ``status.json``."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    command_id = uuid.uuid4().hex[:12]
    data = {"id": command_id, "started_at": datetime.now(timezone.utc).isoformat(), "command": " ".join(sys.argv)}
    write_atomic(sweep_dir / SWEEP_COMMAND, json.dumps(data, indent=2))
    return command_id


def read_sweep_command(sweep_dir: str | Path) -> str | None:
    """The id of the latest command that started the multirun in ``sweep_dir``; None when none recorded one."""
    data = _read_json(Path(sweep_dir) / SWEEP_COMMAND)
    command_id = data.get("id") if data is not None else None
    return command_id if isinstance(command_id, str) else None


# ----- run_meta.json ------------------------------------------------------------------------------------------------
def run_metadata() -> dict:
    """Host, hardware and versions of this process, for reports."""
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        where = ["git", "-C", str(Path(tmexp.__file__).parent)]
        commit = (
            subprocess.run(where + ["rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
            or None
        )
        # uncommitted changes to tracked files: the commit alone does not say what code ran
        dirty = (
            bool(
                subprocess.run(
                    where + ["status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
                ).stdout.strip()
            )
            if commit
            else None
        )
    except (OSError, subprocess.SubprocessError):
        commit = dirty = None
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "tmexp": tmexp.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "started_at": datetime.now(timezone.utc).isoformat(),
        "command": " ".join(sys.argv),
    }


def write_run_meta(
    run_dir: str | Path, meta: dict | None = None, config_changes: dict[str, list] | None = None
) -> dict:
    """Record a start: the first one writes ``run_meta.json``, which keeps it; a later one only sets its
    ``resumed_at`` there and appends a line to ``starts.jsonl`` (its own metadata and ``config_changes``, the keys
    whose value differs from the first start's, as ``write_resolved_config`` returns them). Returns run_meta.json."""
    path = RunDir(run_dir).run_meta
    meta = dict(meta if meta is not None else run_metadata())
    previous = _read_json(path)
    if previous is None:
        write_atomic(path, json.dumps(meta, indent=2))
        return meta
    line = {**meta, "config_changes": config_changes or {}}
    with open(RunDir(run_dir).starts, "a") as f:  # one short line per start: appends of it are not torn
        f.write(json.dumps(line) + "\n")
    kept = {**previous, "resumed_at": meta["started_at"]}
    write_atomic(path, json.dumps(kept, indent=2))
    return kept


def read_starts(run_dir: str | Path) -> list[dict]:
    """The later starts ``starts.jsonl`` records, oldest first (a torn last line is left out)."""
    try:
        lines = RunDir(run_dir).starts.read_text().splitlines()
    except OSError:
        return []
    starts = []
    for line in lines:
        try:
            starts.append(json.loads(line))
        except ValueError:
            continue
    return starts


def read_run_meta(run_dir: str | Path) -> dict | None:
    return _read_json(RunDir(run_dir).run_meta)


# ----- config files -------------------------------------------------------------------------------------------------
def write_resolved_config(run_dir: str | Path, config: Mapping[str, Any]) -> dict[str, list]:
    """Write the composed config (a plain dict, interpolations already resolved) as ``config_resolved.yaml`` at a
    run's first start; a later start leaves the file as the first start wrote it (what the run's checkpoints and
    the analysis go by) and gets back the keys whose value differs, ``{"a.b": [first, now]}``."""
    plain = _plain(config)
    first = read_resolved_config(run_dir)
    if first is None:
        text = yaml.safe_dump(plain, sort_keys=False, default_flow_style=False, allow_unicode=True)
        write_atomic(RunDir(run_dir).config_resolved, text)
        return {}
    # compared as YAML reads them back (tuples as lists)
    now = yaml.safe_load(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True))
    return _changes(first, now)


def _changes(first: Any, now: Any, prefix: str = "") -> dict[str, list]:
    if isinstance(first, dict) and isinstance(now, dict):
        out: dict[str, list] = {}
        for key in [*first, *(k for k in now if k not in first)]:
            out.update(_changes(first.get(key), now.get(key), f"{prefix}{key}."))
        return out
    return {} if first == now else {prefix.rstrip("."): [first, now]}


def _plain(node: Any) -> Any:
    """Mappings, sequences and Enums as plain YAML types (Enums by name, as OmegaConf writes them)."""
    from enum import Enum

    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    if isinstance(node, Enum):
        return node.name
    return node


def read_resolved_config(run_dir: str | Path) -> dict | None:
    """``config_resolved.yaml``, or None when the run has none."""
    data = _read_yaml(RunDir(run_dir).config_resolved)
    return data if isinstance(data, dict) else None


def read_config(run_dir: str | Path) -> dict | None:
    """The run's config: ``config_resolved.yaml``, else Hydra's ``.hydra/config.yaml`` (unresolved), else None."""
    config = read_resolved_config(run_dir)
    if config is None:
        data = _read_yaml(RunDir(run_dir).hydra_config)
        config = data if isinstance(data, dict) else None
    return config


def read_overrides(run_dir: str | Path) -> list[str]:
    """The command-line overrides Hydra recorded for the run (``.hydra/overrides.yaml``), [] when none."""
    data = _read_yaml(RunDir(run_dir).overrides)
    return [str(o) for o in data] if isinstance(data, list) else []


def write_float_stats(run_dir: str | Path, mean, std) -> None:
    """Record the float-input statistics (mean, std per input) the run's network standardises with."""
    data = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    write_atomic(RunDir(run_dir).float_stats, json.dumps(data, indent=2))


def read_float_stats(run_dir: str | Path) -> tuple[list[float], list[float]] | None:
    data = _read_json(RunDir(run_dir).float_stats)
    if data is None or "mean" not in data or "std" not in data:
        return None
    return list(data["mean"]), list(data["std"])


# ----- submitit logs of a multirun's job --------------------------------------------------------------------------
def _hydra_job(run_dir: Path) -> dict:
    data = _read_yaml(RunDir(run_dir).hydra_yaml)
    job = data.get("hydra", {}).get("job") if isinstance(data, dict) else None
    return job if isinstance(job, dict) else {}


def _pickled_strings(text: str) -> tuple[bytes, ...]:
    """How pickle writes a str (BINUNICODE, or SHORT_BINUNICODE under 256 bytes)."""
    raw = text.encode()
    forms = [b"X" + len(raw).to_bytes(4, "little") + raw]
    if len(raw) < 256:
        forms.append(b"\x8c" + bytes([len(raw)]) + raw)
    return tuple(forms)


def submitit_logs(
    sweep_dir: str | Path,
    run_dir: str | Path | None = None,
    job_num: int | None = None,
    overrides: list[str] | None = None,
) -> list[Path]:
    """The submitit stdout/stderr files (``*_log.out``, ``*_log.err``) of one job of a multirun, [] when none found.

    Tried in turn, first match wins:

    1. the job's submitit id, which Hydra records in ``<run_dir>/.hydra/hydra.yaml`` (``hydra.job.id``) and
       submitit uses as the job's folder name;
    2. the job number as a SLURM array task (``<array>_<num>_<task>_log.*``): for a job that died before Hydra
       wrote its files; the number is ``job_num``, else ``hydra.job.num``, else a numeric run directory name;
    3. the job's ``overrides`` inside submitit's ``*_submitted.pkl`` (the local executor names folders by process
       id); matched as pickled strings, never unpickled. The run's own ``.hydra/overrides.yaml`` is used when
       ``overrides`` is None.

    Args:
        sweep_dir: the multirun directory (``hydra.sweep.dir``), which holds ``.submitit``.
        run_dir: the job's directory, when it has one.
        job_num: Hydra's job number, when known.
        overrides: the job's overrides, when known.
    """
    root = Path(sweep_dir) / SUBMITIT
    if not root.is_dir():
        return []
    logs = sorted(p for p in root.rglob("*_log.*") if p.is_file() and p.name.endswith(("_log.out", "_log.err")))
    job = _hydra_job(Path(run_dir)) if run_dir is not None else {}

    job_id = job.get("id")
    if job_id not in (None, ""):
        mine = [p for p in logs if p.parent == root / str(job_id)]
        if mine:
            return mine

    if job_num is None:
        job_num = job.get("num") if isinstance(job.get("num"), int) else None
    if job_num is None and run_dir is not None and Path(run_dir).name.isdigit():
        job_num = int(Path(run_dir).name)
    if job_num is not None:
        mine = [p for p in logs if re.fullmatch(rf"\d+_{job_num}_\d+_log\.(err|out)", p.name)]
        if mine:
            return mine

    if overrides is None and run_dir is not None:
        overrides = read_overrides(run_dir)
    if overrides:
        folders = set()
        for pkl in root.rglob("*_submitted.pkl"):
            data = pkl.read_bytes()
            if all(any(form in data for form in _pickled_strings(o)) for o in overrides):
                folders.add(pkl.parent)
        return [p for p in logs if p.parent in folders]
    return []
