"""The simulator's built-in tracks, authored by the project as straight and arc segments.

``A01`` is A01-like, not a copy of the game's map: a long start straight, a fast right-hander, a long left sweeper
taken near top speed, a tight right hairpin that punishes arriving fast, and a final left turn onto the finish
straight; about 1.2 km, which the reference driver laps in about 25 s. The track is flat (height 10 m).
"""

from __future__ import annotations

import math

import numpy as np

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


def polyline_from_segments(segments, spacing: float = 0.5, start=(0.0, 0.0), heading_deg: float = 0.0,
                           height: float = 10.0) -> np.ndarray:
    """Turn (kind, length/radius, turn degrees) segments into an (N, 3) x, height, z polyline ``spacing`` apart.

    Heading 0 drives along +x; a positive turn rotates the heading towards the driver's right, which in the
    (x, z) plane is the direction (-sin, cos) of heading (cos, sin) — i.e. the heading angle increases.
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


BUILTIN_TRACKS = {"A01": a01_points}
