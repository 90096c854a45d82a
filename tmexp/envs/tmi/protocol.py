"""The wire protocol between tmexp (client) and its TMInterface 2 plugin (server, ``plugin/tmexp_link.as``).

The plugin listens on TCP 127.0.0.1:port inside the game; tmexp connects with TCP_NODELAY. Every message starts
with a little-endian int32 type; the payload that follows depends on the type. All integers are little-endian
int32 and floats little-endian float32 unless stated otherwise.

Two kinds of messages:

* Server-to-client **synchronous** messages (1..5). The game stops inside the plugin callback that sent one
  and waits until the client echoes the same type back (an int32 with no payload). While it waits, the plugin
  executes the client's commands, so commands are only ever sent while a synchronous message is pending.
* Client-to-server **commands** (16..33). Some have a reply, written by the plugin right after executing them.

The numbering is ours (the plugin shipped in ``plugin/`` is the only server); server messages and client
commands live in disjoint ranges so that a message arriving in the wrong direction is detected at once.

| type | name | direction | payload | reply |
|---|---|---|---|---|
| 1 | RUN_STEP_SYNC | server -> client | race_time_ms | echo |
| 2 | CHECKPOINT_COUNT_CHANGED_SYNC | server -> client | current, target | echo |
| 3 | LAP_COUNT_CHANGED_SYNC | server -> client | current, target | echo |
| 4 | REQUESTED_FRAME_SYNC | server -> client | width * height * 4 bytes BGRA, rows top first | echo |
| 5 | ON_CONNECT_SYNC | server -> client | none | echo |
| 16 | SET_SPEED | client -> server | float32 speed (0 pauses the game) | none |
| 17 | REWIND_TO_STATE | client -> server | length, length bytes of SimStateData | none |
| 18 | REWIND_TO_CURRENT_STATE | client -> server | none | none |
| 19 | GET_SIMULATION_STATE | client -> server | none | length, length bytes of SimStateData |
| 20 | SET_INPUT_STATE | client -> server | 4 x uint8: left, right, accelerate, brake | none |
| 21 | GIVE_UP | client -> server | none | none |
| 22 | PREVENT_SIMULATION_FINISH | client -> server | none | none |
| 23 | SHUTDOWN | client -> server | none | none (the plugin closes the connection) |
| 24 | EXECUTE_COMMAND | client -> server | length, length bytes of UTF-8 console command | none |
| 25 | SET_TIMEOUT | client -> server | uint32 ms the plugin waits for an echo before dropping us | none |
| 26 | RACE_FINISHED | client -> server | none | int32 0/1 |
| 27 | REQUEST_FRAME | client -> server | width, height (the next render is sent as REQUESTED_FRAME_SYNC) | none |
| 28 | RESET_CAMERA | client -> server | none | none |
| 29 | SET_ON_STEP_PERIOD | client -> server | period_ms (RUN_STEP_SYNC when race_time % period == 0) | none |
| 30 | UNREQUEST_FRAME | client -> server | none | none |
| 31 | TOGGLE_INTERFACE | client -> server | int32 0/1 (race HUD off/on) | none |
| 32 | IS_IN_MENUS | client -> server | none | int32 0/1 |
| 33 | GET_INPUTS | client -> server | none | length, length bytes of UTF-8 input script |

A server that reads a type it does not know closes the connection (it cannot know the payload length, so the
stream cannot be resynchronised); the client then reports the lost connection instead of hanging.
"""

from __future__ import annotations

import struct
from enum import IntEnum


class MessageType(IntEnum):
    RUN_STEP_SYNC = 1
    CHECKPOINT_COUNT_CHANGED_SYNC = 2
    LAP_COUNT_CHANGED_SYNC = 3
    REQUESTED_FRAME_SYNC = 4
    ON_CONNECT_SYNC = 5

    SET_SPEED = 16
    REWIND_TO_STATE = 17
    REWIND_TO_CURRENT_STATE = 18
    GET_SIMULATION_STATE = 19
    SET_INPUT_STATE = 20
    GIVE_UP = 21
    PREVENT_SIMULATION_FINISH = 22
    SHUTDOWN = 23
    EXECUTE_COMMAND = 24
    SET_TIMEOUT = 25
    RACE_FINISHED = 26
    REQUEST_FRAME = 27
    RESET_CAMERA = 28
    SET_ON_STEP_PERIOD = 29
    UNREQUEST_FRAME = 30
    TOGGLE_INTERFACE = 31
    IS_IN_MENUS = 32
    GET_INPUTS = 33


SERVER_SYNC_MESSAGES = frozenset(t for t in MessageType if t < 16)
CLIENT_COMMANDS = frozenset(t for t in MessageType if t >= 16)

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
