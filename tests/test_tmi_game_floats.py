"""The game's float inputs: Linesight's 184 floats from recorded game states, and Linesight's network on env=tmi.

The recorded states are written by hand in the save-state layout (``tminterface.structs.SimStateData``, what the
plugin sends), read back as the game's bytes are, and fed to a race; every expected float is worked out by hand
from Linesight's ``game_instance_manager.py`` (its order, units and padding).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tmexp.envs.base import EnvSpec, RewardSpec
from tmexp.envs.observation import game_float_layout, material_group, n_game_floats
from tmexp.envs.tmi.race import Race, checkpoint_gates
from tmexp.envs.tmi.state import CarState, build_sim_state_bytes, car_state, parse_sim_state
from tmexp.envs.track import TrackGeometry, extended_line, load_track

SPEC = EnvSpec()
ROLL = math.radians(30.0)
S, C = math.sin(ROLL), math.cos(ROLL)
# A car heading along +x, rolled 30 degrees about its forward axis; columns right, up, forward.
ROLLED = np.array([[0.0, 0.0, 1.0], [S, C, 0.0], [C, -S, 0.0]])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """300 m along +x at height 10."""
    x = np.arange(0.0, 300.5, 0.5)
    path = tmp_path_factory.mktemp("tracks") / "straight.npy"
    np.save(path, np.stack([x, np.full_like(x, 10.0), np.zeros_like(x)], axis=1))
    return load_track(path)


def recorded(x: float, gearbox_state: int = 1, race_time_ms: int = 0) -> CarState:
    """A game state written by hand, through the bytes the plugin sends."""
    car = CarState(
        race_time_ms=race_time_ms,
        position=np.array([x, 10.0, 0.0]),
        velocity=np.array([10.0, 0.0, 2.0]),
        angular_velocity=np.array([0.0, 1.0, 0.0]),
        rotation=ROLLED,
        wheel_contact=np.array([True, True, True, False]),
        wheel_sliding=np.array([True, False, False, True]),
        wheel_damper=np.array([0.01, 0.02, 0.03, 0.04]),
        wheel_material=np.array([16, 2, 6, 3]),
        gearbox_state=gearbox_state,
        gear=3,
        rpm=6500.0,
        freewheeling=True,
    )
    return car_state(parse_sim_state(build_sim_state_bytes(car)))


def race(track, start: CarState, gates=None) -> Race:
    line = extended_line(track, SPEC)
    return Race(track, line, TrackGeometry(line), SPEC, RewardSpec(), start, gates=gates)


def floats(r: Race, car: CarState) -> np.ndarray:
    return r.observation(np.zeros((SPEC.h_downsized, SPEC.w_downsized), np.uint8), car)["floats"]


def expected(prev_actions_bits: list[list[int]], gearbox_counter: int, x: float, length: float) -> np.ndarray:
    """Linesight's vector for ``recorded(x)``, written out in its order."""
    velocity_car = [2.0 * C, -2.0 * S, 10.0]  # (10, 0, 2) on right (0, S, C), up (0, C, -S), forward (1, 0, 0)
    angular_car = [S, C, 0.0]  # (0, 1, 0) likewise
    world_up_car = [S, C, 0.0]
    zones = [[0.0, 0.0, 10.0 * j] for j in range(40)]  # every 10 m ahead along the car's forward axis, from 0 m
    materials = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]  # asphalt, grass, dirt, ice (no group)
    return np.array(
        [
            0.0,
            *np.ravel(prev_actions_bits),
            1,
            0,
            0,
            1,
            1,
            1,
            1,
            0,
            0.01,
            0.02,
            0.03,
            0.04,
            1,
            3,
            6500.0,
            gearbox_counter,
            *np.ravel(materials),
            *angular_car,
            *velocity_car,
            *world_up_car,
            *np.ravel(zones),
            min(700.0, length - x),
            1.0,
        ],
        dtype=np.float32,
    )


FORWARD = [1, 0, 0, 0]


def test_recorded_game_states_give_linesights_floats(straight):
    start = recorded(20.0, gearbox_state=1)
    r = race(straight, start)
    got = floats(r, start)
    assert got.shape == (184,) == (n_game_floats(SPEC),)
    # Before the first action the previous actions are "forward" (Linesight's padding), oldest first.
    np.testing.assert_allclose(got, expected([FORWARD] * 5, 0, 20.0, straight.length), atol=2e-5)

    after = recorded(21.0, race_time_ms=50)
    r.advance(6, after)  # brake
    after2 = recorded(22.0, race_time_ms=100)
    r.advance(2, after2)  # forward-right
    got = floats(r, after2)
    bits = [FORWARD, FORWARD, FORWARD, [0, 1, 0, 0], [1, 0, 0, 1]]  # oldest first: brake, then forward-right
    # Two action steps with a non-zero gearbox state: Linesight's counter counts them.
    np.testing.assert_allclose(got, expected(bits, 2, 22.0, straight.length), atol=2e-5)


