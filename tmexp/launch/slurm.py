"""What SLURM says, read for a sweep: the partition's nodes before submission, the queue and the accounting while
the jobs run, the cluster's submission limits.

``check_request`` (run by the training CLI's check, before Hydra submits anything) compares what
``hydra/launcher=slurm`` asks of one node (``cpus_per_task`` CPUs, ``mem_gb``, ``gpus_per_node``), how many nodes
(``nodes``) and for how long (``timeout_min``) with what ``sinfo`` says the partition's nodes have. A request no node
can meet would wait forever (reason ``PartitionConfig``); it ends in one line naming the launcher key and what the
partition offers, exit code 2. ``tasks_per_node`` above 1 is refused: srun would start that many copies of one run.

``squeue`` and ``sacct`` give the sweep's driver (``tmexp/launch/slurm_launcher.py``) the state of its jobs;
``submit_limits`` reads ``MaxArraySize`` (``scontrol show config``) and the QOS's or association's ``MaxSubmit``
(``sacctmgr``). A query SLURM does not answer returns None: the driver then waits, it never guesses.

``QueueWatcher`` judges the queue entries each time the driver looks: it reports the waiting jobs' states with their
pending reasons about once a minute, and cancels the sweep (exit 2) only when no node of the partition can ever run
its request and none of its jobs has started (see the class).
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from tmexp.validation import ConfigError

# Pending reasons that waiting cannot clear: the request breaks a partition, account or QOS limit per job.
NEVER_CLEARS = {
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "AccountNotAllowed",
    "QOSNotAllowed",
    "DependencyNeverSatisfied",
    "QOSMinCpuNotSatisfied",
    "QOSMinGRES",
    "QOSMinMemory",
    "QOSMinNode",
}
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
    def of(launcher: Any) -> Request:
        """From the ``hydra.launcher`` node of ``hydra/launcher=slurm``."""
        tasks = int(launcher.get("tasks_per_node") or 1)
        mem_gb = launcher.get("mem_gb")
        return Request(
            partition=launcher.get("partition"),
            cpus=int(launcher.get("cpus_per_task") or 1) * tasks,
            memory_mb=int(float(mem_gb) * 1024) if mem_gb else None,
            gpus=int(launcher.get("gpus_per_node") or 0),
            nodes=int(launcher.get("nodes") or 1),
            timeout_min=float(launcher.get("timeout_min") or 0),
        )

    def fits(self, node: Node) -> bool:
        return (
            node.cpus >= self.cpus
            and (self.memory_mb is None or node.memory_mb >= self.memory_mb)
            and node.gpus >= self.gpus
        )


def is_slurm(launcher: Any) -> bool:
    return launcher is not None and "SlurmLauncher" in str(launcher.get("_target_", ""))


# ----- sinfo ----------------------------------------------------------------------------------------------------
def _run(command: list[str], timeout: float = 30) -> str:
    """A SLURM command's stdout; ConfigError when SLURM is not there or does not answer."""
    if shutil.which(command[0]) is None:
        raise ConfigError(
            f"hydra/launcher=slurm needs SLURM's commands, but {command[0]} is not on this machine's "
            "PATH: submit from a node of the cluster, or use hydra/launcher=local."
        )
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
    return parse_sinfo(_run(["sinfo", "-h", "-N", "-o", "%P|%N|%c|%m|%G|%T|%l"]))


def parse_sinfo(out: str) -> tuple[list[Node], str | None]:
    """``sinfo -h -N -o %P|%N|%c|%m|%G|%T|%l`` output: every (partition, node) pair, and the default partition."""
    nodes, default = [], None
    for line in out.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 7:
            continue
        partition, name, cpus, memory, gres, state, limit = fields
        if partition.endswith("*"):
            partition = partition[:-1]
            default = partition
        nodes.append(
            Node(
                name,
                partition,
                int(cpus),
                int(re.sub(r"\D", "", memory) or 0),
                parse_gpus(gres),
                state.rstrip("*~#!%$@^-").lower(),
                parse_time_limit(limit),
            )
        )
    return nodes, default


