"""The race flow against the fake game in both message orders, and what tmexp tells the game (Linesight's commands).

Each test plays against the fake game, which records every command it receives; the expected commands and values
are Linesight's (``game_instance_manager.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

from tmexp.envs.base import EnvSpec, RewardSpec
from tmexp.envs.fake_game import Faults
from tmexp.envs.sim import SimEnv, SimParams
from tmexp.envs.tmi.env import TmiEnv
from tmexp.envs.tmi.errors import GameStalled
from tmexp.envs.tmi.params import TmiParams
from tmexp.envs.tmi.protocol import MessageType
from tmexp.envs.track import load_track

SPEC = EnvSpec()
REWARDS = RewardSpec()
ORDERS = pytest.mark.parametrize("steps_first", [False, True], ids=["checkpoint-first", "run-step-first"])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A 120 m straight: full throttle finishes it within a few seconds."""
    x = np.arange(0.0, 120.0, 0.5)
    path = tmp_path_factory.mktemp("tracks") / "straight.npy"
    np.save(path, np.stack([x, np.full_like(x, 10.0), np.zeros_like(x)], axis=1))
    return load_track(path)


def sim_race(track, actions):
    env = SimEnv(track, SPEC, REWARDS, SimParams(), seed=0)
    env.reset()
    for action in actions:
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return info
    raise AssertionError("the simulator's race did not end")


@pytest.fixture(scope="module")
def finish_on_an_action_step(straight):
    """Actions whose finish falls on an action's last engine step (found in the simulator): the run step of that
    engine step and the finish's checkpoint message come together, in the game's order."""
    period = SPEC.tm_engine_step_per_action * SPEC.ms_per_tm_engine_step
    for idle in range(1, 5):
        for full_throttle in range(60):  # coasting later in the race changes the finish time by 10 ms steps
            actions = [0] * full_throttle + [3] * idle + [0] * 400
            info = sim_race(straight, actions)
            if info["finished"] and info["race_time_ms"] % period == 0:
                return actions, info
    raise AssertionError("no action sequence finishes on an action step")


def env_for(track, port, **params) -> TmiEnv:
    return TmiEnv(track, SPEC, REWARDS, TmiParams(base_tmi_port=port, **params))


def play(env, actions):
    env.reset()
    for action in actions:
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return info, terminated
    raise AssertionError("the race did not end")


@ORDERS
def test_a_finish_on_an_action_step_is_seen_in_either_message_order(
    straight, fake_game, finish_on_an_action_step, steps_first
):
    actions, expected = finish_on_an_action_step
    game = fake_game(straight, SPEC, countdown_ms=0, steps_first=steps_first)
    env = env_for(straight, game.port)
    try:
        for _ in range(2):  # the second race starts from the rewound start state
            info, terminated = play(env, actions)
            assert terminated and info["finished"] and info["race_time_ms"] == expected["race_time_ms"]
            assert info["cp_times"] == expected["cp_times"]
            assert game.game.race.finish_prevented  # the race was kept going past the line
    finally:
        env.close()


@ORDERS
def test_a_finish_the_game_does_not_let_tmexp_prevent_still_ends_the_race_as_finished(
    straight, fake_game, finish_on_an_action_step, steps_first
):
    actions, expected = finish_on_an_action_step
    game = fake_game(straight, SPEC, countdown_ms=0, steps_first=steps_first, faults=Faults(unpreventable_finish=True))
    env = env_for(straight, game.port)
    try:
        info, terminated = play(env, [0] * 400)  # the finish mid-action: the clock stops there
        assert terminated and info["finished"] and info["race_time_ms"] == sim_race(straight, [0] * 400)["race_time_ms"]
        info, terminated = play(env, actions)  # and on an action's last engine step
        assert terminated and info["finished"] and info["race_time_ms"] == expected["race_time_ms"]
    finally:
        env.close()


@ORDERS
def test_a_race_whose_time_stops_ends_with_a_clear_error_after_a_bounded_number_of_run_steps(
    straight, fake_game, steps_first
):
    """Run steps keep coming at one race time: GameStalled after max_frozen_run_steps of them, then reset."""
    game = fake_game(straight, SPEC, countdown_ms=0, steps_first=steps_first, faults=Faults(freeze_after=40))
    env = env_for(straight, game.port, max_frozen_run_steps=50)
    try:
        env.reset()
        with pytest.raises(GameStalled, match="stopped at race time .* for 50 run steps.*max_frozen_run_steps"):
            for _ in range(400):
                env.step(0)
        assert env.races_discarded == 1
        until_left(game)
        assert (MessageType.SET_SPEED, 1.0) in list(game.game.received)[-3:]  # left at speed 1, not paused
        obs, info = env.reset()  # a fresh race from the start state
        assert info["race_time_ms"] == 0
        for _ in range(5):
            _, _, _, _, info = env.step(0)
        assert info["race_time_ms"] == 250
    finally:
        env.close()


def received(game, kind):
    return [value for message, value in game.game.received if message == kind]


def until_left(game, limit_s: float = 30.0) -> None:
    """Wait until the fake game has served the client's goodbye (it reads in its own thread)."""
    import time

    deadline = time.monotonic() + limit_s
    while not any("goodbye" in reason for reason in game.game.clients_dropped):
        assert time.monotonic() < deadline, f"the client never said goodbye: {game.game.clients_dropped}"
        time.sleep(0.01)


