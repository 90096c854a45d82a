"""Observations as functions of car state and track: the float vector and the image of the road ahead.

Both backends build their observations here, so an agent sees the same kind of inputs from the simulator and
from the game. Everything is batched over cars: B = 1 for a single environment.

Frames. World positions are (x, height, z) in metres. A car's orientation is a rotation matrix whose columns are
its right, up and forward unit vectors in world coordinates; "car frame" components are the projections on those
three axes (right, up, forward). Angular velocity follows the right-hand rule about the same axes.

The float vector (F = 9 + 4 * n_prev_actions_in_inputs + 3 * n_zone_centers_in_inputs; 149 with the defaults).
Every entry is scaled to roughly unit range; the network standardises each one further by the backend's
measured mean and std (``nn.normalize_floats``, from reference-driver races: ``tmexp.envs.float_stats``):

| index (defaults) | general index | content | scaling |
|---|---|---|---|
| 0 .. 19 | 0 .. 4P-1 | previous P actions, most recent first, 4 bits each (see below) | 0 / 1 |
| 20 .. 22 | 4P .. 4P+2 | velocity in the car frame (right, up, forward) | m/s / 50 |
| 23 .. 25 | 4P+3 .. 4P+5 | angular velocity in the car frame (about right, up, forward; sign: see below) | rad/s / 2 |
| 26 | 4P+6 | steering state, -1 full left .. +1 full right | none |
| 27 | 4P+7 | touching a wall | 0 / 1 |
| 28 .. 147 | 4P+8 .. 4P+8+3Z-1 | next Z zone centres in the car frame (right, up, forward), nearest first | m / 100 |
| 148 (last) | 4P+8+3Z | distance to the finish, capped at margin_to_announce_finish_meters | / margin (0 .. 1) |

P = ``n_prev_actions_in_inputs`` (5), Z = ``n_zone_centers_in_inputs`` (40). An action's 4 bits are accelerate,
brake, left, right (all 0 before the first action); angular velocity about up is positive turning left. Zone
centre j (j = 1..Z) is the centreline point ``j * one_every_n_zone_centers_in_inputs`` points (0.5 m each) ahead
of the car's nearest centreline point; beyond the finish the line continues straight along its end tangent.

The game's float vector (``env=tmi``) is Linesight's and rulka's: 184 floats with the defaults, computed from the
game state as Linesight computes them (``build_game_floats``; its table, index by index, is ``game_float_layout``'s
docstring, with which of them the simulator's vector holds too).

The image. A (1, H, W) uint8 grayscale picture of the road ahead in the car's frame (a stretched bird's-eye view
whose rows are spaced like a perspective camera's ground plane: dense near the car, sparse far ahead): walls
dark, off-road mid-grey, road light grey, the road's edge lines and the finish line white/black. It is gathered
from a raster of the track made once (``RoadRaster``) at a sample pattern precomputed for ``heading_bins`` car
headings, which keeps one image to a single array gather.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from tmexp.envs.base import ACTIONS, EnvSpec, n_floats
from tmexp.envs.track import ExtendedLine, Track

VELOCITY_SCALE = 1.0 / 50.0
ANGULAR_VELOCITY_SCALE = 1.0 / 2.0
ZONE_SCALE = 1.0 / 100.0

# Gray levels of the image classes.
WALL, OFFROAD, ROAD, LINE, FINISH_DARK = 25, 95, 150, 235, 0

_ACTION_BITS = np.asarray(ACTIONS, dtype=np.float32)  # (12, 4)


def float_layout(spec: EnvSpec) -> dict[str, slice]:
    """Name -> slice of the float vector (the table in this module's docstring)."""
    return dict(_layout(spec.n_prev_actions_in_inputs, spec.n_zone_centers_in_inputs))


@functools.cache
def _layout(p: int, z: int) -> tuple:
    start = 4 * p
    return (
        ("prev_actions", slice(0, start)),
        ("velocity", slice(start, start + 3)),
        ("angular_velocity", slice(start + 3, start + 6)),
        ("steer", slice(start + 6, start + 7)),
        ("wall_contact", slice(start + 7, start + 8)),
        ("zone_centers", slice(start + 8, start + 8 + 3 * z)),
        ("distance_to_finish", slice(start + 8 + 3 * z, start + 9 + 3 * z)),
    )


def build_floats(
    spec: EnvSpec,
    line: ExtendedLine,
    nearest_index: np.ndarray,
    position: np.ndarray,
    rotation: np.ndarray,
    velocity: np.ndarray,
    angular_velocity: np.ndarray,
    steer: np.ndarray,
    wall_contact: np.ndarray,
    prev_actions: np.ndarray,
    distance_to_finish: np.ndarray,
) -> np.ndarray:
    """The float vectors of B cars.

    Args:
        nearest_index: (B,) index into ``line`` (extended centreline) of each car's nearest point.
        position: (B, 3) world x, height, z. rotation: (B, 3, 3) columns right, up, forward.
        velocity, angular_velocity: (B, 3) world frame. steer, wall_contact: (B,).
        prev_actions: (B, P) action indices, most recent first, -1 where none yet.
        distance_to_finish: (B,) metres along the centreline.
    Returns:
        (B, F) float32.
    """
    b = len(position)
    z = spec.n_zone_centers_in_inputs
    out = np.empty((b, n_floats(spec)), dtype=np.float32)
    lay = dict(_layout(spec.n_prev_actions_in_inputs, z))
    bits = np.where(prev_actions[..., None] >= 0, _ACTION_BITS[np.maximum(prev_actions, 0)], 0.0)
    out[:, lay["prev_actions"]] = bits.reshape(b, -1)
    out[:, lay["velocity"]] = np.matmul(velocity[:, None, :], rotation)[:, 0] * VELOCITY_SCALE
    out[:, lay["angular_velocity"]] = np.matmul(angular_velocity[:, None, :], rotation)[:, 0] * ANGULAR_VELOCITY_SCALE
    out[:, lay["steer"]] = steer[:, None]
    out[:, lay["wall_contact"]] = wall_contact[:, None]
    ahead = spec.one_every_n_zone_centers_in_inputs * np.arange(1, z + 1)
    zi = np.minimum(nearest_index[:, None] + ahead[None, :], len(line.points) - 1)  # (B, Z)
    rel = line.points[zi] - position[:, None, :]  # (B, Z, 3)
    out[:, lay["zone_centers"]] = (np.matmul(rel, rotation) * ZONE_SCALE).reshape(b, -1)
    margin = spec.margin_to_announce_finish_meters
    out[:, lay["distance_to_finish"]] = (np.clip(distance_to_finish, 0.0, margin) / margin)[:, None]
    return out


# Linesight's grouping of the game's contact materials (TMInterface ids) into the physics behaviours its inputs
# one-hot: 0 asphalt-like, 1 grass, 2 dirt, 3 turbo; every other material (ice, metal, water...) is group 4, which
# no input flags.
N_MATERIAL_GROUPS = 4
_MATERIAL_GROUP = {0: 0, 1: 0, 2: 1, 5: 2, 6: 2, 7: 3, 8: 2, 16: 0, 17: 2, 18: 0, 19: 0, 20: 1, 26: 3}


def material_group(material_id: int) -> int:
    """The physics-behaviour group of a contact material id (Linesight's table; 4 = none of the inputs')."""
    return _MATERIAL_GROUP.get(int(material_id) & 0xFFFF, N_MATERIAL_GROUPS)


def game_float_layout(spec: EnvSpec) -> dict[str, slice]:
    """Name -> slice of the game's float vector, in Linesight's order, unscaled (the network standardises them by
    the floats' statistics measured on the game). What it adds to the simulator's 149:

    | index (defaults) | content | also in the simulator's vector |
    |---|---|---|
    | 0 | Linesight's slot for the mini-race time: always 0 from the env | no |
    | 1 .. 20 | previous P actions, oldest first, 4 bits each; "forward" before the first | yes (newest first) |
    | 21 .. 24 | each wheel sliding | no |
    | 25 .. 28 | each wheel touching the ground | no |
    | 29 .. 32 | each wheel's damper absorb | no |
    | 33 .. 36 | gearbox state, gear, engine rpm, action steps since the gearbox state became non-zero | no |
    | 37 .. 52 | contact material of each wheel, one-hot over asphalt, grass, dirt, turbo (wheel by wheel) | no |
    | 53 .. 55 | angular velocity in the car frame, rad/s | yes (/ 2) |
    | 56 .. 58 | velocity in the car frame, m/s | yes (/ 50) |
    | 59 .. 61 | the world's up vector in the car frame | no |
    | 62 .. 181 | Z zone centres in the car frame, metres, from the nearest point (0, 10 .. m ahead) | from 10 m |
    | 182 | distance to the finish, metres, capped at margin_to_announce_finish_meters | / margin |
    | 183 | freewheeling | no |

    The simulator's steering state and wall contact are not among the game's inputs (Linesight's are the above).
    """
    return dict(_game_layout(spec.n_prev_actions_in_inputs, spec.n_zone_centers_in_inputs))


def n_game_floats(spec: EnvSpec) -> int:
    """The length of the game's float vector (184 with Linesight's defaults)."""
    return 44 + 4 * spec.n_prev_actions_in_inputs + 3 * spec.n_zone_centers_in_inputs


def float_count(env) -> int:
    """The float count of a run's env: ``env`` is an ``EnvSpec`` with a ``backend`` (the ``env`` config node);
    the game's (``n_game_floats``) for ``tmi``, else the simulator's (``n_floats``)."""
    return n_game_floats(env) if str(getattr(env, "backend", "sim")) == "tmi" else n_floats(env)


@functools.cache
def _game_layout(p: int, z: int) -> tuple:
    sizes = (
        ("mini_race_time", 1),
        ("prev_actions", 4 * p),
        ("wheel_sliding", 4),
        ("wheel_contact", 4),
        ("wheel_damper", 4),
        ("gearbox_state", 1),
        ("gear", 1),
        ("rpm", 1),
        ("gearbox_counter", 1),
        ("contact_materials", 4 * N_MATERIAL_GROUPS),
        ("angular_velocity", 3),
        ("velocity", 3),
        ("world_up", 3),
        ("zone_centers", 3 * z),
        ("distance_to_finish", 1),
        ("freewheeling", 1),
    )
    out, start = [], 0
    for name, size in sizes:
        out.append((name, slice(start, start + size)))
        start += size
    return tuple(out)


FORWARD_ACTION = 0  # Linesight pads the previous actions with "forward" before the first one


def build_game_floats(
    spec: EnvSpec,
    line: ExtendedLine,
    zone_index: int,
    position: np.ndarray,
    rotation: np.ndarray,
    velocity: np.ndarray,
    angular_velocity: np.ndarray,
    prev_actions: np.ndarray,
    wheel_sliding: np.ndarray,
    wheel_contact: np.ndarray,
    wheel_damper: np.ndarray,
    wheel_material: np.ndarray,
    gearbox_state: int,
    gear: int,
    rpm: float,
    gearbox_counter: int,
    distance_to_finish: float,
    freewheeling: bool,
) -> np.ndarray:
    """One car's game float vector, as Linesight computes it from the game state.

    Args:
        zone_index: index into ``line`` of the car's current zone centre (the nearest centreline point).
        position: (3,) world x, height, z. rotation: (3, 3) columns right, up, forward (the game's).
        velocity, angular_velocity: (3,) world frame.
        prev_actions: (P,) action indices, most recent first, -1 where none yet.
        wheel_sliding, wheel_contact, wheel_damper, wheel_material: (4,) per wheel (material: TMInterface id).
        gearbox_counter: action steps in a row with a non-zero gearbox state before this one (Linesight's).
        distance_to_finish: metres along the centreline.
    Returns:
        (F,) float32, F = ``n_game_floats(spec)``.
    """
    lay = dict(_game_layout(spec.n_prev_actions_in_inputs, spec.n_zone_centers_in_inputs))
    out = np.zeros(n_game_floats(spec), dtype=np.float32)
    oldest_first = np.where(prev_actions[::-1] >= 0, prev_actions[::-1], FORWARD_ACTION)
    out[lay["prev_actions"]] = _ACTION_BITS[oldest_first].ravel()
    out[lay["wheel_sliding"]] = wheel_sliding
    out[lay["wheel_contact"]] = wheel_contact
    out[lay["wheel_damper"]] = wheel_damper
    out[lay["gearbox_state"]] = gearbox_state
    out[lay["gear"]] = gear
    out[lay["rpm"]] = rpm
    out[lay["gearbox_counter"]] = gearbox_counter
    groups = np.array([material_group(m) for m in wheel_material])
    out[lay["contact_materials"]] = (groups[:, None] == np.arange(N_MATERIAL_GROUPS)[None, :]).ravel()
    # Car-frame components: projections on the rotation's columns (Linesight: rotation.T @ v).
    out[lay["angular_velocity"]] = angular_velocity @ rotation
    out[lay["velocity"]] = velocity @ rotation
    out[lay["world_up"]] = rotation[1, :]
    z = spec.n_zone_centers_in_inputs
    zi = np.minimum(zone_index + spec.one_every_n_zone_centers_in_inputs * np.arange(z), len(line.points) - 1)
    out[lay["zone_centers"]] = ((line.points[zi] - position[None, :]) @ rotation).ravel()
    out[lay["distance_to_finish"]] = min(spec.margin_to_announce_finish_meters, distance_to_finish)
    out[lay["freewheeling"]] = float(freewheeling)
    return out


def shared_floats(floats: np.ndarray, spec: EnvSpec, game: bool) -> dict[str, np.ndarray]:
    """The inputs both backends' float vectors hold, in the simulator's scaling and order, by name.

    ``floats``: (F,) of the game (``game``) or of the simulator. The previous actions are newest first (the game's
    padding is "forward", the simulator's 0); the zone centres from 10 m ahead (Z - 1 of them). Tests compare the
    backends with it.
    """
    p, z = spec.n_prev_actions_in_inputs, spec.n_zone_centers_in_inputs
    if not game:
        lay = float_layout(spec)
        return {
            "prev_actions": floats[lay["prev_actions"]],
            "velocity": floats[lay["velocity"]],
            "angular_velocity": floats[lay["angular_velocity"]],
            "zone_centers": floats[lay["zone_centers"]][: 3 * (z - 1)],
            "distance_to_finish": floats[lay["distance_to_finish"]],
        }
    lay = game_float_layout(spec)
    actions = floats[lay["prev_actions"]].reshape(p, 4)[::-1].ravel()
    return {
        "prev_actions": actions,
        "velocity": floats[lay["velocity"]] * VELOCITY_SCALE,
        "angular_velocity": floats[lay["angular_velocity"]] * ANGULAR_VELOCITY_SCALE,
        "zone_centers": floats[lay["zone_centers"]][3:] * ZONE_SCALE,
        "distance_to_finish": floats[lay["distance_to_finish"]] / spec.margin_to_announce_finish_meters,
    }


def planar_rotation(forward_xz: np.ndarray) -> np.ndarray:
    """(B, 2) unit forward in the ground plane -> (B, 3, 3) rotation, columns right, up, forward (a level car)."""
    fx, fz = forward_xz[:, 0], forward_xz[:, 1]
    rot = np.zeros((len(forward_xz), 3, 3))
    rot[:, 0, 0], rot[:, 2, 0] = -fz, fx  # right = forward x up
    rot[:, 1, 1] = 1.0
    rot[:, 0, 2], rot[:, 2, 2] = fx, fz
    return rot


@dataclass(frozen=True)
class Camera:
    """The image's sample pattern, in the car frame (see ``SimParams`` for the meaning of each field)."""

    height: int = 64
    width: int = 64
    behind_m: float = 4.0
    ahead_m: float = 90.0
    row_power: float = 1.7
    half_width_m: float = 11.0
    widening: float = 0.3

    def pattern(self) -> np.ndarray:
        """(H * W, 2) sample points (right, forward) in metres, row-major from the top-left pixel."""
        u = (self.height - 1 - np.arange(self.height)) / max(1, self.height - 1)  # 0 at the bottom row
        forward = -self.behind_m + (self.ahead_m + self.behind_m) * u**self.row_power  # (H,)
        half = self.half_width_m + self.widening * np.maximum(forward, 0.0)  # (H,)
        cols = (np.arange(self.width) + 0.5) / self.width * 2.0 - 1.0  # (W,)
        right = half[:, None] * cols[None, :]
        fwd = np.broadcast_to(forward[:, None], right.shape)
        return np.stack([right.ravel(), fwd.ravel()], axis=1)

    def reach_m(self) -> float:
        """Farthest sample from the car, in metres."""
        return float(np.max(np.linalg.norm(self.pattern(), axis=1)))


class RoadRaster:
    """A gray-level map of a track made once; images are gathered from it.

    ``gray`` is (rows, cols) uint8 over the track's bounding box plus a margin wide enough for any camera sample,
    so that gathers never leave it. Row = z, column = x.
    """

    def __init__(
        self, track: Track, road_width_m: float, offroad_width_m: float, cell_m: float = 0.5, margin_m: float = 160.0
    ):
        self.cell = float(cell_m)
        xz = track.xz
        self.origin = xz.min(axis=0) - margin_m  # (x0, z0) of cell (0, 0)'s corner
        size = np.ceil((xz.max(axis=0) + margin_m - self.origin) / self.cell).astype(int) + 1
        self.cols, self.rows = int(size[0]), int(size[1])
        dense = _densify(xz, self.cell * 0.5)  # a gap-free raster of the line
        ij = np.floor((dense - self.origin) / self.cell).astype(int)
        line = np.zeros((self.rows, self.cols), dtype=bool)
        line[ij[:, 1], ij[:, 0]] = True
        half_road = road_width_m / 2
        gray = _classify(line, self.cell, half_road, offroad_width_m)
        del line
        self._draw_finish(track, half_road, gray)
        self.gray = gray
        self.flat = gray.ravel()

    def _draw_finish(self, track: Track, half_road: float, gray: np.ndarray) -> None:
        """A checkered band 2 m deep across the road at the end of the line."""
        end, t = track.xz[-1], track.tangent[-1]
        n = np.array([-t[1], t[0]])
        lo = np.floor((end - half_road - 3 - self.origin) / self.cell).astype(int)
        hi = np.ceil((end + half_road + 3 - self.origin) / self.cell).astype(int)
        jj, ii = np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]))
        centres = np.stack([jj, ii], -1) * self.cell + self.origin + self.cell / 2 - end
        along, lateral = centres @ t, centres @ n
        band = (along >= -1.0) & (along <= 1.0) & (np.abs(lateral) <= half_road)
        checker = (np.floor(along) + np.floor(lateral)) % 2 == 0
        gray[ii[band], jj[band]] = np.where(checker[band], LINE, FINISH_DARK)

    def cell_index(self, xz: np.ndarray) -> np.ndarray:
        """(B, 2) positions -> (B,) flat cell indices."""
        ij = np.floor((xz - self.origin) / self.cell).astype(np.int64)
        return ij[:, 1] * self.cols + ij[:, 0]

    def nbytes(self) -> int:
        return self.gray.nbytes


