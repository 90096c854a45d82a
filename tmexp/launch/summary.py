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
"""

from __future__ import annotations

import atexit
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tmexp import rundir

FINISHED = "finished"


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

    @property
    def ok(self) -> bool:
        return self.status == FINISHED


def expected_jobs(sweep_overrides: list[str], sweeper_params: dict[str, Any] | None = None) -> list[list[str]]:
    """Each job's overrides, in Hydra's job-number order (the basic sweeper's cartesian product)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    # Like BasicSweeper.sweep: the sweeper's own params (from an experiment file) come first.
    arguments = [f"{k}={v}" for k, v in (sweeper_params or {}).items()] + list(sweep_overrides)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for job in batch]


def _job_dirs(sweep_dir: Path) -> dict[int, Path]:
    """Job number -> run directory, from each job's saved Hydra config."""
    found = {}
    # Job directories sit one level down (hydra.sweep.subdir=${hydra.job.num}) or two (a nested subdir pattern).
    for hydra_dir in [*sweep_dir.glob(f"*/{rundir.HYDRA}"), *sweep_dir.glob(f"*/*/{rundir.HYDRA}")]:
        run_dir = hydra_dir.parent
        if rundir.SUBMITIT in run_dir.parts:
            continue
        try:
            num = OmegaConf.load(rundir.RunDir(run_dir).hydra_yaml).hydra.job.num
        except Exception:  # a job killed while Hydra wrote the file: judged by its status below
            continue
        if isinstance(num, int):
            found[num] = run_dir
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
    nums = sorted(set(range(len(expected or []))) | set(dirs))
    results = []
    for num in nums:
        run_dir = dirs.get(num)
        overrides = list(expected[num]) if expected and num < len(expected) else []
        if run_dir is not None:
            overrides = rundir.read_overrides(run_dir) or overrides
        status = (rundir.read_status(run_dir) if run_dir is not None else None) or {}
        result = JobResult(num=num, overrides=overrides, status=status.get("status", "missing"), run_dir=run_dir,
                           frames=status.get("frames"), error=status.get("error"))
        if not result.ok:
            result.logs = _logs(sweep_dir, num, run_dir, overrides)
        results.append(result)
    return results


_WHY = {
    "failed": "raised an error",
    "preempted": "stopped by a signal and not resumed",
    "running": "died without a word (killed, out of memory, node failure?)",
    "missing": "never started or died before writing status.json",
}


def format_summary(sweep_dir: str | Path, results: list[JobResult]) -> str:
    """Human-readable lines: a header, one line per job, and the log paths of the jobs that did not finish."""
    failed = [r for r in results if not r.ok]
    lines = [f"sweep {sweep_dir}: {len(results) - len(failed)} of {len(results)} jobs finished"
             + (f", {len(failed)} did not" if failed else "")]
    for r in results:
        frames = f"{r.frames} frames" if r.frames is not None else "-"
        where = str(r.run_dir) if r.run_dir is not None else "(no run directory)"
        status = r.status if r.ok else r.status.upper()
        overrides = " ".join(r.overrides) or "(no overrides)"
        lines.append(f"  #{r.num:<3} {status:<10} {overrides}  [{frames}]  {where}")
        if not r.ok:
            lines.append(f"        {_WHY.get(r.status, r.status)}" + (f": {r.error}" if r.error else ""))
            for log in r.logs:
                lines.append(f"        log: {log}")
    return "\n".join(lines)


class SweepSummary(Callback):
    """Hydra callback: print the sweep summary at the end of a multirun; exit 1 if any job did not finish."""

    def __init__(self) -> None:
        self._config: DictConfig | None = None
        self._reported = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._config = config
        atexit.register(self._report_at_exit)

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
            job_return.return_value  # re-raises the job's exception (and names its overrides on stderr)
        except BaseException as error:
            traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
            sys.stderr.flush()

    def _report_at_exit(self) -> None:
        if not self._reported:  # a job raised and Hydra is exiting with status 1: still say which and where
            self._report()

    def _report(self) -> bool:
        """Print the summary; return whether every job finished."""
        self._reported = True
        config = self._config
        sweep_dir = Path(str(config.hydra.sweep.dir))
        overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        params = config.hydra.sweeper.get("params") or {}
        try:
            expected = expected_jobs(overrides, OmegaConf.to_container(params, resolve=False))
        except Exception:  # a sweeper other than Hydra's basic one: report the job directories found
            expected = None
        results = collect(sweep_dir, expected)
        print(format_summary(sweep_dir, results), flush=True)
        return all(r.ok for r in results)
