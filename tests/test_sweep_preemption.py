"""PreemptionWatcher in-process: signals only set a flag; outside submitit, stopping exits with 128 + the signal."""

from __future__ import annotations

import os
import signal

import pytest

from tmexp.launch.preemption import PreemptionWatcher, ignore_preemption_signals


@pytest.fixture
def restore_signal_handlers(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_sigterm_only_sets_the_flag_and_stopping_exits_143(restore_signal_handlers):
    watcher = PreemptionWatcher()
    assert not watcher.requested and not watcher.under_submitit
    os.kill(os.getpid(), signal.SIGTERM)  # the process survives: the handler only records it
    assert watcher.requested and watcher.signal == signal.SIGTERM
    with pytest.raises(SystemExit) as stopped:
        watcher.requeue_and_exit()
    assert stopped.value.code == 128 + signal.SIGTERM


def test_outside_submitit_the_checkpoint_signal_is_left_alone(restore_signal_handlers):
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    watcher = PreemptionWatcher()
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN  # USR2 means nothing to a plain run
    os.kill(os.getpid(), signal.SIGUSR2)
    assert not watcher.requested


def test_the_first_signal_is_the_one_remembered(restore_signal_handlers, monkeypatch):
    watcher = PreemptionWatcher()
    watcher._on_signal(signal.SIGUSR2, None)
    watcher._on_signal(signal.SIGTERM, None)  # SLURM's requeue follows the checkpoint signal with SIGTERM
    assert watcher.signal == signal.SIGUSR2


def test_child_processes_can_ignore_the_stop_signals(restore_signal_handlers):
    ignore_preemption_signals()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN
