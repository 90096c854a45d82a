"""TmiEnv against the fake plugin server: same races as the simulator, and recovery from lost connections."""

from __future__ import annotations

import socket
import struct
import sys
import time

import numpy as np
import pytest

from tmexp.envs.base import EnvSpec, RewardSpec
from tmexp.envs.driver import ReferenceDriver
from tmexp.envs.fake_game import FakeRace, Faults
from tmexp.envs.observation import n_game_floats, shared_floats
from tmexp.envs.sim import SimEnv, SimParams
from tmexp.envs.sim.physics import driver_car
from tmexp.envs.tmi.client import TmiClient
from tmexp.envs.tmi.env import TmiEnv, bgra_to_gray
from tmexp.envs.tmi.errors import GameConnectionLost, GameNotConfigured, GameTimeout, TmiProtocolError
from tmexp.envs.tmi.params import TmiParams
from tmexp.envs.tmi.protocol import MessageType
from tmexp.envs.track import load_map

SPEC = EnvSpec()
DEFAULT_TIMEOUT_DURING_RUN_MS = TmiParams().timeout_during_run_ms
REWARDS = RewardSpec()


@pytest.fixture(scope="module")
def track():
    return load_map("A01")


@pytest.fixture(scope="module")
def reference_actions(track):
    """The reference driver's actions for one finished A01 race in the simulator, with that race's record."""
    env = SimEnv(track, SPEC, REWARDS, SimParams(), seed=0)
    driver = ReferenceDriver(track, driver_car(SimParams()))
    obs, info = env.reset()
    dt = SPEC.tm_engine_step_per_action * SPEC.ms_per_tm_engine_step / 1000.0
    actions = []
    while True:
        action = driver.act(env.batch.car.view(0), info["progress_m"], dt)
        obs, _, terminated, truncated, info = env.step(action)
        actions.append(action)
        if terminated or truncated:
            break
    assert info["finished"], "the reference driver must finish A01 for this test to mean anything"
    return actions


@pytest.fixture
def server(track, fake_game):
    return fake_game(track, SPEC)


@pytest.fixture(params=[False, True], ids=["checkpoint-first", "run-step-first"])
def ordered_server(track, fake_game, request):
    """The fake game sending a tick's checkpoint before its run step and, second, after it (the game's order is
    not documented: Linesight handles both)."""
    return fake_game(track, SPEC, steps_first=request.param)


@pytest.fixture
def faulty_server(track, fake_game, request):
    return fake_game(track, SPEC, faults=request.param)


def make_env(track, port: int, **overrides) -> TmiEnv:
    return TmiEnv(track, SPEC, REWARDS, TmiParams(base_tmi_port=port, **overrides), collector_index=0)


def play(env, actions):
    """Reset and play ``actions`` until the race ends; returns per-step records and the last info."""
    obs, info = env.reset()
    records = [(obs, 0.0, info)]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        records.append((obs, reward, info))
        if terminated or truncated:
            return records, terminated, truncated
    raise AssertionError("the race did not end")


def assert_same_race(tmi_records, sim_records):
    assert len(tmi_records) == len(sim_records)
    for step, ((o1, r1, i1), (o2, r2, i2)) in enumerate(zip(tmi_records, sim_records)):
        assert i1["race_time_ms"] == i2["race_time_ms"]
        assert i1["finished"] == i2["finished"] and i1["cutoff"] == i2["cutoff"]
        assert i1["cp_times"] == i2["cp_times"]
        assert i1["wall_contact"] == i2["wall_contact"]
        assert abs(i1["progress_m"] - i2["progress_m"]) < 1e-3  # positions travel as float32
        assert abs(i1["speed_kmh"] - i2["speed_kmh"]) < 1e-3
        assert abs(r1 - r2) < 1e-4
        assert o1["img"].dtype == np.uint8 and o1["img"].shape == o2["img"].shape
        np.testing.assert_array_equal(o1["img"], o2["img"])
        assert o1["floats"].dtype == np.float32 and o1["floats"].shape == (n_game_floats(SPEC),)
        assert_same_shared_floats(o1["floats"], o2["floats"], step)


def assert_same_shared_floats(game_floats, sim_floats, step):
    """What both vectors hold agrees (the game's in Linesight's units and order, the simulator's scaled)."""
    game = shared_floats(game_floats, SPEC, game=True)
    sim = shared_floats(sim_floats, SPEC, game=False)
    for name in game:
        if name == "prev_actions" and step < SPEC.n_prev_actions_in_inputs:
            continue  # padded differently before the first actions: "forward" on the game (Linesight), 0 here
        np.testing.assert_allclose(game[name], sim[name], atol=1e-4, err_msg=name)


def sim_records(track, actions):
    env = SimEnv(track, SPEC, REWARDS, SimParams(), seed=0)
    records, terminated, truncated = play(env, actions)
    return records, terminated, truncated


