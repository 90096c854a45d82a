"""Float statistics on the game: measured through the backend on the fake game, kept in env.tmi.float_stats_path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tmexp.envs import float_stats
from tmexp.envs.base import Env, EnvSpec, RewardSpec
from tmexp.envs.observation import game_float_layout, n_game_floats, shared_floats
from tmexp.envs.sim import SimEnv, SimParams
from tmexp.envs.tmi.env import TmiEnv
from tmexp.envs.tmi.params import TmiParams
from tmexp.envs.track import Track, load_map

SPEC = EnvSpec()


@pytest.fixture(scope="module")
def track() -> Track:
    return load_map("A01")


@pytest.fixture(scope="module")
def game(track, module_fake_game):
    return module_fake_game(track, SPEC).game


@pytest.fixture(scope="module")
def measured(track, game, tmp_path_factory):
    """The statistics TmiEnv measures on the fake game, written to a float_stats_path file."""
    path = tmp_path_factory.mktemp("stats") / "A01.json"
    env = TmiEnv(track, SPEC, RewardSpec(), TmiParams(base_tmi_port=game.port, float_stats_path=str(path)))
    try:
        assert isinstance(env, Env)
        run_steps_before = game.run_steps_sent
        mean, std = env.float_stats()
        assert game.run_steps_sent - run_steps_before > 1000  # driven on the game: three races
        obs, info = env.reset()  # and the env races on afterwards
        assert info["race_time_ms"] == 0
    finally:
        env.close()
    return mean, std, path


def test_statistics_measured_on_the_game_match_the_simulators_for_the_same_track(track, measured):
    mean, std, _ = measured
    sim_mean, sim_std = SimEnv(track, SPEC, RewardSpec(), SimParams()).float_stats()
    assert mean.dtype == std.dtype == np.float32 and mean.shape == (184,) and sim_mean.shape == (149,)
    # The same driver on the same physics: what both vectors hold has the simulator's statistics, up to the
    # float32 save states the driver reads the game's car from (the previous actions are padded differently).
    game_mean, game_std = shared_floats(mean, SPEC, game=True), shared_floats(std, SPEC, game=True)
    sim_mean, sim_std = shared_floats(sim_mean, SPEC, game=False), shared_floats(sim_std, SPEC, game=False)
    for name in ("velocity", "angular_velocity", "zone_centers", "distance_to_finish"):
        varying = sim_std[name] != 1.0  # a constant float gets mean 0 and std 1 on either backend
        assert np.all(np.abs(game_mean[name] - sim_mean[name])[varying] <= 0.05 * sim_std[name][varying]), name
        assert np.all(np.abs(game_std[name] / sim_std[name] - 1)[varying] <= 0.05), name
    # The game's own inputs: the fake's wheels always touch asphalt (constant: mean 0, std 1); the slot of the
    # mini-race time is always 0.
    lay = game_float_layout(SPEC)
    assert np.all(std[lay["contact_materials"]] == 1.0) and std[lay["mini_race_time"]][0] == 1.0


def test_the_file_is_reused_without_driving(track, game, measured):
    mean, std, path = measured
    data = json.loads(path.read_text())
    assert data["map"] == "A01" and data["n_floats"] == 184 and data["backend"] == "tmi"
    assert data["measured"]["races"] == 3 and data["measured"]["furthest_m"] == pytest.approx(track.length)
    env = TmiEnv(track, SPEC, RewardSpec(), TmiParams(base_tmi_port=game.port, float_stats_path=str(path)))
    try:
        run_steps_before = game.run_steps_sent
        again_mean, again_std = env.float_stats()
        assert game.run_steps_sent == run_steps_before  # read, not measured
    finally:
        env.close()
    np.testing.assert_array_equal(again_mean, mean)
    np.testing.assert_array_equal(again_std, std)


def test_a_file_that_does_not_fit_the_run_is_refused_naming_the_setting(track, measured, tmp_path):
    _, _, path = measured
    data = json.loads(path.read_text())
    other = tmp_path / "other.json"
    cases = [
        ({**data, "track_length_m": 2000.0, "map": "B02"}, SPEC, "measured on map 'B02' (2000 m)"),
        (data, EnvSpec(n_zone_centers_in_inputs=20), "this run's observations have 124 floats"),
        (
            {**data, "layout": {**data["layout"], "margin_to_announce_finish_meters": 500.0}},
            SPEC,
            "env.margin_to_announce_finish_meters=500.0",
        ),
        ({**data, "std": [0.0] * 184}, SPEC, "a std that is not positive"),
        ("{not json", SPEC, "is not a float statistics file"),
    ]
    for content, spec, message in cases:
        other.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(float_stats.FloatStatsError, match="env.tmi.float_stats_path") as error:
            float_stats.load(other, track, spec, setting="env.tmi.float_stats_path", n=n_game_floats(spec))
        assert message in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(float_stats.FloatStatsError, match="does not exist"):
        float_stats.load(tmp_path / "missing.json", track, SPEC)


def test_a_run_with_a_float_statistics_file_that_does_not_fit_stops_before_it_starts(measured, tmp_path):
    """Checked with the configuration (one line, exit code 2 from the command line), before any game starts."""
    from tmexp.compose import compose_config
    from tmexp.validation import ConfigError, check_config

    _, _, path = measured
    common = ["env=tmi", "env.tmi.launch_command=game", f"env.tmi.float_stats_path={path}"]
    check_config(compose_config(common))  # the file measured for this map and these settings
    with pytest.raises(ConfigError, match="env.tmi.float_stats_path .* this run's observations have 124 floats"):
        check_config(compose_config([*common, "env.n_zone_centers_in_inputs=20"]))
