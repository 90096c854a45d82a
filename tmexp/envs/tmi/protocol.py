"""The wire protocol of Linesight's TMInterface 2 plugin (``Python_Link.as``), which tmexp speaks unchanged.

The plugin runs inside the game and listens on TCP 127.0.0.1:port (its console variable ``custom_port``); tmexp
connects with TCP_NODELAY. Every message starts with a little-endian int32 type; the payload that follows depends
on the type. Integers are little-endian int32 and floats little-endian float32 unless stated otherwise. The types
are numbered consecutively from 1 in the order below, exactly as in Linesight's plugin and client
(``trackmania_rl/tmi_interaction/Python_Link.as`` and ``tminterface2.py`` in the Linesight-RL/linesight
repository); the Linesight name is the ``SC_``/``C_`` form of the name here.

Two kinds of messages:

* Server-to-client **synchronous** messages (1..5). The game stops inside the plugin callback that sent one
  and waits until the client echoes the same type back (an int32 with no payload). While it waits, the plugin
  executes the client's commands, so commands are only ever read while a synchronous message is pending.
* Client-to-server **commands** (6..23). Some have a reply, written by the plugin right after executing them.

| type | name | direction | payload | reply |
|---|---|---|---|---|
| 1 | RUN_STEP_SYNC | server -> client | race_time_ms | echo |
| 2 | CHECKPOINT_COUNT_CHANGED_SYNC | server -> client | current, target | echo |
| 3 | LAP_COUNT_CHANGED_SYNC | server -> client | current, target | echo |
| 4 | REQUESTED_FRAME_SYNC | server -> client | width * height * 4 bytes BGRA, rows top first (no length) | echo |
| 5 | ON_CONNECT_SYNC | server -> client | none | echo |
| 6 | SET_SPEED | client -> server | float32 speed (0 pauses the game) | none |
| 7 | REWIND_TO_STATE | client -> server | length, length bytes of SimStateData | none |
| 8 | REWIND_TO_CURRENT_STATE | client -> server | none | none |
| 9 | GET_SIMULATION_STATE | client -> server | none | length, length bytes of SimStateData |
| 10 | SET_INPUT_STATE | client -> server | 4 x uint8: left, right, accelerate, brake | none |
| 11 | GIVE_UP | client -> server | none (restarts the race) | none |
| 12 | PREVENT_SIMULATION_FINISH | client -> server | none | none |
| 13 | SHUTDOWN | client -> server | none | none (the plugin drops the connection) |
| 14 | EXECUTE_COMMAND | client -> server | length, length bytes of a console command | none |
| 15 | SET_TIMEOUT | client -> server | uint32 ms the plugin waits for an echo before dropping the client | none |
| 16 | RACE_FINISHED | client -> server | none | int32 0/1 |
| 17 | REQUEST_FRAME | client -> server | width, height (the next render is sent as REQUESTED_FRAME_SYNC) | none |
| 18 | RESET_CAMERA | client -> server | none | none |
| 19 | SET_ON_STEP_PERIOD | client -> server | period_ms (RUN_STEP_SYNC when race_time % period == 0) | none |
| 20 | UNREQUEST_FRAME | client -> server | none | none |
| 21 | TOGGLE_INTERFACE | client -> server | int32 0/1 (race HUD off/on) | none |
| 22 | IS_IN_MENUS | client -> server | none | int32 0/1 |
| 23 | GET_INPUTS | client -> server | none | length, length bytes of the input script (UTF-8) |

What the plugin does in each state, as tmexp relies on it: commands that act on a race (REWIND_TO_STATE,
REWIND_TO_CURRENT_STATE, SET_INPUT_STATE, GIVE_UP, PREVENT_SIMULATION_FINISH) do nothing outside a race (menus,
before a map is loaded), and every other command works in every state. Run steps keep coming after a finish the
client did not prevent (the race time then stays put). The plugin greets a client with ON_CONNECT_SYNC once the
game is past its start-up screen. A client that sends nothing for the timeout (2000 ms until SET_TIMEOUT, counted
from the start of the wait for an echo) is dropped, as on SHUTDOWN; the plugin then listens again. It has no
answer for a type it does not know (it logs it and reads on, so the stream is garbled): tmexp never sends one.
"""

from __future__ import annotations

