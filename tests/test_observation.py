"""Observation builders: the float layout against its documented table, float values, the image."""

import re

import numpy as np
import pytest

import tmexp.envs.observation as observation
from tmexp.envs.base import EnvSpec, observation_space
from tmexp.envs.observation import (
    ANGULAR_VELOCITY_SCALE,
    LINE,
    ROAD,
    VELOCITY_SCALE,
    WALL,
    ZONE_SCALE,
    Camera,
    ImageRenderer,
    RoadRaster,
    build_floats,
    float_layout,
    n_floats,
    planar_rotation,
)
from tmexp.envs.track import Track


def _straight(length_m=400.0):
    n = int(length_m / 0.5) + 1
    return Track.from_points(np.stack([np.arange(n) * 0.5, np.full(n, 10.0), np.zeros(n)], axis=1), "straight")


def test_layout_covers_every_index_once_and_matches_the_space():
    spec = EnvSpec()
    lay = float_layout(spec)
    covered = np.concatenate([np.arange(s.start, s.stop) for s in lay.values()])
    assert np.array_equal(np.sort(covered), np.arange(n_floats(spec)))
    assert observation_space(spec)["floats"].shape == (n_floats(spec),)
    small = EnvSpec(n_prev_actions_in_inputs=2, n_zone_centers_in_inputs=3)
    assert n_floats(small) == 9 + 8 + 9


def test_docstring_table_agrees_with_the_layout():
    lay = float_layout(EnvSpec())
    rows = re.findall(r"^\| ([0-9]+)(?: \.\. ([0-9]+))?(?: \(last\))? \|", observation.__doc__, flags=re.M)
    documented = [(int(a), int(b or a) + 1) for a, b in rows]
    assert documented == [(s.start, s.stop) for s in lay.values()]
    assert "F = 9 + 4" in observation.__doc__ and f"{n_floats(EnvSpec())} with the defaults" in observation.__doc__


def test_float_values_for_a_known_state():
    spec = EnvSpec(
        n_prev_actions_in_inputs=2,
        n_zone_centers_in_inputs=3,
        one_every_n_zone_centers_in_inputs=4,
        margin_to_announce_finish_meters=100.0,
    )
    track = _straight(50.0)
    line = track.extended(2, 50)
    forward = np.array([[1.0, 0.0]])  # driving along +x: right is +z
    floats = build_floats(
        spec,
        line,
        nearest_index=np.array([line.offset + 10]),
        position=np.array([[5.0, 10.0, 1.5]]),
        rotation=planar_rotation(forward),
        velocity=np.array([[20.0, 0.0, 3.0]]),
        angular_velocity=np.array([[0.0, -0.5, 0.0]]),
        steer=np.array([0.25]),
        wall_contact=np.array([1.0]),
        prev_actions=np.array([[2, -1]]),
        distance_to_finish=np.array([250.0]),
    )[0]
    lay = float_layout(spec)
    assert floats.dtype == np.float32
    assert np.array_equal(floats[lay["prev_actions"]], [1, 0, 0, 1, 0, 0, 0, 0])  # forward-right, then none
    assert np.allclose(floats[lay["velocity"]], np.array([3.0, 0.0, 20.0]) * VELOCITY_SCALE)
    assert np.allclose(floats[lay["angular_velocity"]], np.array([0.0, -0.5, 0.0]) * ANGULAR_VELOCITY_SCALE)
    assert floats[lay["steer"]][0] == 0.25 and floats[lay["wall_contact"]][0] == 1.0
    zones = floats[lay["zone_centers"]].reshape(3, 3) / ZONE_SCALE
    # Point offset+10 is at x = 5 m; zone j is 4j points (2j m) ahead; the car is 1.5 m right of the line.
    assert np.allclose(zones, [[-1.5, 0.0, 2.0], [-1.5, 0.0, 4.0], [-1.5, 0.0, 6.0]], atol=1e-5)
    assert floats[lay["distance_to_finish"]][0] == 1.0  # capped at the margin


def test_camera_pattern_looks_ahead_and_widens():
    cam = Camera()
    pts = cam.pattern().reshape(cam.height, cam.width, 2)
    assert pts[0, 0, 1] == pytest.approx(cam.ahead_m) and pts[-1, 0, 1] == pytest.approx(-cam.behind_m)
    assert np.all(np.diff(pts[:, 0, 1]) < 0)  # rows go from far (top) to near (bottom)
    assert np.all(np.diff(np.diff(pts[:, 0, 1])) > 0)  # rows are closer together near the car
    assert pts[0, -1, 0] > pts[-1, -1, 0] > 0  # wider far away; right column is on the right


def test_image_shows_road_ahead_and_walls_to_the_sides():
    track = _straight(400.0)
    raster = RoadRaster(track, road_width_m=14.0, offroad_width_m=2.0, cell_m=0.5, margin_m=150.0)
    renderer = ImageRenderer(raster, Camera(), heading_bins=256)
    img = renderer.render(np.array([[100.0, 0.0]]), np.array([[1.0, 0.0]]))
    assert img.shape == (1, 1, 64, 64) and img.dtype == np.uint8
    assert img[0, 0, 32, 31] == ROAD and img[0, 0, 32, 0] == WALL and img[0, 0, 32, -1] == WALL
    assert LINE in img[0, 0, 50]  # edge lines
    # Facing the other way, from the other side of the same spot: the same picture, mirrored left-right.
    back = renderer.render(np.array([[100.0, 0.0]]), np.array([[-1.0, 0.0]]))
    assert np.mean(back[0, 0, 40:] == img[0, 0, 40:, ::-1]) > 0.95
    # Looking across the road: mostly wall ahead.
    across = renderer.render(np.array([[100.0, 0.0]]), np.array([[0.0, 1.0]]))
    assert np.mean(across[0, 0, :20] == WALL) > 0.9


def test_the_raster_of_a_10km_line_is_small():
    from pathlib import Path

    from tmexp.envs.track import load_track

    path = Path(__file__).resolve().parent / "data" / "tracks" / "map5_0.5m_cl.npy"
    raster = RoadRaster(load_track(path), 14.0, 2.0, 0.5, margin_m=110.0)
    assert raster.nbytes() < 20 * 2**20
    assert np.mean(raster.gray == ROAD) > 0.05
