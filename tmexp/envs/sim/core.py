"""B cars racing on one track: physics, race semantics, rewards and observations, batched.

``SimEnv`` is this with B = 1 and ``SimVecEnv`` with B = num_envs, so the two forms agree by construction.

Race semantics per car (race time in ms, one action = tm_engine_step_per_action engine steps of
ms_per_tm_engine_step ms):
- progress = metres along the centreline (clipped to [0, length]); the race finishes on the engine step where it
  reaches the track's length, and race_time_ms is that step's time (10 ms resolution);
- a checkpoint every ``checkpoint_spacing_m`` records its crossing time in ``cp_times``;
- a virtual checkpoint (vcp) is passed whenever the furthest centreline point reached (0.5 m apart) advances; no
  vcp for cutoff_rollout_if_no_vcp_passed_within_duration_ms -> truncated, cutoff "no_progress"; race time reaching
  cutoff_rollout_if_race_not_finished_within_duration_ms -> truncated, cutoff "race_timeout".

Reward per action (RewardSpec): constant_reward_per_ms * ms elapsed + reward_per_m_advanced_along_centerline *
progress gained + (phi(after) - phi(before)) with phi = shaped_reward_dist_to_cur_vcp * clip(distance to the
centreline, 2, 25) + at the finish reward_per_m_advanced_along_centerline * speed (m/s) *
final_speed_reward_as_if_duration_s (the metres the car would still cover at its finishing speed).
"""

from __future__ import annotations

import copy
from dataclasses import fields

import numpy as np

from tmexp.envs.base import ACTIONS, EnvSpec, RewardSpec
from tmexp.envs.observation import Camera, ImageRenderer, RoadRaster, build_floats
from tmexp.envs.sim.params import SimParams
from tmexp.envs.sim.physics import SimCars, advance
from tmexp.envs.track import SPACING_M, Track, TrackGeometry, extended_line, locate

_CONTROLS = np.asarray(ACTIONS, dtype=np.float64)  # (12, 4) accelerate, brake, left, right
_SHAPING_CLIP = (2.0, 25.0)


class TrackWorld:
    """Everything derived from a track once and shared by all its cars (geometry, raster, image renderer)."""

    def __init__(self, track: Track, spec: EnvSpec, params: SimParams):
        self.track = track
        self.line = extended_line(track, spec)  # room behind the start to back into, zone centres past the finish
        self.geo = TrackGeometry(self.line)
        self.camera = Camera(
            spec.h_downsized,
            spec.w_downsized,
            params.view_behind_m,
            params.view_ahead_m,
            params.view_row_power,
            params.view_half_width_m,
            params.view_widening,
        )
        margin = self.camera.reach_m() + 0.5 * params.road_width_m + params.offroad_width_m + 5.0
        self.raster = RoadRaster(track, params.road_width_m, params.offroad_width_m, params.grid_cell_m, margin)
        self.renderer = ImageRenderer(self.raster, self.camera, params.heading_bins)
        self.checkpoints = track.checkpoint_distances(spec.checkpoint_spacing_m)


def _plain(obj, cls):
    """A ``cls`` holding ``obj``'s values for ``cls``'s fields (``obj`` may be a subclass or a config node)."""
    return cls(**{f.name: getattr(obj, f.name) for f in fields(cls)})


_WORLDS: dict[tuple, TrackWorld] = {}


def track_world(track: Track, spec: EnvSpec, params: SimParams) -> TrackWorld:
    """A cached TrackWorld (building the raster of a 10 km track takes about a second)."""
    key = (
        id(track),
        track.name,
        track.length,
        spec.h_downsized,
        spec.w_downsized,
        spec.n_zone_centers_extrapolate_before_start_of_map,
        spec.n_zone_centers_extrapolate_after_end_of_map,
        spec.n_zone_centers_in_inputs,
        spec.one_every_n_zone_centers_in_inputs,
        spec.checkpoint_spacing_m,
        params.road_width_m,
        params.offroad_width_m,
        params.grid_cell_m,
        params.heading_bins,
        params.view_behind_m,
        params.view_ahead_m,
        params.view_row_power,
        params.view_half_width_m,
        params.view_widening,
    )
    world = _WORLDS.get(key)
    if world is None or world.track is not track:
        if len(_WORLDS) > 4:
            _WORLDS.clear()
        world = _WORLDS[key] = TrackWorld(track, spec, params)
    return world


