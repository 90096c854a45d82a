"""Preemption and time limits: turn submitit's checkpoint signal into a flag the training loop checks between steps.

submitit's own handler (``submitit.core.job_environment.SignalHandler``) checkpoints and requeues *inside the signal
handler*, in the middle of whatever the training loop was doing, and ``hydra_submitit_launcher`` has nothing to save
there. So the training app installs a ``PreemptionWatcher`` at start instead::

    watcher = PreemptionWatcher()
    reason = train(cfg, run_dir, should_stop=lambda: watcher.requested)   # saves a checkpoint when asked to stop
    if reason == "stop_requested":
        watcher.requeue_and_exit()

Under submitit (``hydra/launcher=local`` or ``slurm``) the watcher catches the checkpoint signal (USR2 unless
``SUBMITIT_PREEMPT_SIGNAL`` says otherwise; SLURM sends it ``signal_delay_s`` before the time limit, a preempting
scheduler or ``scancel --signal=USR2`` at any time) and SIGTERM. ``requeue_and_exit`` then does what submitit's
handler does, from a safe point: it rewrites the job's pickle through the launcher's ``checkpoint()`` (which
resubmits the same Hydra job, so the requeued job runs in the same run directory and resumes from its checkpoint),
counts a time-out against ``max_num_timeout``, requeues the job (``scontrol requeue`` on SLURM, a restart on
submitit's local executor) and exits.

SIGTERM is saved but not requeued: SLURM sends it when a job is cancelled (requeuing would resurrect a job its user
stopped), when a job is requeued by ``scontrol requeue`` or a ``PreemptMode=REQUEUE`` partition (SLURM requeues it
itself), and at the time limit when no checkpoint signal came first. Outside submitit the watcher only handles
SIGTERM: the run saves, writes status "preempted" and exits with 128 + SIGTERM; relaunching the same command with
the same run directory resumes it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import NoReturn

log = logging.getLogger("tmexp.launch.preemption")

# Exit status of a run stopped by a signal it handled (the shell's convention for "killed by signal N").
_SIGNAL_EXIT_BASE = 128


def _submitit_environment():
    """The submitit ``JobEnvironment`` of this process, or None when it is not a submitit job."""
    if not os.environ.get("SUBMITIT_EXECUTOR") or not os.environ.get("SUBMITIT_FOLDER"):
        return None
    import submitit

    try:
        return submitit.JobEnvironment()
    except RuntimeError:  # SUBMITIT_EXECUTOR names an executor whose environment is not active here
        return None


def preemption_signals() -> tuple[int, ...]:
    """The signals that ask a job to stop: SIGTERM and submitit's checkpoint signal. Child processes (collectors)
    ignore them: SLURM signals every process of the job, and only the main process decides when to stop."""
    return (signal.SIGTERM, _checkpoint_signal())


def ignore_preemption_signals() -> None:
    """Call first thing in a child process that does not get ``preemption_signals()`` passed to it."""
    for signum in preemption_signals():
        signal.signal(signum, signal.SIG_IGN)


def _checkpoint_signal() -> signal.Signals:
    from submitit.core.job_environment import JobEnvironment

    return signal.Signals(JobEnvironment._usr_sig())


class PreemptionWatcher:
    """Sets ``requested`` when the job is asked to stop; ``requeue_and_exit()`` requeues it (under submitit) and exits.

    Create it in the main thread of the training process, after submitit has installed its handlers (that is, from
    the Hydra task function): it replaces them.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signal: signal.Signals | None = None  # the first stop signal received
        self._started_at = time.time()
        self._env = _submitit_environment()
        self._checkpoint_signal = _checkpoint_signal() if self._env is not None else None
        if threading.current_thread() is not threading.main_thread():
            # signal.signal only works in the main thread; tests that call train() from a worker thread land here.
            log.warning("PreemptionWatcher created outside the main thread: stop signals are not intercepted")
            return
        signal.signal(signal.SIGTERM, self._on_signal)
        if self._checkpoint_signal is not None:
            signal.signal(self._checkpoint_signal, self._on_signal)

    @property
    def under_submitit(self) -> bool:
        return self._env is not None

    def _on_signal(self, signum: int, frame) -> None:
        # Only a flag: the training loop saves at the next step boundary, where its state is consistent.
        if not self.requested:
            self.signal = signal.Signals(signum)
        self.requested = True

    def requeue_and_exit(self) -> NoReturn:
        """Requeue this submitit job (after the caller saved its checkpoint) and exit; outside submitit, just exit."""
        received = self.signal or signal.SIGTERM
        if self._env is None or received != self._checkpoint_signal:
            log.warning(
                "stopped by %s after saving a checkpoint; not requeued: relaunch the same command to resume",
                received.name,
            )
            sys.exit(_SIGNAL_EXIT_BASE + int(received))
        self._requeue_like_submitit(received)

    def _requeue_like_submitit(self, received: signal.Signals) -> NoReturn:
        # Reuse submitit's own handler, now from a safe point instead of from inside the signal. It asks the launcher
        # for its checkpoint() (hydra_submitit_launcher returns a DelayedSubmission of the same Hydra job), rewrites
        # the job's pickle with the remaining time-out count, requeues and exits with sys.exit(-1). When the job
        # has timed out more than max_num_timeout times it raises UncompletedJobError instead, which fails the job.
        from submitit.core.job_environment import SignalHandler
        from submitit.core.utils import DelayedSubmission

        paths = self._env.paths
        delayed = DelayedSubmission.load(paths.submitted_pickle)
        handler = SignalHandler(self._env, paths, delayed)
        # submitit decides "timed out" versus "preempted" from the job's wall time: count it from our start, not
        # from now (its handler would have been created when the job started).
        handler._start_time = self._started_at
        log.warning("stopped by %s after saving a checkpoint: requeuing job %s", received.name, self._env.job_id)
        handler.checkpoint_and_try_requeue(int(received))
        raise AssertionError("submitit's checkpoint_and_try_requeue returned without exiting")  # pragma: no cover
