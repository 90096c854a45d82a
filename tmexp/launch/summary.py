"""Sweep summary: one line per job of a multirun, judged by each job's own ``status.json``, and a non-zero exit
when any job did not finish.

Why not the scheduler's word: a Hydra job that raises is caught by Hydra inside the submitit worker, which then
exits normally, so SLURM reports it COMPLETED. The run directory's ``status.json`` (written by the training app)
says what really happened; ``tmexp.rundir`` reads it and finds a job's submitit logs, as it does for the analysis.

Registered in ``conf/config.yaml``::

    hydra:
      callbacks:
        sweep_summary:
          _target_: tmexp.launch.summary.SweepSummary

Hydra calls ``on_multirun_end`` only when no job raised; when one did, Hydra prints that job's error and exits with
status 1, and the summary is printed at exit instead (registered with ``atexit`` when the sweep starts).

A sweep run again with the same ``hydra.sweep.dir`` resumes as a whole (``tmexp/launch/resume.py``): each job's line
says what this command did with it: finished, skipped (it had finished before), resumed (from a checkpoint), retried
(N) (``performance.max_retries``) or FAILED. The callback records each command's id in the sweep directory
(``rundir.write_sweep_command``) and the jobs record it in ``status.json`` beside what they did, so that what an
earlier command did is not reported as this one's.

While the sweep runs, the callback prints one line per job as it finishes or fails (``JobProgress``, from the same
``status.json`` files, whatever the launcher); on ``hydra/launcher=slurm`` the launcher's driver watches the queue
and reports jobs SLURM ended without a result, whose state (``OUT_OF_MEMORY``, ``NODE_FAIL``, ``CANCELLED``, ...) the
summary then gives from the sweep's ledger (``tmexp/launch/slurm_launcher.py``). After a search
(``hydra/sweeper=optuna``) the summary adds the study's trials and its best trial with the overrides of its job.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tmexp import rundir
from tmexp.launch.slurm_launcher import read_ledger_states

FINISHED = "finished"
PRUNED = "pruned"  # a search stopped the run early: a result (its objective so far), not a failure


@dataclass
class JobResult:
    """What one job of a sweep left behind."""

    num: int
    overrides: list[str]
    status: str  # status.json's status, or "missing" when the job never wrote one
    run_dir: Path | None
    frames: int | None = None
    error: str | None = None
    logs: list[Path] = field(default_factory=list)
    objective: str | None = None  # "<name> <value> <unit>" when the run recorded its objective
    # what this command did with the job (status.json's fields of the same command id)
    skipped: bool = False
    resumed: bool = False
    retries: int = 0
    retry_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in (FINISHED, PRUNED)

    @property
    def outcome(self) -> str:
        """finished, skipped, resumed or retried (N) for a job that finished; its status in capitals otherwise."""
        if not self.ok:
            return self.status.upper()
        if self.status == PRUNED:
            return PRUNED
        if self.skipped:
            return "skipped"
        if self.retries:
            return f"retried ({self.retries})"
        return "resumed" if self.resumed else FINISHED


def _this_command(status: dict[str, Any], command: str | None) -> dict[str, Any]:
    """What ``status`` says this command (``command``, its id) did with the job: {} when another command wrote it."""
    if status.get("sweep") != command:
        return {}
    retries, errors = status.get("retries"), status.get("retry_errors")
    return {
        "skipped": bool(status.get("skipped")),
        "resumed": bool(status.get("resumed")),
        "retries": retries if isinstance(retries, int) else 0,
        "retry_errors": [str(e) for e in errors] if isinstance(errors, list) else [],
    }


def expected_jobs(sweep_overrides: list[str], sweeper_params: dict[str, Any] | None = None) -> list[list[str]]:
    """Each job's overrides, in Hydra's job-number order (the basic sweeper's cartesian product)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    # Like BasicSweeper.sweep: the sweeper's own params (from an experiment file) come first.
    arguments = [f"{k}={v}" for k, v in (sweeper_params or {}).items()] + list(sweep_overrides)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for job in batch]


