"""Tracks: a centreline in the Linesight reference-line format, locating cars on it, and the built-in tracks
(``A01``, authored here, and ``hock``, a real map's centreline under ``tracks/``).

A reference line is a ``.npy`` float array of shape (N, 3) holding x, height, z in metres, points about 0.5 m
apart. Progress along a track is metres along this line. Both backends (the simulator and the real game) use
``Track`` for progress, zone centres and checkpoints and ``locate`` to follow a car along the line, so nothing
here knows about physics, rendering or the game.

The line is resampled once, at load, to exactly ``SPACING_M`` between points; this keeps "point index" and
"metres" interchangeable (index = metres / SPACING_M), which the per-step projection relies on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPACING_M = 0.5  # resampled distance between consecutive centreline points (Linesight's vcp spacing)
MIN_POINTS = 10
# A reference line is "roughly evenly spaced" when no gap between consecutive points exceeds this many times the
# median gap (the real lines have gaps from 0.2 to 1.0 m around a 0.5 m median) and no two points coincide.
MAX_GAP_OVER_MEDIAN = 6.0


class TrackError(ValueError):
    """A reference line or map name a user gave cannot be used (the message names it and the fix)."""


@dataclass(frozen=True)
class Track:
    """A validated centreline, resampled to ``SPACING_M``.

    Attributes:
        name: short name (map name or file stem).
        points: (N, 3) float64 x, height, z of the resampled line.
        s: (N,) float64 metres along the line at each point (``s[0] == 0``, ``s[-1] == length``).
        tangent: (N, 2) float64 unit tangent in the (x, z) plane.
    """

    name: str
    points: np.ndarray
    s: np.ndarray = field(repr=False)
    tangent: np.ndarray = field(repr=False)

    @classmethod
    def from_points(cls, raw: np.ndarray, name: str = "track", source: str | None = None) -> Track:
        """Validate a raw (N, 3) reference line and resample it; raises TrackError naming ``source``."""
        where = source or name
        validate_reference_line(raw, where)
        points = _resample(np.asarray(raw, dtype=np.float64), SPACING_M)
        s = np.arange(len(points), dtype=np.float64) * SPACING_M
        s[-1] = _polyline_length(points)  # the last gap is shorter than SPACING_M
        return cls(name=name, points=points, s=s, tangent=_tangents(points[:, [0, 2]]))

    @property
    def length(self) -> float:
        return float(self.s[-1])

    @property
    def xz(self) -> np.ndarray:
        """(N, 2) centreline in the ground plane."""
        return self.points[:, [0, 2]]

    def normal(self) -> np.ndarray:
        """(N, 2) unit normal pointing to the right of the driving direction (tangent rotated +90 degrees)."""
        return np.stack([-self.tangent[:, 1], self.tangent[:, 0]], axis=1)

    def curvature(self, window_m: float = 4.0) -> np.ndarray:
        """(N,) unsigned curvature in 1/m: heading change over ``window_m`` divided by ``window_m``."""
        k = max(1, int(round(window_m / 2 / SPACING_M)))
        heading = np.unwrap(np.arctan2(self.tangent[:, 1], self.tangent[:, 0]))
        padded = np.concatenate([np.full(k, heading[0]), heading, np.full(k, heading[-1])])
        return np.abs(padded[2 * k :] - padded[: -2 * k]) / (2 * k * SPACING_M)

    def extended(self, n_before: int, n_after: int) -> ExtendedLine:
        """The line continued straight along its end tangents (zone centres past the finish, room behind the start)."""
        return ExtendedLine.build(self, n_before, n_after)

    def checkpoint_distances(self, spacing_m: float) -> np.ndarray:
        """Metres of the intermediate checkpoints (every ``spacing_m``, excluding start and finish)."""
        if spacing_m <= 0:
            return np.zeros(0)
        cps = np.arange(spacing_m, self.length, spacing_m)
        return cps[cps < self.length - 1e-6]

    def project(self, xz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global projection of positions onto the line (nearest point; for rendering and tools, not per step).

        Args:
            xz: (B, 2) positions.
        Returns:
            progress_m (B,), signed lateral offset (B,) in metres (positive = right of the driving direction).
        """
        from scipy.spatial import cKDTree

        xz = np.atleast_2d(np.asarray(xz, dtype=np.float64))
        _, idx = cKDTree(self.xz).query(xz)
        d = xz - self.xz[idx]
        along = np.einsum("bi,bi->b", d, self.tangent[idx])
        lateral = np.einsum("bi,bi->b", d, self.normal()[idx])
        return np.clip(self.s[idx] + along, 0.0, self.length), lateral


