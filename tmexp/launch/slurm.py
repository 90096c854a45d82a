"""SLURM sweeps that can never start say so: the request is checked against the partition before submission, and
jobs that wait are watched.

``check_request`` (run by the training CLI's check, before Hydra submits anything) compares what
``hydra/launcher=slurm`` asks of one node (``cpus_per_task`` x ``tasks_per_node`` CPUs, ``mem_gb``,
``gpus_per_node``), how many nodes (``nodes``) and for how long (``timeout_min``) with what ``sinfo`` says the
partition's nodes have. A request no node can meet would wait forever (reason ``PartitionConfig``); it ends in one
line naming the launcher key and what the partition offers, exit code 2.

``QueueWatcher`` runs beside submitit's wait in the sweep's process. While jobs of the sweep are pending it prints,
about once a minute, each state with its pending reason (``squeue``). A reason that can never clear by waiting
(``NEVER_CLEARS``, or ``ReqNodeNotAvail`` when no available node of the partition fits the request) cancels the
sweep's jobs and ends the command with one line and exit code 2: nothing had started, so nothing is lost.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from tmexp import rundir
from tmexp.validation import ConfigError

# Pending reasons that waiting cannot clear: the request breaks a partition, account or QOS limit per job.
NEVER_CLEARS = {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "InvalidAccount",
                "InvalidQOS", "AccountNotAllowed", "QOSNotAllowed", "DependencyNeverSatisfied",
                "QOSMinCpuNotSatisfied", "QOSMinGRES", "QOSMinMemory", "QOSMinNode"}
_NEVER_CLEARS_PATTERN = re.compile(r"^(QOS|Assoc)Max\w*PerJob\w*$")  # per-job maxima of a QOS or an association
_USABLE_NODE_STATES = ("idle", "mixed", "allocated", "completing")
_LAUNCHER = "hydra.launcher"


@dataclass(frozen=True)
class Node:
    name: str
    partition: str
    cpus: int
    memory_mb: int
    gpus: int
    state: str
    time_limit_min: float | None  # the partition's MaxTime; None: no limit


@dataclass(frozen=True)
class Request:
    """What a job of the sweep asks for."""

    partition: str | None
    cpus: int  # per node
    memory_mb: int | None  # per node; None: the cluster's default
    gpus: int  # per node
    nodes: int
    timeout_min: float

    @staticmethod
    def of(launcher: Any) -> "Request":
        """From the ``hydra.launcher`` node of ``hydra/launcher=slurm``."""
        tasks = int(launcher.get("tasks_per_node") or 1)
        mem_gb = launcher.get("mem_gb")
        return Request(partition=launcher.get("partition"), cpus=int(launcher.get("cpus_per_task") or 1) * tasks,
                       memory_mb=int(float(mem_gb) * 1024) if mem_gb else None,
                       gpus=int(launcher.get("gpus_per_node") or 0), nodes=int(launcher.get("nodes") or 1),
                       timeout_min=float(launcher.get("timeout_min") or 0))

    def fits(self, node: Node) -> bool:
        return (node.cpus >= self.cpus and (self.memory_mb is None or node.memory_mb >= self.memory_mb)
                and node.gpus >= self.gpus)


def is_slurm(launcher: Any) -> bool:
    return launcher is not None and "SlurmLauncher" in str(launcher.get("_target_", ""))


# ----- sinfo ----------------------------------------------------------------------------------------------------
def _run(command: list[str], timeout: float = 30) -> str:
    """A SLURM command's stdout; ConfigError when SLURM is not there or does not answer."""
    if shutil.which(command[0]) is None:
        raise ConfigError(f"hydra/launcher=slurm needs SLURM's commands, but {command[0]} is not on this machine's "
                          "PATH: submit from a node of the cluster, or use hydra/launcher=local.")
    try:
        answer = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{command[0]} did not answer within {timeout:g} s: is the SLURM controller up?") from None
    if answer.returncode != 0:
        raise ConfigError(f"{' '.join(command)} failed: {' '.join(answer.stderr.split()) or 'no message'}")
    return answer.stdout


def parse_gpus(gres: str) -> int:
    """GPUs in a node's GRES string, e.g. ``gpu:a100:4(S:0-1),shard:8`` -> 4, ``(null)`` -> 0."""
    total = 0
    for entry in gres.split(","):
        parts = entry.split("(")[0].strip().split(":")
        if parts[0] == "gpu":
            total += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return total