def test_rollout_through_the_protocol_matches_the_simulator(track, ordered_server, reference_actions):
    server = ordered_server
    env = make_env(track, server.port)
    try:
        tmi, terminated, _ = play(env, reference_actions)
        sim, sim_terminated, _ = sim_records(track, reference_actions)
        assert terminated and sim_terminated and tmi[-1][2]["finished"]
        # A checkpoint on an action's engine step: with the run step first, it arrives between the step and the frame.
        assert any(t % env.period_ms == 0 for t in tmi[-1][2]["cp_times"])
        assert_same_race(tmi, sim)
        # A second race starts from the saved start state (a rewind) and again matches, here cut for no progress.
        rng = np.random.default_rng(1)
        actions = list(rng.choice([0, 1, 2, 9], size=80)) + [6] * 400
        tmi, _, truncated = play(env, actions)
        sim, _, sim_truncated = sim_records(track, actions)
        assert truncated and sim_truncated
        assert_same_race(tmi, sim)
        assert server.game.connections == 2  # the configuration probe, then one connection for both races
    finally:
        env.close()


def race_until_error(env, n_steps=400):
    env.reset()
    start = time.monotonic()
    with pytest.raises(GameConnectionLost) as error:
        for _ in range(n_steps):
            env.step(0)
    return error.value, time.monotonic() - start


@pytest.mark.parametrize(
    "faulty_server, expected",
    [
        (Faults(drop_after=40), GameConnectionLost),
        (Faults(stall_after=40), GameTimeout),
        (Faults(garbage_after=40), TmiProtocolError),
    ],
    indirect=["faulty_server"],
    ids=["drop", "timeout", "garbage"],
)
def test_lost_connection_mid_race_discards_the_rollout_then_reset_carries_on(
    track, faulty_server, expected, reference_actions
):
    env = make_env(track, faulty_server.port, timeout_during_run_ms=400)
    try:
        error, elapsed = race_until_error(env)
        assert isinstance(error, expected)
        assert elapsed < 5  # a clear error, not a hang
        assert env.races_discarded == 1
        with pytest.raises(RuntimeError, match="call reset"):
            env.step(0)  # the cut race is over: nothing of it can be continued
        # The short timeout served to detect the fault; the recovery race gets the default one, or a pause of the
        # test process over 400 ms between a run step and its answer makes the game drop us (seen once in CI).
        env.params.timeout_during_run_ms = DEFAULT_TIMEOUT_DURING_RUN_MS
        # reset() reconnects to the same game, takes the start state again and races normally.
        tmi, terminated, _ = play(env, reference_actions)
        sim, _, _ = sim_records(track, reference_actions)
        assert terminated
        assert_same_race(tmi, sim)
    finally:
        env.close()


def test_unknown_message_to_the_plugin_is_dropped_with_a_clear_error(track, server):
    client = TmiClient(server.port, response_timeout_s=5)
    client.connect(timeout_s=5)
    assert client.read_message().type == MessageType.ON_CONNECT_SYNC
    client._send(struct.pack("<i", 77))  # a command the plugin does not know
    start = time.monotonic()
    with pytest.raises(GameConnectionLost, match="closed the connection"):
        client.read_message()
    assert time.monotonic() - start < 2


def wait_until_the_game_drops(client: TmiClient, limit_s: float = 60.0) -> None:
    """Block until the game closes the connection: the event itself, not a guess at how long its timeout takes."""
    sock = client._sock
    sock.settimeout(limit_s)
    assert sock.recv(1, socket.MSG_PEEK) == b"", "the game sent something instead of dropping the idle client"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_env_without_game_or_launch_command_fails_fast(track, monkeypatch):
    # fast: one short probe of the port, never the connect timeout a launched game gets (no timing asserted)
    attempts = []
    connect = TmiClient.connect

    def recorded(self, timeout_s, **kwargs):
        attempts.append(timeout_s)
        return connect(self, timeout_s=timeout_s, **kwargs)

    monkeypatch.setattr(TmiClient, "connect", recorded)
    params = TmiParams(base_tmi_port=free_port(), launch_command="", connect_timeout_s=60)
    with pytest.raises(GameNotConfigured, match="env.tmi.launch_command"):
        TmiEnv(track, SPEC, REWARDS, params)
    assert len(attempts) == 1 and attempts[0] <= 1.0


