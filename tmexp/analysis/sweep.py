"""One row per job of a Hydra multirun directory: overrides, final best, counters, status.

Status comes from the job's ``status.json`` (finished / failed / running / preempted), read by ``tmexp.rundir``.
A job without one is failed when a submitit log of that job shows an error, and running otherwise (it has not
written its first status yet). ``tmexp.rundir.submitit_logs`` finds a job's logs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tmexp import rundir
from tmexp.analysis import loading
from tmexp.analysis.tables import detect_maps, run_summary

_ERROR_MARKERS = ("Traceback (most recent call last)", "Error:", "Exception:", "FAILED")


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Hydra job directories (with a .hydra folder) directly under the sweep directory, in job-number order."""
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and rundir.RunDir(p).hydra.is_dir()]

    def key(p: Path):
        return (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name)

    return sorted(jobs, key=key)


def job_status(
    sweep_dir: Path, job: Path, status: dict | None = None, overrides: list[str] | None = None
) -> tuple[str, str | None]:
    """(status, error line or None) of one job: its status.json (``status``, else read from ``job``), else its
    submitit logs."""
    status = status if status is not None else rundir.read_status(job)
    if status and status.get("status"):
        return str(status["status"]), status.get("error")
    for log in rundir.submitit_logs(sweep_dir, job, overrides=overrides):
        text = log.read_text(errors="replace")
        if any(marker in text for marker in _ERROR_MARKERS):
            last = [line for line in text.strip().splitlines() if line.strip()]
            return "failed", last[-1].strip() if last else None
    return "running", None


def sweep_table(sweep_dir: str | Path) -> pd.DataFrame:
    """Rows: jobs; columns: overrides, status, final_best_s, frames, updates, wall_minutes, error."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise loading.RunLoadError(f"{sweep_dir} is not a directory; pass a Hydra multirun directory.")
    jobs = job_dirs(sweep_dir)
    if not jobs:
        raise loading.RunLoadError(
            f"{sweep_dir} holds no Hydra job directories (<n>/.hydra); pass a multirun directory."
        )
    infos = {job.name: loading.describe_run(job, loading.find_runs(job).get(job, []), job.name) for job in jobs}
    with_logs = {name: info.event_files for name, info in infos.items() if info.event_files}
    read = loading.read_event_files(with_logs)
    scalars = read.scalars
    maps = detect_maps(scalars) if len(scalars) else []
    per_run = run_summary(scalars, list(with_logs), maps[0] if maps else None, read.starts) if with_logs else None

    rows = []
    for job in jobs:
        info = infos[job.name]
        status, error = job_status(sweep_dir, job, info.status, info.overrides)
        row = {
            "job": job.name,
            "overrides": ",".join(info.overrides),
            "status": status,
            "final_best_s": np.nan,
            "frames": np.nan,
            "updates": np.nan,
            "wall_minutes": np.nan,
        }
        if per_run is not None and job.name in per_run.index:
            for col in ("final_best_s", "frames", "updates", "wall_minutes"):
                row[col] = per_run.loc[job.name, col]
        st = info.status or {}
        # status.json is written by training itself, so it wins over what the logs show so far.
        if st.get("frames") is not None:
            row["frames"] = st["frames"]
        if st.get("batches") is not None:
            row["updates"] = st["batches"]
        if st.get("wall_minutes") is not None:
            row["wall_minutes"] = st["wall_minutes"]
        if "best_ms" in st:  # null for every map: no race finished yet (the logs hold the 300 s cutoff)
            best = [v for v in (st.get("best_ms") or {}).values() if v is not None]
            row["final_best_s"] = min(best) / 1000.0 if best else np.nan
        row["error"] = error or "-"
        rows.append(row)
    return pd.DataFrame(rows).set_index("job")


SWEEP_FORMATS = {"final_best_s": "{:.3f}", "frames": "{:.0f}", "updates": "{:.0f}", "wall_minutes": "{:.1f}"}