def _job_dirs(sweep_dir: Path, known: dict[Path, int] | None = None) -> dict[int, Path]:
    """Job number -> run directory, from each job's saved Hydra config. ``known``: run directory -> job number
    already read (a cache that this call extends, for callers that look again and again)."""
    found = {}
    known = {} if known is None else known
    # Job directories sit one level down (hydra.sweep.subdir=${hydra.job.num}) or two (a nested subdir pattern).
    for hydra_dir in [*sweep_dir.glob(f"*/{rundir.HYDRA}"), *sweep_dir.glob(f"*/*/{rundir.HYDRA}")]:
        run_dir = hydra_dir.parent
        if rundir.SUBMITIT in run_dir.parts:
            continue
        if run_dir not in known:
            try:
                num = OmegaConf.load(rundir.RunDir(run_dir).hydra_yaml).hydra.job.num
            except Exception:  # a job killed while Hydra wrote the file: judged by its status below
                continue
            if not isinstance(num, int):
                continue
            known[run_dir] = num
        found[known[run_dir]] = run_dir
    return found


def _logs(sweep_dir: Path, num: int, run_dir: Path | None, overrides: list[str]) -> list[Path]:
    """Where to look for why a job did not finish: its submitit logs (or their folder) and Hydra's job log."""
    logs = rundir.submitit_logs(sweep_dir, run_dir, job_num=num, overrides=overrides or None)
    if not logs and (sweep_dir / rundir.SUBMITIT).is_dir():
        logs = [sweep_dir / rundir.SUBMITIT]  # not found by id, array index or overrides: the folder holds them
    if run_dir is not None and (run_dir / "train.log").is_file():
        logs.append(run_dir / "train.log")
    return logs


def collect(sweep_dir: str | Path, expected: list[list[str]] | None = None) -> list[JobResult]:
    """One ``JobResult`` per job: those in ``expected`` (by job number) and any other job directory found."""
    sweep_dir = Path(sweep_dir)
    dirs = _job_dirs(sweep_dir)
    command = rundir.read_sweep_command(sweep_dir)
    slurm_states = read_ledger_states(sweep_dir)
    nums = sorted(set(range(len(expected or []))) | set(dirs))
    results = []
    for num in nums:
        run_dir = dirs.get(num)
        overrides = list(expected[num]) if expected and num < len(expected) else []
        if run_dir is not None:
            overrides = rundir.read_overrides(run_dir) or overrides
        status = (rundir.read_status(run_dir) if run_dir is not None else None) or {}
        holder = rundir.lock_holder(run_dir) if run_dir is not None and status.get("sweep") != command else None
        if holder is not None:  # another process works in it: this command's job was refused, nothing touched
            status = {"status": "in use", "error": f"by {holder}"}
        result = JobResult(
            num=num,
            overrides=overrides,
            status=status.get("status", "missing"),
            run_dir=run_dir,
            frames=status.get("frames"),
            error=status.get("error"),
            objective=_objective_text(status.get("objective")),
            **_this_command(status, command),
        )
        if not result.ok:
            result.logs = _logs(sweep_dir, num, run_dir, overrides)
            job_id, slurm_state = slurm_states.get(num, (None, None))
            if slurm_state:  # SLURM ended it without a result: out of memory, node failure, scancel, time limit
                result.error = f"SLURM ended job {job_id} {slurm_state}" + (f"; {result.error}" if result.error else "")
        results.append(result)
    return results


def _objective_text(recorded: Any) -> str | None:
    if not isinstance(recorded, dict) or recorded.get("value") is None:
        return None
    return f"{recorded.get('name')} {recorded['value']:.6g} {recorded.get('unit', '')}".rstrip()


_WHY = {
    "failed": "raised an error",
    "preempted": "stopped by a signal and not resumed",
    "running": "died without a word (killed, out of memory, node failure?)",
    "missing": "never started or died before writing status.json",
    "in use": "not started: its run directory is in use",
}