def _offer(partition: str, nodes: list[Node]) -> str:
    """What a partition's nodes have, in one phrase: 'partition debug offers 1 node of 2 CPUs, 21 GB, no GPU'."""
    kinds = sorted({(n.cpus, n.memory_mb, n.gpus) for n in nodes}, reverse=True)
    shown = " or ".join(f"{c} CPUs, {m / 1024:.0f} GB, {f'{g} GPUs' if g else 'no GPU'}" for c, m, g in kinds[:3])
    return f"partition {partition} offers {len(nodes)} node{'s' if len(nodes) != 1 else ''} of {shown}" + (
        " or smaller" if len(kinds) > 3 else ""
    )


def check_request(launcher: Any, nodes_and_default: tuple[list[Node], str | None] | None = None) -> None:
    """Raise ConfigError, in one line naming the ``hydra.launcher`` key, when no node of the partition can run one
    job of the sweep (see the module docstring). ``nodes_and_default``: ``partition_nodes()``'s answer (tests)."""
    tasks = int(launcher.get("tasks_per_node") or 1)
    if tasks > 1:
        raise ConfigError(
            f"{_LAUNCHER}.tasks_per_node={tasks}: srun would start {tasks} copies of the same training "
            f"run in one run directory; a tmexp job is one process that starts its collectors itself: "
            f"set {_LAUNCHER}.tasks_per_node=1 and give it more {_LAUNCHER}.cpus_per_task."
        )
    request = Request.of(launcher)
    all_nodes, default = nodes_and_default if nodes_and_default is not None else partition_nodes()
    partitions = sorted({n.partition for n in all_nodes})
    partition = request.partition or default
    if partition is None:
        raise ConfigError(
            f"{_LAUNCHER}.partition is null and this cluster has no default partition: set "
            f"{_LAUNCHER}.partition to one of {', '.join(partitions) or '(none)'}."
        )
    nodes = [n for n in all_nodes if n.partition == partition]
    if not nodes:
        raise ConfigError(
            f"{_LAUNCHER}.partition={partition}: no such partition on this cluster; choose one of "
            f"{', '.join(partitions) or '(none)'}."
        )
    offer = _offer(partition, nodes)
    most = lambda attr: max(getattr(n, attr) for n in nodes)  # noqa: E731
    if request.cpus > most("cpus"):
        asks = f"{request.cpus} CPUs per node"
        raise ConfigError(
            f"{_LAUNCHER}.cpus_per_task={launcher.cpus_per_task} asks for {asks}, but {offer}; lower "
            f"{_LAUNCHER}.cpus_per_task (with performance.gpu_collectors_count) or choose another "
            f"{_LAUNCHER}.partition."
        )
    if request.memory_mb is not None and request.memory_mb > most("memory_mb"):
        raise ConfigError(
            f"{_LAUNCHER}.mem_gb={launcher.mem_gb} is more memory than any node has ({offer}); "
            f"lower {_LAUNCHER}.mem_gb or choose another {_LAUNCHER}.partition."
        )
    if request.gpus > most("gpus"):
        fix = "set it to null (a CPU job)" if most("gpus") == 0 else f"lower it to {most('gpus')}"
        raise ConfigError(
            f"{_LAUNCHER}.gpus_per_node={request.gpus} asks for more GPUs than any node has "
            f"({offer}): {fix}, or choose another {_LAUNCHER}.partition."
        )
    fitting = [n for n in nodes if request.fits(n)]
    if len(fitting) < request.nodes:
        raise ConfigError(
            f"{_LAUNCHER} asks for {request.nodes} node(s) with {request.cpus} CPUs, "
            f"{(request.memory_mb or 0) / 1024:.0f} GB and {request.gpus} GPUs each, but only "
            f"{len(fitting)} node(s) of partition {partition} have all of that ({offer}): lower "
            f"{_LAUNCHER}.nodes, cpus_per_task, mem_gb or gpus_per_node."
        )
    limit = nodes[0].time_limit_min
    if limit is not None and request.timeout_min > limit:
        raise ConfigError(
            f"{_LAUNCHER}.timeout_min={launcher.timeout_min} is longer than partition {partition}'s "
            f"time limit ({limit:g} min): lower it (jobs requeue themselves at their limit)."
        )


