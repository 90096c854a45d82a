"""Collectors that drive K cars: the same races as K one-car collectors, the map cycle across cars, restarts."""

import dataclasses
import time

import numpy as np
import pytest
import torch.multiprocessing as mp
from gymnasium.vector import AutoresetMode

from tmexp.core.agent import MapCycle
from tmexp.core.build import build
from tmexp.core.collectors import Collector, CollectorPool
from tmexp.envs.factory import make_env, make_vector_env
from tmexp.train import compose_config

TINY = ["+experiment=smoke"]
PER_STEP = ("actions", "rewards", "greedy")
PER_RACE = ("terminated", "finished", "race_time_ms", "progress_m", "cp_times", "cutoff", "is_eval", "car")


def races_by_car(collector: Collector, per_car: int) -> dict[int, list[dict]]:
    """The first ``per_car`` races of each of the collector's cars, in the order each car played them."""
    k = len(collector.cars)
    races: dict[int, list[dict]] = {}
    while min(len(races.get(car, [])) for car in range(collector.index * k, collector.index * k + k)) < per_car:
        for rollout in collector.play_races():
            races.setdefault(rollout["car"], []).append(rollout)
    return {car: r[:per_car] for car, r in races.items()}


@pytest.fixture
def serial_run(tmp_path, one_thread):
    """A serial smoke run's wiring (settings, weights, frame counter): map cycle of 2 exploration races and 1 eval
    race; epsilon about 0.3 at the frame count set, so that actions are part greedy, part random."""
    cfg = compose_config(
        TINY + ["map.explo_races_per_cycle=2", "map.eval_races_per_cycle=1", "performance.cars_per_collector=1"]
    )
    run = build(cfg, tmp_path)
    run.weights.publish(run.online)
    run.frames_played.value = 120
    yield run
    run.close()


def test_k_cars_play_the_races_of_k_one_car_collectors(serial_run):
    run, k = serial_run, 3
    settings = run.source.collector.s
    assert not settings.btr.use_noisy_linear  # NoisyNet noise is one sample per batched forward: not comparable
    together = Collector(dataclasses.replace(settings, cars=k, total_cars=k), 0, run.weights, run.frames_played)
    alone = [
        Collector(
            dataclasses.replace(settings, cars=1, total_cars=k, seed=settings.seed + car),
            car,
            run.weights,
            run.frames_played,
        )
        for car in range(k)
    ]
    try:
        batched = races_by_car(together, per_car=3)
        for car, collector in enumerate(alone):
            single = races_by_car(collector, per_car=3)[car]
            assert len(single) == len(batched[car]) == 3
            for a, b in zip(batched[car], single):
                for key in PER_STEP + ("img", "floats"):
                    np.testing.assert_array_equal(a[key], b[key], err_msg=f"car {car}: {key}")
                for key in PER_RACE:
                    assert a[key] == b[key], (car, key)
                np.testing.assert_allclose(a["q_taken"], b["q_taken"], rtol=1e-4, atol=1e-6)
        every = [race for races in batched.values() for race in races]
        assert any(r["is_eval"] for r in every) and any(not r["is_eval"] for r in every)
        assert any(not r["greedy"].all() for r in every)  # exploration happened, and still the races agree
    finally:
        together.close()
        for collector in alone:
            collector.close()


def test_each_car_follows_the_map_cycle_from_its_staggered_start(serial_run):
    run, k = serial_run, 3
    run.frames_played.value = 0  # epsilon 1: exploration races are random, eval races greedy
    settings = dataclasses.replace(run.source.collector.s, cars=k, total_cars=k)
    collector = Collector(settings, 0, run.weights, run.frames_played)
    try:
        races = races_by_car(collector, per_car=4)
        for car in range(k):  # cycle: explo, explo, eval; car c starts at position c
            assert [r["is_eval"] for r in races[car]] == [MapCycle(2, 1).is_eval(car + i) for i in range(4)]
        firsts = [races[car][0]["is_eval"] for car in range(k)]
        assert firsts == [False, False, True]  # the run's eval races are spread, not all cars' at once
        every = [r for car_races in races.values() for r in car_races]
        assert all(r["greedy"].all() for r in every if r["is_eval"])  # eval races are greedy
        assert not any(r["greedy"].all() for r in every if not r["is_eval"])  # epsilon 1: random actions
    finally:
        collector.close()


