"""The game instance manager: one game process per collector, launched, reached, rebooted and restarted.

Collector ``i`` owns one game. The game is started with the configured ``launch_command`` (``{port}`` replaced by
the port): a TMLoader command line on Windows, a Wine script on Linux, or the fake game (``python -m tmexp.sim
fake-game``) in tests. As Linesight does, tmexp owns the game's own process, found among the processes named
``game_process_name`` that appeared during the launch, so the launch command may block while the game runs or return
once it started; a hung game is killed by its own pid. Games start one at a time on a machine (a machine-wide
lock, held until the new game answered and was focused once), and each launched game gets the first free port from
``base_tmi_port + i`` on, chosen under that lock, so that tasks sharing a node never collide.

An instance we launched is rebooted every ``game_reboot_interval`` seconds (between races) and restarted when it
crashes or stops answering. With no launch command, tmexp can still use a game the user started by hand on
``base_tmi_port + i``, but it cannot restart it.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tmexp.envs.tmi import processes
from tmexp.envs.tmi.client import TmiClient
from tmexp.envs.tmi.errors import GameConnectionLost, GameNotConfigured, TmiProtocolError
from tmexp.envs.tmi.params import TmiParams
from tmexp.envs.tmi.protocol import MessageType

log = logging.getLogger(__name__)

# When no launch command is set, how long to look for a game started by hand before failing.
_PROBE_TIMEOUT_S = 0.5
# Ports tried from a collector's own one on, looking for one no other program holds.
_PORT_SEARCH = 200

# The games run in their own sessions (so that stop() can end a launch script and its children): end them
# when the interpreter that launched them exits, even if nobody closed their env, or they would outlive the run.
_LAUNCHED: set[GameInstance] = set()


@atexit.register
def _stop_all_instances() -> None:
    for instance in list(_LAUNCHED):
        try:
            instance.stop()
        except Exception:  # best effort at exit
            pass


class GameInstance:
    """The game process (if we launched it) and the plugin connection of one collector."""

    def __init__(self, params: TmiParams, port: int):
        self.params = params
        self.base_port = port  # the collector's own port; a launched game may get a later free one
        self.port = port
        self.process: subprocess.Popen | None = None  # the launch command
        self.game_pid: int | None = None  # the game's own process, once found
        self.started_at = 0.0
        self.client: TmiClient | None = None
        self.restarts = 0
        self.fresh_launch = False  # launched and not yet connected to: its console is open (Linesight)
        self.focused = False
        self._lock = processes.LaunchLock(
            Path(params.launch_lock_path) if params.launch_lock_path else processes.LOCK_PATH
        )
        self._pids_before: set[int] = set()

    @property
    def can_launch(self) -> bool:
        return bool(self.params.launch_command.strip())

    @property
    def pid(self) -> int | None:
        """The pid that identifies this game process (its own once found, else the launch command's)."""
        if self.game_pid is not None:
            return self.game_pid
        return self.process.pid if self.process is not None else None

    def check_configured(self) -> None:
        """Fail fast when the game can neither be launched nor reached."""
        if self.can_launch:
            return
        probe = TmiClient(self.port, self.params.host, response_timeout_s=_PROBE_TIMEOUT_S)
        try:
            probe.connect(timeout_s=_PROBE_TIMEOUT_S)
        except GameConnectionLost:
            raise GameNotConfigured(
                f"env=tmi needs the game: no TMInterface plugin listens on {self.params.host}:{self.port} and "
                f"env.tmi.launch_command is empty; set env.tmi.launch_command to the command that starts "
                f"Trackmania with TMInterface and Linesight's plugin on port {{port}} (see docs/game.md), or use "
                f"env=sim."
            ) from None
        finally:
            probe.close()

    # ---- process ------------------------------------------------------------------------------------------

    def _free_port(self) -> int:
        for port in range(self.base_port, self.base_port + _PORT_SEARCH):
            if processes.port_free(self.params.host, port):
                return port
        raise GameNotConfigured(
            f"no free port for a game among {self.base_port} .. {self.base_port + _PORT_SEARCH - 1}; set "
            f"env.tmi.base_tmi_port to a free range."
        )

    def launch(self) -> None:
        """Start the game with the launch command (no-op for a game started by hand).

        Takes the machine-wide launch lock, which ``game_ready`` (or ``stop``) releases: games start one at a time.
        """
        if not self.can_launch:
            return
        self._lock.acquire()
        try:
            self.port = self._free_port()
            command = self.params.launch_command.replace("{port}", str(self.port))
            self._pids_before = processes.pids_named(self.params.game_process_name)
            log.info("port %d: launching the game: %s", self.port, command)
            if sys.platform == "win32":  # not os.name: mypy knows the Windows-only names only under this test
                self.process = subprocess.Popen(command, creationflags=subprocess.CREATE_NEW_PROCESS_GROUP)
            else:
                # Own session: stop() can end the launch script and everything it started, and nothing else.
                self.process = subprocess.Popen(shlex.split(command), start_new_session=True)
        except OSError as error:
            self._lock.release()
            raise GameNotConfigured(
                f"env.tmi.launch_command could not be started ({error}); fix the command: {self.params.launch_command}"
            ) from None
        except BaseException:
            self._lock.release()
            raise
        self.game_pid = None
        self.started_at = time.monotonic()
        self.fresh_launch = True
        self.focused = False
        _LAUNCHED.add(self)

    def _find_game_pid(self) -> None:
        """The game's own process: the one named ``game_process_name`` that appeared since the launch."""
        if self.game_pid is not None or self.process is None:
            return
        new = processes.pids_named(self.params.game_process_name) - self._pids_before
        if len(new) > 1:  # another program started one meanwhile: prefer the launch command's own
            new = (
                {pid for pid in new if pid == self.process.pid}
                or {pid for pid in new if processes.session_of(pid) == self.process.pid}
                or {min(new)}
            )
        if new:
            self.game_pid = new.pop()
            log.info("port %d: the game's process is pid %d", self.port, self.game_pid)

    def process_exited(self) -> bool:
        """True when the game we launched is gone (a crash, or killed)."""
        if self.process is None:
            return False
        self._find_game_pid()
        if self.game_pid is None:
            # Not found yet: a launch command that ended with an error took the game with it.
            code = self.process.poll()
            return code is not None and code != 0
        if self.game_pid == self.process.pid:
            return self.process.poll() is not None
        return not processes.alive(self.game_pid)

    def game_ready(self) -> None:
        """The game answered and raced its first frame: focus it once (Linesight) and let the next game start."""
        if self.process is None:
            return
        if not self.focused:
            self.focused = True
            self._find_game_pid()
            if self.game_pid is None:
                log.warning(
                    "port %d: no new process named %r appeared: tmexp watches the launch command (pid %d) "
                    "instead; set env.tmi.game_process_name to the game's process name",
                    self.port,
                    self.params.game_process_name,
                    self.process.pid,
                )
                self.game_pid = self.process.pid if self.process.poll() is None else None
            self._focus()
        self._lock.release()

    def _focus(self) -> None:
        pid = self.game_pid
        command = processes.focus_command(self.params.focus_command, pid) if pid is not None else None
        if command is None:
            if self.params.focus_command == "auto" and os.name != "nt":
                log.info("port %d: xdotool not found: the game's window is not focused (docs/game.md)", self.port)
            return
        try:
            subprocess.run(command, shell=isinstance(command, str), capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as error:
            log.warning("port %d: focusing the game failed (%s)", self.port, error)

    def stop(self) -> None:
        """Close the connection and end the game we launched (if any): its own pid, then the launch command's."""
        self.disconnect()
        self._lock.release()
        if self.process is None:
            return
        self._find_game_pid()
        if self.game_pid is not None and self.game_pid != self.process.pid:
            processes.kill(self.game_pid)
            if not processes.wait_gone(self.game_pid, timeout_s=10):
                log.warning("port %d: the game (pid %d) did not exit", self.port, self.game_pid)
        processes.kill_tree(self.process)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("port %d: the launch command (pid %d) did not exit", self.port, self.process.pid)
        self.process = None
        self.game_pid = None
        _LAUNCHED.discard(self)

    def restart(self) -> None:
        """Stop and launch again (crash, timeout or scheduled reboot); only reconnects to a game started by hand."""
        self.restarts += 1
        if self.can_launch:
            log.warning("port %d: restarting the game (restart #%d)", self.port, self.restarts)
        self.stop()
        self.launch()

    def needs_reboot(self) -> bool:
        """True once an instance we launched has run for ``game_reboot_interval`` seconds."""
        return (
            self.process is not None
            and self.params.game_reboot_interval > 0
            and time.monotonic() - self.started_at >= self.params.game_reboot_interval
        )

    # ---- connection ---------------------------------------------------------------------------------------

    def connect(self) -> TmiClient:
        """Connect to the plugin and read its ON_CONNECT_SYNC, which is left pending for the caller to answer.

        Launches the game first if we manage it and it is not running. Raises GameConnectionLost when the
        plugin does not answer within ``connect_timeout_s`` or the game process exits meanwhile.
        """
        self.disconnect()
        if self.can_launch and (self.process is None or self.process_exited()):
            if self.process_exited():
                log.warning("port %d: the game exited", self.port)
                self.stop()
            self.process = None
            self.launch()
        client = TmiClient(self.port, self.params.host, response_timeout_s=self.params.timeout_during_run_ms / 1000)
        deadline = time.monotonic() + self.params.connect_timeout_s
        while True:
            try:
                client.connect(timeout_s=min(1.0, max(0.05, deadline - time.monotonic())))
                break
            except GameConnectionLost:
                if self.process_exited():
                    assert self.process is not None  # process_exited() is False without a launched game
                    raise GameConnectionLost(
                        f"the game on port {self.port} exited with code {self.process.poll()} before its plugin "
                        f"answered; check env.tmi.launch_command and the game's log."
                    ) from None
                if time.monotonic() >= deadline:
                    raise
        # The plugin greets every new client once it is past the start-up screen, which may take a while.
        client.response_timeout_s = self.params.tmi_protection_timeout_s
        message = client.read_message()
        if message.type != MessageType.ON_CONNECT_SYNC:
            client.close()
            raise TmiProtocolError(
                f"the plugin on port {self.port} opened with {message.type.name} instead of ON_CONNECT_SYNC; "
                f"install Linesight's Python_Link.as (see docs/game.md)."
            )
        client.response_timeout_s = self.params.timeout_during_run_ms / 1000
        self.client = client
        self._find_game_pid()  # the game answered: its process is there to find
        return client

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
