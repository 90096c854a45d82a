"""The TCP client of Linesight's plugin protocol (see ``protocol.py`` for the messages).

One ``TmiClient`` is one connection to one game instance. It only moves bytes: which commands to send when is
the env's business (``env.py``). Every read has a deadline; a closed socket, a silent plugin or a message that
makes no sense raise ``GameConnectionLost`` (or a subclass) and close the socket, so a caller never hangs and
never reads a half-consumed stream again.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
from tminterface.structs import SimStateData

from tmexp.envs.tmi import protocol
from tmexp.envs.tmi.errors import GameConnectionLost, GameTimeout, TmiProtocolError
from tmexp.envs.tmi.protocol import MessageType
from tmexp.envs.tmi.state import parse_sim_state


@dataclass
class ServerMessage:
    """A synchronous message from the plugin; the game waits until ``TmiClient.respond(type)``."""

    type: MessageType
    race_time_ms: int = 0  # RUN_STEP_SYNC
    current: int = 0  # CHECKPOINT / LAP_COUNT_CHANGED_SYNC
    target: int = 0
    frame: np.ndarray | None = None  # REQUESTED_FRAME_SYNC: (height, width, 4) uint8, BGRA


class TmiClient:
    """A connection to the plugin listening on ``host:port``."""

    def __init__(self, port: int, host: str = "127.0.0.1", response_timeout_s: float = 10.1):
        self.port = port
        self.host = host
        self._response_timeout_s = response_timeout_s
        self._sock: socket.socket | None = None
        self._frame_size: tuple[int, int] | None = None  # (width, height) of the frame last requested

    # ---- connection ---------------------------------------------------------------------------------------

    @property
    def response_timeout_s(self) -> float:
        """Longest wait for any read from the plugin."""
        return self._response_timeout_s

    @response_timeout_s.setter
    def response_timeout_s(self, seconds: float) -> None:
        self._response_timeout_s = seconds
        if self._sock is not None:
            self._sock.settimeout(seconds)

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self, timeout_s: float, retry_every_s: float = 0.2) -> None:
        """Connect, retrying while the plugin is not listening yet; GameConnectionLost after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        last_error: OSError | None = None
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=max(0.1, min(2.0, timeout_s)))
                break
            except OSError as error:  # refused while the game boots, or unreachable
                last_error = error
                if time.monotonic() + retry_every_s > deadline:
                    raise GameConnectionLost(
                        f"no TMInterface plugin answered on {self.host}:{self.port} within {timeout_s:.1f} s "
                        f"({last_error})."
                    ) from None
                time.sleep(retry_every_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.response_timeout_s)
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
        self._frame_size = None

    # ---- raw io -------------------------------------------------------------------------------------------

    def _wire(self) -> protocol.Wire:
        if self._sock is None:
            raise GameConnectionLost(f"not connected to the plugin on port {self.port}.")
        return protocol.Wire(self._sock)

    def _send(self, data: bytes) -> None:
        wire = self._wire()
        try:
            wire.send(data)
        except protocol.WireError as error:
            self.close()
            raise GameConnectionLost(f"sending to the plugin on port {self.port} failed ({error}).") from None

    def _read(self, read, *args):
        """``read(*args)`` of the wire, its failures as the client's errors (the socket closed after any)."""
        wire = self._wire()
        try:
            return read(wire, *args)
        except protocol.WireSilent:
            self.close()
            raise GameTimeout(
                f"the plugin on port {self.port} sent nothing for {self.response_timeout_s:.1f} s."
            ) from None
        except protocol.WireBadLength as error:
            self._protocol_error(str(error))
        except protocol.WireClosed as error:
            self.close()
            if error.by_peer:
                raise GameConnectionLost(f"the plugin on port {self.port} closed the connection.") from None
            raise GameConnectionLost(f"reading from the plugin on port {self.port} failed ({error}).") from None

    def _recv_exact(self, n: int) -> bytes:
        return self._read(protocol.Wire.recv_exact, n)

    def _recv_int32(self) -> int:
        return self._read(protocol.Wire.recv_int32)

    def _recv_blob(self, what: str) -> bytes:
        return self._read(protocol.Wire.recv_blob, what)

    def _protocol_error(self, what: str) -> NoReturn:
        self.close()
        raise TmiProtocolError(
            f"the plugin on port {self.port} sent {what}; the game runs a plugin that does not speak Linesight's "
            f"protocol: install Linesight's Python_Link.as (see docs/game.md)."
        )

    # ---- server messages ----------------------------------------------------------------------------------

    def read_message(self) -> ServerMessage:
        """Block until the next synchronous message from the plugin (deadline: the response timeout)."""
        raw_type = self._recv_int32()
        if raw_type not in protocol.SERVER_SYNC_MESSAGES:
            self._protocol_error(f"unknown message type {raw_type}")
        message = ServerMessage(MessageType(raw_type))
        if message.type == MessageType.RUN_STEP_SYNC:
            message.race_time_ms = self._recv_int32()
        elif message.type in (MessageType.CHECKPOINT_COUNT_CHANGED_SYNC, MessageType.LAP_COUNT_CHANGED_SYNC):
            message.current, message.target = protocol.TWO_INT32.unpack(self._recv_exact(8))
        elif message.type == MessageType.REQUESTED_FRAME_SYNC:
            if self._frame_size is None:
                self._protocol_error("a frame that was never requested")
            width, height = self._frame_size
            raw = self._recv_exact(width * height * 4)
            message.frame = np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 4)
        return message

    def respond(self, message_type: MessageType) -> None:
        """Echo a synchronous message's type: the game goes on."""
        self._send(protocol.pack_message(message_type))

    # ---- commands (only while a synchronous message is pending) --------------------------------------------

    def set_speed(self, speed: float) -> None:
        self._send(protocol.pack_message(MessageType.SET_SPEED, protocol.FLOAT32.pack(speed)))

    def rewind_to_state(self, state: bytes) -> None:
        self._send(protocol.pack_message(MessageType.REWIND_TO_STATE, protocol.pack_blob(bytes(state))))

    def rewind_to_current_state(self) -> None:
        self._send(protocol.pack_message(MessageType.REWIND_TO_CURRENT_STATE))

    def get_simulation_state_bytes(self) -> bytes:
        self._send(protocol.pack_message(MessageType.GET_SIMULATION_STATE))
        data = self._recv_blob("simulation state")
        if len(data) < SimStateData.min_size:
            self._protocol_error(f"a {len(data)}-byte simulation state (at least {SimStateData.min_size} expected)")
        return data

    def get_simulation_state(self) -> SimStateData:
        try:
            return parse_sim_state(self.get_simulation_state_bytes())
        except ValueError as error:
            self._protocol_error(str(error))

    def set_input_state(self, left: bool, right: bool, accelerate: bool, brake: bool) -> None:
        payload = protocol.INPUTS.pack(int(left), int(right), int(accelerate), int(brake))
        self._send(protocol.pack_message(MessageType.SET_INPUT_STATE, payload))

    def give_up(self) -> None:
        self._send(protocol.pack_message(MessageType.GIVE_UP))

    def prevent_simulation_finish(self) -> None:
        self._send(protocol.pack_message(MessageType.PREVENT_SIMULATION_FINISH))

    def shutdown(self) -> None:
        """Tell the plugin we leave (it goes back to listening), then close."""
        try:
            self._send(protocol.pack_message(MessageType.SHUTDOWN))
        except GameConnectionLost:
            pass
        self.close()

    def execute_command(self, command: str) -> None:
        payload = protocol.pack_blob(command.encode("utf-8"))
        self._send(protocol.pack_message(MessageType.EXECUTE_COMMAND, payload))

    def set_timeout(self, timeout_ms: int) -> None:
        self._send(protocol.pack_message(MessageType.SET_TIMEOUT, protocol.UINT32.pack(timeout_ms)))

    def race_finished(self) -> bool:
        self._send(protocol.pack_message(MessageType.RACE_FINISHED))
        return self._recv_int32() != 0

    def request_frame(self, width: int, height: int) -> None:
        self._frame_size = (width, height)
        self._send(protocol.pack_message(MessageType.REQUEST_FRAME, protocol.TWO_INT32.pack(width, height)))

    def reset_camera(self) -> None:
        self._send(protocol.pack_message(MessageType.RESET_CAMERA))

    def set_on_step_period(self, period_ms: int) -> None:
        self._send(protocol.pack_message(MessageType.SET_ON_STEP_PERIOD, protocol.pack_int32(period_ms)))

    def unrequest_frame(self) -> None:
        self._frame_size = None
        self._send(protocol.pack_message(MessageType.UNREQUEST_FRAME))

    def toggle_interface(self, visible: bool) -> None:
        self._send(protocol.pack_message(MessageType.TOGGLE_INTERFACE, protocol.pack_int32(int(visible))))

    def is_in_menus(self) -> bool:
        self._send(protocol.pack_message(MessageType.IS_IN_MENUS))
        return self._recv_int32() != 0

    def get_inputs(self) -> str:
        self._send(protocol.pack_message(MessageType.GET_INPUTS))
        return self._recv_blob("input script").decode("utf-8", errors="replace")
