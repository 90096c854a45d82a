"""One race's bookkeeping from game states: progress, checkpoints, cutoffs, rewards, observations and info.

The semantics and the reward are the simulator's (``tmexp/envs/sim/core.py``), computed from what the game
reports at each action boundary instead of from simulator internals:
- progress = metres along the map's reference line (the extended centreline point nearest the car, followed
  from one action to the next like the simulator does, plus the offset along its tangent), clipped to
  [0, length];
- the race finishes when the game reports the last checkpoint pass (CHECKPOINT_COUNT_CHANGED_SYNC with
  current == target); race_time_ms is the race time of that engine step, cp_times the game's checkpoint times;
- progress through a real checkpoint (Linesight's ``sync_virtual_and_real_checkpoints``): with the map's checkpoint
  positions (``env.tmi.checkpoint_positions_path``), the centreline point nearest each checkpoint is a gate that
  progress only passes when the car is within ``real_checkpoint_radius_m`` (12 m) of the checkpoint: a car cutting
  a corner past a checkpoint earns no progress beyond it;
- a virtual checkpoint is every 0.5 m of new furthest progress; none for
  cutoff_rollout_if_no_vcp_passed_within_duration_ms -> truncated "no_progress"; race time reaching
  cutoff_rollout_if_race_not_finished_within_duration_ms -> truncated "race_timeout";
- reward = constant_reward_per_ms * ms + reward_per_m_advanced_along_centerline * metres gained + the change of
  shaped_reward_dist_to_cur_vcp * clip(distance to the centreline, 2, 25) + at the finish
  reward_per_m_advanced_along_centerline * speed * final_speed_reward_as_if_duration_s.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from tmexp.envs.base import EnvSpec, RewardSpec
from tmexp.envs.observation import build_game_floats, n_game_floats
from tmexp.envs.tmi.errors import GameNotConfigured
from tmexp.envs.tmi.params import TmiParams
from tmexp.envs.tmi.state import CarState
from tmexp.envs.track import SPACING_M, ExtendedLine, LinePosition, Track, TrackGeometry, locate

_SHAPING_CLIP = (2.0, 25.0)
# Linesight matches a checkpoint to the centreline points within 12 m of it, one per 200 points (100 m): a map
# whose line passes a checkpoint several times (laps) gets a gate at each pass.
_GATE_MATCH_M = 12.0
_GATE_SEPARATION_POINTS = 200


def game_observation_space(spec: EnvSpec) -> gym.spaces.Dict:
    """``{"img": uint8 (1, H, W), "floats": float32 (F,)}`` with the game's F (``n_game_floats``: 184)."""
    return gym.spaces.Dict(
        {
            "img": gym.spaces.Box(0, 255, (1, spec.h_downsized, spec.w_downsized), dtype=np.uint8),
            "floats": gym.spaces.Box(-np.inf, np.inf, (n_game_floats(spec),), dtype=np.float32),
        }
    )


def checkpoint_gates(line: ExtendedLine, checkpoints: np.ndarray) -> dict[int, np.ndarray]:
    """{index of ``line``'s point: checkpoint centre (3,)} for every pass of the line within 12 m of a checkpoint."""
    gates = {}
    for position in np.asarray(checkpoints, dtype=np.float64).reshape(-1, 3):
        distance = np.linalg.norm(line.points - position[None, :], axis=1)
        while distance.min() < _GATE_MATCH_M:
            idx = int(distance.argmin())
            gates[idx] = position
            distance[max(0, idx - _GATE_SEPARATION_POINTS) : idx + _GATE_SEPARATION_POINTS] = np.inf
    return dict(sorted(gates.items()))


def load_checkpoint_gates(params: TmiParams, line: ExtendedLine) -> dict[int, np.ndarray]:
    """The gates of ``env.tmi.checkpoint_positions_path`` (none when it is empty)."""
    path = params.checkpoint_positions_path
    if not path:
        return {}
    try:
        positions = np.load(Path(path), allow_pickle=False)
    except (OSError, ValueError) as error:
        raise GameNotConfigured(
            f"env.tmi.checkpoint_positions_path cannot be read ({error}); give a .npy of the "
            f"map's checkpoint centres, shape (K, 3), or leave it empty."
        ) from None
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise GameNotConfigured(
            f"env.tmi.checkpoint_positions_path holds an array of shape {positions.shape}; "
            f"it must be (K, 3): the map's checkpoint centres in world metres."
        )
    return checkpoint_gates(line, positions)


# The car moves at most a few metres per action; enough iterations of the local search to follow it anyway.
_LOCATE_ITERATIONS = 6