def test_the_cycle_is_staggered_over_every_car_of_the_run():
    cycle = MapCycle(64, 1)
    starts = [cycle.first_race(car, 16) for car in range(16)]
    assert starts[0] == 0 and starts == sorted(starts) and max(starts) < 65
    assert sum(cycle.is_eval(s + i) for s in starts for i in range(5)) == 1  # one eval race in the first 80
    assert [MapCycle(2, 1).first_race(car, 6) for car in range(6)] == [0, 0, 1, 1, 2, 2]
    assert MapCycle(64, 1).first_race(0, 1) == 0  # a lone car starts where collectors always started


def test_a_race_holds_one_observation_more_than_actions_and_its_time(serial_run):
    run = serial_run
    collector = Collector(
        dataclasses.replace(run.source.collector.s, cars=4, total_cars=4), 0, run.weights, run.frames_played
    )
    try:
        for race in (r for races in races_by_car(collector, per_car=2).values() for r in races):
            t = len(race["actions"])
            assert race["img"].shape[0] == race["floats"].shape[0] == t + 1 and len(race["rewards"]) == t
            if not race["finished"]:
                assert race["race_time_ms"] == 50 * t
            assert race["collector"] == 0 and 0 <= race["car"] < 4
    finally:
        collector.close()


def test_cars_act_at_the_start_of_a_mini_race(tmp_path, one_thread):
    cfg = compose_config(TINY + ["training.temporal_mini_race_duration_ms=7000", "performance.cars_per_collector=4"])
    run = build(cfg, tmp_path)
    try:
        collector = run.source.collector
        assert collector.s.mini_race and collector.net.float_dim == run.spaces.float_dim + 1
        race = collector.play_races()[0]
        assert race["floats"].shape[1] == run.spaces.float_dim  # replay keeps the env's floats; the time is added
        assert np.isfinite(race["q_taken"]).all()  # when a batch is sampled
    finally:
        run.close()


def test_the_serial_source_hands_over_races_that_end_together_one_at_a_time(tmp_path, one_thread):
    cfg = compose_config(TINY + ["performance.cars_per_collector=8"])
    run = build(cfg, tmp_path)
    try:
        source = run.source
        assert source.get(timeout=0.0) is None  # it plays only when the learner would wait
        first = source.get(timeout=0.5)
        assert first is not None
        waiting = []
        while (race := source.get(timeout=0.0)) is not None:
            waiting.append(race)
        assert {r["car"] for r in [first, *waiting]} <= set(range(8))
        assert len({r["car"] for r in [first, *waiting]}) == 1 + len(waiting)  # one race per car per step
    finally:
        run.close()


def test_a_lost_connection_drops_the_races_in_progress(serial_run):
    run = serial_run
    collector = Collector(
        dataclasses.replace(run.source.collector.s, cars=2, total_cars=2), 0, run.weights, run.frames_played
    )
    try:
        collector.step()
        real_step = collector.env.step

        def lost(actions):
            raise ConnectionError("game closed the connection")

        collector.env.step = lost
        with pytest.raises(ConnectionError):
            collector.step()
        assert not any(car.racing for car in collector.cars)
        collector.env.step = real_step
        race = collector.play_races()[0]
        assert len(race["actions"]) == race["img"].shape[0] - 1  # a fresh race, not the dropped one's tail
    finally:
        collector.close()


