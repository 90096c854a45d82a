"""What a run shows while it trains: one live progress bar on a terminal, plain lines anywhere else.

The learner hands its observers the interval's scalars (keyed by TensorBoard tag), its counters and its console
line, every ``training.console_every_seconds`` and once at the end. ``logger.console`` chooses:

- ``bar`` (``auto`` on a terminal): one tqdm bar towards whichever limit comes first, ``training.max_frames`` or
  ``training.max_minutes``, with its ETA, frames/s, updates/s, the best time and the learner's busy %. Log records
  (a new best time, warnings) print above the bar.
- ``lines`` (``auto`` when stdout is a file or a pipe: SLURM logs, CI, ``| tee``): the console line, as before.

Before either, the run prints where it is written and the ``tensorboard --logdir`` line to watch it
(``start_lines``). Log records, the Ctrl-C notice included, print on lines of their own above the bar.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from tmexp.core import metrics

_BAR_STEPS = 1000  # the bar's resolution: 0.1 %


class LineConsole:
    """Prints the learner's console line."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream

    def _bests(self, alltime_min_ms: Mapping[str, int]) -> str:
        def best(m: str) -> str:
            ms = alltime_min_ms.get(m)
            return f"{ms / 1000:.2f} s" if ms is not None else "-"

        if len(self.map_names) == 1:
            return best(self.map_names[0])
        return ", ".join(f"{m} {best(m)}" for m in self.map_names)

    def update(self, values: Mapping[str, float], counters: Any, line: str) -> None:
        print(line, file=self.stream or sys.stdout, flush=True)

    def close(self, values: Mapping[str, float], counters: Any, line: str) -> None:
        self.update(values, counters, line)


def eta_s(frames: int, seconds: float, frames_per_s: float, max_frames: int, max_minutes: float) -> float | None:
    """Seconds until the first limit is reached (None: no limit, or no frame rate yet for a frame limit)."""
    left = []
    if max_frames:
        left.append(max(0.0, max_frames - frames) / frames_per_s if frames_per_s > 0 else None)
    if max_minutes:
        left.append(max(0.0, 60 * max_minutes - seconds))
    known = [t for t in left if t is not None]
    return min(known) if known else None


