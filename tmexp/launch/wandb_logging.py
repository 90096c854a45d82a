"""Optional Weights & Biases mirror of a run: ``logger.wandb=true`` (``pip install -e '.[wandb]'``).

TensorBoard stays the run's record; W&B gets a copy of every scalar the run's ``SummaryWriter`` writes (wandb's
TensorBoard patch, which must be in place before the writer is created, so ``start`` runs before ``build``), the
resolved config and ``run_meta.json`` (under ``run_meta``). W&B's files go to ``<run_dir>/wandb/``; ``wandb sync
<run_dir>/wandb/offline-run-*`` uploads an offline run. The W&B run id is derived from the run directory, so a
resumed or requeued run continues the same W&B run. The event files are not copied into W&B's folder
(``save=False``): the analysis would read the copy as a second run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tmexp import rundir

log = logging.getLogger(__name__)


def run_id(run_dir: str | Path) -> str:
    """The W&B run id of a run directory: the same for every start of the same run."""
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def start(logger_cfg, run_dir: str | Path, run_name: str, config: Mapping[str, Any], meta: Mapping[str, Any]):
    """Start (or resume) the W&B run of ``run_dir``; call before the run's SummaryWriter exists.

    Args:
        logger_cfg: the ``logger`` config node (``wandb_project``, ``wandb_entity``, ``wandb_mode``).
        config: the resolved config, as written to ``config_resolved.yaml``.
        meta: ``run_meta.json``'s content.
    Returns:
        The wandb run; give it to ``finish``.
    """
    import wandb

    run_dir = Path(run_dir)
    wandb.tensorboard.patch(root_logdir=str(rundir.RunDir(run_dir).tensorboard), save=False)
    return wandb.init(
        project=logger_cfg.wandb_project,
        entity=logger_cfg.wandb_entity,
        mode=str(logger_cfg.wandb_mode),
        dir=str(run_dir),
        id=run_id(run_dir),
        resume="allow",
        name=f"{run_name}/{run_dir.name}",
        group=run_name,
        config={**config, "run_meta": dict(meta)},
    )


def finish(wandb_run, failed: bool) -> None:
    """End the W&B run (exit code 1 when the run failed) and undo the TensorBoard patch, so a next run in the same
    process (a sweep's basic launcher) starts clean."""
    import wandb

    try:
        wandb_run.finish(exit_code=1 if failed else 0)
    finally:
        wandb.tensorboard.unpatch()