def test_the_layout_names_every_float_once_in_linesights_order():
    lay = game_float_layout(SPEC)
    covered = np.zeros(184, dtype=int)
    for part in lay.values():
        covered[part] += 1
    assert np.all(covered == 1)
    assert [name for name in lay][:3] == ["mini_race_time", "prev_actions", "wheel_sliding"]
    assert lay["zone_centers"] == slice(62, 182) and lay["freewheeling"] == slice(183, 184)
    assert n_game_floats(EnvSpec(n_zone_centers_in_inputs=20, n_prev_actions_in_inputs=3)) == 44 + 12 + 60


def test_contact_materials_group_as_linesights_table():
    groups = {
        name: material_group(i)
        for name, i in [
            ("Concrete", 0),
            ("Pavement", 1),
            ("Grass", 2),
            ("Ice", 3),
            ("Dirt", 6),
            ("Turbo", 7),
            ("Asphalt", 16),
            ("Turbo2", 26),
            ("WetGrass", 20),
            ("Water", 13),
        ]
    }
    assert groups == {
        "Concrete": 0,
        "Pavement": 0,
        "Grass": 1,
        "Ice": 4,
        "Dirt": 2,
        "Turbo": 3,
        "Asphalt": 0,
        "Turbo2": 3,
        "WetGrass": 1,
        "Water": 4,
    }
    assert material_group(0x10000 + 2) == 1  # the id is the low 16 bits


def car_at(x: float, z: float, race_time_ms: int) -> CarState:
    return CarState(
        race_time_ms=race_time_ms,
        position=np.array([x, 10.0, z]),
        velocity=np.array([20.0, 0, 0]),
        angular_velocity=np.zeros(3),
        rotation=np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]]),
    )


def test_progress_passes_a_real_checkpoint_only_within_12_m_of_it(straight):
    """Linesight's sync_virtual_and_real_checkpoints: a checkpoint at x = 100 m, 0 m off the line."""
    line = extended_line(straight, SPEC)
    gates = checkpoint_gates(line, np.array([[100.0, 10.0, 0.0]]))
    assert list(gates) == [line.offset + 200]
    # A car that goes around the checkpoint 15 m to the side gains no progress past it...
    cutting = race(straight, car_at(0.0, 0.0, 0), gates)
    for step, x in enumerate(np.arange(5.0, 150.0, 5.0)):
        cutting.advance(0, car_at(x, 15.0, 50 * (step + 1)))
    assert cutting.progress_m == pytest.approx(100.0)
    # ...one through it does, and so does the first car once it comes back within 12 m.
    through = race(straight, car_at(0.0, 0.0, 0), gates)
    for step, x in enumerate(np.arange(5.0, 150.0, 5.0)):
        through.advance(0, car_at(x, 0.0, 50 * (step + 1)))
    assert through.progress_m == pytest.approx(145.0)
    cutting.advance(0, car_at(100.0, 10.0, 5000))
    cutting.advance(0, car_at(105.0, 10.0, 5050))
    assert cutting.progress_m == pytest.approx(105.0, abs=1.0)


def test_without_checkpoint_positions_progress_is_not_gated(straight):
    r = race(straight, car_at(0.0, 0.0, 0))
    for step, x in enumerate(np.arange(5.0, 150.0, 5.0)):
        r.advance(0, car_at(x, 15.0, 50 * (step + 1)))
    assert r.progress_m == pytest.approx(145.0, abs=1.0)


@pytest.mark.parametrize(
    "experiment, parameters", [("A01_v2", 1_051_805), ("A01_v4_btr", 6_091_866), ("A01_v4.2_btr", 3_297_882)]
)
def test_the_published_experiments_on_the_game_build_linesights_network(experiment, parameters):
    from tmexp.bench.param_count import parameter_counts

    counts = parameter_counts([experiment], overrides=("env=tmi",))[experiment]
    assert counts["float_dim"] == 184 and counts["total"] == parameters


def test_the_documented_table_covers_the_layout():
    import re

    from tmexp.envs import observation

    rows = re.findall(r"^\s*\| ([0-9]+)(?: \.\. ([0-9]+))? \|", observation.game_float_layout.__doc__, flags=re.M)
    documented = [(int(a), int(b or a) + 1) for a, b in rows]
    assert documented[0][0] == 0 and documented[-1][1] == 184
    assert all(stop == start for (_, stop), (start, _) in zip(documented, documented[1:]))  # contiguous
    for part in game_float_layout(SPEC).values():
        assert any(start <= part.start and part.stop <= stop for start, stop in documented)