def test_launched_game_is_restarted_after_a_crash_and_rebooted_on_schedule(track):
    launch = f"{sys.executable} -m tmexp.sim fake-game --port {{port}} --countdown-ms 50"
    env = make_env(
        track,
        free_port(),
        launch_command=launch,
        connect_timeout_s=60,
        game_reboot_interval=3600,
        timeout_during_run_ms=1000,
    )
    try:
        env.reset()
        for _ in range(20):
            env.step(0)
        first_pid = env.instance.process.pid
        wait_until_the_game_drops(env.client)  # idle between races past the plugin's timeout; the game lives on
        env.params.timeout_during_run_ms = DEFAULT_TIMEOUT_DURING_RUN_MS  # the rest does not test a timeout
        obs, info = env.reset()
        assert env.instance.process.pid == first_pid and env.instance.restarts == 0 and info["race_time_ms"] == 0
        for _ in range(20):
            env.step(0)
        env.instance.process.kill()  # the game crashes mid-race
        with pytest.raises(GameConnectionLost):
            for _ in range(20):
                env.step(0)
        obs, info = env.reset()  # relaunches the game
        assert env.instance.process.pid != first_pid and info["race_time_ms"] == 0
        for _ in range(20):
            env.step(0)
        second_pid = env.instance.process.pid
        env.params.game_reboot_interval = 0.01  # due for its scheduled reboot: happens at the next reset only
        env.step(0)
        env.reset()
        assert env.instance.process.pid != second_pid
        obs, reward, terminated, truncated, info = env.step(0)
        assert info["race_time_ms"] == 50 and not (terminated or truncated)
    finally:
        env.close()
    assert env.instance.process is None


def test_bgra_frames_become_the_grey_image():
    frame = np.zeros((2, 3, 4), dtype=np.uint8)
    frame[..., :3] = np.arange(6, dtype=np.uint8).reshape(2, 3, 1) * 40
    frame[0, 0, :3] = (255, 0, 0)  # pure blue (BGRA order): dark
    gray = bgra_to_gray(frame)
    assert gray.shape == (2, 3) and gray.dtype == np.uint8
    assert gray[0, 0] == 29  # 0.114 * 255
    np.testing.assert_array_equal(gray.ravel()[1:], (np.arange(6) * 40)[1:])  # grey stays exactly grey


def test_race_timeout_cutoff_matches_the_simulator(track, server, reference_actions):
    spec = EnvSpec(cutoff_rollout_if_race_not_finished_within_duration_ms=1_500)
    env = TmiEnv(track, spec, REWARDS, TmiParams(base_tmi_port=server.port))
    try:
        tmi, _, truncated = play(env, reference_actions)
    finally:
        env.close()
    sim, _, sim_truncated = play(SimEnv(track, spec, REWARDS, SimParams(), seed=0), reference_actions)
    assert truncated and sim_truncated and tmi[-1][2]["cutoff"] == "race_timeout"
    assert tmi[-1][2]["race_time_ms"] == 1_500
    assert_same_race(tmi, sim)


def test_fake_plugin_answers_every_command(track, server):
    """The fake implements the plugin's whole command set (the env itself uses only part of it)."""
    client = TmiClient(server.port, response_timeout_s=5)
    client.connect(timeout_s=5)
    assert client.read_message().type == MessageType.ON_CONNECT_SYNC
    assert client.is_in_menus() is True  # a fresh game greets from its menus, before the map loads
    client.set_timeout(5000)
    client.set_on_step_period(50)
    client.toggle_interface(False)
    client.reset_camera()
    client.execute_command("map /no/such/map.Challenge.Gbx")  # ignored by the fake, as unknown commands by the game
    client.respond(MessageType.ON_CONNECT_SYNC)
    message = client.read_message()
    while message.race_time_ms < 0:  # the countdown
        client.respond(message.type)
        message = client.read_message()
    assert (message.type, message.race_time_ms) == (MessageType.RUN_STEP_SYNC, 0)
    start = client.get_simulation_state_bytes()
    client.set_input_state(left=False, right=True, accelerate=True, brake=False)
    assert "right,up" in client.get_inputs()
    client.rewind_to_current_state()
    client.request_frame(32, 16)
    client.unrequest_frame()  # no frame comes: the next message is the next run step
    client.respond(MessageType.RUN_STEP_SYNC)
    message = client.read_message()
    assert (message.type, message.race_time_ms) == (MessageType.RUN_STEP_SYNC, 50)
    assert client.race_finished() is False
    client.request_frame(32, 16)
    client.respond(MessageType.RUN_STEP_SYNC)
    message = client.read_message()
    assert message.type == MessageType.REQUESTED_FRAME_SYNC and message.frame.shape == (16, 32, 4)
    client.respond(MessageType.REQUESTED_FRAME_SYNC)
    message = client.read_message()
    client.rewind_to_state(start)
    assert client.get_simulation_state().race_time == 0
    client.give_up()  # restarts the race: the countdown again
    client.respond(message.type)
    assert client.read_message().race_time_ms < 0
    client.shutdown()


