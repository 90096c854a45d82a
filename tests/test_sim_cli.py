"""``python -m tmexp.sim``: drive, render and replay, and one-line errors for bad tracks, runs and races."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tmexp.sim import main

REPO = Path(__file__).resolve().parents[1]


def test_drive_prints_the_reference_lap_time(capsys):
    assert main(["drive", "--map", "A01"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("A01: ") and "reference driver lap" in out
    seconds = float(out.split("lap ")[1].split(" s")[0])
    assert 20.0 <= seconds <= 30.0


def test_render_writes_a_png(tmp_path, capsys):
    out = tmp_path / "a01.png"
    assert main(["render", "--map", "A01", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out) in capsys.readouterr().out


def test_bad_tracks_end_in_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 3)))
    for args in (["drive", "--map", "nowhere"], ["render", "--map", "X", "--reference-line", str(bad)]):
        proc = subprocess.run([sys.executable, "-m", "tmexp.sim", *args], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
        assert "Traceback" not in proc.stderr
    assert "bad.npy" in proc.stderr and "at least 10" in proc.stderr


def test_fake_game_on_a_port_in_use_ends_in_one_line_and_exit_2():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "tmexp.sim", "fake-game", "--port", str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "choose another --port" in proc.stderr


# ----- replay: watch a run ------------------------------------------------------------------------------------------
RUN_OVERRIDES = ["map=A01_hock", "env.sim.engine_accel_mps2=12.0"]  # not the default physics: the run's own count


def write_run(run_dir: Path, overrides=RUN_OVERRIDES) -> None:
    """A run directory's config, as a training run writes it."""
    from omegaconf import OmegaConf

    from tmexp import rundir
    from tmexp.train import compose_config

    cfg = compose_config(overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_resolved_config(
        run_dir, OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True, enum_to_str=True)
    )


def record_race(run_dir: Path, map_index: int, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, int]:
    """Race once in the run's own vector env as a collector does (the reference driver, with a share of random
    actions), save it where the learner saves a best race, and return its actions and time."""
    from tmexp.envs.driver import ReferenceDriver
    from tmexp.envs.factory import make_vector_env
    from tmexp.envs.sim.physics import driver_car
    from tmexp.train import compose_config

    cfg = compose_config(RUN_OVERRIDES)
    venv = make_vector_env(cfg.env, cfg.map, cfg.rewards, 1, seed=3)
    _, info = venv.reset(seed=[seed], options={"reset_mask": np.array([True]), "map_index": np.array([map_index])})
    driver = ReferenceDriver(venv.tracks[map_index], driver_car(cfg.env.sim))
    rng, actions = np.random.default_rng(seed), []
    while True:
        action = driver.act(venv.batches[map_index].car.view(0), info["progress_m"][0], 0.05)
        actions.append(int(rng.integers(12)) if rng.random() < noise else action)
        _, _, terminated, truncated, info = venv.step(np.array(actions[-1:]))
        if terminated[0] or truncated[0]:
            break
    assert info["finished"][0]
    ms = int(info["race_time_ms"][0])
    (run_dir / "best_runs").mkdir(exist_ok=True)
    np.save(run_dir / "best_runs" / f"{venv.tracks[map_index].name}_{ms}.npy", np.asarray(actions))
    return np.asarray(actions), ms


def test_replaying_a_best_race_reproduces_its_recorded_time_on_the_runs_own_settings(tmp_path, capsys):
    from tmexp.envs.base import EnvSpec, RewardSpec
    from tmexp.envs.sim import SimParams
    from tmexp.envs.sim.playback import play_actions, run_settings
    from tmexp.envs.track import load_map

    run = tmp_path / "run"
    write_run(run)
    actions, ms = record_race(run, map_index=0)
    assert main(["replay", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"A01_{ms}: {ms / 1000:.2f} s (recorded {ms / 1000:.2f} s)" in out
    png = run / "replay" / f"A01_{ms}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(png) in out
    # The run's physics matter: the same actions on the default simulator make another race.
    settings = run_settings(run)
    default = dataclasses.replace(settings, params=SimParams(), spec=EnvSpec(), rewards=RewardSpec())
    assert play_actions(load_map("A01"), default, actions, "default").time_ms != ms


def test_replay_picks_a_map_of_the_cycle_and_a_race_file(tmp_path, capsys):
    run = tmp_path / "run"
    write_run(run)
    _, slow = record_race(run, map_index=0, noise=0.3, seed=1)
    _, fast = record_race(run, map_index=0, noise=0.0)
    assert fast < slow
    assert main(["replay", str(run), "--race", "best"]) == 0
    assert f"A01_{fast}: " in capsys.readouterr().out  # best: the fastest
    race = run / "best_runs" / f"A01_{slow}.npy"
    assert main(["replay", str(run), "--race", str(race), "--out", str(tmp_path / "slow.png")]) == 0
    assert f"recorded {slow / 1000:.2f} s" in capsys.readouterr().out and (tmp_path / "slow.png").is_file()


@pytest.mark.parametrize(
    "args, words",
    [
        (["replay", "{tmp}/nowhere"], "does not exist"),
        (["replay", "{tmp}"], "no config_resolved.yaml"),
        (["replay", "{run}"], "no saved race of A01 or hock"),
        (["replay", "{run}", "--map", "map5"], "has no map 'map5'"),
        (["replay", "{run}", "--race", "fastest"], "neither best, latest nor"),
        (["replay", "{run}", "--checkpoint"], "holds no checkpoint"),
        (["replay", "{run}", "--game"], "ran on the simulator"),
    ],
)
def test_replay_mistakes_end_in_one_line_and_exit_2(tmp_path, args, words):
    run = tmp_path / "run"
    write_run(run)
    argv = [a.format(tmp=tmp_path, run=run) for a in args]
    proc = subprocess.run([sys.executable, "-m", "tmexp.sim", *argv], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and words in proc.stderr


def test_several_runs_best_races_on_one_track(tmp_path):
    from tmexp.envs.sim.playback import PlaybackError, best_races_figure

    runs = {}
    for arm, noise in (("arm a", 0.0), ("arm b", 0.2)):
        runs[arm] = tmp_path / arm
        write_run(runs[arm])
        record_race(runs[arm], map_index=0, noise=noise, seed=2)
    write_run(tmp_path / "none")  # a run without a finished race is left out
    out = best_races_figure({**runs, "none": tmp_path / "none"}, tmp_path / "arms.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(PlaybackError, match="has a saved best race"):
        best_races_figure({"none": tmp_path / "none"}, tmp_path / "empty.png")


@pytest.mark.slow
def test_replay_animates_a_race_as_a_gif(tmp_path, capsys):
    run = tmp_path / "run"
    write_run(run)
    _, ms = record_race(run, map_index=0)
    assert main(["replay", str(run), "--animate"]) == 0
    gif = run / "replay" / f"A01_{ms}.gif"
    assert gif.read_bytes()[:6] in (b"GIF87a", b"GIF89a") and str(gif) in capsys.readouterr().out


@pytest.mark.slow
def test_replay_drives_the_greedy_policy_of_a_runs_checkpoint(tmp_path, capsys):
    from tmexp.train import compose_config, train

    run = tmp_path / "run"
    train(compose_config(["+experiment=smoke", "training.max_frames=200"]), run)
    capsys.readouterr()  # the training's console lines
    assert main(["replay", str(run), "--checkpoint"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("checkpoint (greedy): ") and (run / "replay" / "checkpoint.png").is_file()
