"""Launching and stopping games as Linesight does, with fake launch scripts that start the fake game.

A launch command may block while the game runs or return once it started: either way tmexp finds the game's own
process (named ``game_process_name``, among the processes that appeared during the launch), focuses it once, and
kills it by its pid. Games start one at a time on a machine, each on the first free port from its base port on.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import numpy as np
import pytest

from tmexp.envs.base import EnvSpec, RewardSpec
from tmexp.envs.tmi import processes
from tmexp.envs.tmi.env import TmiEnv
from tmexp.envs.tmi.errors import GameTimeout
from tmexp.envs.tmi.params import TmiParams
from tmexp.envs.track import load_track

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fake launch scripts are sh scripts")

SPEC = EnvSpec()
GAME = f"{sys.executable} -m tmexp.sim fake-game --countdown-ms 0"


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    x = np.arange(0.0, 300.0, 0.5)
    path = tmp_path_factory.mktemp("tracks") / "straight.npy"
    np.save(path, np.stack([x, np.full_like(x, 10.0), np.zeros_like(x)], axis=1))
    return load_track(path)


@pytest.fixture
def name():
    """A process name no other test's game has (at most 15 characters, as Linux keeps them)."""
    return "TmFake" + secrets.token_hex(4)


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"launch-{secrets.token_hex(3)}.sh"
    path.write_text("#!/bin/sh\n" + body.replace("GAME", f"{GAME} --process-name {name} --port $1") + "\n")
    return f"sh {path} {{port}}"


def blocking(tmp_path, name, extra=""):
    """A launch script that runs the game in the foreground (as ``wine TMLoader.exe run ...`` does)."""
    return script(tmp_path, name, f"GAME {extra}")


def returning(tmp_path, name, extra=""):
    """A launch script that starts the game in its own session and returns (as TMLoader on Windows does)."""
    return script(tmp_path, name, f"setsid GAME {extra} >/dev/null 2>&1 &\nexit 0")