def test_linesights_setup_commands_go_to_the_game_each_from_a_setting(straight, fake_game):
    game = fake_game(straight, SPEC, countdown_ms=0)
    env = env_for(straight, game.port, autologin="agent")
    try:
        env.reset()
        for _ in range(3):
            env.step(0)
    finally:
        env.close()
    until_left(game)
    assert game.game.console[:7] == [
        "set countdown_speed 32",
        "set autologin agent",
        "set unfocused_fps_limit false",
        "set skip_map_load_screens true",
        "set disable_forced_camera true",
        "set autorewind false",
        "set auto_reload_plugins false",
    ]
    assert "cam 2" in game.game.console and "toggle_console" not in game.game.console  # a game started by hand
    assert game.game.settings["autologin"] == "agent" and game.game.settings["unfocused_fps_limit"] == "false"
    # Linesight's rewind to the current state at each action (the start, then three actions).
    assert len(received(game, MessageType.REWIND_TO_CURRENT_STATE)) == 4
    assert len(received(game, MessageType.TOGGLE_INTERFACE)) == 1
    assert received(game, MessageType.SET_SPEED)[-1] == 1.0  # close() leaves the game at speed 1
    assert game.game.speed == 1.0


def test_each_setting_changes_its_command(straight, fake_game):
    game = fake_game(straight, SPEC, countdown_ms=0)
    env = env_for(
        straight,
        game.port,
        game_camera_number=1,
        unfocused_fps_limit=True,
        countdown_speed=4.0,
        skip_map_load_screens=False,
        disable_forced_camera=False,
        auto_reload_plugins=True,
        rewind_each_action=False,
        hide_interface=False,
    )
    try:
        env.reset()
        env.step(0)
    finally:
        env.close()
    until_left(game)
    console = game.game.console
    for command in (
        "set countdown_speed 4",
        "set unfocused_fps_limit true",
        "set skip_map_load_screens false",
        "set disable_forced_camera false",
        "set auto_reload_plugins true",
        "cam 1",
    ):
        assert command in console
    assert not any(command.startswith("set autologin") for command in console)  # no name: not sent
    assert received(game, MessageType.REWIND_TO_CURRENT_STATE) == []
    assert received(game, MessageType.TOGGLE_INTERFACE) == []


def test_the_race_display_is_hidden_again_after_each_map_load_and_the_ghost_moved_aside(straight, fake_game, tmp_path):
    autosaves = tmp_path / "TrackMania" / "Tracks" / "Replays" / "Autosaves"
    autosaves.mkdir(parents=True)
    ghost = autosaves / "agent_short.Replay.gbx"
    ghost.write_bytes(b"a personal best")
    short = "Campaigns\\short.Challenge.Gbx"  # the fake loads its own track for a map it cannot read
    game = fake_game(straight, SPEC, countdown_ms=0)
    env = env_for(straight, game.port, map_path=short, autologin="agent", trackmania_dir=str(tmp_path / "TrackMania"))
    try:
        env.reset()
        env.step(0)
    finally:
        env.close()
    until_left(game)
    messages = [message for message, _ in game.game.received]
    map_at = game.game.console.index(f'map "{short}"')
    assert map_at > 0 and messages.count(MessageType.TOGGLE_INTERFACE) == 1
    # Hidden at a run step of the loaded map: after the map command was executed.
    assert (
        messages.index(MessageType.TOGGLE_INTERFACE)
        > [i for i, m in enumerate(messages) if m == MessageType.EXECUTE_COMMAND][map_at]
    )
    assert not ghost.exists() and (autosaves / "agent_short.Replay.gbx.bak").read_bytes() == b"a personal best"


def test_an_unfocused_game_gets_its_frame_cap_lifted(straight, fake_game):
    game = fake_game(straight, SPEC, countdown_ms=0, unfocused=True)
    env = env_for(straight, game.port)
    try:
        env.reset()
    finally:
        env.close()
    until_left(game)
    assert game.game.settings["unfocused_fps_limit"] == "false"


def test_a_game_at_its_login_screen_never_greets_and_one_with_autologin_does(straight, fake_game, tmp_path):
    from tmexp.envs.tmi.client import TmiClient
    from tmexp.envs.tmi.errors import GameTimeout

    settings = tmp_path / "settings.json"
    stuck = fake_game(straight, SPEC, login_screen=True, settings_path=str(settings))
    client = TmiClient(stuck.port, response_timeout_s=0.5)
    client.connect(timeout_s=5)
    with pytest.raises(GameTimeout):
        client.read_message()
    # Logged in once (by hand), the game keeps autologin among its settings; tmexp sends it at every connection.
    settings.write_text('{"autologin": "agent"}')
    game = fake_game(straight, SPEC, countdown_ms=0, login_screen=True, settings_path=str(settings))
    env = env_for(straight, game.port, autologin="agent")
    try:
        obs, info = env.reset()
        assert info["race_time_ms"] == 0
    finally:
        env.close()
    until_left(game)
    assert "set autologin agent" in game.game.console


def test_a_process_that_exits_without_closing_its_env_leaves_the_game_at_speed_1(straight, fake_game, tmp_path):
    """The game waits paused in its frame sync between actions: an exit must not leave it frozen at speed 0."""
    import subprocess
    import sys

    game = fake_game(straight, SPEC, countdown_ms=0)
    line = tmp_path / "line.npy"
    np.save(line, straight.points)
    code = (
        "from tmexp.envs.base import EnvSpec, RewardSpec; from tmexp.envs.tmi.env import TmiEnv; "
        "from tmexp.envs.tmi.params import TmiParams; from tmexp.envs.track import load_track; "
        f"env = TmiEnv(load_track({str(line)!r}), EnvSpec(), RewardSpec(), TmiParams(base_tmi_port={game.port})); "
        "env.reset(); env.step(0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    until_left(game)
    speeds = received(game, MessageType.SET_SPEED)
    assert speeds[-2:] == [0.0, 1.0]  # paused for the last frame, then set back to 1 on the way out
    assert list(game.game.received)[-1][0] == MessageType.SHUTDOWN