class ImageRenderer:
    """Renders (B, 1, H, W) uint8 images of the road ahead from a ``RoadRaster``."""

    def __init__(self, raster: RoadRaster, camera: Camera, heading_bins: int = 512):
        self.raster, self.camera, self.bins = raster, camera, int(heading_bins)
        pts = camera.pattern()  # (P, 2) right, forward
        angles = 2 * math.pi * np.arange(self.bins) / self.bins
        fx, fz = np.cos(angles)[:, None], np.sin(angles)[:, None]  # forward (cos, sin); right (-sin, cos)
        dx = pts[None, :, 1] * fx - pts[None, :, 0] * fz
        dz = pts[None, :, 1] * fz + pts[None, :, 0] * fx
        # Offsets from the car's cell centre, rounded to whole cells: (bins, P) flat offsets.
        di = np.rint(dx / raster.cell).astype(np.int64)
        dj = np.rint(dz / raster.cell).astype(np.int64)
        self.offsets = (dj * raster.cols + di).astype(np.int32 if raster.gray.size < 2**31 else np.int64)

    def render(self, xz: np.ndarray, forward_xz: np.ndarray) -> np.ndarray:
        """Images of B cars. xz, forward_xz: (B, 2). Returns (B, 1, H, W) uint8."""
        heading = np.arctan2(forward_xz[:, 1], forward_xz[:, 0])
        b = np.rint(heading * (self.bins / (2 * math.pi))).astype(np.int64) % self.bins
        # The raster's margin exceeds the camera's reach and walls keep cars near the line: no bounds check.
        idx = self.raster.cell_index(xz).astype(self.offsets.dtype)[:, None] + self.offsets[b]
        img = np.take(self.raster.flat, idx)
        return img.reshape(len(xz), 1, self.camera.height, self.camera.width)