@dataclass(frozen=True)
class ExtendedLine:
    """A track's points with straight extensions: ``offset`` points before index 0 of the track.

    Attributes:
        points: (M, 3); xz (M, 2); tangent (M, 2); normal (M, 2); s: (M,) metres (negative before the start).
    """

    points: np.ndarray
    xz: np.ndarray
    tangent: np.ndarray
    normal: np.ndarray
    s: np.ndarray
    offset: int

    @classmethod
    def build(cls, track: Track, n_before: int, n_after: int) -> ExtendedLine:
        t0 = np.array([track.tangent[0, 0], 0.0, track.tangent[0, 1]])
        t1 = np.array([track.tangent[-1, 0], 0.0, track.tangent[-1, 1]])
        before = track.points[0] - t0 * SPACING_M * np.arange(n_before, 0, -1)[:, None]
        after = track.points[-1] + t1 * SPACING_M * np.arange(1, n_after + 1)[:, None]
        points = np.concatenate([before, track.points, after])
        s = np.concatenate(
            [
                -SPACING_M * np.arange(n_before, 0, -1),
                track.s,
                track.length + SPACING_M * np.arange(1, n_after + 1),
            ]
        )
        tangent = np.concatenate(
            [np.repeat(track.tangent[:1], n_before, 0), track.tangent, np.repeat(track.tangent[-1:], n_after, 0)]
        )
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
        return cls(points, np.ascontiguousarray(points[:, [0, 2]]), tangent, normal, s, n_before)


def extended_line(track: Track, spec) -> ExtendedLine:
    """``track`` extended as every backend extends it for ``spec`` (an ``EnvSpec``): room behind the start, and
    zone centres past the finish for every zone centre the observation may ask for."""
    n_after = max(
        spec.n_zone_centers_extrapolate_after_end_of_map,
        spec.n_zone_centers_in_inputs * spec.one_every_n_zone_centers_in_inputs + 1,
    )
    return track.extended(spec.n_zone_centers_extrapolate_before_start_of_map, n_after)


class TrackGeometry:
    """An extended line as one (M, 6) table [x, z, tx, tz, nx, nz], so locating a car gathers one row."""

    def __init__(self, line: ExtendedLine):
        self.line = line
        self.table = np.ascontiguousarray(np.concatenate([line.xz, line.tangent, line.normal], axis=1))
        self.rows = [tuple(r) for r in self.table.tolist()]  # the same values as Python floats (one-car path)
        self.last = len(self.table) - 1


class ArrayOps:
    """``locate`` on (B,) numpy arrays."""

    @staticmethod
    def clip(x, lo, hi):
        return np.minimum(np.maximum(x, lo), hi)  # np.clip's dispatch costs more than the work at B = 64

    @staticmethod
    def rint(x):
        return np.rint(x).astype(np.int64)

    @staticmethod
    def rows(geo: TrackGeometry, idx):
        r = geo.table[idx]
        return r[:, 0], r[:, 1], r[:, 2], r[:, 3], r[:, 4], r[:, 5]


class ScalarOps:
    """``locate`` on one car's Python floats (numpy's per-call overhead dominates for a single car).

    Every operation rounds exactly as ``ArrayOps``' does, so one car is located bit for bit the same either way.
    """

    @staticmethod
    def clip(x, lo, hi):
        return min(max(x, lo), hi)

    rint = staticmethod(round)  # round half to even, like np.rint

    @staticmethod
    def rows(geo: TrackGeometry, idx):
        return geo.rows[idx]


