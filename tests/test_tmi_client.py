"""The plugin protocol client, the save-state parsing and the instance manager, against scripted loopback servers."""

from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest

from tmexp.envs.tmi import protocol
from tmexp.envs.tmi.client import TmiClient
from tmexp.envs.tmi.errors import (
    GameConnectionLost,
    GameNotConfigured,
    GameTimeout,
    TmiProtocolError,
)
from tmexp.envs.tmi.instances import GameInstance
from tmexp.envs.tmi.params import TmiParams
from tmexp.envs.tmi.protocol import MessageType
from tmexp.envs.tmi.state import CarState, build_sim_state_bytes, car_state, extra_bytes, parse_sim_state


class ScriptedServer:
    """Accepts one client and runs ``script(conn)`` in a thread; records what it read."""

    def __init__(self, script):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.script = script
        self.received: list = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conn, _ = self.listener.accept()
        conn.settimeout(5)
        try:
            self.script(conn, self.received)
        except BaseException as error:  # surfaced by the test
            self.error = error
        finally:
            conn.close()
            self.listener.close()

    def join(self):
        self.thread.join(timeout=5)
        if self.error:
            raise self.error


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def recv_int(conn):
    return struct.unpack("<i", recv_exact(conn, 4))[0]


def example_car() -> CarState:
    return CarState(
        race_time_ms=1250,
        position=np.array([10.5, 9.0, -3.25]),
        velocity=np.array([20.0, 0.5, -4.0]),
        angular_velocity=np.array([0.0, 0.75, 0.0]),
        rotation=np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]),
        wheel_contact=np.array([True, True, False, True]),
        wall_contact=True,
        gear=3,
        cp_passed=2,
        cp_target=5,
        cp_times_ms=[400, 900],
    )


def test_state_bytes_round_trip_through_tminterface_structs():
    car = example_car()
    data = build_sim_state_bytes(car, extra=b"handle-42")
    state = parse_sim_state(data)
    back = car_state(state)
    assert back.race_time_ms == 1250 and state.race_time == 1250
    np.testing.assert_allclose(back.position, car.position)
    np.testing.assert_allclose(back.velocity, car.velocity)
    np.testing.assert_allclose(back.angular_velocity, car.angular_velocity)
    np.testing.assert_allclose(back.rotation, car.rotation)
    assert list(back.wheel_contact) == [True, True, False, True]
    assert back.wall_contact and back.gear == 3
    assert (back.cp_passed, back.cp_target, back.cp_times_ms) == (2, 5, [400, 900])
    assert extra_bytes(state).rstrip(b"\0") == b"handle-42"
    assert abs(back.speed_kmh - np.linalg.norm(car.velocity) * 3.6) < 1e-3


def test_client_messages_and_commands_on_the_wire():
    frame = (np.arange(3 * 2 * 4) % 256).astype(np.uint8).tobytes()
    state = build_sim_state_bytes(example_car())

    def script(conn, got):
        conn.sendall(struct.pack("<i", MessageType.ON_CONNECT_SYNC))
        conn.sendall(struct.pack("<ii", MessageType.RUN_STEP_SYNC, 50))
        got.append(("speed", recv_int(conn), struct.unpack("<f", recv_exact(conn, 4))[0]))
        got.append(("inputs", recv_int(conn), tuple(recv_exact(conn, 4))))
        got.append(("request", recv_int(conn), struct.unpack("<ii", recv_exact(conn, 8))))
        got.append(("get_state", recv_int(conn)))
        conn.sendall(struct.pack("<i", len(state)) + state)
        got.append(("race_finished", recv_int(conn)))
        conn.sendall(struct.pack("<i", 1))
        got.append(("command", recv_int(conn), recv_exact(conn, recv_int(conn)).decode()))
        got.append(("echo", recv_int(conn)))
        conn.sendall(struct.pack("<iii", MessageType.CHECKPOINT_COUNT_CHANGED_SYNC, 3, 5))
        conn.sendall(struct.pack("<i", MessageType.REQUESTED_FRAME_SYNC) + frame)
        got.append(("echo", recv_int(conn)))

    server = ScriptedServer(script)
    client = TmiClient(server.port, response_timeout_s=5)
    client.connect(timeout_s=5)
    assert client.read_message().type == MessageType.ON_CONNECT_SYNC
    message = client.read_message()
    assert (message.type, message.race_time_ms) == (MessageType.RUN_STEP_SYNC, 50)
    client.set_speed(0.0)
    client.set_input_state(left=True, right=False, accelerate=True, brake=False)
    client.request_frame(3, 2)
    parsed = client.get_simulation_state()
    assert parsed.race_time == 1250
    assert client.race_finished() is True
    client.execute_command("map A01")
    client.respond(MessageType.RUN_STEP_SYNC)
    message = client.read_message()
    assert (message.type, message.current, message.target) == (MessageType.CHECKPOINT_COUNT_CHANGED_SYNC, 3, 5)
    message = client.read_message()
    assert message.type == MessageType.REQUESTED_FRAME_SYNC and message.frame.shape == (2, 3, 4)
    assert message.frame.tobytes() == frame
    client.respond(MessageType.REQUESTED_FRAME_SYNC)
    server.join()
    client.close()
    assert server.received == [
        ("speed", MessageType.SET_SPEED, 0.0),
        ("inputs", MessageType.SET_INPUT_STATE, (1, 0, 1, 0)),
        ("request", MessageType.REQUEST_FRAME, (3, 2)),
        ("get_state", MessageType.GET_SIMULATION_STATE),
        ("race_finished", MessageType.RACE_FINISHED),
        ("command", MessageType.EXECUTE_COMMAND, "map A01"),
        ("echo", MessageType.RUN_STEP_SYNC),
        ("echo", MessageType.REQUESTED_FRAME_SYNC),
    ]