def _classify(line: np.ndarray, cell: float, half_road: float, offroad: float, tile: int = 512) -> np.ndarray:
    """Gray level of every cell from its distance to the nearest line cell, tile by tile.

    Only distances up to the wall matter, so each tile needs the line cells within that reach of it: tiling keeps
    the distance transform of a 10 km track to a few MB instead of ~150 MB at once.
    """
    from scipy.ndimage import distance_transform_edt

    reach = half_road + offroad
    pad = int(np.ceil(reach / cell)) + 2
    rows, cols = line.shape
    gray = np.full(line.shape, WALL, dtype=np.uint8)
    for r0 in range(0, rows, tile):
        for c0 in range(0, cols, tile):
            r1, c1 = min(r0 + tile, rows), min(c0 + tile, cols)
            pr0, pc0 = max(r0 - pad, 0), max(c0 - pad, 0)
            block = line[pr0 : min(r1 + pad, rows), pc0 : min(c1 + pad, cols)]
            if not block.any():
                continue
            dist = distance_transform_edt(~block, sampling=cell)[r0 - pr0 : r1 - pr0, c0 - pc0 : c1 - pc0]
            out = gray[r0:r1, c0:c1]
            out[dist <= reach] = OFFROAD
            out[dist <= half_road] = LINE
            out[dist <= half_road - 0.6] = ROAD
    return gray


def _densify(xz: np.ndarray, max_step: float) -> np.ndarray:
    """Insert points so consecutive ones are at most ``max_step`` apart (a gap-free raster of the line)."""
    seg = np.diff(xz, axis=0)
    n = np.maximum(1, np.ceil(np.linalg.norm(seg, axis=1) / max_step).astype(int))
    t = np.concatenate([np.arange(k) / k for k in n])
    base = np.repeat(np.arange(len(seg)), n)
    return np.concatenate([xz[base] + seg[base] * t[:, None], xz[-1:]])
