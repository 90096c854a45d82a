"""The game instance manager: one game process per collector, launched, reached, rebooted and restarted.

Collector ``i`` owns the instance listening on ``base_tmi_port + i``. The game is started with the configured
``launch_command`` (``{port}`` replaced by the port): a TMLoader command line on Windows, a Wine script on Linux,
or the fake game (``python -m tmexp.sim fake-game``) in tests. An instance we launched is rebooted every ``game_reboot_interval`` seconds
(between races) and restarted when it crashes or stops answering. With no launch command, tmexp can still use a
game the user started by hand, but it cannot restart it.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import signal
import subprocess
import time

from tmexp.envs.tmi.client import TmiClient
from tmexp.envs.tmi.errors import GameConnectionLost, GameNotConfigured, TmiProtocolError
from tmexp.envs.tmi.params import TmiParams
from tmexp.envs.tmi.protocol import MessageType

log = logging.getLogger(__name__)

# When no launch command is set, how long to look for a game started by hand before failing.
_PROBE_TIMEOUT_S = 0.5

# The games run in their own sessions (so that stop() can end a launch script and its children): end them
# when the interpreter that launched them exits, even if nobody closed their env, or they would outlive the run.
_LAUNCHED: set["GameInstance"] = set()


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
        self.port = port
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.client: TmiClient | None = None
        self.restarts = 0

    @property
    def can_launch(self) -> bool:
        return bool(self.params.launch_command.strip())

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

    def launch(self) -> None:
        """Start the game with the launch command (no-op for a game started by hand)."""
        if not self.can_launch:
            return
        command = self.params.launch_command.replace("{port}", str(self.port))
        log.info("port %d: launching the game: %s", self.port, command)
        try:
            if os.name == "nt":
                self.process = subprocess.Popen(command, creationflags=subprocess.CREATE_NEW_PROCESS_GROUP)
            else:
                # Own session: stop() can end the game and everything its script started, and nothing else.
                self.process = subprocess.Popen(shlex.split(command), start_new_session=True)
        except OSError as error:
            raise GameNotConfigured(
                f"env.tmi.launch_command could not be started ({error}); fix the command: {command}"
            ) from None
        self.started_at = time.monotonic()
        _LAUNCHED.add(self)

    def process_exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self) -> None:
        """Close the connection and end the game we launched (if any): the launch command and what it started."""
        self.disconnect()
        if self.process is None:
            return
        if os.name == "nt":
            if self.process.poll() is None:
                # /T: the launch command's whole tree (a launcher and the game it started), not just the launcher.
                subprocess.run(["taskkill", "/T", "/F", "/PID", str(self.process.pid)], capture_output=True)
        else:
            # The session's process group outlives its leader: a game the launch script started may still run.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("port %d: the game (pid %d) did not exit", self.port, self.process.pid)
        self.process = None
        _LAUNCHED.discard(self)

    def restart(self) -> None:
        """Stop and launch again (a crash, a timeout or the scheduled reboot); only reconnects to a game started by hand."""
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
                log.warning("port %d: the game exited with code %s", self.port, self.process.returncode)
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
                    raise GameConnectionLost(
                        f"the game on port {self.port} exited with code {self.process.returncode} before its "
                        f"plugin answered (env.tmi.launch_command must keep running as long as the game does)."
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
        return client

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
