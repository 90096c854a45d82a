"""A fake TMInterface plugin: the server side of ``protocol.py`` on loopback, driven by tmexp's simulator.

It behaves like the game running ``plugin/tmexp_link.as``: it greets each client with ON_CONNECT_SYNC, runs
10 ms engine ticks while the speed is above zero, sends RUN_STEP_SYNC when the race time is a multiple of the
on-step period, CHECKPOINT_COUNT_CHANGED_SYNC when the car passes a checkpoint or the finish, and the requested
frame (BGRA, grey levels from the simulator's camera) at the next "render". It answers every command of the
protocol. Unlike the game it ticks as fast as it can whatever the speed, and its save states carry a handle to
the simulator's exact state, so a rewind restores the race bit for bit.

Faults for tests (each fires once per process, counted in RUN_STEP_SYNC messages of races):
``--drop-after N`` closes the connection, ``--stall-after N`` goes silent, ``--garbage-after N`` sends an unknown
message type, ``--exit-after N`` kills the process (a crashed game).

    python -m tmexp.envs.tmi.fake --port 8478 [--map A01] [--reference-line path.npy]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass

from tmexp.envs.tmi import protocol
from tmexp.envs.tmi.protocol import MessageType

log = logging.getLogger("tmexp.envs.tmi.fake")

GARBAGE_MESSAGE_TYPE = 999


class ClientGone(Exception):
    """The client closed the connection, timed out, or broke the protocol: go back to listening."""


@dataclass
class Faults:
    drop_after: int = 0  # 0 = never
    stall_after: int = 0
    garbage_after: int = 0
    exit_after: int = 0


class FakePlugin:
    """Serves one client at a time on ``host:port`` until ``stop()`` (or forever)."""

    def __init__(self, race, port: int, host: str = "127.0.0.1", faults: Faults | None = None,
                 countdown_ms: int = 100):
        self.race = race  # a FakeRace (below): the simulator behind the protocol
        self.port = port
        self.host = host
        self.faults = faults or Faults()
        self.countdown_ms = countdown_ms
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._stopping = False
        self.run_steps_sent = 0
        self.connections = 0
        # Plugin settings (reset for every new client, like the real plugin).
        self.timeout_ms = 2000
        self.on_step_period_ms = 10
        self.speed = 1.0
        self.frame_size: tuple[int, int] | None = None
        self.finish_prevented = False

    # ---- sockets ------------------------------------------------------------------------------------------

    def listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(1)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]  # port 0 asks the OS for a free one

    def stop(self) -> None:
        self._stopping = True

    def serve_forever(self) -> None:
        if self._listener is None:
            self.listen()
        log.info("fake plugin listening on %s:%d", self.host, self.port)
        try:
            while not self._stopping:
                try:
                    client, _ = self._listener.accept()
                except socket.timeout:
                    continue
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._client = client
                self.connections += 1
                try:
                    self._session()
                except ClientGone as reason:
                    log.info("client dropped: %s", reason)
                finally:
                    client.close()
                    self._client = None
        finally:
            self._listener.close()

    def _send(self, data: bytes) -> None:
        try:
            self._client.sendall(data)
        except OSError as error:
            raise ClientGone(f"send failed ({error})") from None

    def _recv_exact(self, n: int, timeout_s: float) -> bytes:
        self._client.settimeout(timeout_s)
        data = bytearray()
        while len(data) < n:
            try:
                chunk = self._client.recv(n - len(data))
            except socket.timeout:
                raise ClientGone(f"no answer within {timeout_s * 1000:.0f} ms") from None
            except OSError as error:
                raise ClientGone(f"read failed ({error})") from None
            if not chunk:
                raise ClientGone("the client closed the connection")
            data += chunk
        return bytes(data)

    def _recv_int32(self) -> int:
        return protocol.INT32.unpack(self._recv_exact(4, self.timeout_ms / 1000))[0]

    # ---- the plugin's behaviour ---------------------------------------------------------------------------

    def _session(self) -> None:
        self.timeout_ms, self.on_step_period_ms, self.speed = 2000, 10, 1.0
        self.frame_size = None
        self._sync(MessageType.ON_CONNECT_SYNC)
        if not self.race.loaded:
            self.race.load(countdown_ms=self.countdown_ms)
        while True:
            if self.frame_size is not None:
                width, height = self.frame_size
                self.frame_size = None  # one frame per request, like the plugin
                self._sync(MessageType.REQUESTED_FRAME_SYNC, self.race.frame_bgra(width, height))
            elif self.speed > 0:
                self._tick()
            else:
                # Paused with nothing requested: a real game idles; notice a client that leaves meanwhile.
                self._client.settimeout(0.05)
                try:
                    if self._client.recv(1, socket.MSG_PEEK) == b"":
                        raise ClientGone("the client closed the connection")
                except socket.timeout:
                    pass
                except OSError as error:
                    raise ClientGone(f"read failed ({error})") from None

    def _tick(self) -> None:
        for current, target in self.race.tick():
            self._sync(MessageType.CHECKPOINT_COUNT_CHANGED_SYNC, protocol.TWO_INT32.pack(current, target))
            if current == target and not self.finish_prevented:
                self.race.end()  # the game would show the finish screen; run steps keep coming with a fixed time
        race_time = self.race.race_time_ms
        if race_time % self.on_step_period_ms == 0 or self.race.ended:
            self.run_steps_sent += 1
            self._maybe_fault()
            self._sync(MessageType.RUN_STEP_SYNC, protocol.pack_int32(race_time))

    def _maybe_fault(self) -> None:
        f, n = self.faults, self.run_steps_sent
        if f.exit_after and n == f.exit_after:
            log.warning("fault: exiting (a crashed game)")
            os._exit(3)
        if f.drop_after and n == f.drop_after:
            raise ClientGone("fault: dropping the connection")
        if f.stall_after and n == f.stall_after:
            log.warning("fault: going silent")
            while not self._stopping:  # never answer again; the client must time out and leave
                self._client.settimeout(0.2)
                try:
                    if self._client.recv(4096) == b"":
                        break
                except socket.timeout:
                    continue
                except OSError:
                    break
            raise ClientGone("fault: stalled")
        if f.garbage_after and n == f.garbage_after:
            self._send(protocol.pack_int32(GARBAGE_MESSAGE_TYPE) + b"\x01\x02\x03")

    def _sync(self, message_type: MessageType, payload: bytes = b"") -> None:
        """Send a synchronous message and execute commands until the client echoes it."""
        self._send(protocol.pack_message(message_type, payload))
        while True:
            received = self._recv_int32()
            if received == message_type:
                return
            self._command(received)

    def _command(self, command: int) -> None:
        r = self._recv_exact
        timeout_s = self.timeout_ms / 1000
        if command == MessageType.SET_SPEED:
            self.speed = protocol.FLOAT32.unpack(r(4, timeout_s))[0]
        elif command == MessageType.REWIND_TO_STATE:
            length = self._recv_int32()
            if not 0 <= length <= protocol.MAX_PAYLOAD_BYTES:
                raise ClientGone(f"impossible state length {length}")
            self.race.rewind(r(length, timeout_s))
            self.finish_prevented = False
        elif command == MessageType.REWIND_TO_CURRENT_STATE:
            pass  # the fake's state is already exact
        elif command == MessageType.GET_SIMULATION_STATE:
            self._send(protocol.pack_blob(self.race.state_bytes()))
        elif command == MessageType.SET_INPUT_STATE:
            left, right, accelerate, brake = protocol.INPUTS.unpack(r(4, timeout_s))
            self.race.set_inputs(bool(left), bool(right), bool(accelerate), bool(brake))
        elif command == MessageType.GIVE_UP:
            self.race.restart()
            self.finish_prevented = False
        elif command == MessageType.PREVENT_SIMULATION_FINISH:
            self.finish_prevented = True
        elif command == MessageType.SHUTDOWN:
            raise ClientGone("the client said goodbye")
        elif command == MessageType.EXECUTE_COMMAND:
            length = self._recv_int32()
            if not 0 <= length <= protocol.MAX_PAYLOAD_BYTES:
                raise ClientGone(f"impossible command length {length}")
            self._execute(r(length, timeout_s).decode("utf-8", errors="replace"))
        elif command == MessageType.SET_TIMEOUT:
            self.timeout_ms = protocol.UINT32.unpack(r(4, timeout_s))[0]
        elif command == MessageType.RACE_FINISHED:
            self._send(protocol.pack_int32(int(self.race.ended or self.race.finished)))
        elif command == MessageType.REQUEST_FRAME:
            self.frame_size = protocol.TWO_INT32.unpack(r(8, timeout_s))
        elif command == MessageType.RESET_CAMERA:
            pass
        elif command == MessageType.SET_ON_STEP_PERIOD:
            period = protocol.INT32.unpack(r(4, timeout_s))[0]
            self.on_step_period_ms = period if period > 0 else 10
        elif command == MessageType.UNREQUEST_FRAME:
            self.frame_size = None
        elif command == MessageType.TOGGLE_INTERFACE:
            r(4, timeout_s)
        elif command == MessageType.IS_IN_MENUS:
            self._send(protocol.pack_int32(int(not self.race.loaded)))
        elif command == MessageType.GET_INPUTS:
            self._send(protocol.pack_blob(self.race.inputs_text().encode("utf-8")))
        else:
            # Unknown payload length: the stream cannot be resynchronised, exactly as in the real plugin.
            log.error("unknown message type %d from the client; dropping it", command)
            raise ClientGone(f"unknown message type {command}")

    def _execute(self, command: str) -> None:
        """The console commands tmexp sends: ``map <name or reference line .npy>``; others are ignored."""
        words = command.split(maxsplit=1)
        if len(words) == 2 and words[0] == "map":
            self.race.load_map(words[1].strip().strip('"'), countdown_ms=self.countdown_ms)
            self.finish_prevented = False