def test_message_numbering_is_documented_and_disjoint():
    assert protocol.SERVER_SYNC_MESSAGES.isdisjoint(protocol.CLIENT_COMMANDS)
    assert len(protocol.SERVER_SYNC_MESSAGES) == 5 and len(protocol.CLIENT_COMMANDS) == 18
    assert sorted(int(t) for t in MessageType) == list(range(1, 24))  # consecutive from 1, as Linesight numbers them
    for message_type in MessageType:
        assert f"| {int(message_type)} | {message_type.name} |" in protocol.__doc__


@pytest.mark.parametrize(
    "payload, match",
    [
        (struct.pack("<i", 77), "unknown message type 77"),
        (struct.pack("<i", MessageType.SET_SPEED), "unknown message type 6"),  # a command in the wrong direction
        (struct.pack("<i", MessageType.REQUESTED_FRAME_SYNC), "never requested"),
    ],
)
def test_unknown_or_malformed_server_message_is_a_clear_error_not_a_hang(payload, match):
    release = threading.Event()
    # The server keeps the connection open and silent until the client has raised: the error comes from the
    # bytes themselves, not from a closed or silent connection.
    server = ScriptedServer(lambda conn, got: (conn.sendall(payload), release.wait(30)))
    client = TmiClient(server.port, response_timeout_s=30)
    client.connect(timeout_s=5)
    with pytest.raises(TmiProtocolError, match=match) as error:
        client.read_message()
    release.set()
    assert "Linesight's Python_Link.as" in str(error.value) and "docs/game.md" in str(error.value)
    assert not client.connected  # the stream cannot be trusted again
    assert isinstance(error.value, GameConnectionLost)  # so the collector discards the rollout and resets
    server.join()


@pytest.mark.parametrize(
    "reply, match",
    [
        (struct.pack("<i", -5), "impossible simulation state length -5"),
        (struct.pack("<i", 100) + bytes(100), "a 100-byte simulation state"),
        # Full length, but checkpoint arrays that claim more than the bytes hold.
        (struct.pack("<i", 8356) + bytes(8348) + struct.pack("<ii", 0, 10**8), "do not fit"),
    ],
    ids=["negative-length", "too-short", "bad-checkpoint-arrays"],
)
def test_impossible_state_is_a_protocol_error(reply, match):
    release = threading.Event()

    def script(conn, got):
        recv_int(conn)
        conn.sendall(reply)
        release.wait(30)

    server = ScriptedServer(script)
    client = TmiClient(server.port, response_timeout_s=30)
    client.connect(timeout_s=5)
    with pytest.raises(TmiProtocolError, match=match):
        client.get_simulation_state()
    release.set()
    server.join()


def test_silent_plugin_times_out_and_closed_plugin_is_a_lost_connection():
    # The server stays connected and silent until the client gave up: only the client's own deadline can end
    # the read (were it missing, the read would end in "closed the connection" once released, not a timeout).
    release = threading.Event()
    server = ScriptedServer(lambda conn, got: release.wait(60))
    client = TmiClient(server.port, response_timeout_s=0.3)
    client.connect(timeout_s=5)
    with pytest.raises(GameTimeout, match="sent nothing for 0.3 s"):
        client.read_message()
    assert not client.connected
    release.set()
    server.join()

    server = ScriptedServer(lambda conn, got: conn.sendall(struct.pack("<i", MessageType.ON_CONNECT_SYNC)))
    client = TmiClient(server.port, response_timeout_s=5)
    client.connect(timeout_s=5)
    assert client.read_message().type == MessageType.ON_CONNECT_SYNC
    server.join()
    with pytest.raises(GameConnectionLost, match="closed the connection"):
        client.read_message()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_launch_command_and_no_game_fails_fast_naming_the_setting():
    instance = GameInstance(TmiParams(launch_command=""), port=free_port())
    start = time.monotonic()
    with pytest.raises(GameNotConfigured, match="env.tmi.launch_command"):
        instance.check_configured()
    assert time.monotonic() - start < 2


def test_unstartable_launch_command_names_the_setting():
    instance = GameInstance(TmiParams(launch_command="/nonexistent/tmloader --port {port}"), port=free_port())
    with pytest.raises(GameNotConfigured, match="env.tmi.launch_command could not be started"):
        instance.connect()


def test_game_that_exits_before_answering_is_reported_quickly():
    params = TmiParams(launch_command="python -c 'import sys; sys.exit(4)' {port}", connect_timeout_s=20)
    instance = GameInstance(params, port=free_port())
    start = time.monotonic()
    with pytest.raises(GameConnectionLost, match="exited with code 4"):
        instance.connect()
    assert time.monotonic() - start < 10
    instance.stop()
