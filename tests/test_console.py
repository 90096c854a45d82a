"""A run's console: a progress bar on a terminal (a pseudo-terminal here), plain lines on a pipe."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from types import SimpleNamespace

from tmexp.core import metrics
from tmexp.launch import console

REPO = Path(__file__).resolve().parents[1]
RUN = [
    sys.executable,
    "-m",
    "tmexp.train",
    "+experiment=smoke",
    "training.max_frames=600",
    "training.console_every_seconds=0.5",
]
PLAIN_LINE = re.compile(r"\[\s*\d+m\d\ds\] frames [\d,]+ \(\d+/s\) \| races \d+")


def test_eta_is_the_nearer_limit():
    assert console.eta_s(frames=100, seconds=10, frames_per_s=10, max_frames=400, max_minutes=0) == 30
    assert console.eta_s(frames=100, seconds=10, frames_per_s=10, max_frames=400, max_minutes=0.5) == 20
    assert console.eta_s(frames=100, seconds=10, frames_per_s=0, max_frames=400, max_minutes=0) is None
    assert console.eta_s(frames=100, seconds=10, frames_per_s=10, max_frames=0, max_minutes=0) is None
    assert console.progress(frames=100, seconds=15, max_frames=400, max_minutes=0.5) == 0.5
    assert console.progress(frames=500, seconds=0, max_frames=400, max_minutes=0) == 1.0


def counters(frames, batches, seconds, best_ms=None):
    return SimpleNamespace(
        frames=frames, batches=batches, training_seconds=seconds, alltime_min_ms={"A01": best_ms} if best_ms else {}
    )


def test_the_bar_shows_eta_rates_best_time_and_learner_share():
    stream = io.StringIO()
    bar = console.ProgressBar("A01", batch_size=64, max_frames=1000, max_minutes=0, stream=stream)
    values = {
        metrics.FRAMES_PER_S: 50.0,
        metrics.LEARNER_PERCENTAGE: 87.0,
        metrics.TRANSITIONS_LEARNED_PER_S: 64 * 17.5,
    }
    bar.update(values, counters(100, 10, 2.0), "line")
    bar.close(values, counters(500, 30, 10.0, best_ms=24321), "line")
    shown = stream.getvalue().split("\r")[-1]
    assert re.search(
        r"frames 500 +50%\|.*\| ETA 0m10s \| 50 frames/s \| 17.5 updates/s \| best 24.32 s \| learner 87%", shown
    ), shown


def test_a_map_cycles_bar_shows_each_maps_best():
    stream = io.StringIO()
    bar = console.ProgressBar(["A01", "hock"], batch_size=64, max_frames=0, max_minutes=0, stream=stream)
    values = {metrics.FRAMES_PER_S: 50.0, metrics.LEARNER_PERCENTAGE: 87.0, metrics.TRANSITIONS_LEARNED_PER_S: 640.0}
    bar.close(values, counters(500, 30, 10.0, best_ms=24321), "line")
    assert "best A01 24.32 s, hock - |" in stream.getvalue().split("\r")[-1]


def test_auto_is_lines_when_the_stream_is_not_a_terminal():
    assert isinstance(console.make_console("auto", "A01", 64, 0, 0, io.StringIO()), console.LineConsole)
    assert isinstance(console.make_console("bar", "A01", 64, 0, 0, io.StringIO()), console.ProgressBar)


def test_a_run_on_a_pseudo_terminal_shows_one_progress_bar(tmp_path):
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        RUN + [f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        close_fds=True,
    )
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the run closed its end
            break
        if not chunk:
            break
        output += chunk
    os.close(main)
    assert proc.wait(timeout=30) == 0, output.decode(errors="replace")[-3000:]
    text = output.decode(errors="replace")
    redraws = [part for part in text.split("\r") if "frames/s" in part]
    assert len(redraws) >= 2, text[-3000:]  # the bar was drawn, then redrawn in place
    last = redraws[-1]
    assert re.search(r"frames [\d,]+ +\d+%\|", last) and "ETA" in last and "updates/s" in last
    assert "best " in last and "learner " in last
    assert not PLAIN_LINE.search(text), "plain console lines on a terminal"
    before_bar = text[: text.index("frames/s")]  # said before the first frame
    assert f"run directory: {tmp_path / 'run'}" in before_bar
    assert f"tensorboard --logdir {tmp_path / 'run'}" in before_bar


def test_a_run_on_a_pipe_prints_plain_lines(tmp_path):
    result = subprocess.run(
        RUN + [f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert PLAIN_LINE.search(result.stdout), result.stdout[-3000:]
    assert "\r" not in result.stdout and "ETA" not in result.stdout


def _pty_run(argv: list[str], columns: int, stop_when: bytes | None = None, timeout: float = 240) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal of ``columns`` columns (rows 0 when columns is 0); with ``stop_when``, send it
    Ctrl-C's SIGINT once its output holds that; return its exit status and output."""
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40 if columns else 0, columns, 0, 0))
    proc = subprocess.Popen(argv, cwd=REPO, stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    output, sent = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the run closed its end
                break
            if not chunk:
                break
            output += chunk
            if stop_when is not None and not sent and output.count(stop_when) >= 2:
                proc.send_signal(signal.SIGINT)
                sent = True
    finally:
        os.close(main)
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
    return proc.wait(timeout=60), output.decode(errors="replace")


def test_a_run_the_suite_starts_takes_ctrl_c_even_when_the_suite_runs_in_the_background():
    """The Ctrl-C tests need their runs to turn SIGINT into KeyboardInterrupt; a suite started by ``pytest &`` in a
    script inherits SIGINT ignored, which conftest undoes (else the Ctrl-C tests hang until their deadline)."""
    probe = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "True"


def test_ctrl_c_says_so_on_a_line_of_its_own_and_the_run_without_an_end_says_how_to_set_one(tmp_path):
    """The default run has no end: it says how to give it one. Ctrl-C's notice is not written over the bar."""
    argv = [
        sys.executable,
        "-m",
        "tmexp.train",
        "+experiment=smoke",
        "training.max_frames=0",
        "training.console_every_seconds=0.5",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    code, text = _pty_run(argv, columns=160, stop_when=b"frames/s")
    assert code == 0, text[-3000:]
    assert "no end is set" in text and "training.max_minutes=N" in text
    notice = [line for line in text.split("\n") if "interrupted: saving a checkpoint" in line]
    assert len(notice) == 1, text[-3000:]
    shown = notice[0].rstrip("\r").split("\r")[-1]  # what stays on that line once the carriage returns are done
    assert "interrupted: saving a checkpoint" in shown and "frames/s" not in shown, repr(notice[0])
    assert (tmp_path / "run" / "checkpoint" / "latest.pt").is_file()


def test_a_terminal_of_zero_columns_still_shows_the_bar(monkeypatch):
    """Some consoles report a size of 0 x 0: tqdm would draw nothing; the bar takes COLUMNS (or 80) instead."""
    monkeypatch.setenv("COLUMNS", "120")
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
    stream = os.fdopen(secondary, "w")
    try:
        bar = console.ProgressBar("A01", batch_size=64, max_frames=1000, max_minutes=0, stream=stream)
        values = {
            metrics.FRAMES_PER_S: 50.0,
            metrics.LEARNER_PERCENTAGE: 87.0,
            metrics.TRANSITIONS_LEARNED_PER_S: 64 * 17.5,
        }
        bar.close(values, counters(500, 30, 10.0), "line")
        stream.flush()
        shown, deadline = "", time.monotonic() + 10
        while "frames 500" not in shown and time.monotonic() < deadline:  # the draws may arrive in several reads
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                shown += os.read(main, 65536).decode(errors="replace")
    finally:
        stream.close()
        os.close(main)
    last = [part for part in shown.replace("\n", "\r").split("\r") if "frames 500" in part]
    assert last, repr(shown)
    assert re.search(r"frames 500 +50%\|.+\| ETA 0m10s \| 50 frames/s", last[-1]), repr(last[-1])
    assert len(last[-1]) <= 120


def test_the_start_lines_name_the_run_directory_and_how_to_end_a_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = console.start_lines(tmp_path / "outputs" / "2026-12-07" / "10-00-00", max_frames=0, max_minutes=0)
    assert lines[0] == "run directory: outputs/2026-12-07/10-00-00"
    assert lines[1].endswith("tensorboard --logdir outputs/2026-12-07/10-00-00")
    assert "training.max_minutes=N" in lines[2]
    assert len(console.start_lines("/elsewhere/run", max_frames=0, max_minutes=15)) == 2  # it has an end
    assert console.start_lines("/elsewhere/run", 100, 0)[0] == "run directory: /elsewhere/run"


def test_a_run_that_ignores_ctrl_c_says_how_else_to_stop_it(monkeypatch):
    """Started with ``&`` by a script, a run inherits SIGINT ignored: its start lines name SIGTERM and its pid."""
    ignored = {signal.SIGINT: signal.SIG_IGN}
    monkeypatch.setattr(console.signal, "getsignal", lambda signum: ignored.get(signum, signal.SIG_DFL))
    unbounded = console.start_lines("/elsewhere/run", max_frames=0, max_minutes=0)
    assert f"until kill -TERM {os.getpid()}, which saves a checkpoint" in unbounded[2] and "Ctrl-C" not in unbounded[2]
    bounded = console.start_lines("/elsewhere/run", max_frames=0, max_minutes=15)
    assert (
        bounded[2]
        == f"Ctrl-C is ignored here (started in the background): kill -TERM {os.getpid()} stops it with a checkpoint"
    )
    ignored.clear()
    assert len(console.start_lines("/elsewhere/run", max_frames=0, max_minutes=15)) == 2