def parse_time_limit(text: str) -> float | None:
    """A SLURM time limit in minutes: ``infinite``, ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, clock = text.rpartition("-")
    fields = [int(f) for f in clock.split(":")]
    if days:
        fields += [0] * (3 - len(fields))
        hours, minutes, seconds = fields
    elif len(fields) == 3:
        hours, minutes, seconds = fields
    else:
        hours, (minutes, seconds) = 0, (fields + [0])[:2]
    return (int(days or 0) * 24 + hours) * 60 + minutes + seconds / 60


def partition_nodes() -> tuple[list[Node], str | None]:
    """Every (partition, node) pair ``sinfo`` knows, and the default partition's name."""
    out = _run(["sinfo", "-h", "-N", "-o", "%P|%N|%c|%m|%G|%T|%l"])
    nodes, default = [], None
    for line in out.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 7:
            continue
        partition, name, cpus, memory, gres, state, limit = fields
        if partition.endswith("*"):
            partition = partition[:-1]
            default = partition
        nodes.append(Node(name, partition, int(cpus), int(re.sub(r"\D", "", memory) or 0), parse_gpus(gres),
                          state.rstrip("*~#!%$@^-").lower(), parse_time_limit(limit)))
    return nodes, default


def _offer(partition: str, nodes: list[Node]) -> str:
    """What a partition's nodes have, in one phrase: 'partition debug offers 1 node of 2 CPUs, 21 GB, no GPU'."""
    kinds = sorted({(n.cpus, n.memory_mb, n.gpus) for n in nodes}, reverse=True)
    shown = " or ".join(f"{c} CPUs, {m / 1024:.0f} GB, {f'{g} GPUs' if g else 'no GPU'}" for c, m, g in kinds[:3])
    return (f"partition {partition} offers {len(nodes)} node{'s' if len(nodes) != 1 else ''} of {shown}"
            + (" or smaller" if len(kinds) > 3 else ""))


def check_request(launcher: Any, nodes_and_default: tuple[list[Node], str | None] | None = None) -> None:
    """Raise ConfigError, in one line naming the ``hydra.launcher`` key, when no node of the partition can run one
    job of the sweep (see the module docstring). ``nodes_and_default``: ``partition_nodes()``'s answer (tests)."""
    request = Request.of(launcher)
    all_nodes, default = nodes_and_default if nodes_and_default is not None else partition_nodes()
    partitions = sorted({n.partition for n in all_nodes})
    partition = request.partition or default
    if partition is None:
        raise ConfigError(f"{_LAUNCHER}.partition is null and this cluster has no default partition: set "
                          f"{_LAUNCHER}.partition to one of {', '.join(partitions) or '(none)'}.")
    nodes = [n for n in all_nodes if n.partition == partition]
    if not nodes:
        raise ConfigError(f"{_LAUNCHER}.partition={partition}: no such partition on this cluster; choose one of "
                          f"{', '.join(partitions) or '(none)'}.")
    offer = _offer(partition, nodes)
    most = lambda attr: max(getattr(n, attr) for n in nodes)  # noqa: E731
    if request.cpus > most("cpus"):
        tasks = launcher.get("tasks_per_node") or 1
        asks = f"{request.cpus} CPUs per node" + (f" ({tasks} tasks x {launcher.cpus_per_task})" if tasks > 1 else "")
        raise ConfigError(f"{_LAUNCHER}.cpus_per_task={launcher.cpus_per_task} asks for {asks}, but {offer}; lower "
                          f"{_LAUNCHER}.cpus_per_task (with performance.gpu_collectors_count) or choose another "
                          f"{_LAUNCHER}.partition.")
    if request.memory_mb is not None and request.memory_mb > most("memory_mb"):
        raise ConfigError(f"{_LAUNCHER}.mem_gb={launcher.mem_gb} is more memory than any node has ({offer}); "
                          f"lower {_LAUNCHER}.mem_gb or choose another {_LAUNCHER}.partition.")
    if request.gpus > most("gpus"):
        fix = "set it to null (a CPU job)" if most("gpus") == 0 else f"lower it to {most('gpus')}"
        raise ConfigError(f"{_LAUNCHER}.gpus_per_node={request.gpus} asks for more GPUs than any node has "
                          f"({offer}): {fix}, or choose another {_LAUNCHER}.partition.")
    fitting = [n for n in nodes if request.fits(n)]
    if len(fitting) < request.nodes:
        raise ConfigError(f"{_LAUNCHER} asks for {request.nodes} node(s) with {request.cpus} CPUs, "
                          f"{(request.memory_mb or 0) / 1024:.0f} GB and {request.gpus} GPUs each, but only "
                          f"{len(fitting)} node(s) of partition {partition} have all of that ({offer}): lower "
                          f"{_LAUNCHER}.nodes, cpus_per_task, mem_gb or gpus_per_node.")
    limit = nodes[0].time_limit_min
    if limit is not None and request.timeout_min > limit:
        raise ConfigError(f"{_LAUNCHER}.timeout_min={launcher.timeout_min} is longer than partition {partition}'s "
                          f"time limit ({limit:g} min): lower it (jobs requeue themselves at their limit).")


