"""Every message of Linesight's plugin protocol, byte by byte, on both ends: tmexp's client and the fake game.

The bytes below are written from the protocol's documented layout (the table in ``tmexp/envs/tmi/protocol.py``,
Linesight's numbering: server messages 1..5, client commands 6..23; little-endian int32 type, then the payload),
not produced by tmexp's own packing code, so a wrong number or payload fails here.
"""

from __future__ import annotations

import socket
import struct
import threading

import numpy as np
import pytest

from tmexp.envs.base import EnvSpec
from tmexp.envs.tmi import protocol
from tmexp.envs.tmi.client import TmiClient
from tmexp.envs.tmi.state import CarState, build_sim_state_bytes
from tmexp.envs.track import load_map

STATE = build_sim_state_bytes(
    CarState(
        race_time_ms=0, position=np.zeros(3), velocity=np.zeros(3), angular_velocity=np.zeros(3), rotation=np.eye(3)
    )
)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# Server -> client: (name, type, bytes on the wire after the type, what the client reads from them).
SERVER_MESSAGES = [
    ("RUN_STEP_SYNC", 1, h("f4010000"), {"race_time_ms": 500}),
    ("CHECKPOINT_COUNT_CHANGED_SYNC", 2, h("03000000 05000000"), {"current": 3, "target": 5}),
    ("LAP_COUNT_CHANGED_SYNC", 3, h("01000000 03000000"), {"current": 1, "target": 3}),
    ("REQUESTED_FRAME_SYNC", 4, bytes(range(2 * 1 * 4)), {}),  # after REQUEST_FRAME 2 x 1: 2 * 1 * 4 BGRA bytes
    ("ON_CONNECT_SYNC", 5, b"", {}),
]

# Client -> server: (name, the client call, the request's bytes, the documented reply, what the call returns).
COMMANDS = [
    ("SET_SPEED", lambda c: c.set_speed(2.5), h("06000000 00002040"), b"", None),  # float32 2.5
    (
        "REWIND_TO_STATE",
        lambda c: c.rewind_to_state(STATE),
        h("07000000") + struct.pack("<i", len(STATE)) + STATE,
        b"",
        None,
    ),
    ("REWIND_TO_CURRENT_STATE", lambda c: c.rewind_to_current_state(), h("08000000"), b"", None),
    (
        "GET_SIMULATION_STATE",
        lambda c: c.get_simulation_state().race_time,
        h("09000000"),
        struct.pack("<i", len(STATE)) + STATE,
        0,
    ),
    (
        "SET_INPUT_STATE",
        lambda c: c.set_input_state(left=True, right=False, accelerate=True, brake=False),
        h("0a000000 01 00 01 00"),
        b"",
        None,
    ),  # 4 x uint8: left, right, accelerate, brake
    ("GIVE_UP", lambda c: c.give_up(), h("0b000000"), b"", None),
    ("PREVENT_SIMULATION_FINISH", lambda c: c.prevent_simulation_finish(), h("0c000000"), b"", None),
    ("SHUTDOWN", lambda c: c.shutdown(), h("0d000000"), b"", None),
    ("EXECUTE_COMMAND", lambda c: c.execute_command("map A01"), h("0e000000 07000000") + b"map A01", b"", None),
    ("SET_TIMEOUT", lambda c: c.set_timeout(10100), h("0f000000 74270000"), b"", None),  # uint32 10100
    ("RACE_FINISHED", lambda c: c.race_finished(), h("10000000"), h("01000000"), True),
    ("REQUEST_FRAME", lambda c: c.request_frame(64, 48), h("11000000 40000000 30000000"), b"", None),
    ("RESET_CAMERA", lambda c: c.reset_camera(), h("12000000"), b"", None),
    ("SET_ON_STEP_PERIOD", lambda c: c.set_on_step_period(50), h("13000000 32000000"), b"", None),
    ("UNREQUEST_FRAME", lambda c: c.unrequest_frame(), h("14000000"), b"", None),
    ("TOGGLE_INTERFACE", lambda c: c.toggle_interface(False), h("15000000 00000000"), b"", None),
    ("IS_IN_MENUS", lambda c: c.is_in_menus(), h("16000000"), h("01000000"), True),
    ("GET_INPUTS", lambda c: c.get_inputs(), h("17000000"), h("05000000") + b"0 up.", "0 up."),
]


def test_the_tables_cover_all_23_messages_with_linesights_numbers():
    numbers = {name: number for name, number, *_ in SERVER_MESSAGES}
    numbers.update({name: int.from_bytes(request[:4], "little") for name, _, request, *_ in COMMANDS})
    assert sorted(numbers.values()) == list(range(1, 24))
    assert numbers == {t.name: int(t) for t in protocol.MessageType}


class RawServer:
    """One connection: sends ``greeting``, reads ``n_request`` bytes, answers ``reply``, then waits to be released."""

    def __init__(self, greeting: bytes, n_request: int, reply: bytes):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.request = b""
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(greeting, n_request, reply), daemon=True)
        self.thread.start()

    def _run(self, greeting, n_request, reply):
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            conn.sendall(greeting)
            while len(self.request) < n_request:
                chunk = conn.recv(n_request - len(self.request))
                if not chunk:
                    break
                self.request += chunk
            conn.sendall(reply)
            self.release.wait(10)
        self.listener.close()

    def join(self):
        self.release.set()
        self.thread.join(timeout=10)