def progress(frames: int, seconds: float, max_frames: int, max_minutes: float) -> float | None:
    """The fraction done towards the nearer limit (0..1), None without a limit."""
    done = []
    if max_frames:
        done.append(frames / max_frames)
    if max_minutes:
        done.append(seconds / (60 * max_minutes))
    return min(1.0, max(done)) if done else None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def _screen_shape(stream: TextIO) -> tuple[int | None, int | None]:
    """(columns, rows) of the terminal ``stream`` writes to, as tqdm sizes its bar; (None, None) off a terminal.

    A terminal that reports zero columns or rows (some IDE consoles, a pseudo-terminal nobody sized) would make tqdm
    draw nothing at all: it then gets ``COLUMNS`` / ``LINES``, or 80 x 24, as ``shutil.get_terminal_size`` gives."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):  # not a terminal, or no file descriptor (io.StringIO)
        return None, None
    fallback = shutil.get_terminal_size()
    return size.columns or fallback.columns, size.lines or fallback.lines


class _StatsBar(tqdm):
    """A tqdm bar with a free text field on its right, ``{stats}`` (tqdm's ``{postfix}`` starts with a comma), sized
    to the terminal at every redraw (``_screen_shape``)."""

    stats = "starting"

    def __init__(self, *args, **kwargs):
        if "file" in kwargs:  # a bar of ours; tqdm.write's helper bars stay tqdm's
            kwargs["ncols"], kwargs["nrows"] = _screen_shape(kwargs["file"])
        super().__init__(*args, **kwargs)
        if "file" in kwargs:
            self.dynamic_ncols = _screen_shape  # what tqdm calls before each redraw when the size may change

    @property
    def format_dict(self):
        return {**super().format_dict, "stats": self.stats}


class ProgressBar:
    """One tqdm bar for a run (see the module docstring)."""

    def __init__(
        self,
        map_name: str | Sequence[str],
        batch_size: int,
        max_frames: int,
        max_minutes: float,
        stream: TextIO | None = None,
    ):
        # a map cycle's maps each get their best time on the bar
        self.map_names = [map_name] if isinstance(map_name, str) else list(map_name)
        self.batch_size = batch_size
        self.max_frames, self.max_minutes = max_frames, max_minutes
        limited = bool(max_frames or max_minutes)
        self.bar = _StatsBar(
            total=_BAR_STEPS if limited else None,
            file=stream or sys.stdout,
            bar_format="{desc} {percentage:3.0f}%|{bar}| {stats}" if limited else "{desc} | {stats}",
            desc="frames 0",
        )

    def _bests(self, alltime_min_ms: Mapping[str, int]) -> str:
        def best(m: str) -> str:
            ms = alltime_min_ms.get(m)
            return f"{ms / 1000:.2f} s" if ms is not None else "-"

        if len(self.map_names) == 1:
            return best(self.map_names[0])
        return ", ".join(f"{m} {best(m)}" for m in self.map_names)

    def update(self, values: Mapping[str, float], counters: Any, line: str) -> None:
        c = counters
        frames_per_s = values.get(metrics.FRAMES_PER_S, 0.0)
        updates_per_s = values.get(metrics.TRANSITIONS_LEARNED_PER_S, 0.0) / self.batch_size
        fraction = progress(c.frames, c.training_seconds, self.max_frames, self.max_minutes)
        eta = eta_s(c.frames, c.training_seconds, frames_per_s, self.max_frames, self.max_minutes)
        self.bar.set_description_str(f"frames {c.frames:,}", refresh=False)
        self.bar.stats = (
            (f"ETA {_duration(eta)} | " if fraction is not None else "")
            + f"{frames_per_s:.0f} frames/s | {updates_per_s:.1f} updates/s | "
            f"best {self._bests(c.alltime_min_ms)} | "
            f"learner {values.get(metrics.LEARNER_PERCENTAGE, 0.0):.0f}%"
        )
        if fraction is not None:
            self.bar.n = int(fraction * _BAR_STEPS)
        self.bar.refresh()

    def close(self, values: Mapping[str, float], counters: Any, line: str) -> None:
        self.update(values, counters, line)
        self.bar.close()  # the bar's last state stays on the terminal

    def logging_above(self):
        """A context in which log records print above the bar instead of through it."""
        from tqdm.contrib.logging import logging_redirect_tqdm

        return logging_redirect_tqdm(tqdm_class=_StatsBar)


def start_lines(run_dir: str | Path, max_frames: int, max_minutes: float) -> list[str]:
    """What a run says before its first frame: where it is written, how to watch it, and, for a run without a
    limit, how to give it one (its bar then has an ETA). A run that ignores Ctrl-C (started with ``&`` by a shell
    without job control, which ignores SIGINT for it) says how else to stop it with a checkpoint."""
    shown = _shown_path(Path(run_dir))
    lines = [f"run directory: {shown}", f"watch it with:  tensorboard --logdir {shown}"]
    takes_ctrl_c = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    stop = "Ctrl-C" if takes_ctrl_c else f"kill -TERM {os.getpid()}"
    if not max_frames and not max_minutes:
        lines.append(
            f"no end is set: the run trains until {stop}, which saves a checkpoint; training.max_minutes=N "
            "(or training.max_frames=N) gives it an end and its progress bar an ETA"
        )
    elif not takes_ctrl_c:
        lines.append(f"Ctrl-C is ignored here (started in the background): {stop} stops it with a checkpoint")
    return lines


def _shown_path(path: Path) -> Path:
    """``path`` relative to the working directory where it lies below it (Hydra's ``outputs/...``), else as is."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def make_console(
    mode: str,
    map_name: str | Sequence[str],
    batch_size: int,
    max_frames: int,
    max_minutes: float,
    stream: TextIO | None = None,
):
    """The console for ``logger.console`` (``auto``: a bar when ``stream``, stdout by default, is a terminal)."""
    stream = stream or sys.stdout
    if str(mode) == "bar" or (str(mode) == "auto" and _is_terminal(stream)):
        return ProgressBar(map_name, batch_size, max_frames, max_minutes, stream)
    return LineConsole(stream)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def logging_context(console) -> contextlib.AbstractContextManager:
    """Where ``console`` is a bar, route log records above it; otherwise nothing to do."""
    return console.logging_above() if isinstance(console, ProgressBar) else contextlib.nullcontext()
