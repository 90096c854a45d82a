"""One race's bookkeeping from game states: progress, checkpoints, cutoffs, rewards, observations and info.

The semantics and the reward are the simulator's (``tmexp/envs/sim/core.py``), computed from what the game
reports at each action boundary instead of from simulator internals:
- progress = metres along the map's reference line (the extended centreline point nearest the car, followed
  from one action to the next like the simulator does, plus the offset along its tangent), clipped to
  [0, length];
- the race finishes when the game reports the last checkpoint pass (CHECKPOINT_COUNT_CHANGED_SYNC with
  current == target); race_time_ms is the race time of that engine step, cp_times the game's checkpoint times;
- a virtual checkpoint is every 0.5 m of new furthest progress; none for
  cutoff_rollout_if_no_vcp_passed_within_duration_ms -> truncated "no_progress"; race time reaching
  cutoff_rollout_if_race_not_finished_within_duration_ms -> truncated "race_timeout";
- reward = constant_reward_per_ms * ms + reward_per_m_advanced_along_centerline * metres gained + the change of
  shaped_reward_dist_to_cur_vcp * clip(distance to the centreline, 2, 25) + at the finish
  reward_per_m_advanced_along_centerline * speed * final_speed_reward_as_if_duration_s.
"""

from __future__ import annotations

import numpy as np

from tmexp.envs.base import EnvSpec, RewardSpec
from tmexp.envs.observation import build_floats
from tmexp.envs.tmi.state import CarState
from tmexp.envs.track import SPACING_M, ExtendedLine, LinePosition, Track, TrackGeometry, locate

_SHAPING_CLIP = (2.0, 25.0)
# The car moves at most a few metres per action; enough iterations of the local search to follow it anyway.
_LOCATE_ITERATIONS = 6


class Race:
    """A race in progress, fed one game state per action."""

    def __init__(self, track: Track, line: ExtendedLine, geometry: TrackGeometry, spec: EnvSpec,
                 rewards: RewardSpec, start: CarState):
        self.track, self.line, self.geo, self.spec, self.rewards = track, line, geometry, spec, rewards
        self.locator = LinePosition.at_start(line)
        self._locate(start)
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

    @property
    def progress_m(self) -> float:
        return float(self.locator.progress_m(self.line, self.track.length)[0])

    def _potential(self) -> float:
        return self.rewards.shaped_reward_dist_to_cur_vcp * float(np.clip(abs(self.locator.lateral[0]), *_SHAPING_CLIP))

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
        just_finished = self._finish_time_ms is not None and not self.finished
        if just_finished:
            # The clock stops on the finishing engine step, as in the simulator.
            self.finished, self.race_time_ms = True, self._finish_time_ms
        elif not self.finished:
            self.race_time_ms = car.race_time_ms - self.start_time_ms
        progress = self.progress_m
        vcp = int(np.floor(progress / SPACING_M))
        if vcp > self.max_vcp:
            self.max_vcp, self.last_vcp_ms = vcp, self.race_time_ms
        self.prev_actions = np.concatenate([[int(action)], self.prev_actions[:-1]])

        reward = (rw.constant_reward_per_ms * (self.race_time_ms - time0)
                  + rw.reward_per_m_advanced_along_centerline * (progress - progress0)
                  + (self._potential() - phi0))
        if just_finished:
            reward += (rw.reward_per_m_advanced_along_centerline * self._planar_speed(car)
                       * rw.final_speed_reward_as_if_duration_s)

        terminated = self.finished
        timeout = not terminated and self.race_time_ms >= spec.cutoff_rollout_if_race_not_finished_within_duration_ms
        no_progress = (not terminated
                       and self.race_time_ms - self.last_vcp_ms >= spec.cutoff_rollout_if_no_vcp_passed_within_duration_ms)
        truncated = timeout or no_progress
        if truncated:
            self.cutoff = "race_timeout" if timeout else "no_progress"
        return float(reward), terminated, truncated

    @staticmethod
    def _planar_speed(car: CarState) -> float:
        return float(np.hypot(car.velocity[0], car.velocity[2]))

    def observation(self, gray: np.ndarray, car: CarState) -> dict[str, np.ndarray]:
        """{"img": uint8 (1, H, W), "floats": float32 (F,)} from the frame (H, W) and the state."""
        floats = build_floats(
            self.spec, self.line, self.locator.idx, car.position[None, :], car.rotation[None, :, :],
            car.velocity[None, :], car.angular_velocity[None, :], np.array([car.steer]),
            np.array([float(car.wall_contact)]), self.prev_actions[None, :],
            np.array([self.track.length - self.progress_m]),
        )
        return {"img": np.ascontiguousarray(gray[None, :, :], dtype=np.uint8), "floats": floats[0]}

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