@dataclass
class LinePosition:
    """Where B cars are relative to an extended line; each field (B,).

    ``locate`` reads ``x``, ``z`` and the previous ``idx`` and writes ``idx``, ``along`` and ``lateral``.
    """

    x: np.ndarray
    z: np.ndarray
    idx: np.ndarray  # int64: nearest point of the extended line
    along: np.ndarray  # metres ahead of that point along its tangent
    lateral: np.ndarray  # metres right of that point along its normal

    @classmethod
    def at_start(cls, line: ExtendedLine, n: int = 1) -> LinePosition:
        """B = n positions on the track's first point."""
        return cls(
            np.full(n, line.xz[line.offset, 0]),
            np.full(n, line.xz[line.offset, 1]),
            np.full(n, line.offset, dtype=np.int64),
            np.zeros(n),
            np.zeros(n),
        )

    def progress_m(self, line: ExtendedLine, length: float) -> np.ndarray:
        """(B,) metres along the track, clipped to [0, length]."""
        return np.minimum(np.maximum(line.s[self.idx] + self.along, 0.0), length)


def locate(car, geo: TrackGeometry, ops=ArrayOps, iterations: int = 2) -> None:
    """Move each car's nearest index along the line from where it was, and refresh ``along`` and ``lateral``.

    A local search: each iteration jumps by the car's offset along the current point's tangent, so it follows a
    car that moved a few metres since the last call (the simulator calls it every 10 ms engine step; a game
    backend, which sees the car once per action, passes more iterations). ``car`` is any object with ``x``,
    ``z``, ``idx`` (and receives ``along``, ``lateral``), e.g. a ``LinePosition``.
    """
    idx = car.idx
    for _ in range(iterations):
        x0, z0, tx, tz, _, _ = ops.rows(geo, idx)
        along = (car.x - x0) * tx + (car.z - z0) * tz
        idx = ops.clip(idx + ops.rint(along * (1.0 / SPACING_M)), 0, geo.last)
    x0, z0, tx, tz, nx, nz = ops.rows(geo, idx)
    dx, dz = car.x - x0, car.z - z0
    car.idx = idx
    car.along = dx * tx + dz * tz
    car.lateral = dx * nx + dz * nz


