"""The machine's processes, as the game launcher needs them: list by name, tell alive, kill by pid, focus a window.

Without psutil or pywin32: ``/proc`` on Linux (Wine's games included, named ``TmForever.exe`` there), ``tasklist``
and ``taskkill`` on Windows. A machine-wide lock (a locked file in the temporary directory) makes the games of every
task on a machine start one at a time, as Linesight starts its games.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

IS_WINDOWS = os.name == "nt"
LOCK_PATH = Path(tempfile.gettempdir()) / "tmexp-game-launch.lock"


def _name_matches(name: str, prefix: str) -> bool:
    return name.lower().startswith(prefix.lower())


def pids_named(prefix: str) -> set[int]:
    """Pids of the running processes whose executable name starts with ``prefix`` (case-insensitive; no zombies)."""
    if IS_WINDOWS:
        out = subprocess.run(["tasklist", "/FO", "CSV", "/NH"], capture_output=True, text=True).stdout
        return {
            int(row[1])
            for row in csv.reader(io.StringIO(out))
            if len(row) > 1 and row[1].isdigit() and _name_matches(row[0], prefix)
        }
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        # Wine names its processes after the .exe; argv[0] may be a Windows path.
        base = argv0.replace("\\", "/").rsplit("/", 1)[-1]
        if (_name_matches(comm, prefix) or _name_matches(base, prefix)) and alive(int(entry)):
            pids.add(int(entry))
    return pids


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    if IS_WINDOWS:
        out = subprocess.run(
            ["tasklist", "/FI", f"PID eq {pid}", "/FO", "CSV", "/NH"], capture_output=True, text=True
        ).stdout
        return any(len(row) > 1 and row[1] == str(pid) for row in csv.reader(io.StringIO(out)))
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def session_of(pid: int) -> int | None:
    """The session id of ``pid`` (Linux; None elsewhere or when it is gone): a launch command's children share it."""
    if IS_WINDOWS:
        return None
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def kill(pid: int) -> None:
    """End ``pid`` at once (SIGKILL; ``taskkill /F`` on Windows), as Linesight ends a game."""
    if IS_WINDOWS:
        subprocess.run(["taskkill", "/PID", str(pid), "/F"], capture_output=True)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def kill_tree(process: subprocess.Popen) -> None:
    """End a launch command and what it started that still runs in its session (its process group)."""
    if process.poll() is not None and IS_WINDOWS:
        return
    if IS_WINDOWS:
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` and it can be bound (no game, no other program holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        if probe.connect_ex((host, port)) == 0:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def focus_command(setting: str, pid: int) -> list[str] | str | None:
    """The command that focuses the game's window once, or None (``setting`` "" or "auto" with no tool here)."""
    if not setting:
        return None
    if setting != "auto":
        return setting.replace("{pid}", str(pid))
    if IS_WINDOWS:
        return ["powershell", "-NoProfile", "-Command", f"(New-Object -ComObject WScript.Shell).AppActivate({pid})"]
    if shutil.which("xdotool"):
        # Wine gives the game several windows: the one titled TrackMania (Linesight: "TrackMania Modded").
        return ["xdotool", "search", "--all", "--pid", str(pid), "--name", "TrackMania", "windowactivate"]
    return None


class LaunchLock:
    """The machine-wide lock held from a game's launch until it answered and was focused (one start at a time)."""

    def __init__(self, path: Path = LOCK_PATH):
        self.path = path
        self._file: IO[bytes] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> None:
        if self._file is not None:
            return
        handle = open(self.path, "a+b")
        if sys.platform == "win32":  # not IS_WINDOWS: mypy knows msvcrt's names only under this test
            import msvcrt

            while True:
                try:
                    handle.seek(0)
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after 10 s: keep waiting
                    continue
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        self._file = handle

    def release(self) -> None:
        if self._file is None:
            return
        try:
            if sys.platform == "win32":  # as in acquire
                import msvcrt

                self._file.seek(0)
                with contextlib.suppress(OSError):
                    msvcrt.locking(self._file.fileno(), msvcrt.LK_UNLCK, 1)
            else:
                import fcntl

                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        finally:
            self._file.close()
            self._file = None
