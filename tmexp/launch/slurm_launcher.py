"""``hydra/launcher=slurm``: tmexp's SLURM launcher, submitit's with a driver that may die at any moment.

hydra-submitit-launcher's ``SlurmLauncher`` submits the whole sweep as one array and waits for the results in job
order. This subclass keeps its job function (what runs on the node is the same Hydra job) and replaces the driver:

- **A ledger.** The SLURM id of every job it submits is recorded at once in ``<sweep_dir>/.slurm_jobs.json``.
  Running the same command again (same ``hydra.sweep.dir``) reads it first: a job still queued or running is waited
  for, never submitted twice; a job that finished is not submitted again (its result is read back); a job that
  failed, was cancelled or vanished from SLURM is submitted again (it resumes from its checkpoint). The driver can
  die (logout, SIGHUP, a reboot of the login node) without harm to the jobs; Ctrl-C detaches (exit 130).
  ``python -m tmexp.launch.slurm_launcher <sweep_dir>`` shows where the ledger's jobs are, without waiting.
- **Results as they come.** It polls ``squeue`` for the jobs still queued and, for those that left the queue, reads
  submitit's result file or, without one, SLURM's accounting (``sacct``): a job killed out of memory, by a node
  failure or by ``scancel`` is that job's failure, with SLURM's state, and the other jobs are still waited for.
- **Arrays within the cluster's limits.** The jobs go in arrays of at most ``MaxArraySize - 1`` tasks
  (``scontrol show config``), and no more jobs are queued at once than the QOS or association lets this user
  (``MaxSubmitPU`` / ``MaxSubmit``, ``sacctmgr``); the rest are submitted as queued jobs end.
- **Frozen configs.** Before submitting, each job's config is composed, checked and frozen in the sweep directory
  with the code's commit (``tmexp.launch.freeze``); the job runs the frozen config at every start and requeue.
- **The queue watcher** (``tmexp.launch.slurm.QueueWatcher``) judges every look at the queue.

Hydra instantiates launchers only from its plugin registry, under names in the ``hydra_plugins`` package; ``install``
registers this class there as ``hydra_plugins.tmexp.SlurmLauncher`` (the ``_target_`` of the ``tmexp_slurm`` schema
that ``conf/hydra/launcher/slurm.yaml`` extends) and makes Hydra's basic sweeper leave the per-job composition to
the launcher, which does it once and fast instead of twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

from tmexp.launch import slurm

log = logging.getLogger(__name__)

TARGET = "hydra_plugins.tmexp.SlurmLauncher"
LEDGER = ".slurm_jobs.json"
TMEXP_KEYS = ("max_array_size", "max_submit", "poll_s", "report_every_s")
# A job that left the queue as COMPLETED or FAILED may have written its result a moment before: a shared file
# system can show the file some seconds late. Other endings (OUT_OF_MEMORY, CANCELLED, NODE_FAIL) leave none.
RESULT_GRACE_S = 30.0
# sacct may still say RUNNING shortly after a job left the queue; past this, the job is taken as vanished.
ACCOUNTING_GRACE_S = 120.0


@dataclass
class SlurmLauncherConf(SlurmQueueConf):
    """hydra-submitit-launcher's SLURM options and tmexp's (``conf/hydra/launcher/slurm.yaml`` documents them)."""

    _target_: str = TARGET
    max_array_size: int | None = None  # None: the cluster's MaxArraySize
    max_submit: int | None = None  # None: the QOS's or association's MaxSubmit, else no limit
    poll_s: float = 10.0  # how often the driver looks at the queue
    report_every_s: float | None = None  # how often it prints waiting jobs' states (None: the sweep summary's)


class SlurmJobEnded(RuntimeError):
    """A job SLURM ended without a result from it: out of memory, node failure, cancelled, time limit."""


# ----- the ledger: which SLURM job runs which job of the sweep ---------------------------------------------------
class Ledger:
    """``<sweep_dir>/.slurm_jobs.json``: for each job number, its overrides and every SLURM id it was submitted as
    (the last one is current), and the code state of each submission (``tmexp.launch.freeze``).

    Several drivers may share one ledger in one process (a search launches each trial from its own thread): each
    writes back only the jobs it changed, under a lock, onto what the file holds then."""

    _lock = threading.Lock()

    def __init__(self, sweep_dir: str | Path):
        self.path = Path(sweep_dir) / LEDGER
        self.jobs: dict[int, dict[str, Any]] = self._read()
        self._changed: set[int] = set()

    def _read(self) -> dict[int, dict[str, Any]]:
        return {int(k): v for k, v in (_read_json(self.path).get("jobs") or {}).items()}

    def current(self, num: int) -> str | None:
        ids = self.jobs.get(num, {}).get("slurm_ids") or []
        return ids[-1] if ids else None

    def record(self, submitted: dict[int, str], overrides: dict[int, list[str]], code: str | None) -> None:
        now = datetime.now(timezone.utc).isoformat()
        for num, job_id in submitted.items():
            entry = self.jobs.setdefault(num, {"overrides": overrides[num], "slurm_ids": []})
            entry["slurm_ids"].append(job_id)
            entry.update(submitted_at=now, code=code, slurm_state=None)
            self._changed.add(num)
        self.save()

    def set_state(self, num: int, state: str) -> None:
        self.jobs.setdefault(num, {"slurm_ids": []})["slurm_state"] = state
        self._changed.add(num)

    def set_overrides(self, num: int, overrides: list[str]) -> None:
        self.jobs.setdefault(num, {"slurm_ids": []})["overrides"] = overrides
        self._changed.add(num)

    def save(self) -> None:
        if not self._changed:
            return
        with Ledger._lock:
            on_disk = self._read()
            on_disk.update({num: self.jobs[num] for num in self._changed})
            self.jobs = {**on_disk, **{num: self.jobs[num] for num in self._changed}}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = {"jobs": {str(k): v for k, v in sorted(on_disk.items())}}
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(self.path)
            self._changed.clear()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_ledger_states(sweep_dir: str | Path) -> dict[int, tuple[str | None, str | None]]:
    """Job number -> (current SLURM id, SLURM's final state when the driver saw the job end without a result)."""
    ledger = Ledger(sweep_dir)
    return {num: (ledger.current(num), entry.get("slurm_state")) for num, entry in ledger.jobs.items()}


# ----- the launcher ----------------------------------------------------------------------------------------------
class SlurmLauncher(BaseSubmititLauncher):
    _EXECUTOR = "slurm"

    def __init__(self, **params: Any) -> None:
        self.tmexp = {k: params.pop(k) for k in TMEXP_KEYS if k in params}
        super().__init__(**params)

    # --- on the driver ---
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        nums = list(range(initial_job_idx, initial_job_idx + len(job_overrides)))
        overrides = {num: list(o) for num, o in zip(nums, job_overrides)}
        return SweepDriver(self, sweep_dir, overrides).run()

    def executor(self, parallelism: int):
        """A submitit SLURM executor with this launcher's parameters (as the base class's ``launch`` builds it)."""
        import submitit

        params = dict(self.params)
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=params.pop("submitit_folder"),
            slurm_max_num_timeout=params.pop("max_num_timeout", 0),
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        params["array_parallelism"] = parallelism
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor


class JobRunner:
    """What each submitted job runs: the launcher's job function, with the launcher and Hydra's state read from one
    file the submission wrote (``.frozen/launcher-*.pkl``) instead of pickled again into every job's file.

    submitit pickles the callable and its arguments once per job; the launcher carries the whole config and Hydra's
    config loader, and Hydra's singletons every registered schema: about 10 ms and 100 kB per job, which made
    submitting 5,000 jobs take minutes. A job's own pickle now holds the file's path and its overrides."""

    _loaded: dict[str, tuple[Any, Any]] = {}  # per process: path -> (launcher, singleton state)

    def __init__(self, path: str):
        self.path = path

    @staticmethod
    def save(launcher: SlurmLauncher, sweep_dir: Path) -> JobRunner:
        import cloudpickle

        folder = sweep_dir / ".frozen"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"launcher-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}.pkl"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            cloudpickle.dump((launcher, Singleton.get_state()), f)
        tmp.replace(path)
        return JobRunner(str(path.resolve()))

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str) -> JobReturn:
        import pickle

        if self.path not in JobRunner._loaded:
            with open(self.path, "rb") as f:
                JobRunner._loaded[self.path] = pickle.load(f)
        launcher, singleton_state = JobRunner._loaded[self.path]
        return launcher(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Resubmit the same job (submitit calls this at a preemption or time-out; tmexp.launch.preemption too)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


@contextlib.contextmanager
def _signals_deferred():
    """Hold Ctrl-C, SIGTERM and SIGHUP (in the main thread) until the block ends: a submission and its record in the
    ledger happen together. (SIGKILL cannot be held: a driver killed between sbatch's answer and the record leaves
    jobs the ledger does not know, which a rerun would submit again.)"""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


class SweepDriver:
    """Submits the jobs that need it, then waits for every job of the sweep and collects each as it ends."""

    def __init__(self, launcher: SlurmLauncher, sweep_dir: Path, overrides: dict[int, list[str]]):
        self.launcher, self.sweep_dir, self.overrides = launcher, sweep_dir, overrides
        self.ledger = Ledger(sweep_dir)
        self.poll_s = float(launcher.tmexp.get("poll_s", 10.0))
        callback = OmegaConf.select(launcher.config, "hydra.callbacks.sweep_summary", default=None) or {}
        report_every_s = launcher.tmexp.get("report_every_s") or callback.get("slurm_report_every_s") or 60.0
        self.watcher = slurm.QueueWatcher(launcher.config.hydra.launcher, report_every_s=float(report_every_s))
        self.results: dict[int, JobReturn] = {}
        self.waiting: dict[int, str] = {}  # job number -> SLURM id, queued or running
        self.unsubmitted: list[int] = []
        self._left_queue: dict[int, float] = {}  # when a waiting job was first missing from the queue
        self.runner: JobRunner | None = None

    def run(self) -> list[JobReturn]:
        self._reattach()
        if self.unsubmitted:
            self._freeze(self.unsubmitted)
            self.limits = slurm.submit_limits(self.launcher.config.hydra.launcher)
            self._submit_what_fits()
        try:
            while self.waiting or self.unsubmitted:
                time.sleep(self.poll_s)
                self._poll()
                if self.unsubmitted:
                    self._submit_what_fits()
        except KeyboardInterrupt:
            self._detach()
        return [self.results[num] for num in sorted(self.overrides)]

    def _detach(self) -> None:
        """Ctrl-C: leave the jobs running, say how to come back, and end without a summary of unfinished jobs."""
        self.ledger.save()
        ids = slurm.array_ids(list(self.waiting.values()))
        print(
            f"\n[slurm] detached from {self.sweep_dir}: {len(self.waiting)} jobs still queued or running keep going"
            + (f" (SLURM {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''})" if ids else "")
            + (f", {len(self.unsubmitted)} not submitted yet" if self.unsubmitted else "")
            + ". Run the same command again (same hydra.sweep.dir) to wait for them and submit the rest, or "
            "scancel them to stop the sweep.",
            flush=True,
        )
        sys.stderr.flush()
        os._exit(130)

    # --- what the ledger's jobs are doing, at the start of a command ---
    def _reattach(self) -> None:
        recorded = {num: self.ledger.current(num) for num in self.overrides if self.ledger.current(num)}
        queue = self._ask(slurm.squeue, list(recorded.values()))
        # what is live comes from the queue alone; accounting only says how the others ended (None: no answer)
        accounting = slurm.sacct([j for j in recorded.values() if j not in queue]) or {}
        finished = 0
        for num in sorted(self.overrides):
            job_id = recorded.get(num)
            before = self.ledger.jobs.get(num, {}).get("overrides")
            if job_id is not None and before is not None and before != self.overrides[num]:
                if job_id in queue:
                    from tmexp.validation import ConfigError

                    raise ConfigError(
                        f"job #{num} of {self.sweep_dir} is still queued or running as SLURM job "
                        f"{job_id} with other overrides ({' '.join(before)}): wait for it or scancel "
                        f"it, or give this command another hydra.sweep.dir."
                    )
                from tmexp.launch import freeze

                freeze.frozen_path(self.sweep_dir, num).unlink(missing_ok=True)  # another job now: freeze anew
                self.ledger.set_overrides(num, self.overrides[num])
                job_id = None
            if job_id is None:
                self.unsubmitted.append(num)
            elif job_id in queue:
                self.waiting[num] = job_id
            else:
                ended = accounting.get(job_id)
                result = self._result(num, job_id)
                if result is not None and result.status == JobStatus.COMPLETED:
                    self.results[num] = result
                    finished += 1
                elif ended is not None and ended.live and result is None:
                    self.waiting[num] = job_id  # accounting lags behind the queue: look again
                else:
                    self.unsubmitted.append(num)  # failed, cancelled, out of memory, or unknown to SLURM
        if recorded:
            again = len(recorded) - finished - len(self.waiting)
            print(
                f"[slurm] sweep {self.sweep_dir}: {len(recorded)} of {len(self.overrides)} jobs were submitted "
                f"before ({self._ledger_name()}): {finished} finished (not submitted again), {len(self.waiting)} "
                f"still queued or running (waited for), {again} failed or vanished (submitted again); "
                f"{len(self.overrides) - len(recorded)} never submitted.",
                flush=True,
            )
            if len(recorded) > len(self.waiting):  # some of the sweep's jobs ended: the sweep started
                self.watcher.started = True

    def _ledger_name(self) -> str:
        return str(self.ledger.path.name)

    def _ask(self, query, job_ids: list[str]) -> dict:
        """The queue's answer; while SLURM does not answer, wait and ask again (never guess: a guess could submit a
        live job twice)."""
        warned = False
        while True:
            answer = query(job_ids)
            if answer is not None:
                return answer
            if not warned:
                print(
                    f"[slurm] {time.strftime('%H:%M:%S')} SLURM does not answer {query.__name__}: waiting for it "
                    "(the jobs are not touched)",
                    flush=True,
                )
                warned = True
            time.sleep(self.poll_s)

    # --- submitting ---
    def _freeze(self, nums: list[int]) -> None:
        from tmexp.launch import freeze

        self.code = freeze.freeze_jobs(self.launcher, self.sweep_dir, {n: self.overrides[n] for n in nums})

    def _submit_what_fits(self) -> None:
        limits = self.limits
        room = len(self.unsubmitted)
        if limits.max_submit is not None:
            queued = slurm.queued_count()
            if queued is None:
                return  # SLURM does not answer: try at the next poll
            room = min(room, limits.max_submit - queued)
            if room <= 0:
                if not getattr(self, "_told_limit", False):
                    print(
                        f"[slurm] {len(self.unsubmitted)} jobs wait to be submitted: {queued} jobs of yours are "
                        f"queued and {limits.source} is {limits.max_submit}; they are submitted as jobs end "
                        "(keep this command running, or run it again later)",
                        flush=True,
                    )
                    self._told_limit = True
                return
        chunk = max(1, limits.max_array_size - 1)  # indices 0..MaxArraySize - 2: below SLURM's largest, a round 1000
        batch, self.unsubmitted = self.unsubmitted[:room], self.unsubmitted[room:]
        chunks = [batch[i : i + chunk] for i in range(0, len(batch), chunk)]
        parallelism = int(self.launcher.params.get("array_parallelism") or 256)
        for nums in chunks:
            # array_parallelism is per array: split it between the arrays of one submission
            with _signals_deferred():  # sbatch answered: its ids reach the ledger before Ctrl-C / SIGTERM / SIGHUP
                submitted = self._submit(nums, max(1, parallelism // len(chunks)))
                self.ledger.record(submitted, self.overrides, getattr(self, "code", None))
            self.waiting.update(submitted)
            first = submitted[nums[0]]
            shown = first if len(nums) == 1 else f"{first.split('_')[0]}_[0-{len(nums) - 1}]"
            print(f"[slurm] submitted jobs #{nums[0]}..#{nums[-1]} ({len(nums)}) as {shown}", flush=True)

    def _submit(self, nums: list[int], parallelism: int) -> dict[int, str]:
        executor = self.launcher.executor(parallelism)
        with Ledger._lock:  # one launcher file per launcher, whichever thread submits first
            if getattr(self.launcher, "_tmexp_runner", None) is None:
                self.launcher._tmexp_runner = JobRunner.save(self.launcher, self.sweep_dir)
        self.runner = self.launcher._tmexp_runner
        for num in nums:
            log.info(f"\t#{num} : {' '.join(filter_overrides(self.overrides[num]))}")
        with executor.batch():
            jobs = [
                executor.submit(self.runner, self.overrides[num], "hydra.sweep.dir", num, f"job_id_for_{num}")
                for num in nums
            ]
        return {num: job.job_id for num, job in zip(nums, jobs)}

    # --- waiting ---
    def _poll(self) -> None:
        queue = slurm.squeue(list(self.waiting.values()))
        if queue is None:
            return  # SLURM does not answer: nothing is decided on no answer
        self.watcher.check([queue[j] for j in self.waiting.values() if j in queue], ended=bool(self.results))
        gone = {num: job_id for num, job_id in self.waiting.items() if job_id not in queue}
        if not gone:
            return
        accounting = slurm.sacct(list(gone.values()))  # None: sacct did not answer (or no accounting)
        now = time.monotonic()
        for num, job_id in sorted(gone.items()):
            since = self._left_queue.setdefault(num, now)
            result = self._result(num, job_id)
            if result is None:
                ended = accounting.get(job_id) if accounting is not None else None
                waited = now - since
                if ended is None or ended.live:  # accounting lags, or does not answer: wait, then call it vanished
                    if waited < ACCOUNTING_GRACE_S:
                        continue
                elif ended.state in ("COMPLETED", "FAILED") and waited < RESULT_GRACE_S:
                    continue  # its result file may show up late on a shared file system
                result = self._death(num, job_id, ended if ended is not None and not ended.live else None)
            self.results[num] = result
            del self.waiting[num]
            self._left_queue.pop(num, None)
        self.ledger.save()

    def _result(self, num: int, job_id: str) -> JobReturn | None:
        """The job's own result (submitit's result file), or None when it left none."""
        from submitit.core.utils import JobPaths, pickle_load

        path = JobPaths(self.launcher.params["submitit_folder"], job_id=job_id, task_id=0).result_pickle
        if not path.exists():
            return None
        try:
            outcome, value = pickle_load(path)
        except Exception as error:  # a truncated file: the job died while writing it
            return self._failed(num, f"its result file {path} is unreadable ({type(error).__name__})")
        if outcome == "success" and isinstance(value, JobReturn):
            return value
        return self._failed(num, f"the job raised: {str(value).strip().splitlines()[-1] if value else outcome}")

    def _failed(self, num: int, why: str) -> JobReturn:
        return JobReturn(overrides=self.overrides[num], status=JobStatus.FAILED, _return_value=SlurmJobEnded(why))

    def _death(self, num: int, job_id: str, ended: slurm.EndedJob | None) -> JobReturn:
        state = ended.state if ended is not None else "VANISHED"
        why = (
            f"SLURM job {job_id} ended {state} (exit code {ended.exit_code}) without a result"
            if ended is not None
            else f"SLURM job {job_id} left the queue without a result and SLURM's accounting has no final state for it"
        )
        self.ledger.set_state(num, state)
        print(f"job #{num} FAILED ({state}): {' '.join(self.overrides[num])}  [{why}]", flush=True)
        return self._failed(num, why)


# ----- registration with Hydra -----------------------------------------------------------------------------------
def install() -> None:
    """Register the launcher under ``TARGET`` and its schema as ``hydra/launcher/tmexp_slurm``; make the basic
    sweeper skip its own per-job composition when this launcher composes (and checks) every job. Idempotent."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance().class_name_to_class[TARGET] = SlurmLauncher
    ConfigStore.instance().store(group="hydra/launcher", name="tmexp_slurm", node=SlurmLauncherConf, provider="tmexp")
    validate = BasicSweeper.validate_batch_is_legal
    if getattr(validate, "_tmexp", False):
        return

    def validate_batch_is_legal(self, batch):
        if isinstance(getattr(self, "launcher", None), SlurmLauncher):
            return None  # the launcher composes and checks every job before it submits any (tmexp.launch.freeze)
        return validate(self, batch)

    validate_batch_is_legal._tmexp = True
    BasicSweeper.validate_batch_is_legal = validate_batch_is_legal


# ----- python -m tmexp.launch.slurm_launcher <sweep_dir>: where a sweep's jobs are, without waiting ------------------
def status_lines(sweep_dir: str | Path) -> list[str]:
    """One line per job of the sweep's ledger: its SLURM id, what SLURM says of it, what its run says."""
    from tmexp import rundir
    from tmexp.launch.summary import _job_dirs

    sweep_dir = Path(sweep_dir)
    ledger = Ledger(sweep_dir)
    current = {num: ledger.current(num) for num in sorted(ledger.jobs) if ledger.current(num)}
    queue = slurm.squeue(list(current.values()))
    accounting = slurm.sacct([j for j in current.values() if queue is None or j not in queue])
    if queue is None or accounting is None:
        return [f"SLURM does not answer (squeue/sacct): the ledger {ledger.path} lists {len(current)} jobs"]
    dirs = _job_dirs(sweep_dir)
    counts: dict[str, int] = {}
    lines = []
    for num, job_id in current.items():
        if job_id in queue:
            entry = queue[job_id]
            state = entry.state + (f" ({entry.reason})" if entry.state == "PENDING" else "")
        else:
            state = accounting[job_id].state if job_id in accounting else "UNKNOWN"
        run = (rundir.read_status(dirs[num]) or {}).get("status", "-") if num in dirs else "-"
        counts[state.split()[0]] = counts.get(state.split()[0], 0) + 1
        lines.append(f"  #{num:<4} {job_id:<12} {state:<28} run: {run:<10} {' '.join(ledger.jobs[num]['overrides'])}")
    head = f"sweep {sweep_dir}: {len(current)} jobs in {ledger.path.name}: " + ", ".join(
        f"{n} {state}" for state, n in sorted(counts.items())
    )
    return [head, *lines]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tmexp.launch.slurm_launcher",
        description="Where the SLURM jobs of a sweep are, without waiting for them. "
        "Run the sweep's command again to wait for them and submit the rest.",
    )
    parser.add_argument("sweep_dir", help="the sweep's hydra.sweep.dir")
    args = parser.parse_args(argv)
    if not (Path(args.sweep_dir) / LEDGER).is_file():
        print(
            f"tmexp.launch.slurm_launcher: error: {Path(args.sweep_dir) / LEDGER} does not exist: give the "
            "hydra.sweep.dir of a sweep run with hydra/launcher=slurm.",
            file=sys.stderr,
        )
        return 2
    print("\n".join(status_lines(args.sweep_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
