"""Map cycles: several maps in one run, in Linesight's order, each with its own tags, best times and eval races."""

import dataclasses
import json
import re

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from tmexp.core import metrics
from tmexp.core.agent import MapCycle as OneMapCycle
from tmexp.core.build import build
from tmexp.core.checkpoint import load_checkpoint
from tmexp.core.collectors import Collector
from tmexp.envs.base import EnvSpec, RewardSpec
from tmexp.envs.float_stats import FloatStats
from tmexp.envs.maps import MapCycle, cycle_maps
from tmexp.envs.sim import SimEnv, SimParams, SimVecEnv
from tmexp.envs.sim.env import pooled_float_stats
from tmexp.envs.track import load_map
from tmexp.train import compose_config, train
from tmexp.validation import ConfigError, check_config

TINY = ["+experiment=smoke"]
CYCLE = ["map=A01_hock"]


@pytest.fixture(scope="module")
def tracks():
    return [load_map("A01"), load_map("hock")]


# ----- the cycle's order ---------------------------------------------------------------------------------------
def test_the_two_map_option_composes_and_each_map_takes_the_nodes_race_counts():
    cfg = compose_config(CYCLE + ["map.explo_races_per_cycle=3", "map.cycle.1.eval_races_per_cycle=2"])
    check_config(cfg)
    maps = cycle_maps(cfg.map)
    assert [(m.short_name, m.explo_races, m.eval_races) for m in maps] == [("A01", 3, 1), ("hock", 3, 2)]
    assert cycle_maps(compose_config(["map=A01"]).map)[0].short_name == "A01"  # map=A01 unchanged: a cycle of one


def test_races_follow_linesights_order_explo_then_eval_map_by_map_round_again():
    overrides = ["map.explo_races_per_cycle=3", "map.cycle.1.eval_races_per_cycle=2"]
    cycle = MapCycle.of(compose_config(CYCLE + overrides).map)
    assert len(cycle) == 9
    order = [cycle.race(i) for i in range(11)]
    explo_a, eval_a, explo_h, eval_h = (0, False), (0, True), (1, False), (1, True)
    assert order == [explo_a] * 3 + [eval_a] + [explo_h] * 3 + [eval_h] * 2 + [explo_a] * 2


def test_a_one_map_cycle_is_the_one_map_cycle_of_before():
    cycle, before = MapCycle.of(compose_config(["map.explo_races_per_cycle=2"]).map), OneMapCycle(2, 1)
    assert [cycle.race(i) for i in range(7)] == [(0, before.is_eval(i)) for i in range(7)]
    assert [cycle.first_race(car, 6) for car in range(6)] == [before.first_race(car, 6) for car in range(6)]


def test_cars_start_spread_over_the_whole_cycle_so_both_maps_race_from_the_start():
    cycle = MapCycle.of(compose_config(CYCLE).map)  # 64 + 1 races of A01, then 64 + 1 of hock
    maps = [cycle.race(cycle.first_race(car, 16))[0] for car in range(16)]
    assert maps.count(0) == maps.count(1) == 8


# ----- the simulator with several tracks ---------------------------------------------------------------------
def test_the_second_builtin_track_is_the_real_hockolicious_line_and_the_driver_finishes_it(tracks):
    from tmexp.envs.sim.driver import drive_lap

    hock = tracks[1]
    assert 4000 < hock.length < 4100  # the real map's centreline, not an authored one
    lap = drive_lap(hock, EnvSpec(), SimParams())
    assert lap.finished and 60_000 < lap.race_time_ms < 150_000


def test_cars_on_different_tracks_race_as_one_car_envs_on_those_tracks(tracks):
    spec, rewards, params = EnvSpec(), RewardSpec(), SimParams()
    venv = SimVecEnv(3, tracks, spec, rewards, params, autoreset_mode=AutoresetMode.DISABLED)
    maps = np.array([1, 0, 1])
    obs, _ = venv.reset(seed=[5, 6, 7], options={"map_index": maps})
    alone = [SimEnv(tracks[m], spec, rewards, params, seed=5 + car) for car, m in enumerate(maps)]
    expected = [env.reset()[0] for env in alone]
    rng = np.random.default_rng(0)
    for _ in range(60):
        for car in range(3):
            np.testing.assert_array_equal(obs["img"][car], expected[car]["img"])
        actions = rng.integers(0, 3, size=3)  # forward, forward-left, forward-right
        obs, reward, terminated, truncated, info = venv.step(actions)
        singles = [env.step(int(a)) for env, a in zip(alone, actions)]
        for car, (o, r, te, tr, i) in enumerate(singles):
            np.testing.assert_array_equal(obs["floats"][car], o["floats"])
            assert reward[car] == r and terminated[car] == te and truncated[car] == tr
            assert info["progress_m"][car] == i["progress_m"] and info["race_time_ms"][car] == i["race_time_ms"]
        assert not (terminated.any() or truncated.any())
        expected = [o for o, *_ in singles]
    # A reset moves a car to the track it is told; the others race on where they are.
    obs, _ = venv.reset(
        seed=[None, 9, None], options={"reset_mask": np.array([False, True, False]), "map_index": np.array([0, 1, 0])}
    )
    assert venv.map_index.tolist() == [1, 1, 1]
    first, _ = SimEnv(tracks[1], spec, rewards, params, seed=9).reset()
    np.testing.assert_array_equal(obs["img"][1], first["img"])
    np.testing.assert_array_equal(obs["floats"][0], singles[0][0]["floats"])


