"""The simulator as an environment: contract, determinism, physics properties, race semantics, rewards."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from tmexp.envs.base import INFO_KEYS, Env, EnvSpec, RewardSpec
from tmexp.envs.driver import ReferenceDriver
from tmexp.envs.sim import SimEnv, SimParams, SimVecEnv
from tmexp.envs.sim.driver import drive_lap
from tmexp.envs.sim.physics import driver_car
from tmexp.envs.track import Track, load_map

TRACKS = Path(__file__).resolve().parent / "data" / "tracks"


@pytest.fixture(scope="module")
def a01():
    return load_map("A01", None)


@pytest.fixture(scope="module")
def straight():
    n = 8001  # 4 km
    return Track.from_points(np.stack([np.arange(n) * 0.5, np.zeros(n), np.zeros(n)], axis=1), "straight")


def _env(track, seed=0, **spec):
    return SimEnv(track, EnvSpec(**spec), RewardSpec(), SimParams(), seed=seed)


def test_contract_spaces_and_info(a01):
    env = _env(a01)
    assert isinstance(env, Env)  # the whole contract of tmexp.envs.base, float statistics included
    obs, info = env.reset()
    assert env.action_space == gym.spaces.Discrete(12)
    assert env.observation_space.contains(obs)
    assert obs["img"].shape == (1, 64, 64) and obs["img"].dtype == np.uint8
    assert obs["floats"].dtype == np.float32
    assert set(INFO_KEYS) <= set(info) and info["race_time_ms"] == 0 and info["cutoff"] is None
    obs, reward, terminated, truncated, info = env.step(0)
    assert env.observation_space.contains(obs)
    assert isinstance(reward, float) and terminated is False and truncated is False
    assert isinstance(info["race_time_ms"], int) and isinstance(info["cp_times"], list)


def test_gymnasium_checker_accepts_it(a01):
    from gymnasium.utils.env_checker import check_env

    check_env(_env(a01), skip_render_check=True)


def test_race_time_grows_by_50ms_per_action(a01):
    env = _env(a01)
    env.reset()
    times = [env.step(a)[4]["race_time_ms"] for a in [0, 1, 2, 3, 0, 6, 9]]
    assert times == [50 * (k + 1) for k in range(7)]
    slow = _env(a01, tm_engine_step_per_action=2)
    slow.reset()
    assert slow.step(0)[4]["race_time_ms"] == 20


def _rollout(env, actions, seed):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        obs, r, term, trunc, info = env.step(int(a))
        out.append((obs, r, info["progress_m"]))
        if term or trunc:
            break
    return out


def test_same_seed_and_actions_give_the_same_trajectory_bit_for_bit(a01):
    params = SimParams(start_lateral_jitter_m=2.0)
    actions = np.random.default_rng(1).integers(0, 12, 300)
    runs = [_rollout(SimEnv(a01, EnvSpec(), RewardSpec(), params), actions, seed=7) for _ in range(2)]
    other = _rollout(SimEnv(a01, EnvSpec(), RewardSpec(), params), actions, seed=8)
    for a, b in zip(runs[0][1:], runs[1][1:]):
        assert np.array_equal(a[0]["floats"], b[0]["floats"]) and np.array_equal(a[0]["img"], b[0]["img"])
        assert a[1] == b[1] and a[2] == b[2]
    assert not np.array_equal(runs[0][0]["floats"], other[0]["floats"])  # the seed moves the start


def test_vectorised_and_single_forms_agree(a01):
    params = SimParams(start_lateral_jitter_m=1.0)
    spec = EnvSpec(cutoff_rollout_if_no_vcp_passed_within_duration_ms=600)
    n, steps = 3, 160
    actions = np.random.default_rng(2).integers(0, 12, (steps, n))
    actions[:, 0] = 3  # car 0 stalls: it is cut off after 600 ms and autoreset
    venv = SimVecEnv(n, a01, spec, RewardSpec(), params, seed=100)
    assert isinstance(venv, gym.vector.VectorEnv)
    vobs, vinfo = venv.reset()
    singles = [SimEnv(a01, spec, RewardSpec(), params, seed=100 + i) for i in range(n)]
    sobs = [env.reset()[0] for env in singles]
    pending = [False] * n
    resets = 0
    for t in range(steps):
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(actions[t])
        for i, env in enumerate(singles):
            if pending[i]:  # NEXT_STEP autoreset: this step restarts the car
                sobs[i], _ = env.reset()
                r, term, trunc = 0.0, False, False
                pending[i] = False
                resets += 1
            else:
                sobs[i], r, term, trunc, info = env.step(int(actions[t, i]))
                pending[i] = term or trunc
                assert vinfo["progress_m"][i] == info["progress_m"]
                assert vinfo["race_time_ms"][i] == info["race_time_ms"]
            assert np.array_equal(vobs["img"][i], sobs[i]["img"])
            assert np.array_equal(vobs["floats"][i], sobs[i]["floats"])
            assert vrew[i] == r and vterm[i] == term and vtrunc[i] == trunc
    assert resets >= 2


def test_full_throttle_without_steering_hits_a_wall_and_never_finishes(a01):
    env = _env(a01)
    env.reset()
    walls = 0
    for _ in range(6000):
        _, _, terminated, truncated, info = env.step(0)
        walls += info["wall_contact"]
        if terminated or truncated:
            break
    assert walls > 0 and not info["finished"] and truncated and info["cutoff"] == "no_progress"
    assert info["progress_m"] < a01.length / 2


def test_walls_slow_the_car_but_do_not_stop_it_dead(a01):
    env = _env(a01)
    env.reset()
    speeds = []
    for _ in range(400):
        _, _, _, truncated, info = env.step(0)
        speeds.append(info["speed_kmh"])
        if info["wall_contact"]:
            break
    before = speeds[-2]
    _, _, _, _, info = env.step(0)
    assert 0.2 * before < info["speed_kmh"] < before


def _speed_after(env, kmh, action=0):
    env.reset()
    info = {}
    while info.get("speed_kmh", 0.0) < kmh:
        info = env.step(action)[4]
    return info


def test_braking_distance_grows_with_speed(straight):
    env = _env(straight, cutoff_rollout_if_no_vcp_passed_within_duration_ms=10**7)
    distances = []
    for kmh in (80, 150, 220):
        info = _speed_after(env, kmh)
        start = info["progress_m"]
        while info["speed_kmh"] > 1.0:
            info = env.step(6)[4]
        distances.append(info["progress_m"] - start)
    assert distances[0] < distances[1] < distances[2]
    assert distances[2] > 2.5 * distances[0]


def test_top_speed_is_bounded(straight):
    env = _env(straight, cutoff_rollout_if_no_vcp_passed_within_duration_ms=10**7)
    env.reset()
    speeds = [env.step(0)[4]["speed_kmh"] for _ in range(800)]  # 40 s: under 4 km
    assert 200 < max(speeds) < 320
    assert speeds[-1] - speeds[-101] < 0.1 * (speeds[100] - speeds[0])  # it levels off


def test_no_progress_cutoff_fires_after_2s(a01):
    env = _env(a01)
    env.reset()
    for _ in range(100):
        _, _, terminated, truncated, info = env.step(3)  # nothing pressed: the car never moves
        if truncated:
            break
    assert truncated and not terminated and info["cutoff"] == "no_progress" and info["race_time_ms"] == 2000


def test_race_timeout_cutoff_fires(a01):
    env = _env(a01, cutoff_rollout_if_race_not_finished_within_duration_ms=3000)
    env.reset()
    for _ in range(100):
        _, _, terminated, truncated, info = env.step(0)
        if truncated:
            break
    assert truncated and not terminated and info["cutoff"] == "race_timeout" and info["race_time_ms"] == 3000
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_reference_driver_finishes_a01_in_20_to_30s(a01):
    lap = drive_lap(a01, EnvSpec(), SimParams())
    assert lap.finished and 20_000 <= lap.race_time_ms <= 30_000
    assert lap.race_time_ms % 10 == 0  # finish time at engine-step resolution
    assert len(lap.cp_times) == int(a01.length // 100) and lap.cp_times == sorted(lap.cp_times)
    assert lap.cp_times[-1] < lap.race_time_ms


@pytest.mark.parametrize("name", ["ESL-Hockolicious_0.5m_cl2.npy", "map5_0.5m_cl.npy"])
def test_reference_driver_finishes_the_real_lines(name):
    track = load_map(name, str(TRACKS / name))
    lap = drive_lap(track, EnvSpec(), SimParams(), image_every=10**9)
    assert lap.finished, lap.race_time_ms


def test_rewards_follow_the_reward_spec(a01):
    rewards = RewardSpec()
    spec = EnvSpec()
    env = SimEnv(a01, spec, rewards, SimParams(), seed=0)
    driver = ReferenceDriver(a01, driver_car(SimParams()))
    obs, info = env.reset()
    total, speed, lateral0 = 0.0, 0.0, abs(float(env.batch.car.lateral[0]))
    while True:
        action = driver.act(env.batch.car.view(0), info["progress_m"], 0.05)
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        if terminated or truncated:
            speed = float(env.batch.car.speed()[0])
            lateral1 = abs(float(env.batch.car.lateral[0]))
            break
    assert info["finished"]

    def phi(d):
        return rewards.shaped_reward_dist_to_cur_vcp * np.clip(d, 2.0, 25.0)

    expected = (
        rewards.constant_reward_per_ms * info["race_time_ms"]
        + rewards.reward_per_m_advanced_along_centerline * a01.length
        + phi(lateral1)
        - phi(lateral0)
        + rewards.reward_per_m_advanced_along_centerline * speed * rewards.final_speed_reward_as_if_duration_s
    )
    assert total == pytest.approx(expected, abs=1e-6)


def test_accepts_the_config_nodes_make_env_passes(a01):
    from omegaconf import OmegaConf

    from tmexp.config import Config

    cfg = OmegaConf.structured(Config)
    cfg.env.sim.road_width_m = 16.0
    env = SimEnv(a01, cfg.env, cfg.rewards, cfg.env.sim, seed=cfg.seed)
    obs, _ = env.reset()
    assert env.observation_space.contains(obs)
    assert env.batch.params.road_width_m == 16.0 and isinstance(env.batch.params, SimParams)
    assert env.step(0)[4]["race_time_ms"] == 50


def test_braking_at_rest_reverses_until_the_wall_behind_the_start(a01):
    env = _env(a01, cutoff_rollout_if_no_vcp_passed_within_duration_ms=10**6)
    env.reset()
    for _ in range(100):
        info = env.step(6)[4]
    assert info["progress_m"] == 0.0 and info["wall_contact"] and info["speed_kmh"] < 1.0
    assert float(env.batch.car.x[0]) == pytest.approx(-10.0)  # n_zone_centers_extrapolate_before_start_of_map * 0.5 m
    for _ in range(60):
        info = env.step(0)[4]
    assert info["progress_m"] > 50.0


def _steer_then_hold(track, params, steer_steps, hold_steps=60):
    """Reach 150 km/h, steer right for ``steer_steps`` actions, then hold forward.

    Returns (final km/h, |lateral| m, wall touched).
    """
    env = SimEnv(track, EnvSpec(cutoff_rollout_if_no_vcp_passed_within_duration_ms=10**7), RewardSpec(), params, seed=0)
    _speed_after(env, 150)
    for _ in range(steer_steps):
        env.step(2)
    touched = False
    for _ in range(hold_steps):
        info = env.step(0)[4]
        touched |= info["wall_contact"]
    return info["speed_kmh"], abs(float(env.batch.car.lateral[0])), touched


def test_a_glancing_wall_contact_turns_the_car_along_the_wall(straight):
    limit = 0.5 * SimParams().road_width_m + SimParams().offroad_width_m - SimParams().car_half_width_m
    # Two short steers put the car on a shallow line into the wall: it glances off and runs along it at speed.
    speed, lateral, _ = _steer_then_hold(straight, SimParams(), 2)
    assert speed > 140 and lateral > limit - 0.5, (speed, lateral)
    # Without glancing, grip keeps turning the velocity into the wall and the car scrubs most of its speed.
    speed, _, touched = _steer_then_hold(straight, SimParams(wall_glance_max_deg=0.0), 2)
    assert touched and speed < 100, speed


def test_a_steep_wall_hit_is_not_a_glance(straight):
    steep = _steer_then_hold(straight, SimParams(), 8)
    assert steep == _steer_then_hold(straight, SimParams(wall_glance_max_deg=0.0), 8)
    assert steep[0] < 60


def test_reference_float_stats_standardise_the_varying_inputs_and_leave_constant_ones(a01):
    from tmexp.envs.observation import float_layout

    env = _env(a01)
    mean, std = env.float_stats()
    layout = float_layout(env.env_spec)
    assert mean.shape == std.shape == env.observation_space["floats"].shape
    assert np.all(std > 0)
    # Flat track: the vertical components never vary, so they pass through unscaled.
    zones = layout["zone_centers"]
    up = np.arange(zones.start, zones.stop)[1::3]
    assert np.all(std[up] == 1.0) and np.all(mean[up] == 0.0)
    # The nearest zone centre's lateral offset varies little in env units; standardised it spans about +-1.
    lateral = zones.start
    assert std[lateral] < 0.1
    lap = drive_lap(a01, env.env_spec, SimParams())
    assert lap.finished
    floats = []
    obs, _ = env.reset()
    done = False
    while not done:  # hold forward until the first turn's wall stops the car
        obs, _, terminated, truncated, _ = env.step(0)
        floats.append((obs["floats"] - mean) / std)
        done = terminated or truncated
    assert np.abs(np.asarray(floats)[:, lateral]).max() < 20