def make_env(track, port, launch, name, **params) -> TmiEnv:
    return TmiEnv(
        track,
        SPEC,
        RewardSpec(),
        TmiParams(
            base_tmi_port=port,
            launch_command=launch,
            game_process_name=name,
            connect_timeout_s=60,
            focus_command="",
            **params,
        ),
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def race_a_little(env, steps=5):
    obs, info = env.reset()
    assert info["race_time_ms"] == 0
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(0)
    assert info["race_time_ms"] == 50 * steps


@pytest.mark.parametrize("kind", ["blocking", "returning"])
def test_the_game_started_by_a_launch_command_that_blocks_or_returns_is_owned_by_its_pid(
    straight, tmp_path, name, kind
):
    launch = (blocking if kind == "blocking" else returning)(tmp_path, name)
    env = make_env(straight, free_port(), launch, name)
    try:
        race_a_little(env)
        game_pid = env.instance.game_pid
        assert game_pid is not None and processes.alive(game_pid)
        assert game_pid != env.instance.process.pid  # the game, not the launch script
        assert processes.pids_named(name) == {game_pid}
        assert env._start_state_pid == game_pid  # the start state belongs to the game's process, found at connect
        if kind == "returning":
            assert env.instance.process.poll() == 0  # the script's exit is no crash
        race_a_little(env)  # and the next race runs on the same game
        assert env.instance.game_pid == game_pid and env.instance.restarts == 0
    finally:
        env.close()
    assert processes.wait_gone(game_pid, timeout_s=10)  # killed by its own pid, outside the script's session


def test_a_hung_game_is_killed_by_its_own_pid_and_relaunched(straight, tmp_path, name):
    env = make_env(
        straight, free_port(), returning(tmp_path, name, "--stall-after 25"), name, timeout_during_run_ms=500
    )
    try:
        env.reset()
        with pytest.raises(GameTimeout):
            for _ in range(40):
                env.step(0)
        hung = env.instance.game_pid
        env.params.timeout_during_run_ms = TmiParams().timeout_during_run_ms
        obs, info = env.reset()  # the next race starts on a fresh game
        assert info["race_time_ms"] == 0 and env.instance.game_pid not in (None, hung)
        assert not processes.alive(hung)
    finally:
        env.close()


def test_each_launched_game_is_focused_once(straight, tmp_path, name):
    focused = tmp_path / "focused"
    launch = blocking(tmp_path, name, "--exit-after 30")
    env = TmiEnv(
        straight,
        SPEC,
        RewardSpec(),
        TmiParams(
            base_tmi_port=free_port(),
            launch_command=launch,
            game_process_name=name,
            connect_timeout_s=60,
            focus_command=f"sh -c 'echo {{pid}} >> {focused}'",
        ),
    )
    try:
        race_a_little(env)
        first = env.instance.game_pid
        race_a_little(env)  # the same game: not focused again
        with pytest.raises(ConnectionError):
            race_a_little(env, steps=40)  # the game crashes at its 30th run step
        race_a_little(env)
        second = env.instance.game_pid
    finally:
        env.close()
    assert second != first
    assert focused.read_text().split() == [str(first), str(second)]


def test_two_tasks_on_one_node_get_different_ports_from_the_same_base_port(straight, tmp_path, name):
    """Two tasks (here two envs of one process) with the same env.tmi.base_tmi_port never share a game."""
    base = free_port()
    first = make_env(straight, base, blocking(tmp_path, name), name)
    second = make_env(straight, base, blocking(tmp_path, name), name)
    try:
        race_a_little(first)
        race_a_little(second)
        assert first.port == base and second.port != base
        assert first.instance.game_pid != second.instance.game_pid
        race_a_little(first)  # each keeps its own game
        race_a_little(second)
    finally:
        first.close()
        second.close()


def test_the_launch_lock_is_free_once_the_game_raced_its_first_frame(straight, tmp_path, name):
    import fcntl

    env = make_env(straight, free_port(), blocking(tmp_path, name), name)
    try:
        assert not env.instance._lock.held
        race_a_little(env)
        assert not env.instance._lock.held
        with open(processes.LOCK_PATH, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # no one holds it: the next game may start
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        env.close()


def test_processes_are_listed_by_name_and_told_alive(name):
    import subprocess

    child = subprocess.Popen(
        [sys.executable, "-c", f"open('/proc/self/comm', 'w').write('{name}'); import time; time.sleep(60)"]
    )
    try:
        for _ in range(100):
            if child.pid in processes.pids_named(name):
                break
            import time

            time.sleep(0.05)
        assert processes.pids_named(name) == {child.pid} and processes.alive(child.pid)
        assert child.pid not in processes.pids_named(name + "x")
    finally:
        processes.kill(child.pid)
        child.wait(timeout=10)
    assert not processes.alive(child.pid) and os.getpid() not in processes.pids_named(name)


def test_a_relaunched_game_closes_its_console_first():
    from tmexp.envs.tmi import commands

    assert commands.on_connect(TmiParams(), relaunched=True)[0] == "toggle_console"
    assert "toggle_console" not in commands.on_connect(TmiParams(), relaunched=False)
    assert "toggle_console" not in commands.on_connect(TmiParams(toggle_console_after_launch=False), relaunched=True)


def test_the_session_of_a_process_is_read_from_proc():
    assert processes.session_of(os.getpid()) == os.getsid(0)


def test_two_task_processes_started_together_on_one_node_never_share_a_port(straight, tmp_path, name):
    """Two tasks (two processes, as SLURM starts two array tasks on one node) with the same base port, launching
    their games at the same time: the launch lock and the port probe give each its own game and port."""
    import json
    import subprocess

    line = tmp_path / "line.npy"
    np.save(line, straight.points)
    base = free_port()
    code = (
        "import json, sys; from tmexp.envs.base import EnvSpec, RewardSpec; from tmexp.envs.tmi.env import TmiEnv; "
        "from tmexp.envs.tmi.params import TmiParams; from tmexp.envs.track import load_track; "
        f"env = TmiEnv(load_track({str(line)!r}), EnvSpec(), RewardSpec(), TmiParams(base_tmi_port={base}, "
        f"launch_command={blocking(tmp_path, name)!r}, game_process_name={name!r}, focus_command='', "
        f"launch_lock_path={str(tmp_path / 'node.lock')!r})); "
        "env.reset(); [env.step(0) for _ in range(20)]; "
        "print(json.dumps({'port': env.port, 'pid': env.instance.game_pid, 'time': env.car.race_time_ms})); "
        "env.close()"
    )
    tasks = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(task.communicate(timeout=180)[0].strip().splitlines()[-1]) for task in tasks]
    assert all(task.returncode == 0 for task in tasks)
    assert results[0]["port"] != results[1]["port"] and results[0]["pid"] != results[1]["pid"]
    assert base in {r["port"] for r in results}  # the first to launch took the base port
    assert all(r["time"] == 1000 for r in results)  # each raced its own game
    assert processes.pids_named(name) == set()  # and both games were ended with their tasks