def test_pooled_float_stats_are_the_stats_of_all_frames_together():
    rng = np.random.default_rng(1)
    a, b = rng.normal(2.0, 1.0, (300, 4)), rng.normal(-1.0, 3.0, (100, 4))
    a[:, 3] = b[:, 3] = 5.0  # constant on both maps: passes through unscaled, as with one map

    def stats(x):
        return FloatStats(x.mean(axis=0).astype(np.float32), x.std(axis=0).astype(np.float32), frames=len(x))

    mean, std = pooled_float_stats([stats(a), stats(b)])
    both = np.concatenate([a, b])
    np.testing.assert_allclose(mean[:3], both.mean(axis=0)[:3], rtol=1e-5)
    np.testing.assert_allclose(std[:3], both.std(axis=0)[:3], rtol=1e-5)
    assert mean[3] == 0.0 and std[3] == 1.0


# ----- collectors, learner, resume ------------------------------------------------------------------------------
def test_each_car_plays_its_maps_in_the_cycles_order(tmp_path, one_thread):
    cfg = compose_config(TINY + CYCLE + ["map.explo_races_per_cycle=1", "performance.cars_per_collector=1"])
    run = build(cfg, tmp_path)
    try:
        run.weights.publish(run.online)
        settings = dataclasses.replace(run.source.collector.s, cars=2, total_cars=2)
        collector = Collector(settings, 0, run.weights, run.frames_played)
        races: dict[int, list] = {0: [], 1: []}
        while min(len(r) for r in races.values()) < 4:
            for rollout in collector.play_races():
                races[rollout["car"]].append(rollout)
        cycle = MapCycle.of(cfg.map)  # A01 explo, A01 eval, hock explo, hock eval
        for car in (0, 1):
            start = cycle.first_race(car, 2)
            expected = [cycle.race(start + i) for i in range(4)]
            got = [(cycle.names.index(r["map"]), r["is_eval"]) for r in races[car][:4]]
            assert got == expected
            assert [r["next_race_index"] for r in races[car][:4]] == [start + i + 1 for i in range(4)]
        assert {r["map"] for r in races[0] + races[1]} == {"A01", "hock"}
        collector.close()
    finally:
        run.close()


@pytest.mark.slow
def test_a_cycle_run_logs_each_map_as_a_one_map_run_does_and_resumes_where_its_cars_were(tmp_path):
    overrides = (
        TINY + CYCLE + ["map.explo_races_per_cycle=1", "performance.cars_per_collector=2", "training.max_frames=800"]
    )
    assert train(compose_config(overrides), tmp_path) == "max_frames"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for m in ("A01", "hock"):
        for tag in (
            metrics.alltime_min_ms(m),
            metrics.eval_race_time(m),
            metrics.eval_race_finished(m),
            metrics.explo_race_time(m),
            metrics.avg_q(m),
            metrics.explo_race_progress(m),
        ):
            assert tag in tags, tag
    assert not any("A01_hock" in tag for tag in tags)  # the cycle's name is no map
    status = json.loads((tmp_path / "status.json").read_text())
    assert set(status["best_ms"]) == {"A01", "hock"}
    position = load_checkpoint(tmp_path)["counters"]["cycle_position"]
    assert set(position) == {0, 1} and all(p >= 1 for p in position.values())

    resumed = build(compose_config(overrides + ["training.max_frames=1200"]), tmp_path)
    try:
        assert [car.race_index for car in resumed.source.collector.cars] == [position[0], position[1]]
    finally:
        resumed.close()


# ----- mistakes a user can make -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, words",
    [
        (["map.cycle.1.short_name=A01"], "names A01 more than once"),
        (["map.cycle.1.short_name=no such"], "letters, digits"),
        (["map.cycle.1.short_name=nowhere"], "no built-in track"),
        (["map.cycle.1.reference_line_path=/nonexistent/line.npy"], "map.cycle[1].reference_line_path"),
        (["map.reference_line_path=/nonexistent/line.npy"], "give each map's own in its map.cycle entry"),
        (["map.cycle.0.explo_races_per_cycle=0", "map.cycle.0.eval_races_per_cycle=0"], "at least one race"),
    ],
)
def test_a_bad_cycle_ends_in_one_line_naming_the_entry(overrides, words):
    with pytest.raises(ConfigError, match=re.escape(words)) as error:
        check_config(compose_config(CYCLE + overrides))
    assert "\n" not in str(error.value)