class SimBatch:
    """B independent cars on one track. Cars are reset individually; ``step`` advances all of them."""

    def __init__(self, n: int, track: Track, spec: EnvSpec, rewards: RewardSpec, params: SimParams):
        # Plain dataclasses: a step reads these fields often, and Hydra's config nodes are slow to read.
        spec, rewards, params = _plain(spec, EnvSpec), _plain(rewards, RewardSpec), _plain(params, SimParams)
        self.n, self.spec, self.rewards, self.params = n, spec, rewards, params
        self.world = track_world(track, spec, params)
        self.track = track
        self.car = SimCars.zeros(n)
        self.race_time_ms = np.zeros(n, dtype=np.int64)
        self.finished = np.zeros(n, dtype=bool)
        self.max_vcp = np.zeros(n, dtype=np.int64)
        self.last_vcp_ms = np.zeros(n, dtype=np.int64)
        self.next_cp = np.zeros(n, dtype=np.int64)
        self.cp_times: list[list[int]] = [[] for _ in range(n)]
        self.prev_actions = np.full((n, spec.n_prev_actions_in_inputs), -1, dtype=np.int64)
        self.cutoff: list[str | None] = [None] * n
        self._cp_pad = np.append(self.world.checkpoints, np.inf)
        self.length = track.length
        self._scratch(n)

    def _scratch(self, n: int) -> None:
        """Reused observation inputs (np.stack costs more than the arithmetic for one car)."""
        self._xz, self._forward = np.empty((n, 2)), np.empty((n, 2))
        self._position, self._velocity, self._angular = np.zeros((n, 3)), np.zeros((n, 3)), np.zeros((n, 3))
        self._rotation = np.zeros((n, 3, 3))
        self._rotation[:, 1, 1] = 1.0

    # ------------------------------------------------------------------------------------- some of the cars
    # A vector env whose cars race on several tracks (a map cycle) keeps one batch per track and steps, on each,
    # only the cars racing there: ``take`` copies those cars into a batch of their own, ``put`` writes them back.
    _PER_CAR = ("race_time_ms", "finished", "max_vcp", "last_vcp_ms", "next_cp", "prev_actions")

    def take(self, rows: np.ndarray) -> SimBatch:
        """The cars ``rows`` (int indices) as a batch of their own on the same track (their state copied)."""
        sub = copy.copy(self)  # shares the track's world and the settings
        sub.n = len(rows)
        sub.car = self.car.take(rows)
        for name in self._PER_CAR:
            setattr(sub, name, getattr(self, name)[rows])
        sub.cp_times = [self.cp_times[i] for i in rows]
        sub.cutoff = [self.cutoff[i] for i in rows]
        sub._scratch(sub.n)
        return sub

    def put(self, rows: np.ndarray, sub: SimBatch) -> None:
        """Write back the cars ``rows`` of a batch ``take(rows)`` returned."""
        self.car.assign(rows, sub.car)
        for name in self._PER_CAR:
            getattr(self, name)[rows] = getattr(sub, name)
        for k, i in enumerate(rows):
            self.cp_times[i] = sub.cp_times[k]
            self.cutoff[i] = sub.cutoff[k]

    # ----------------------------------------------------------------------------------------------- reset
    def reset_cars(self, which: np.ndarray, rngs: list[np.random.Generator]) -> None:
        """Put the cars ``which`` (int indices) on the start line at rest; rngs[k] draws car which[k]'s jitter."""
        line = self.world.line
        start = line.offset
        k = len(which)
        fresh = SimCars.zeros(k)
        jitter = np.array([rng.uniform(-1.0, 1.0) for rng in rngs]) * self.params.start_lateral_jitter_m
        fresh.x = line.xz[start, 0] + jitter * line.normal[start, 0]
        fresh.z = line.xz[start, 1] + jitter * line.normal[start, 1]
        fresh.fx = np.full(k, line.tangent[start, 0])
        fresh.fz = np.full(k, line.tangent[start, 1])
        fresh.idx[:] = start
        locate(fresh, self.world.geo)
        self.car.assign(which, fresh)
        self.race_time_ms[which] = 0
        self.finished[which] = False
        self.max_vcp[which] = 0
        self.last_vcp_ms[which] = 0
        self.next_cp[which] = 0
        self.prev_actions[which] = -1
        for i in which:
            self.cp_times[i] = []
            self.cutoff[i] = None

    # ------------------------------------------------------------------------------------------------ step
    def step(self, actions: np.ndarray):
        """Advance every car by one action. actions: (B,) ints in [0, 12).

        Returns reward (B,), terminated (B,), truncated (B,).
        """
        spec, rw, car = self.spec, self.rewards, self.car
        controls = _CONTROLS[actions]
        accel, brake = controls[:, 0], controls[:, 1]
        steer_cmd = controls[:, 3] - controls[:, 2]
        progress0 = self.progress()
        phi0 = self._potential()
        time0 = self.race_time_ms.copy()
        dt_ms = spec.ms_per_tm_engine_step
        n_sub = spec.tm_engine_step_per_action
        history = advance(car, accel, brake, steer_cmd, self.params, self.world.geo, dt_ms / 1000.0, n_sub)
        # Engine steps each running car completes this action: all, or up to the one that reaches the finish.
        reached = history >= self.length  # (B, n_sub)
        finish_step = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, n_sub)
        running = ~self.finished
        self.race_time_ms += np.where(running, finish_step * dt_ms, 0)
        self.finished |= running & reached.any(axis=1)
        # Checkpoints crossed during this action, each at the engine step that crossed it.
        for i in np.flatnonzero(running & (history.max(axis=1) >= self._cp_pad[self.next_cp])):
            for k in range(n_sub):
                while history[i, k] >= self._cp_pad[self.next_cp[i]]:
                    self.cp_times[i].append(int(time0[i] + (k + 1) * dt_ms))
                    self.next_cp[i] += 1
        progress = self.progress()
        vcp = np.floor(progress / SPACING_M).astype(np.int64)
        advanced = vcp > self.max_vcp
        self.max_vcp = np.maximum(self.max_vcp, vcp)
        self.last_vcp_ms = np.where(advanced, self.race_time_ms, self.last_vcp_ms)
        self.prev_actions = np.concatenate([actions[:, None], self.prev_actions[:, :-1]], axis=1)

        reward = (
            rw.constant_reward_per_ms * (self.race_time_ms - time0)
            + rw.reward_per_m_advanced_along_centerline * (progress - progress0)
            + (self._potential() - phi0)
        )
        # A car finishes once: reward its speed on the step it crossed the line.
        just_finished = self.finished & (progress0 < self.length)
        reward = reward + np.where(
            just_finished,
            rw.reward_per_m_advanced_along_centerline * car.speed() * rw.final_speed_reward_as_if_duration_s,
            0.0,
        )

        terminated = self.finished.copy()
        no_progress = (
            self.race_time_ms - self.last_vcp_ms >= spec.cutoff_rollout_if_no_vcp_passed_within_duration_ms
        ) & ~terminated
        timeout = (self.race_time_ms >= spec.cutoff_rollout_if_race_not_finished_within_duration_ms) & ~terminated
        truncated = no_progress | timeout
        for i in np.flatnonzero(truncated):
            self.cutoff[i] = "race_timeout" if timeout[i] else "no_progress"
        return reward, terminated, truncated

    # --------------------------------------------------------------------------------------- observations
    def progress(self) -> np.ndarray:
        """(B,) metres along the centreline, clipped to [0, length]."""
        s = self.world.line.s[self.car.idx] + self.car.along
        return np.minimum(np.maximum(s, 0.0), self.length)

    def _potential(self) -> np.ndarray:
        d = np.minimum(np.maximum(np.abs(self.car.lateral), _SHAPING_CLIP[0]), _SHAPING_CLIP[1])
        return self.rewards.shaped_reward_dist_to_cur_vcp * d

    def observe(self) -> dict[str, np.ndarray]:
        """{"img": (B, 1, H, W) uint8, "floats": (B, F) float32}."""
        car, world = self.car, self.world
        xz, forward, position, velocity = self._xz, self._forward, self._position, self._velocity
        xz[:, 0], xz[:, 1] = car.x, car.z
        forward[:, 0], forward[:, 1] = car.fx, car.fz
        img = world.renderer.render(xz, forward)
        position[:, 0], position[:, 1], position[:, 2] = car.x, world.line.points[car.idx, 1], car.z
        velocity[:, 0], velocity[:, 2] = car.vx, car.vz
        self._angular[:, 1] = -car.yaw_rate  # turning right is a negative rotation about +y
        rot = self._rotation  # columns right, up, forward of a level car (see planar_rotation)
        rot[:, 0, 0], rot[:, 2, 0], rot[:, 0, 2], rot[:, 2, 2] = -car.fz, car.fx, car.fx, car.fz
        floats = build_floats(
            self.spec,
            world.line,
            car.idx,
            position,
            rot,
            velocity,
            self._angular,
            car.steer,
            car.wall,
            self.prev_actions,
            self.length - self.progress(),
        )
        return {"img": img, "floats": floats}

    def info(self, i: int) -> dict:
        """The info dict of car ``i`` (keys documented in ``tmexp.envs.base.INFO_KEYS``)."""
        return {key: (values[i] if key != "cp_times" else list(values[i])) for key, values in self.infos().items()}

    def infos(self) -> dict[str, list]:
        """Every car's info values, one list per key of ``tmexp.envs.base.INFO_KEYS``."""
        return {
            "race_time_ms": self.race_time_ms.tolist(),
            "finished": self.finished.tolist(),
            "cp_times": [list(c) for c in self.cp_times],
            "progress_m": self.progress().tolist(),
            "wall_contact": self.car.wall.tolist(),
            "speed_kmh": (self.car.speed() * 3.6).tolist(),
            "cutoff": list(self.cutoff),
        }