class Race:
    """A race in progress, fed one game state per action."""

    def __init__(
        self,
        track: Track,
        line: ExtendedLine,
        geometry: TrackGeometry,
        spec: EnvSpec,
        rewards: RewardSpec,
        start: CarState,
        gates: dict[int, np.ndarray] | None = None,
        gate_radius_m: float = 12.0,
    ):
        self.track, self.line, self.geo, self.spec, self.rewards = track, line, geometry, spec, rewards
        self.gates, self.gate_radius_m = dict(gates or {}), gate_radius_m
        self._gate_idx = np.array(sorted(self.gates), dtype=np.int64)
        self.locator = LinePosition.at_start(line)
        self.zone_idx = int(self.locator.idx[0])  # the car's zone: the nearest point, held at a gate not passed
        self._locate(start)
        self.gearbox_counter = 0
        self.start_time_ms = start.race_time_ms
        self.race_time_ms = 0
        self.finished = False
        self._finish_time_ms: int | None = None
        self.cp_times: list[int] = []
        self.max_vcp = 0
        self.last_vcp_ms = 0
        self.prev_actions = np.full(spec.n_prev_actions_in_inputs, -1, dtype=np.int64)
        self.cutoff: str | None = None
        self.car = start

    def _locate(self, car: CarState) -> None:
        self.locator.x[:] = car.position[0]
        self.locator.z[:] = car.position[2]
        locate(self.locator, self.geo, iterations=_LOCATE_ITERATIONS)
        nearest = int(self.locator.idx[0])
        if nearest > self.zone_idx:
            # Linesight's rule: the zone may leave a gate's point only while the car is near that checkpoint.
            ahead = self._gate_idx[(self._gate_idx >= self.zone_idx) & (self._gate_idx < nearest)]
            for gate in ahead:
                if np.linalg.norm(car.position - self.gates[int(gate)]) >= self.gate_radius_m:
                    nearest = int(gate)
                    break
        self.zone_idx = nearest

    @property
    def progress_m(self) -> float:
        if self.zone_idx != int(self.locator.idx[0]):  # held at a gate: progress stops at its point
            return float(np.clip(self.line.s[self.zone_idx], 0.0, self.track.length))
        return float(self.locator.progress_m(self.line, self.track.length)[0])

    def _potential(self) -> float:
        return self.rewards.shaped_reward_dist_to_cur_vcp * float(np.clip(abs(self.locator.lateral[0]), *_SHAPING_CLIP))

    @property
    def finish_reported(self) -> bool:
        """The game reported the finish (the race may not have advanced past it yet)."""
        return self._finish_time_ms is not None

    def checkpoint(self, race_time_ms: int, is_finish: bool) -> None:
        """The game reported a checkpoint pass (the finish when ``is_finish``) at ``race_time_ms``."""
        if self.finished or self._finish_time_ms is not None:
            return
        if is_finish:
            self._finish_time_ms = race_time_ms - self.start_time_ms
        else:
            self.cp_times.append(race_time_ms - self.start_time_ms)

    def advance(self, action: int, car: CarState) -> tuple[float, bool, bool]:
        """The state ``car`` reached after ``action``; returns reward, terminated, truncated."""
        rw, spec = self.rewards, self.spec
        progress0, phi0, time0 = self.progress_m, self._potential(), self.race_time_ms
        self._locate(car)
        self.car = car
        self.gearbox_counter = self.gearbox_counter + 1 if car.gearbox_state != 0 else 0
        finish_time_ms = self._finish_time_ms
        just_finished = finish_time_ms is not None and not self.finished
        if just_finished and finish_time_ms is not None:  # the second test only tells mypy the type
            # The clock stops on the finishing engine step, as in the simulator.
            self.finished, self.race_time_ms = True, finish_time_ms
        elif not self.finished:
            self.race_time_ms = car.race_time_ms - self.start_time_ms
        progress = self.progress_m
        vcp = int(np.floor(progress / SPACING_M))
        if vcp > self.max_vcp:
            self.max_vcp, self.last_vcp_ms = vcp, self.race_time_ms
        self.prev_actions = np.concatenate([[int(action)], self.prev_actions[:-1]])

        reward = (
            rw.constant_reward_per_ms * (self.race_time_ms - time0)
            + rw.reward_per_m_advanced_along_centerline * (progress - progress0)
            + (self._potential() - phi0)
        )
        if just_finished:
            reward += (
                rw.reward_per_m_advanced_along_centerline
                * self._planar_speed(car)
                * rw.final_speed_reward_as_if_duration_s
            )

        terminated = self.finished
        timeout = not terminated and self.race_time_ms >= spec.cutoff_rollout_if_race_not_finished_within_duration_ms
        no_progress = (
            not terminated
            and self.race_time_ms - self.last_vcp_ms >= spec.cutoff_rollout_if_no_vcp_passed_within_duration_ms
        )
        truncated = timeout or no_progress
        if truncated:
            self.cutoff = "race_timeout" if timeout else "no_progress"
        return float(reward), terminated, truncated

    @staticmethod
    def _planar_speed(car: CarState) -> float:
        return float(np.hypot(car.velocity[0], car.velocity[2]))

    def observation(self, gray: np.ndarray, car: CarState) -> dict[str, np.ndarray]:
        """{"img": uint8 (1, H, W), "floats": float32 (F,)} from the frame (H, W) and the state (the game's floats:
        ``tmexp.envs.observation.build_game_floats``)."""
        floats = build_game_floats(
            self.spec,
            self.line,
            self.zone_idx,
            car.position,
            car.rotation,
            car.velocity,
            car.angular_velocity,
            self.prev_actions,
            car.wheel_sliding,
            car.wheel_contact,
            car.wheel_damper,
            car.wheel_material,
            car.gearbox_state,
            car.gear,
            car.rpm,
            self.gearbox_counter,
            self.track.length - self.progress_m,
            car.freewheeling,
        )
        return {"img": np.ascontiguousarray(gray[None, :, :], dtype=np.uint8), "floats": floats}

    def info(self) -> dict:
        """The info dict (keys as ``tmexp.envs.base.INFO_KEYS``)."""
        return {
            "race_time_ms": int(self.race_time_ms),
            "finished": bool(self.finished),
            "cp_times": list(self.cp_times),
            "progress_m": self.progress_m,
            "wall_contact": bool(self.car.wall_contact),
            "speed_kmh": self._planar_speed(self.car) * 3.6,
            "cutoff": self.cutoff,
        }