# ----- watching the queue ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueuedJob:
    job_id: str  # <array>_<task>, or <job>
    state: str
    reason: str


def never_clears(reason: str) -> bool:
    return reason in NEVER_CLEARS or bool(_NEVER_CLEARS_PATTERN.match(reason))


def squeue(job_ids: list[str]) -> list[QueuedJob]:
    """The queue entries of jobs (array tasks one per line); jobs SLURM no longer lists are left out."""
    jobs = []
    for job_id in job_ids:  # one call per id: an id SLURM forgot makes squeue fail for the whole list
        try:
            answer = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%i|%T|%r"], capture_output=True,
                                    text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        for line in answer.stdout.splitlines() if answer.returncode == 0 else []:
            fields = line.strip().split("|")
            if len(fields) == 3:
                jobs.append(QueuedJob(*fields))
    return jobs


def queue_line(jobs: list[QueuedJob]) -> str:
    """'3 PENDING (Resources), 1 RUNNING' style summary of the queue entries."""
    counts: dict[str, int] = {}
    for job in jobs:
        key = f"{job.state} ({job.reason})" if job.state == "PENDING" else job.state
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {key}" for key, n in counts.items())


class QueueWatcher:
    """Watches the SLURM jobs a sweep submits (see the module docstring)."""

    def __init__(self, sweep_dir: str | Path, launcher: Any, report_every_s: float = 60.0, poll_s: float = 10.0,
                 stream: TextIO | None = None, on_never: Callable[[str, list[str]], None] | None = None):
        self.submitit = Path(sweep_dir) / rundir.SUBMITIT
        self.request = Request.of(launcher)
        self.report_every_s, self.poll_s = report_every_s, poll_s
        self.stream = stream
        self.on_never = on_never or _cancel_and_exit
        self._known = self._job_folders()  # an earlier sweep's jobs (a continued search) are not ours
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tmexp-slurm-queue", daemon=True)
        self._first_pending: float | None = None
        self._last_report = 0.0

    def start(self) -> "QueueWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _job_folders(self) -> set[str]:
        return {p.name for p in self.submitit.iterdir() if p.is_dir()} if self.submitit.is_dir() else set()

    def job_ids(self) -> list[str]:
        """The array (or job) ids this sweep submitted so far: submitit names a folder after each."""
        return sorted({name.split("_")[0] for name in self._job_folders() - self._known})

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.check_once()

    def check_once(self) -> str | None:
        """Look at the queue once: report, or give up on jobs that can never start. Returns the line printed."""
        jobs = squeue(self.job_ids())
        pending = [j for j in jobs if j.state == "PENDING"]
        if not pending:
            self._first_pending = None
            return None
        hopeless = [j for j in pending if never_clears(j.reason)
                    or (j.reason.startswith("ReqNodeNotAvail") and not self._some_node_can_run())]
        if hopeless:
            ids = sorted({j.job_id.split("_")[0] for j in jobs})
            self.on_never(f"the sweep's SLURM jobs can never start: {queue_line(hopeless)}, "
                          f"{_why(hopeless[0].reason)}; cancelled job(s) {', '.join(ids)}. Fix the hydra.launcher "
                          f"request (partition, cpus_per_task, mem_gb, gpus_per_node, timeout_min, account, qos) "
                          f"and run the command again.", ids)
            return None
        now = time.monotonic()
        self._first_pending = self._first_pending or now
        if now - self._last_report < self.report_every_s:
            return None
        self._last_report = now
        line = (f"[slurm] {time.strftime('%H:%M:%S')} waiting {now - self._first_pending:.0f} s: "
                f"{queue_line(jobs)}")
        print(line, file=self.stream or sys.stdout, flush=True)
        return line

    def _some_node_can_run(self) -> bool:
        try:
            nodes, default = partition_nodes()
        except ConfigError:
            return True  # cannot tell: keep waiting
        partition = self.request.partition or default
        return any(n.partition == partition and n.state in _USABLE_NODE_STATES and self.request.fits(n)
                   for n in nodes)


def _why(reason: str) -> str:
    if reason.startswith("ReqNodeNotAvail"):
        return "no available node of the partition fits the request"
    if reason.startswith("Partition"):
        return "the request breaks a limit of the partition"
    if reason.startswith(("QOS", "Assoc", "Invalid", "Account")):
        return "the request breaks a limit of the account or QOS"
    return "SLURM will not start it by waiting"


def _cancel_and_exit(message: str, job_ids: list[str]) -> None:
    """Cancel the jobs and end the whole command: submitit's wait holds the main thread, and nothing ran."""
    subprocess.run(["scancel", *job_ids], capture_output=True, timeout=30)
    sys.stdout.flush()
    print(f"tmexp.train: error: {message}", file=sys.stderr, flush=True)
    os._exit(2)
