"""Tracks: loading, validation of bad reference lines, resampling, projection, the built-in A01 and hock."""

from pathlib import Path

import numpy as np
import pytest

from tmexp.envs.track import SPACING_M, Track, TrackError, builtin_track_names, load_map, load_track

FIXTURES = Path(__file__).resolve().parent / "data"
TRACKS = FIXTURES / "tracks"


def _line(n=200, spacing=0.5):
    x = np.arange(n) * spacing
    return np.stack([x, np.full(n, 10.0), np.sin(x / 20.0)], axis=1)


def test_a01_is_builtin_and_resampled_evenly():
    assert "A01" in builtin_track_names()
    track = load_map("A01", None)
    assert 900 < track.length < 1400
    gaps = np.linalg.norm(np.diff(track.points, axis=0), axis=1)
    assert np.allclose(gaps[:-1], SPACING_M, atol=1e-3)  # chords of a polyline resampled by arc length
    assert np.isclose(track.s[-1], track.length)
    assert np.allclose(np.linalg.norm(track.tangent, axis=1), 1.0)


def test_a01_has_a_hairpin_and_a_fast_sweeper():
    radius = 1.0 / np.maximum(load_map("A01").curvature(window_m=4.0), 1e-9)
    assert radius.min() < 25  # hairpin-like
    assert np.sum((radius > 100) & (radius < 250)) * SPACING_M > 150  # a long, fast sweeper


def test_hock_is_builtin_and_is_the_real_esl_hockolicious_line():
    assert builtin_track_names() == ["A01", "hock"]
    shipped, real = load_map("hock"), load_map("hock", str(TRACKS / "ESL-Hockolicious_0.5m_cl2.npy"))
    assert shipped.name == "hock" and np.array_equal(shipped.points, real.points)


@pytest.mark.parametrize("name, length", [("ESL-Hockolicious_0.5m_cl2.npy", 4048.7), ("map5_0.5m_cl.npy", 9872.7)])
def test_fixture_lines_load(name, length):
    track = load_map("fixture", str(TRACKS / name))
    assert track.name == "fixture"
    assert abs(track.length - length) / length < 0.01
    assert len(track.points) == pytest.approx(length / SPACING_M, rel=0.01)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros((50, 2)), "shape"),
        (np.where(np.arange(600).reshape(200, 3) == 31, np.nan, _line()), "NaN or inf"),
        (np.where(np.arange(600).reshape(200, 3) == 31, np.inf, _line()), "NaN or inf"),
        (_line(5), "at least 10"),
        (np.concatenate([_line(50), _line(50) + [100.0, 0, 0]]), "not evenly spaced"),
        (np.repeat(_line(20), 2, axis=0), "repeats a point"),
    ],
)
def test_bad_reference_lines_name_the_file_and_the_problem(tmp_path, array, words):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(TrackError) as err:
        load_track(path)
    message = str(err.value)
    assert str(path) in message and words in message
    assert message.count("\n") == 0


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(TrackError, match="does not exist"):
        load_map("A01", str(tmp_path / "missing.npy"))
    junk = tmp_path / "junk.npy"
    junk.write_text("not numpy")
    with pytest.raises(TrackError, match="junk.npy"):
        load_track(junk)


def test_unknown_map_lists_the_known_ones():
    with pytest.raises(TrackError, match="known: A01"):
        load_map("A99", None)


def test_projection_gives_progress_and_signed_lateral_offset():
    track = Track.from_points(_line(400), name="wiggle")
    i = np.array([10, 150, 300])
    progress, lateral = track.project(track.xz[i] + 3.0 * track.normal()[i])
    assert np.allclose(progress, track.s[i], atol=0.05)
    assert np.allclose(lateral, 3.0, atol=0.05)  # positive = right of the driving direction


def test_extended_line_continues_straight_past_both_ends():
    track = Track.from_points(_line(100))
    ext = track.extended(20, 100)
    assert len(ext.points) == len(track.points) + 120
    assert np.allclose(ext.s[:20], -SPACING_M * np.arange(20, 0, -1))
    assert np.allclose(np.diff(ext.s[ext.offset + len(track.points) - 1 :]), SPACING_M)
    assert np.allclose(ext.xz[ext.offset : ext.offset + len(track.points)], track.xz)


def test_checkpoints_exclude_start_and_finish():
    straight = np.stack([np.arange(401) * 0.5, np.zeros(401), np.zeros(401)], axis=1)  # exactly 200 m
    track = Track.from_points(straight)
    assert track.length == pytest.approx(200.0)
    assert np.allclose(track.checkpoint_distances(50.0), [50, 100, 150])
    assert len(track.checkpoint_distances(0.0)) == 0


def test_locate_follows_a_car_along_the_line_one_car_as_a_batch_does():
    from types import SimpleNamespace

    from tmexp.envs.track import LinePosition, ScalarOps, TrackGeometry, locate

    track = load_map("A01")
    line = track.extended(20, 100)
    geo = TrackGeometry(line)
    cars = LinePosition.at_start(line, 2)
    one = SimpleNamespace(x=0.0, z=0.0, idx=line.offset, along=0.0, lateral=0.0)
    for metres in np.arange(1.0, track.length - 1.0, 1.5):  # a car moving 1.5 m between calls, 2 m right of the line
        i = line.offset + int(round(metres / SPACING_M))
        cars.x[:] = line.xz[i, 0] + 2.0 * line.normal[i, 0]
        cars.z[:] = line.xz[i, 1] + 2.0 * line.normal[i, 1]
        locate(cars, geo)
        one.x, one.z = float(cars.x[0]), float(cars.z[0])
        locate(one, geo, ScalarOps)
        assert cars.progress_m(line, track.length)[0] == pytest.approx(line.s[i], abs=0.3)
        assert cars.lateral[0] == pytest.approx(2.0, abs=0.05)  # positive = right of the driving direction
        assert (one.idx, one.along, one.lateral) == (cars.idx[0], cars.along[0], cars.lateral[0])  # bit for bit


def test_extended_line_for_a_spec_reaches_every_zone_centre():
    from tmexp.envs.base import EnvSpec
    from tmexp.envs.track import extended_line

    track = Track.from_points(_line(100))
    spec = EnvSpec(n_zone_centers_extrapolate_after_end_of_map=10)  # fewer than the observation looks ahead
    line = extended_line(track, spec)
    assert line.offset == spec.n_zone_centers_extrapolate_before_start_of_map
    ahead = spec.n_zone_centers_in_inputs * spec.one_every_n_zone_centers_in_inputs
    assert len(line.points) - line.offset - len(track.points) >= ahead