# ----- what the sweep's jobs are doing: squeue for the queue, sacct (accounting) for jobs that ended ---------------
LIVE_STATES = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESV_DEL_HOLD",
    "SUSPENDED",
    "COMPLETING",
    "CONFIGURING",
    "RESIZING",
    "STOPPED",
    "SIGNALING",
    "STAGE_OUT",
    "SPECIAL_EXIT",
}


@dataclass(frozen=True)
class QueuedJob:
    job_id: str  # <array>_<task>, or <job>
    state: str
    reason: str


@dataclass(frozen=True)
class EndedJob:
    job_id: str
    state: str  # COMPLETED, FAILED, CANCELLED, OUT_OF_MEMORY, NODE_FAIL, TIMEOUT, ... (or a live state: sacct lags)
    exit_code: str  # "<code>:<signal>"

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


def array_ids(job_ids: list[str]) -> list[str]:
    """The distinct array (or job) ids of ``<array>_<task>`` ids, sorted numerically."""
    return sorted({j.split("_")[0] for j in job_ids}, key=lambda j: (len(j), j))


def _query(command: list[str], timeout: float = 60) -> str | None:
    """A query's stdout, or None when SLURM did not answer (the caller waits and asks again)."""
    try:
        answer = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if answer.returncode != 0:
        if "Invalid job id" in answer.stderr:  # older SLURM: every id of the list is gone
            return ""
        return None
    return answer.stdout


def parse_squeue(text: str) -> dict[str, QueuedJob]:
    """``squeue -h -r -o %i|%T|%r`` output: array tasks one per line."""
    jobs = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) == 3:
            jobs[fields[0]] = QueuedJob(*fields)
    return jobs


def squeue(job_ids: list[str]) -> dict[str, QueuedJob] | None:
    """The queue entries of the jobs (and of every task of arrays among them), by id; None when squeue did not
    answer. A job that left the queue is not in it."""
    if not job_ids:
        return {}
    jobs: dict[str, QueuedJob] = {}
    ids = array_ids(job_ids)
    for start in range(0, len(ids), 200):  # keep the command line short
        out = _query(["squeue", "-h", "-r", "-j", ",".join(ids[start : start + 200]), "-o", "%i|%T|%r"])
        if out is None:
            return None
        jobs.update(parse_squeue(out))
    return jobs


def _expand_sacct_id(job_id: str) -> list[str]:
    """``123_4`` -> [123_4]; ``123_[1-3,7%2]`` (array tasks that have not started) -> [123_1, 123_2, 123_3, 123_7]."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not match:
        return [job_id]
    array, spec = match.group(1), match.group(2).split("%")[0]
    tasks = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        tasks += [f"{array}_{t}" for t in range(int(low), int(high or low) + 1)]
    return tasks


def parse_sacct(text: str) -> dict[str, EndedJob]:
    """``sacct -X -n -P -o JobID,State,ExitCode`` output, by job id (``CANCELLED by 1000`` -> ``CANCELLED``)."""
    jobs = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 3 or not fields[0]:
            continue
        state = fields[1].split()[0] if fields[1].split() else "UNKNOWN"
        for job_id in _expand_sacct_id(fields[0]):
            jobs[job_id] = EndedJob(job_id, state, fields[2])
    return jobs


def sacct(job_ids: list[str]) -> dict[str, EndedJob] | None:
    """What SLURM's accounting says of the jobs (every task of arrays among them); None when sacct did not answer."""
    if not job_ids:
        return {}
    jobs: dict[str, EndedJob] = {}
    ids = array_ids(job_ids)
    for start in range(0, len(ids), 200):
        out = _query(
            ["sacct", "-X", "-n", "-P", "-j", ",".join(ids[start : start + 200]), "-o", "JobID,State,ExitCode"]
        )
        if out is None:
            return None
        jobs.update(parse_sacct(out))
    return jobs