def _retried(retries: int) -> str:
    return f"after {retries} {'retry' if retries == 1 else 'retries'}"


def format_summary(sweep_dir: str | Path, results: list[JobResult]) -> str:
    """Human-readable lines: a header, one line per job, and the log paths of the jobs that did not finish."""
    failed = [r for r in results if not r.ok]
    how = {
        "pruned": sum(r.status == PRUNED for r in results),
        "skipped as already finished": sum(r.ok and r.skipped for r in results),
        "resumed": sum(r.outcome == "resumed" for r in results),
        "retried": sum(r.ok and r.retries > 0 for r in results),
    }
    how_text = ", ".join(f"{n} {what}" for what, n in how.items() if n)
    lines = [
        f"sweep {sweep_dir}: {len(results) - len(failed)} of {len(results)} jobs finished"
        + (f" ({how_text})" if how_text else "")
        + (f", {len(failed)} did not" if failed else "")
    ]
    for r in results:
        frames = f"{r.frames} frames" if r.frames is not None else "-"
        frames += f", {r.objective}" if r.objective else ""
        where = str(r.run_dir) if r.run_dir is not None else "(no run directory)"
        overrides = " ".join(r.overrides) or "(no overrides)"
        lines.append(f"  #{r.num:<3} {r.outcome:<11} {overrides}  [{frames}]  {where}")
        if not r.ok:
            why = _WHY.get(r.status, r.status) + (f" {_retried(r.retries)}" if r.retries else "")
            lines.append(f"        {why}" + (f": {r.error}" if r.error else ""))
        for error in r.retry_errors:
            lines.append(f"        retried after: {error}")
        if not r.ok:
            for log in r.logs:
                lines.append(f"        log: {log}")
    return "\n".join(lines)