def validate_reference_line(raw: object, where: str) -> None:
    """Raise TrackError (naming ``where`` and the problem) unless ``raw`` is a usable (N, 3) reference line."""
    arr = np.asarray(raw)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise TrackError(
            f"Reference line {where} has shape {arr.shape}; expected (N, 3) rows of x, height, z in metres."
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise TrackError(f"Reference line {where} holds {arr.dtype} values; expected floats (x, height, z).")
    if not np.all(np.isfinite(arr)):
        raise TrackError(f"Reference line {where} contains NaN or inf values; remove or repair those points.")
    if len(arr) < MIN_POINTS:
        raise TrackError(f"Reference line {where} has {len(arr)} points; at least {MIN_POINTS} are needed.")
    gaps = np.linalg.norm(np.diff(arr.astype(np.float64), axis=0), axis=1)
    median = float(np.median(gaps))
    if median <= 0 or np.min(gaps) <= 1e-6:
        raise TrackError(f"Reference line {where} repeats a point; consecutive points must differ (about 0.5 m apart).")
    if np.max(gaps) > MAX_GAP_OVER_MEDIAN * median:
        i = int(np.argmax(gaps))
        raise TrackError(
            f"Reference line {where} is not evenly spaced: a {gaps[i]:.2f} m gap after point {i} against a "
            f"{median:.2f} m median; resample it to points about 0.5 m apart."
        )


def load_track(path: str | Path, name: str | None = None) -> Track:
    """Load and validate a Linesight reference line (``.npy``, (N, 3) x, height, z)."""
    path = Path(path)
    if not path.is_file():
        raise TrackError(f"Reference line {path} does not exist; pass the path of an (N, 3) .npy file.")
    try:
        raw = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise TrackError(
            f"Reference line {path} is not a readable .npy array ({err}); save it with numpy.save."
        ) from err
    return Track.from_points(raw, name=name or path.stem, source=str(path))


def builtin_track_names() -> list[str]:
    """Map names that need no reference line (tracks shipped with the project)."""
    return sorted(BUILTIN_TRACKS)


def load_map(short_name: str, reference_line_path: str | None = None) -> Track:
    """The track of ``map``: the reference line when a path is given, else the built-in track of that name."""
    if reference_line_path:
        return load_track(reference_line_path, name=short_name or None)
    if short_name not in BUILTIN_TRACKS:
        known = ", ".join(builtin_track_names())
        raise TrackError(
            f"Map {short_name!r} has no built-in track (known: {known}); set map.reference_line_path to its .npy."
        )
    return Track.from_points(BUILTIN_TRACKS[short_name](), name=short_name)


# ----- built-in tracks, authored as straight and arc segments -------------------------------------------------
# ``A01`` is A01-like, not a copy of the game's map: a long start straight, a fast right-hander, a long left
# sweeper taken near top speed, a tight right hairpin that punishes arriving fast, and a final left turn onto the
# finish straight; about 1.1 km, which the reference driver laps in about 25 s. The track is flat (height 10 m).

# (kind, length or radius m, turn degrees: positive = right). Straights ignore the turn field.
A01_SEGMENTS = (
    ("straight", 140.0, 0.0),
    ("arc", 45.0, 90.0),  # fast right-hander
    ("straight", 110.0, 0.0),
    ("arc", 140.0, -110.0),  # long fast left sweeper
    ("straight", 90.0, 0.0),
    ("arc", 16.0, 160.0),  # right hairpin
    ("straight", 150.0, 0.0),
    ("arc", 40.0, -70.0),  # left onto the finish straight
    ("straight", 150.0, 0.0),
)


def polyline_from_segments(
    segments, spacing: float = 0.5, start=(0.0, 0.0), heading_deg: float = 0.0, height: float = 10.0
) -> np.ndarray:
    """Turn (kind, length/radius, turn degrees) segments into an (N, 3) x, height, z polyline ``spacing`` apart.

    Heading 0 drives along +x; a positive turn rotates the heading towards the driver's right, which in the
    (x, z) plane is the direction (-sin, cos) of heading (cos, sin), i.e. the heading angle increases.
    """
    x, z = start
    heading = math.radians(heading_deg)
    pts = [(x, z)]
    for kind, size, turn in segments:
        if kind == "straight":
            length, curvature = size, 0.0
        elif kind == "arc":
            length, curvature = size * math.radians(abs(turn)), math.copysign(1.0 / size, turn)
        else:
            raise ValueError(f"unknown segment kind {kind!r}")
        n = max(1, int(round(length / spacing)))
        step = length / n
        for _ in range(n):
            # Midpoint heading integrates arcs exactly enough at 0.5 m steps.
            mid = heading + 0.5 * curvature * step
            x += step * math.cos(mid)
            z += step * math.sin(mid)
            heading += curvature * step
            pts.append((x, z))
    xz = np.asarray(pts)
    return np.stack([xz[:, 0], np.full(len(xz), height), xz[:, 1]], axis=1)


def a01_points() -> np.ndarray:
    return polyline_from_segments(A01_SEGMENTS)


# ----- built-in tracks from real maps ----------------------------------------------------------------------------
# Reference lines of real Trackmania Nations Forever maps, shipped as data (``tracks/README.md`` names the sources).
TRACKS_DIR = Path(__file__).parent / "tracks"


def hock_points() -> np.ndarray:
    """ESL-Hockolicious (Linesight's ``hock``): the real map's centreline, about 4 km."""
    return np.load(TRACKS_DIR / "ESL-Hockolicious_0.5m_cl2.npy", allow_pickle=False)


BUILTIN_TRACKS = {"A01": a01_points, "hock": hock_points}


def _polyline_length(points: np.ndarray) -> float:
    return float(np.sum(np.linalg.norm(np.diff(points, axis=0), axis=1)))


def _resample(points: np.ndarray, spacing: float) -> np.ndarray:
    """(N, 3) -> (M, 3) points exactly ``spacing`` apart along the polyline (plus the original end point)."""
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    targets = np.arange(0.0, cum[-1], spacing)
    if cum[-1] - targets[-1] > 1e-6:
        targets = np.append(targets, cum[-1])
    return np.stack([np.interp(targets, cum, points[:, k]) for k in range(3)], axis=1)


def _tangents(xz: np.ndarray) -> np.ndarray:
    """(N, 2) unit tangents by central differences (one-sided at the ends)."""
    d = np.gradient(xz, axis=0)
    return d / np.linalg.norm(d, axis=1, keepdims=True)