def test_fake_rewinds_a_foreign_state_from_its_fields(track):
    """A save state the fake never issued (another process's) is restored from position, speed and heading."""
    first, second = FakeRace(track, SPEC, countdown_ms=0), FakeRace(track, SPEC, countdown_ms=0)
    first.load()
    first.set_inputs(left=False, right=False, accelerate=True, brake=False)
    for _ in range(301):  # 10 ms of countdown, then 3 s of race
        first.tick()
    second.load()
    second.rewind(first.state_bytes())
    a, b = first.car_state(), second.car_state()
    assert b.race_time_ms == a.race_time_ms == 3000
    np.testing.assert_allclose(b.position, a.position, atol=1e-4)
    np.testing.assert_allclose(b.velocity, a.velocity, atol=1e-4)
    assert abs(second.progress() - first.progress()) < 1e-3


def test_collector_discards_a_cut_race_whole_and_plays_the_next_one(track, fake_game):
    """The training core's collector sees GameConnectionLost as a ConnectionError and keeps nothing of that race."""
    import multiprocessing

    from tmexp.config import Config
    from tmexp.core.collectors import Collector, CollectorSettings, WeightsSource
    from tmexp.core.networks import build_network

    fake = fake_game(track, SPEC, faults=Faults(drop_after=30))
    cfg = Config()
    cfg.env.backend = "tmi"
    cfg.env.tmi.base_tmi_port = fake.port
    cfg.env.cutoff_rollout_if_race_not_finished_within_duration_ms = 3_000  # short races
    cfg.nn.dense_hidden_dimension, cfg.nn.iqn_embedding_dimension, cfg.nn.float_hidden_dim = 32, 8, 16
    img_shape, float_dim = (1, SPEC.h_downsized, SPEC.w_downsized), n_game_floats(SPEC)
    settings = CollectorSettings(
        env=cfg.env,
        map=cfg.map,
        rewards=cfg.rewards,
        nn=cfg.nn,
        btr=cfg.btr,
        exploration=cfg.exploration,
        global_schedule_speed=1.0,
        img_shape=img_shape,
        float_dim=float_dim,
        n_actions=12,
        device="cpu",
        seed=0,
        torch_threads=1,
        update_every_n_actions=128,
    )
    ctx = multiprocessing.get_context("spawn")
    weights = WeightsSource(build_network(cfg.nn, cfg.btr, img_shape, float_dim, 12), ctx)
    collector = Collector(settings, 0, weights, ctx.Value("q", 0))
    with pytest.raises(ConnectionError):
        collector.play_races()
    (rollout,) = collector.play_races()  # one car; reset() reconnected: a whole race from race time 0
    n = len(rollout["actions"])
    assert n > 30 and rollout["img"].shape[0] == rollout["floats"].shape[0] == n + 1
    assert rollout["race_time_ms"] == 50 * n or rollout["finished"]
    assert collector.env.envs[0].races_discarded == 1  # the game's one car, in a one-env vector env
    collector.close()


def test_launched_game_that_goes_silent_mid_race_is_restarted(track):
    launch = f"{sys.executable} -m tmexp.sim fake-game --port {{port}} --countdown-ms 0 --stall-after 25"
    env = make_env(track, free_port(), launch_command=launch, connect_timeout_s=60, timeout_during_run_ms=500)
    try:
        env.reset()
        with pytest.raises(GameTimeout):
            for _ in range(40):
                env.step(0)
        hung_pid = env.instance.process.pid
        env.params.timeout_during_run_ms = DEFAULT_TIMEOUT_DURING_RUN_MS  # the stall is seen: no 500 ms budget after
        obs, info = env.reset()
        assert env.instance.process.pid != hung_pid and info["race_time_ms"] == 0
        for _ in range(10):  # the fresh game stalls only at its own 25th run step
            obs, reward, terminated, truncated, info = env.step(0)
        assert info["race_time_ms"] == 500
    finally:
        env.close()


def test_map_path_is_loaded_through_the_map_command(track, server, tmp_path):
    """env.tmi.map_path goes to the game as TMInterface's ``map`` command (the fake loads reference lines)."""
    other = tmp_path / "short.npy"
    np.save(other, track.points[:400])  # the first 200 m of A01: a different, shorter track
    env = make_env(track, server.port, map_path=str(other))
    try:
        env.reset()
        assert server.game.race.track.length < 250
    finally:
        env.close()


def test_a_game_started_by_hand_passes_the_configuration_check_without_a_launch_command(server):
    from tmexp.compose import compose_config
    from tmexp.validation import ConfigError, check_config

    check_config(compose_config(["env=tmi", f"env.tmi.base_tmi_port={server.port}"]))
    with pytest.raises(ConfigError, match="env.tmi.launch_command is empty"):
        check_config(compose_config(["env=tmi", f"env.tmi.base_tmi_port={free_port()}"]))
