"""The fake game is as forgiving as the game, and a Linesight-style client drives it without error.

The Linesight-style sequences follow what Linesight's game client sends (its greeting: speed, on-step period,
console settings, a map loaded by console command; each race: give up or rewind to the start state, then at
every action get the state, rewind to it, pause, request a frame; the finish kept going by rewinding to the
state with its finish time cleared; between races the last synchronous message left pending).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tmexp.envs.base import EnvSpec
from tmexp.envs.fake_game import FakeRace
from tmexp.envs.tmi.client import TmiClient
from tmexp.envs.tmi.protocol import MessageType
from tmexp.envs.tmi.state import CarState, build_sim_state_bytes, car_state
from tmexp.envs.track import load_map

REPO = Path(__file__).resolve().parents[1]
SPEC = EnvSpec()
MENU_STATE = build_sim_state_bytes(
    CarState(
        race_time_ms=0, position=np.zeros(3), velocity=np.zeros(3), angular_velocity=np.zeros(3), rotation=np.eye(3)
    )
)


@pytest.fixture
def served(fake_game, request):
    """The fake game on A01 (options from the test's parameter), in a thread."""
    return fake_game(load_map("A01"), SPEC, **getattr(request, "param", {}))


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """A 150 m straight: full throttle finishes it."""
    x = np.arange(0.0, 150.0, 0.5)
    path = tmp_path_factory.mktemp("tracks") / "straight.npy"
    np.save(path, np.stack([x, np.full_like(x, 10.0), np.zeros_like(x)], axis=1))
    return path


def next_run_step(client: TmiClient):
    """Answer everything up to the next run step, which is left pending."""
    while True:
        message = client.read_message()
        if message.type == MessageType.RUN_STEP_SYNC:
            return message
        client.respond(message.type)


@pytest.mark.parametrize("served", [{"load_on_connect": False}], indirect=True)
def test_every_command_is_accepted_in_the_menus_before_any_map(served):
    client = served.client()
    client.give_up()  # the game has no race to give up: nothing happens (the fake used to die here)
    client.set_input_state(left=True, right=False, accelerate=True, brake=False)
    client.rewind_to_current_state()
    client.rewind_to_state(MENU_STATE)
    client.prevent_simulation_finish()
    client.reset_camera()
    client.toggle_interface(False)
    client.set_on_step_period(50)
    assert client.race_finished() is False
    assert client.is_in_menus() is True
    assert client.get_simulation_state().race_time == 0
    assert isinstance(client.get_inputs(), str)
    client.request_frame(8, 8)
    client.respond(MessageType.ON_CONNECT_SYNC)
    message = client.read_message()  # the menus render too: a (black) frame
    assert message.type == MessageType.REQUESTED_FRAME_SYNC
    assert np.all(message.frame[..., :3] == 0) and np.all(message.frame[..., 3] == 255)
    client.give_up()
    client.execute_command("map A01")  # a map loaded by console command starts a race
    client.respond(MessageType.REQUESTED_FRAME_SYNC)
    message = client.read_message()
    assert message.type == MessageType.RUN_STEP_SYNC and message.race_time_ms < 0  # the countdown
    assert client.is_in_menus() is False
    assert served.game.clients_dropped == []
    client.shutdown()


def test_give_up_before_the_map_loaded_leaves_the_fake_game_process_running():
    """The reported crash: GIVE_UP during the greeting of a fresh game (python -m tmexp.sim fake-game)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tmexp.sim", "fake-game", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = TmiClient(port, response_timeout_s=30)
        client.connect(timeout_s=60)
        assert client.read_message().type == MessageType.ON_CONNECT_SYNC
        client.give_up()
        client.respond(MessageType.ON_CONNECT_SYNC)
        assert next_run_step(client).race_time_ms < 0  # the map loaded after the greeting: its countdown
        client.close()
        again = TmiClient(port, response_timeout_s=30)
        again.connect(timeout_s=10)
        assert again.read_message().type == MessageType.ON_CONNECT_SYNC
        again.shutdown()
        assert proc.poll() is None
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert "Traceback" not in stderr


def test_commands_after_a_finish_the_client_did_not_prevent(served, straight):
    client = served.client()
    client.execute_command(f'map "{straight}"')
    client.set_on_step_period(50)
    client.respond(MessageType.ON_CONNECT_SYNC)
    next_run_step(client)
    client.set_input_state(left=False, right=False, accelerate=True, brake=False)
    client.respond(MessageType.RUN_STEP_SYNC)
    while True:  # full throttle to the finish, which nobody prevents
        message = client.read_message()
        if message.type == MessageType.CHECKPOINT_COUNT_CHANGED_SYNC and message.current == message.target:
            client.respond(message.type)
            break
        client.respond(message.type)
    times = []
    for _ in range(3):
        times.append(next_run_step(client).race_time_ms)
        client.respond(MessageType.RUN_STEP_SYNC)
    assert len(set(times)) == 1 and times[0] > 0  # the race is over: run steps keep coming, the clock stopped
    next_run_step(client)
    assert client.race_finished() is True
    state = car_state(client.get_simulation_state())
    assert state.finished and state.cp_passed == state.cp_target
    client.set_input_state(left=True, right=False, accelerate=False, brake=False)
    client.rewind_to_current_state()
    client.request_frame(16, 16)
    client.respond(MessageType.RUN_STEP_SYNC)
    assert client.read_message().type == MessageType.REQUESTED_FRAME_SYNC
    client.give_up()  # a new race: the countdown again
    client.respond(MessageType.REQUESTED_FRAME_SYNC)
    assert next_run_step(client).race_time_ms < 0
    assert served.game.clients_dropped == []
    client.shutdown()


# ----- a client that breaks the protocol loses its connection, never the game -------------------------------------
def int32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


BAD_CLIENTS = {
    "unknown type": (int32(999), "unknown message type 999"),
    "negative state length": (int32(MessageType.REWIND_TO_STATE, -1), "impossible save state length -1"),
    "huge command length": (int32(MessageType.EXECUTE_COMMAND, 10**9), "impossible console command length"),
    "huge frame": (int32(MessageType.REQUEST_FRAME, 100_000, 100_000), "impossible frame size"),
    "truncated payload": (int32(MessageType.SET_SPEED)[:4] + b"\x00\x00", "closed the connection"),
    "silence past the timeout": (int32(MessageType.SET_TIMEOUT, 200), "no answer within 200 ms"),
}


@pytest.mark.parametrize("sent, reason", BAD_CLIENTS.values(), ids=BAD_CLIENTS.keys())
def test_a_bad_client_costs_its_connection_and_the_next_client_is_served(served, sent, reason):
    sock = socket.create_connection(("127.0.0.1", served.game.port), timeout=10)
    with sock:
        assert sock.recv(4) == int32(MessageType.ON_CONNECT_SYNC)
        sock.sendall(sent)
        if reason == "closed the connection":
            sock.shutdown(socket.SHUT_WR)  # half a payload, then the client leaves
        assert sock.recv(4) == b""  # the game drops the client
    assert reason in served.game.clients_dropped[-1]
    client = served.client()  # and greets the next one
    assert client.is_in_menus() is True
    client.shutdown()


def test_a_save_state_that_does_not_parse_costs_the_connection(served):
    client = served.client()
    client.respond(MessageType.ON_CONNECT_SYNC)
    next_run_step(client)  # a race: rewinds are executed, so the state is parsed
    broken = bytearray(client.get_simulation_state_bytes())
    broken[8348:8352] = int32(10**8)  # checkpoint states that cannot fit in the bytes
    client.rewind_to_state(bytes(broken))
    sock = client._sock
    sock.settimeout(10)
    assert sock.recv(4) == b""
    assert "does not parse" in served.game.clients_dropped[-1]
    served.client().shutdown()


# ----- a Linesight-style client -------------------------------------------------------------------------------
LINESIGHT_SETTINGS = (
    "set countdown_speed 32",
    "set autologin player",
    "set unfocused_fps_limit false",
    "set skip_map_load_screens true",
    "set disable_forced_camera true",
    "set autorewind false",
    "set auto_reload_plugins false",
)


def linesight_rollout(client: TmiClient, start: dict, pending: MessageType | None, max_actions: int = 400) -> dict:
    """One race as Linesight's client plays it (accelerating only); returns what it saw and leaves a message pending."""
    if pending is not None:  # the game waited on this since the previous race
        client.set_speed(32)
        client.respond(pending)
    started, seen_start, actions, frames, first_times = False, False, 0, 0, []
    while True:
        message = client.read_message()
        if message.type == MessageType.RUN_STEP_SYNC:
            t = message.race_time_ms
            first_times.append(t)
            if not start.get("configured"):
                client.set_timeout(10_100)
                client.execute_command("cam 1")
                client.toggle_interface(False)
                start["configured"] = True
            if t == 0 and "state" not in start:
                start["state"] = client.get_simulation_state()
            if not started:
                if "state" in start:
                    client.rewind_to_state(bytes(start["state"].data))
                    t, seen_start = 0, True
                else:
                    client.give_up()
                started = True
            elif actions >= max_actions:  # Linesight's cutoff: keep the game waiting on this run step
                client.get_simulation_state()
                client.rewind_to_current_state()
                client.set_timeout(300_000)
                client.unrequest_frame()
                return {
                    "finished": False,
                    "actions": actions,
                    "frames": frames,
                    "pending": message.type,
                    "first_times": first_times[:3],
                }
            seen_start |= t < 0
            if t >= 0 and t % 50 == 0 and seen_start:
                client.get_simulation_state()
                client.rewind_to_current_state()
                client.set_speed(0)
                client.request_frame(SPEC.w_downsized, SPEC.h_downsized)
            client.respond(message.type)
        elif message.type == MessageType.REQUESTED_FRAME_SYNC:
            frames += 1
            client.set_input_state(left=False, right=False, accelerate=True, brake=False)
            client.set_speed(32)
            actions += 1
            client.respond(message.type)
        elif message.type == MessageType.CHECKPOINT_COUNT_CHANGED_SYNC:
            state = client.get_simulation_state()
            if message.current == message.target:
                # Linesight's way to keep the race going: rewind to the state with its finish time cleared.
                state.cp_data.cp_times[-1].time = -1
                client.rewind_to_state(bytes(state.data))
                client.set_timeout(300_000)
                client.unrequest_frame()
                return {
                    "finished": True,
                    "race_time_ms": state.race_time,
                    "actions": actions,
                    "frames": frames,
                    "pending": message.type,
                    "first_times": first_times[:3],
                }
            client.respond(message.type)
        else:
            client.respond(message.type)


@pytest.mark.parametrize("served", [{"load_on_connect": False}], indirect=True)
def test_a_linesight_style_client_loads_the_map_races_and_rewinds(served, straight, tmp_path):
    client = served.client()
    client.set_speed(1)
    client.set_on_step_period(50)
    for command in LINESIGHT_SETTINGS:
        client.execute_command(command)
    assert client.is_in_menus()
    client.execute_command(f"map {straight}")
    client.respond(MessageType.ON_CONNECT_SYNC)

    start: dict = {}
    first = linesight_rollout(client, start, None)
    assert first["finished"] and first["first_times"][0] < 0  # gave up into the countdown, then raced
    assert client.race_finished() is True and served.game.race.finish_prevented  # the finish kept going
    second = linesight_rollout(client, start, first["pending"])  # rewound to the start state
    assert second["finished"] and second["race_time_ms"] == first["race_time_ms"]  # the same inputs, the same race
    assert second["actions"] == first["actions"] and second["frames"] == second["actions"]
    short = tmp_path / "short.npy"  # a cut race on another map, loaded mid-race as Linesight changes maps
    np.save(short, np.load(straight)[:100])
    client.execute_command(f"map {short}")
    start.clear()
    start["configured"] = True
    third = linesight_rollout(client, start, second["pending"], max_actions=5)
    assert not third["finished"] and third["actions"] == 5 and served.game.race.track.length < 60
    client.set_speed(32)
    client.respond(third["pending"])
    assert next_run_step(client).race_time_ms > 0
    assert served.game.clients_dropped == []
    client.shutdown()


def test_a_state_with_its_finish_time_cleared_rewinds_to_an_unfinished_race(straight):
    from tmexp.envs.tmi.state import parse_sim_state
    from tmexp.envs.track import load_track

    race = FakeRace(load_track(straight), SPEC)
    race.load()
    race.set_inputs(left=False, right=False, accelerate=True, brake=False)
    while not race.finished:
        race.tick()
    state = parse_sim_state(race.state_bytes())
    race.rewind(race.state_bytes())
    assert not race.finish_prevented
    state.cp_data.cp_times[-1].time = -1
    race.rewind(bytes(state.data))
    assert race.finish_prevented and race.finished and not race.ended