def queued_count() -> int | None:
    """How many jobs (array tasks counted one by one) this user has in the queue; None when squeue did not answer."""
    out = _query(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i"])
    return None if out is None else len(out.split())


# ----- the cluster's limits on submission ------------------------------------------------------------------------
@dataclass(frozen=True)
class SubmitLimits:
    max_array_size: int  # an array's task indices must be below this (MaxArraySize)
    max_submit: int | None  # jobs this user may have queued or running at once (QOS / association MaxSubmit)
    source: str  # where max_submit comes from, for messages


def parse_max_array_size(scontrol_config: str) -> int:
    """``MaxArraySize`` from ``scontrol show config`` (1001 when it is not there: SLURM's default)."""
    match = re.search(r"^\s*MaxArraySize\s*=\s*(\d+)", scontrol_config, re.MULTILINE)
    return int(match.group(1)) if match else 1001


def _limit(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def parse_qos_max_submit(sacctmgr_qos: str, qos: str) -> int | None:
    """``MaxSubmitPU`` of ``qos`` in ``sacctmgr -n -P show qos format=Name,MaxSubmitPU,MaxJobsPU``; None: no limit."""
    for line in sacctmgr_qos.splitlines():
        fields = line.strip().split("|")
        if len(fields) >= 2 and fields[0] == qos:
            return _limit(fields[1])
    return None


def parse_assoc(sacctmgr_assoc: str, user: str, account: str | None) -> tuple[str | None, int | None]:
    """(default QOS, MaxSubmit) of the user's association in ``sacctmgr -n -P show assoc
    format=Account,User,Partition,DefaultQOS,MaxSubmit``: the row of ``account`` (any account when None)."""
    for line in sacctmgr_assoc.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5 or fields[1] != user or (account and fields[0] != account):
            continue
        return fields[3] or None, _limit(fields[4])
    return None, None


def submit_limits(launcher: Any, query: Callable[[list[str]], str | None] | None = None) -> SubmitLimits:
    """The array size and the number of queued jobs this cluster allows this user (``hydra.launcher.max_array_size``
    and ``max_submit`` win when set). What cannot be read (no accounting) is no limit. ``query``: runs a command
    (tests pass recorded outputs)."""
    _query = query or globals()["_query"]
    max_array = launcher.get("max_array_size") or parse_max_array_size(_query(["scontrol", "show", "config"]) or "")
    if launcher.get("max_submit"):
        return SubmitLimits(int(max_array), int(launcher.max_submit), "hydra.launcher.max_submit")
    user = getpass.getuser()
    assoc = (
        _query(
            [
                "sacctmgr",
                "-n",
                "-P",
                "show",
                "assoc",
                f"user={user}",
                "format=Account,User,Partition,DefaultQOS,MaxSubmit",
            ]
        )
        or ""
    )
    default_qos, assoc_max = parse_assoc(assoc, user, launcher.get("account"))
    qos = launcher.get("qos") or default_qos or "normal"
    qos_max = parse_qos_max_submit(
        _query(["sacctmgr", "-n", "-P", "show", "qos", "format=Name,MaxSubmitPU,MaxJobsPU"]) or "", qos
    )
    limits = [
        (n, what)
        for n, what in ((qos_max, f"QOS {qos} MaxSubmitPU"), (assoc_max, "association MaxSubmit"))
        if n is not None
    ]
    if not limits:
        return SubmitLimits(int(max_array), None, "none")
    n, what = min(limits)
    return SubmitLimits(int(max_array), n, what)


# ----- watching the queue ---------------------------------------------------------------------------------------
def never_clears(reason: str) -> bool:
    return reason in NEVER_CLEARS or bool(_NEVER_CLEARS_PATTERN.match(reason))


def queue_line(jobs: list[QueuedJob]) -> str:
    """'3 PENDING (Resources), 1 RUNNING' style summary of the queue entries."""
    counts: dict[str, int] = {}
    for job in jobs:
        key = f"{job.state} ({job.reason})" if job.state == "PENDING" else job.state
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {key}" for key, n in counts.items())


class QueueWatcher:
    """Judges the queue entries of a sweep's jobs, each time the sweep's driver looks at the queue.

    It reports the states and pending reasons about every ``report_every_s`` seconds. It gives up on the sweep
    (``on_never``: cancel its jobs, exit 2) only when the request can never be met, and only while none of the
    sweep's jobs has started: a pending reason that waiting cannot clear (``never_clears``) and, for a partition
    limit, a request that no node of the partition can meet even when every node is up (``check_request`` against
    the nodes' configured CPUs, memory, GPUs and the partition's time limit). Everything else is waiting, whatever
    the reason: ``Resources``, ``Priority``, ``ReqNodeNotAvail`` (nodes drained, down or reserved), held jobs, group
    limits. Once a job of the sweep started, nothing is cancelled: a limit that changed afterwards is reported.
    """

    def __init__(
        self,
        launcher: Any,
        report_every_s: float = 60.0,
        stream: TextIO | None = None,
        on_never: Callable[[str, list[str]], None] | None = None,
        nodes: Callable[[], tuple[list[Node], str | None]] | None = None,
        started: bool = False,
    ):
        self.launcher = launcher
        self.report_every_s = report_every_s
        self.stream = stream
        self.on_never = on_never or _cancel_and_exit
        self.nodes = nodes or partition_nodes
        self.started = started  # a job of the sweep was seen running or ended: nothing is cancelled any more
        self._first_pending: float | None = None
        self._last_report = -float("inf")

    def check(self, jobs: list[QueuedJob], ended: bool = False) -> str | None:
        """Judge the sweep's queue entries once (``ended``: some of its jobs already left the queue). Returns the
        line printed, if any."""
        if ended or any(j.state != "PENDING" for j in jobs):
            self.started = True
        pending = [j for j in jobs if j.state == "PENDING"]
        if not pending:
            self._first_pending = None
            return None
        hopeless = [j for j in pending if never_clears(j.reason)]
        if hopeless and not self.started:
            why = self._can_never_start(hopeless[0].reason)
            if why is not None:
                ids = array_ids([j.job_id for j in jobs])
                self.on_never(
                    f"the sweep's SLURM jobs can never start: {queue_line(hopeless)}, {why}; cancelled "
                    f"job(s) {', '.join(ids)}. Fix the hydra.launcher request (partition, cpus_per_task, "
                    f"mem_gb, gpus_per_node, timeout_min, account, qos) and run the command again.",
                    ids,
                )
                return None
        now = time.monotonic()
        self._first_pending = self._first_pending or now
        if now - self._last_report < self.report_every_s:
            return None
        self._last_report = now
        line = f"[slurm] {time.strftime('%H:%M:%S')} waiting {now - self._first_pending:.0f} s: {queue_line(jobs)}"
        print(line, file=self.stream or sys.stdout, flush=True)
        return line

    def _can_never_start(self, reason: str) -> str | None:
        """Why the request can never start, or None when it might (then the sweep waits)."""
        if reason.startswith(("QOS", "Assoc", "Invalid", "Account", "Dependency")):
            return (
                "the request breaks a limit of the account or QOS"
                if reason != "DependencyNeverSatisfied"
                else "a dependency can never be satisfied"
            )
        try:
            check_request(self.launcher, self.nodes())
        except ConfigError as error:
            return f"the request breaks a limit of the partition ({error})"
        return None  # the partition's nodes could run it (a limit changed back, nodes came back): wait


def _cancel_and_exit(message: str, job_ids: list[str]) -> None:
    """Cancel the jobs and end the whole command: nothing of the sweep ran, so nothing is lost."""
    subprocess.run(["scancel", *job_ids], capture_output=True, timeout=30)
    sys.stdout.flush()
    print(f"tmexp.train: error: {message}", file=sys.stderr, flush=True)
    os._exit(2)