@pytest.mark.parametrize("name, call, wire, reply, returns", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_client_sends_each_command_as_documented_and_reads_its_reply(name, call, wire, reply, returns):
    server = RawServer(b"", len(wire), reply)
    client = TmiClient(server.port, response_timeout_s=10)
    client.connect(timeout_s=5)
    try:
        assert call(client) == returns
    finally:
        server.join()
        client.close()
    assert server.request == wire


@pytest.mark.parametrize("name, number, payload, fields", SERVER_MESSAGES, ids=[m[0] for m in SERVER_MESSAGES])
def test_client_reads_each_server_message_as_documented_and_echoes_its_type(name, number, payload, fields):
    server = RawServer(struct.pack("<i", number) + payload, 4, b"")
    client = TmiClient(server.port, response_timeout_s=10)
    client.connect(timeout_s=5)
    try:
        if name == "REQUESTED_FRAME_SYNC":
            client._frame_size = (2, 1)  # as after request_frame(2, 1), without sending it
        message = client.read_message()
        client.respond(message.type)
    finally:
        server.join()
        client.close()
    assert (message.type.name, int(message.type)) == (name, number)
    for field, value in fields.items():
        assert getattr(message, field) == value
    if name == "REQUESTED_FRAME_SYNC":
        assert message.frame.shape == (1, 2, 4) and message.frame.tobytes() == payload
    assert server.request == struct.pack("<i", number)  # the echo: the type alone


# ----- the fake game's end --------------------------------------------------------------------------------------
@pytest.fixture
def fake(fake_game):
    return fake_game(load_map("A01"), EnvSpec())


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def greeted(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert recv_exact(sock, 4) == h("05000000")  # ON_CONNECT_SYNC, no payload
    return sock


# What the fake answers each command with, while its greeting is pending (a fresh game, still in its menus).
FAKE_REPLIES = {
    "GET_SIMULATION_STATE": "blob",  # int32 length, then that many bytes of SimStateData
    "RACE_FINISHED": h("00000000"),
    "IS_IN_MENUS": h("01000000"),
    "GET_INPUTS": "blob",
}


@pytest.mark.parametrize("name, call, wire, reply, returns", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_fake_game_reads_each_command_as_documented_and_replies_as_documented(fake, name, call, wire, reply, returns):
    sock = greeted(fake.port)
    with sock:
        sock.sendall(wire)
        expected = FAKE_REPLIES.get(name, b"")
        if expected == "blob":
            length = struct.unpack("<i", recv_exact(sock, 4))[0]
            body = recv_exact(sock, length)
            assert length >= 0 and len(body) == length
            if name == "GET_SIMULATION_STATE":
                assert length >= 8356  # tminterface's SimStateData with empty checkpoint arrays
            else:
                body.decode("utf-8")
        elif expected:
            assert recv_exact(sock, len(expected)) == expected
        if name == "SHUTDOWN":
            assert sock.recv(1) == b""  # the plugin drops the client
            return
        # The echo ends the greeting; the stream is still in step only if the payload was read exactly.
        sock.sendall(h("05000000"))
        following = struct.unpack("<i", recv_exact(sock, 4))[0]
        if name == "REQUEST_FRAME":
            assert following == 4  # REQUESTED_FRAME_SYNC: 64 * 48 * 4 BGRA bytes, no length
            frame = np.frombuffer(recv_exact(sock, 64 * 48 * 4), dtype=np.uint8).reshape(48, 64, 4)
            assert np.all(frame[..., 3] == 255) and np.all(frame[..., 0] == frame[..., 2])
        else:
            assert following == 1  # RUN_STEP_SYNC and the int32 race time: the countdown's, negative
            race_time = struct.unpack("<i", recv_exact(sock, 4))[0]
            assert race_time == (-50 if name == "SET_ON_STEP_PERIOD" else -90)
        sock.sendall(struct.pack("<i", following))


def test_fake_game_sends_each_server_message_as_documented(fake):
    """ON_CONNECT_SYNC, RUN_STEP_SYNC, CHECKPOINT_COUNT_CHANGED_SYNC and REQUESTED_FRAME_SYNC on the wire (the
    fake's tracks have one lap, so it never sends LAP_COUNT_CHANGED_SYNC)."""
    sock = greeted(fake.port)  # ON_CONNECT_SYNC: 05000000
    with sock:
        sock.sendall(h("13000000 32000000") + h("06000000 00000042"))  # on-step period 50 ms, speed 32
        sock.sendall(h("05000000"))
        times, checkpoint = [], None
        while checkpoint is None and len(times) < 1000:
            message = struct.unpack("<i", recv_exact(sock, 4))[0]
            if message == 1:
                times.append(struct.unpack("<i", recv_exact(sock, 4))[0])
                if len(times) == 1:
                    sock.sendall(h("0a000000 00 00 01 00"))  # accelerate, now that a race runs
            elif message == 2:
                checkpoint = struct.unpack("<ii", recv_exact(sock, 8))
            else:
                raise AssertionError(f"unexpected message type {message}")
            sock.sendall(struct.pack("<i", message))
        assert times[:2] == [-50, 0] and all(b - a == 50 for a, b in zip(times, times[1:]))
        assert checkpoint == (1, 11)  # the first of A01's checkpoints (every 100 m) and the finish: 10 + 1
        sock.sendall(h("11000000 08000000 04000000"))  # request an 8 x 4 frame at the next run step
        assert recv_exact(sock, 4) == h("01000000")
        recv_exact(sock, 4)
        sock.sendall(h("01000000"))
        assert recv_exact(sock, 4) == h("04000000")
        frame = np.frombuffer(recv_exact(sock, 8 * 4 * 4), dtype=np.uint8).reshape(4, 8, 4)
        assert np.all(frame[..., 3] == 255) and frame[..., :3].std() > 0  # the road ahead, not a blank frame
        sock.sendall(h("04000000"))
        assert recv_exact(sock, 4) == h("01000000")  # and the game runs on
