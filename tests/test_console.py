"""A run's console: a progress bar on a terminal (a pseudo-terminal here), plain lines on a pipe."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
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
RUN = [sys.executable, "-m", "tmexp.train", "+experiment=smoke", "training.max_frames=600",
       "training.console_every_seconds=0.5"]
PLAIN_LINE = re.compile(r"\[\s*\d+m\d\ds\] frames [\d,]+ \(\d+/s\) \| races \d+")


def test_eta_is_the_nearer_limit():
    assert console.eta_s(frames=100, seconds=10, frames_per_s=10, max_frames=400, max_minutes=0) == 30
    assert console.eta_s(frames=100, seconds=10, frames_per_s=10, max_frames=400, max_minutes=0.5) == 20
    assert console.eta_s(frames=100, seconds=10, frames_per_s=0, max_frames=400, max_minutes=0) is None
    assert console.eta_s(frames=100, seconds=10, frames_per_s=10, max_frames=0, max_minutes=0) is None
    assert console.progress(frames=100, seconds=15, max_frames=400, max_minutes=0.5) == 0.5
    assert console.progress(frames=500, seconds=0, max_frames=400, max_minutes=0) == 1.0


def counters(frames, batches, seconds, best_ms=None):
    return SimpleNamespace(frames=frames, batches=batches, training_seconds=seconds,
                           alltime_min_ms={"A01": best_ms} if best_ms else {})


def test_the_bar_shows_eta_rates_best_time_and_learner_share():
    stream = io.StringIO()
    bar = console.ProgressBar("A01", batch_size=64, max_frames=1000, max_minutes=0, stream=stream)
    values = {metrics.FRAMES_PER_S: 50.0, metrics.LEARNER_PERCENTAGE: 87.0,
              metrics.TRANSITIONS_LEARNED_PER_S: 64 * 17.5}
    bar.update(values, counters(100, 10, 2.0), "line")
    bar.close(values, counters(500, 30, 10.0, best_ms=24321), "line")
    shown = stream.getvalue().split("\r")[-1]
    assert re.search(r"frames 500 +50%\|.*\| ETA 0m10s \| 50 frames/s \| 17.5 updates/s \| best 24.32 s \| learner 87%",
                     shown), shown


def test_auto_is_lines_when_the_stream_is_not_a_terminal():
    assert isinstance(console.make_console("auto", "A01", 64, 0, 0, io.StringIO()), console.LineConsole)
    assert isinstance(console.make_console("bar", "A01", 64, 0, 0, io.StringIO()), console.ProgressBar)


def test_a_run_on_a_pseudo_terminal_shows_one_progress_bar(tmp_path):
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(RUN + [f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, stdin=secondary,
                            stdout=secondary, stderr=secondary, close_fds=True)
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


def test_a_run_on_a_pipe_prints_plain_lines(tmp_path):
    result = subprocess.run(RUN + [f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert PLAIN_LINE.search(result.stdout), result.stdout[-3000:]
    assert "\r" not in result.stdout and "ETA" not in result.stdout