import socket
import struct
from enum import IntEnum


class MessageType(IntEnum):
    RUN_STEP_SYNC = 1
    CHECKPOINT_COUNT_CHANGED_SYNC = 2
    LAP_COUNT_CHANGED_SYNC = 3
    REQUESTED_FRAME_SYNC = 4
    ON_CONNECT_SYNC = 5

    SET_SPEED = 6
    REWIND_TO_STATE = 7
    REWIND_TO_CURRENT_STATE = 8
    GET_SIMULATION_STATE = 9
    SET_INPUT_STATE = 10
    GIVE_UP = 11
    PREVENT_SIMULATION_FINISH = 12
    SHUTDOWN = 13
    EXECUTE_COMMAND = 14
    SET_TIMEOUT = 15
    RACE_FINISHED = 16
    REQUEST_FRAME = 17
    RESET_CAMERA = 18
    SET_ON_STEP_PERIOD = 19
    UNREQUEST_FRAME = 20
    TOGGLE_INTERFACE = 21
    IS_IN_MENUS = 22
    GET_INPUTS = 23


MESSAGE_TYPES = frozenset(int(t) for t in MessageType)
SERVER_SYNC_MESSAGES = frozenset(t for t in MessageType if t <= MessageType.ON_CONNECT_SYNC)
CLIENT_COMMANDS = frozenset(t for t in MessageType if t > MessageType.ON_CONNECT_SYNC)

# Largest variable-length payload either side accepts; anything bigger is a corrupt length, not data.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024

INT32 = struct.Struct("<i")
UINT32 = struct.Struct("<I")
FLOAT32 = struct.Struct("<f")
TWO_INT32 = struct.Struct("<ii")
INPUTS = struct.Struct("<4B")


def pack_int32(value: int) -> bytes:
    return INT32.pack(value)


def pack_message(message_type: MessageType, payload: bytes = b"") -> bytes:
    """One message: the int32 type followed by its payload (already packed)."""
    return INT32.pack(int(message_type)) + payload


def pack_blob(blob: bytes) -> bytes:
    """A variable-length payload: int32 length then the bytes."""
    return INT32.pack(len(blob)) + blob


# ---- framing: the byte stream, as both ends read and write it ---------------------------------------------------


class WireError(Exception):
    """The stream cannot go on; each end turns it into its own error (the client's GameConnectionLost family, the
    fake game's dropped client)."""


class WireClosed(WireError):
    """The other end closed the connection (``by_peer``), or the socket failed."""

    def __init__(self, message: str, by_peer: bool = False):
        super().__init__(message)
        self.by_peer = by_peer


class WireSilent(WireError):
    """Nothing arrived before the deadline."""


class WireBadLength(WireError):
    """A length field no payload can have (negative, or over ``MAX_PAYLOAD_BYTES``)."""


class Wire:
    """One end of a connection: exact reads with a deadline, int32s and length-prefixed blobs, whole writes.

    Used by both ends of the protocol (``client.py``, ``tmexp/envs/fake_game.py``), so that the two agree on the
    framing by construction. ``timeout_s`` None keeps the socket's own timeout.
    """

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as error:
            raise WireClosed(f"send failed ({error})") from None

    def recv_exact(self, n: int, timeout_s: float | None = None) -> bytes:
        if timeout_s is not None:
            self.sock.settimeout(max(timeout_s, 0.001))
        buffer = bytearray(n)
        view = memoryview(buffer)
        received = 0
        while received < n:
            try:
                count = self.sock.recv_into(view[received:], n - received)
            except TimeoutError:
                raise WireSilent("nothing arrived in time") from None
            except OSError as error:
                raise WireClosed(f"read failed ({error})") from None
            if count == 0:
                raise WireClosed("the other end closed the connection", by_peer=True)
            received += count
        return bytes(buffer)

    def recv_int32(self, timeout_s: float | None = None) -> int:
        return INT32.unpack(self.recv_exact(4, timeout_s))[0]

    def recv_blob(self, what: str, timeout_s: float | None = None) -> bytes:
        length = self.recv_int32(timeout_s)
        if not 0 <= length <= MAX_PAYLOAD_BYTES:
            raise WireBadLength(f"impossible {what} length {length}")
        return self.recv_exact(length, timeout_s)