class JobProgress:
    """Prints one line per job of the sweep when its ``status.json`` says it finished, was skipped or failed (a
    thread polling the sweep directory every ``poll_s`` seconds). What jobs were when it starts (an earlier command
    in the same sweep directory) is not announced; a job that ends again (run again, skipped) is."""

    DONE = ("finished", "failed", "stopped", "pruned")

    def __init__(self, sweep_dir: str | Path, poll_s: float = 2.0):
        self.sweep_dir, self.poll_s = Path(sweep_dir), poll_s
        self._nums: dict[Path, int] = {}  # job directories already identified
        self._announced: dict[int, Any] = {}  # job -> the updated_at of the status last announced (or found)
        self._announced.update({num: status.get("updated_at") for num, (_, status) in self._done_now().items()})
        self._lock = threading.Lock()  # the last poll runs in the main thread while the thread may be polling
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tmexp-job-progress", daemon=True)

    def start(self) -> JobProgress:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, after a last look: every job done by now gets its line before the summary."""
        self._stop.set()
        self.poll()

    def _done_now(self) -> dict[int, tuple[Path, dict]]:
        """The jobs whose status is done and not the one last announced: job -> (run directory, status)."""
        done = {}
        for num, run_dir in _job_dirs(self.sweep_dir, self._nums).items():
            status = rundir.read_status(run_dir) or {}
            if status.get("status") in self.DONE and status.get("updated_at") != self._announced.get(num, False):
                done[num] = (run_dir, status)
        return done

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def poll(self) -> list[str]:
        """Print (and return) a line for each job done since the last poll."""
        with self._lock:
            lines = []
            command = rundir.read_sweep_command(self.sweep_dir)
            for num, (run_dir, status) in sorted(self._done_now().items()):
                self._announced[num] = status.get("updated_at")
                done = _this_command(status, command)
                outcome = str(status.get("status"))
                if outcome == FINISHED and done:
                    outcome = JobResult(num, [], outcome, run_dir, **done).outcome
                    outcome += " (already finished)" if done["skipped"] else ""
                elif done.get("retries"):
                    outcome += f" {_retried(done['retries'])}"
                objective = _objective_text(status.get("objective"))
                details = ", ".join(
                    x
                    for x in (
                        f"{status.get('frames')} frames" if "frames" in status else "",
                        objective or "",
                        status.get("error") or "",
                    )
                    if x
                )
                lines.append(
                    f"job #{num} {outcome}: {' '.join(rundir.read_overrides(run_dir))}"
                    + (f"  [{details}]" if details else "")
                )
            for line in lines:
                print(line, flush=True)
            return lines


class SweepSummary(Callback):
    """Hydra callback: a line per job as jobs end, the SLURM queue's word while jobs wait, and the sweep summary at
    the end of a multirun; exit 1 if any job did not finish.

    Args (``hydra.callbacks.sweep_summary.*``):
        slurm_report_every_s: how often a line reports the states of waiting SLURM jobs (read by the SLURM
            launcher's driver unless ``hydra.launcher.report_every_s`` is set).
        poll_s: how often the sweep directory is looked at (``hydra.launcher.poll_s``: the SLURM queue).
    """

    def __init__(self, slurm_report_every_s: float = 60.0, poll_s: float = 5.0) -> None:
        self._config: DictConfig | None = None
        self._reported = False
        self._slurm_report_every_s, self._poll_s = slurm_report_every_s, poll_s
        self._watchers: list[Any] = []

    def __getstate__(self) -> dict:
        # submitit pickles the launcher with Hydra's callbacks for each job: the watchers' threads stay here
        return {**self.__dict__, "_watchers": []}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._config = config
        atexit.register(self._report_at_exit)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        rundir.write_sweep_command(sweep_dir)  # before any job starts: each records what it did for this command
        self._watchers.append(JobProgress(sweep_dir, self._poll_s).start())
        # on hydra/launcher=slurm the launcher's driver watches the queue itself (tmexp/launch/slurm_launcher.py)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._config = config
        if not self._report():
            sys.stdout.flush()
            # A callback's exceptions become warnings in Hydra; SystemExit is how a callback sets the exit status.
            sys.exit(1)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # Runs inside the job's process. Hydra keeps a failed job's exception for the launcher and prints nothing
        # there, so without this the job's own log (submitit's .err file on a cluster) would not show why it failed.
        from hydra.core.utils import JobStatus

        if not os.environ.get("SUBMITIT_EXECUTOR"):  # in-process launchers: Hydra itself prints the error
            return
        if job_return.status != JobStatus.FAILED:
            return
        try:
            _ = job_return.return_value  # re-raises the job's exception (and names its overrides on stderr)
        except BaseException as error:
            traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
            sys.stderr.flush()

    def _report_at_exit(self) -> None:
        if not self._reported:  # a job raised and Hydra is exiting with status 1: still say which and where
            self._report()

    def _report(self) -> bool:
        """Print the summary; return whether every job finished."""
        from tmexp.launch import search

        self._reported = True
        for watcher in self._watchers:
            watcher.stop()
        config = self._config
        sweep_dir = Path(str(config.hydra.sweep.dir))
        overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        params = config.hydra.sweeper.get("params") or {}
        try:  # a search draws its jobs (its choices are no grid): the job directories found are its jobs
            expected = (
                None
                if search.is_search(config.hydra.sweeper)
                else expected_jobs(overrides, OmegaConf.to_container(params, resolve=False))
            )
        except Exception:  # a sweeper other than Hydra's basic one: report the job directories found
            expected = None
        results = collect(sweep_dir, expected)
        if search.is_search(config.hydra.sweeper):  # earlier commands' trials are in the study's lines below (a
            # trial they left unfinished is asked again, never resumed): this command's jobs are the sweep's result
            command = rundir.read_sweep_command(sweep_dir)
            results = [
                r
                for r in results
                if (rundir.read_status(r.run_dir) if r.run_dir else None) is None
                or rundir.read_status(r.run_dir).get("sweep") in (None, command)
            ]
        print(format_summary(sweep_dir, results), flush=True)
        if search.is_search(config.hydra.sweeper):
            print("\n".join(search.study_report(config.hydra.sweeper, sweep_dir, config.get("objective"))), flush=True)
        return all(r.ok for r in results)