def test_a_dead_multi_car_collector_is_restarted_and_counted(tmp_path):
    """A collector process killed mid-run is restarted in its place (counted), the others untouched, and the new one
    drives the dead one's cars again. (The project's one dead-collector test: multi-car covers one car per process.)"""
    cfg = compose_config(
        TINY + ["performance.serial=false", "performance.gpu_collectors_count=2", "performance.cars_per_collector=3"]
    )
    run = build(cfg, tmp_path)
    pool = run.source
    try:
        pool.start()
        victim = pool.processes[0]
        deadline = time.time() + 90
        while pool.get(timeout=1.0) is None and time.time() < deadline:
            pass  # wait until collectors deliver races
        victim.kill()
        victim.join(timeout=10)
        pool.check_alive()
        assert pool.restarts == 1 and pool.processes[0] is not victim and pool.processes[0].is_alive()
        assert pool.processes[1].is_alive()
        deadline = time.time() + 90
        cars: dict[int, set[int]] = {0: set(), 1: set()}
        while min(len(c) for c in cars.values()) < 2 and time.time() < deadline:
            rollout = pool.get(timeout=1.0)
            if rollout is not None:
                cars[rollout["collector"]].add(rollout["car"])
        # Collector i drives cars 3i .. 3i + 2; the restarted one drives its cars again.
        assert len(cars[0]) >= 2 and cars[0] <= {0, 1, 2}
        assert len(cars[1]) >= 2 and cars[1] <= {3, 4, 5}
    finally:
        run.close()


def test_a_collector_that_cannot_start_says_why_after_a_few_restarts(serial_run):
    run = serial_run
    settings = run.source.collector.s
    broken = dataclasses.replace(settings, env=dataclasses.replace(settings.env, backend="tmi"), cars=2)
    pool = CollectorPool(broken, 1, run.weights, run.frames_played, mp.get_context("spawn"), queue_size=2)
    try:
        pool.start()
        deadline = time.time() + 120
        with pytest.raises(RuntimeError, match="could not start.*one car per collector"):
            while time.time() < deadline:
                assert pool.get(timeout=0.5) is None
                pool.check_alive()
        assert pool.restarts == 3
    finally:
        pool.close()


def test_the_simulator_resets_the_cars_it_is_told_to_and_no_others():
    cfg = compose_config([])
    venv = make_vector_env(cfg.env, cfg.map, cfg.rewards, 3)
    try:
        assert venv.metadata["autoreset_mode"] == AutoresetMode.DISABLED
        obs, _ = venv.reset(seed=[1, 2, 3])
        for _ in range(10):
            obs, _, _, _, _ = venv.step(np.zeros(3, dtype=np.int64))  # accelerate
        moved = obs["floats"][0].copy()
        obs, _ = venv.reset(seed=[None, 7, None], options={"reset_mask": np.array([False, True, False])})
        one = make_env(cfg.env, cfg.map, cfg.rewards)
        first, _ = one.reset(seed=7)
        np.testing.assert_array_equal(obs["img"][1], first["img"])  # car 1 as a one-car env with seed 7
        np.testing.assert_array_equal(obs["floats"][1], first["floats"])
        np.testing.assert_array_equal(obs["floats"][0], moved)  # car 0 raced on
    finally:
        venv.close()


def test_the_game_backend_drives_one_car_per_collector():
    cfg = compose_config(["env=tmi"])
    assert cfg.performance.cars_per_collector == 1  # env=tmi chooses it, whatever the simulator's default
    with pytest.raises(ValueError, match="one car per collector"):
        make_vector_env(cfg.env, cfg.map, cfg.rewards, 2)


def test_the_collect_benchmark_times_the_real_collector_for_each_k(capsys, one_thread):
    import json

    from tmexp.bench.collect import main

    assert main(["--experiment", "smoke", "--cars", "1,2", "--seconds", "0.2", "--rounds", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["experiment"] == "smoke" and result["iqn_k"] == 8 and result["torch_threads"] == 1
    for k in (1, 2):
        assert result[f"frames_per_s_k{k}"] > 0 and result[f"frames_per_cpu_s_k{k}"] > 0
    assert result["ratio_k2_vs_k1"] > 0


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--cars", "0"], "--cars"),
        (["--cars", "1,x"], "--cars"),
        (["performance.cars_per_collector=-1"], "performance.cars_per_collector"),
    ],
)
def test_the_collect_benchmark_refuses_bad_options_in_one_line(argv, names, capsys):
    from tmexp.bench.collect import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert names in err and "\n" not in err and err.startswith("tmexp.bench collect: error:")