# ----- the learning benchmark on a cycle ---------------------------------------------------------------------
def cycle_run_rows(races, minutes=10, frames_per_min=6000):
    """Counters every minute, and races as (map, minute, seconds or None), each at its own step."""
    rows = []
    for k in range(minutes + 1):
        frames = frames_per_min * k
        rows += [
            (metrics.CUMUL_FRAMES, frames, 1.7e9 + 60 * k, frames),
            (metrics.CUMUL_TRAINING_HOURS, frames, 1.7e9 + 60 * k, k / 60),
        ]
    for i, (m, minute, seconds) in enumerate(races):
        step, wall = int(frames_per_min * minute) + 1 + i, 1.7e9 + 60 * minute
        rows += [
            (metrics.explo_race_time(m), step, wall, seconds or 300.0),
            (metrics.explo_race_finished(m), step, wall, float(seconds is not None)),
            (metrics.explo_race_progress(m), step, wall, 100.0),
        ]
    return sorted(rows, key=lambda r: (r[1], r[2]))


def test_the_learning_benchmark_gives_each_map_of_a_cycle_its_figures(tmp_path, capsys):
    from tmexp.analysis.synthetic import write_run_dir
    from tmexp.bench import learning

    config = {"seed": 0, "map": {"short_name": "A01_hock", "cycle": [{"short_name": "A01"}, {"short_name": "hock"}]}}
    both = write_run_dir(
        tmp_path / "both", cycle_run_rows([("A01", 2.0, 30.0), ("hock", 7.0, 110.0), ("A01", 8.0, 27.0)]), config=config
    )
    one = write_run_dir(
        tmp_path / "one", cycle_run_rows([("A01", 3.0, 29.0), ("hock", 4.0, None)]), config={**config, "seed": 1}
    )
    figures = learning.figures_of_runs([both, one], minutes=10)
    assert [(f.map, f.seed, f.first_finish_min) for f in figures] == [
        ("A01", 0, pytest.approx(2.0, abs=0.01)),
        ("hock", 0, pytest.approx(7.0, abs=0.01)),
        ("A01", 1, pytest.approx(3.0, abs=0.01)),
        ("hock", 1, None),
    ]
    assert figures[0].best_s["10"] == pytest.approx(27.0)
    assert learning.all_maps_finished(figures) == {str(both): pytest.approx(7.0, abs=0.01), str(one): None}
    assert learning.main(["--runs", str(both), str(one), "--minutes", "10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["median_by_map"]) == {"A01", "hock"}
    assert report["median_by_map"]["hock"]["finished_runs"] == 1
    assert report["median_all_maps_finished_min"] is None  # one run of two never finished hock: the median never
    assert learning.main(["--runs", str(both), str(one), "--minutes", "10"]) == 0
    text = capsys.readouterr().out
    assert "map A01" in text and "map hock" in text and "every map of the cycle finished: 1 of 2 runs" in text


# ----- the game: each race on its map of the cycle -------------------------------------------------------------
def test_the_game_env_loads_each_map_of_the_cycle_when_its_race_comes(tracks):
    import threading

    from tmexp.envs.fake_game import FakeGame, FakeRace
    from tmexp.envs.tmi.env import TmiEnv
    from tmexp.envs.tmi.params import TmiParams

    spec, rewards = EnvSpec(), RewardSpec()
    game = FakeGame(FakeRace(tracks[0], spec), port=0, load_on_connect=False)  # in its menus until a map command
    game.listen()
    thread = threading.Thread(target=game.serve_forever, daemon=True)
    thread.start()
    # The fake game loads built-in tracks by name: A01 and hock stand for the maps' .Challenge.Gbx.
    env = TmiEnv(
        tracks[0], spec, rewards, TmiParams(base_tmi_port=game.port), maps=[(tracks[0], "A01"), (tracks[1], "hock")]
    )
    try:
        for index in (1, 0, 1):
            track = tracks[index]
            _, info = env.reset(options={"map_index": np.array([index])})
            assert env.track is track
            sim = SimEnv(track, spec, rewards, SimParams(), seed=0)
            sim.reset()
            for action in [0] * 30:
                _, reward, _, _, info = env.step(action)
                _, sim_reward, _, _, sim_info = sim.step(action)
                assert abs(info["progress_m"] - sim_info["progress_m"]) < 1e-3 and abs(reward - sim_reward) < 1e-4
            assert game.race.track.name == track.name
    finally:
        env.close()
        game.stop()
        thread.join(timeout=5)


def test_a_checkpoint_from_before_map_cycles_keeps_its_robust_eval_mean_for_its_map():
    from types import SimpleNamespace

    from tmexp.core.checkpoint import Counters
    from tmexp.core.learner import Learner

    old = Counters(eval_time_ema_s=31.5)  # as Counters(**state["counters"]) reads an older checkpoint
    learner = Learner(SimpleNamespace(counters=old, settings=SimpleNamespace(map_names=("A01",))))
    assert learner.run.counters.eval_time_ema_by_map == {"A01": 31.5}
    assert learner.run.counters.eval_time_ema_s is None
