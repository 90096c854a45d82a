"""The environment contract the training core relies on.

Every backend (the embedded simulator, the real game) produces the same observations, actions, rewards and
race semantics, through Gymnasium's API:

- ``obs, info = env.reset(seed=None)`` puts the car on the start line at rest (race time 0);
- ``obs, reward, terminated, truncated, info = env.step(action)`` plays one action for
  ``tm_engine_step_per_action`` engine steps of ``ms_per_tm_engine_step`` ms (50 ms of race time by default);
- ``obs = {"img": uint8 (1, h_downsized, w_downsized), "floats": float32 (F,)}`` (``observation_space``; the image
  and every float index are documented in ``tmexp/envs/observation.py``); actions are ``Discrete(12)`` in
  Linesight's order (``ACTIONS``);
- ``terminated`` is True only when the race is finished (the end of the centreline crossed); ``truncated`` is True
  when a cutoff fires: no virtual checkpoint (0.5 m of new progress) within
  ``cutoff_rollout_if_no_vcp_passed_within_duration_ms``, or race time reaching
  ``cutoff_rollout_if_race_not_finished_within_duration_ms``. After either, call ``reset``;
- ``info`` holds at least ``INFO_KEYS``;
- the reward is ``RewardSpec`` (see its docstring);
- ``env.float_stats()`` returns the per-float mean and std of the float vector, measured on this env's track
  (``nn.normalize_floats`` standardises each float with them), or None when the backend has none;
- ``env.close()`` releases what the env holds (a game connection, a game process).

``Env`` below spells this out as a ``typing.Protocol``; both backends satisfy it.

The settings below are shared by all backends; backend-specific settings live beside each backend
(``tmexp/envs/sim/params.py``, ``tmexp/envs/tmi/params.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

N_ACTIONS = 12
# Linesight's action order: (accelerate, brake, left, right) per action index.
ACTIONS = (
    (1, 0, 0, 0),  # 0 forward
    (1, 0, 1, 0),  # 1 forward-left
    (1, 0, 0, 1),  # 2 forward-right
    (0, 0, 0, 0),  # 3 nothing
    (0, 0, 1, 0),  # 4 left
    (0, 0, 0, 1),  # 5 right
    (0, 1, 0, 0),  # 6 brake
    (0, 1, 1, 0),  # 7 brake-left
    (0, 1, 0, 1),  # 8 brake-right
    (1, 1, 0, 0),  # 9 accelerate+brake
    (1, 1, 1, 0),  # 10 accelerate+brake-left
    (1, 1, 0, 1),  # 11 accelerate+brake-right
)


@dataclass
class EnvSpec:
    """Observation and race settings shared by every backend (Linesight names and defaults)."""

    w_downsized: int = 64
    h_downsized: int = 64
    tm_engine_step_per_action: int = 5
    ms_per_tm_engine_step: int = 10
    n_zone_centers_in_inputs: int = 40
    one_every_n_zone_centers_in_inputs: int = 20
    n_zone_centers_extrapolate_after_end_of_map: int = 1000
    n_zone_centers_extrapolate_before_start_of_map: int = 20
    margin_to_announce_finish_meters: float = 700.0
    n_prev_actions_in_inputs: int = 5
    checkpoint_spacing_m: float = 100.0  # intermediate checkpoints (info["cp_times"]) every this many metres
    cutoff_rollout_if_race_not_finished_within_duration_ms: int = 300_000
    cutoff_rollout_if_no_vcp_passed_within_duration_ms: int = 2_000


@dataclass
class RewardSpec:
    """Reward of one action (Linesight's terms).

    constant_reward_per_ms * ms of race time elapsed + reward_per_m_advanced_along_centerline * metres of progress
    gained + phi(after) - phi(before) with phi = shaped_reward_dist_to_cur_vcp * clip(distance to the centreline,
    2, 25) (potential-based shaping) + on the finishing action reward_per_m_advanced_along_centerline * speed (m/s)
    * final_speed_reward_as_if_duration_s.
    """

    constant_reward_per_ms: float = -0.0012
    reward_per_m_advanced_along_centerline: float = 0.01
    shaped_reward_dist_to_cur_vcp: float = -0.1  # potential on distance to the centreline, clipped to [2, 25] m
    final_speed_reward_as_if_duration_s: float = 2.0  # at the finish, reward the remaining speed as if held this long


# Keys every backend's ``info`` dict holds after reset and after each step.
INFO_KEYS = {
    "race_time_ms": "int: race time in ms (the finishing engine step's time once finished)",
    "finished": "bool: the car crossed the end of the centreline (then terminated is True)",
    "cp_times": "list[int]: race time in ms at each intermediate checkpoint passed so far",
    "progress_m": "float: metres along the centreline, in [0, track length]",
    "wall_contact": "bool: the car touched a wall during the last engine step",
    "speed_kmh": "float: the car's speed",
    "cutoff": 'None | "no_progress" | "race_timeout": why the race was truncated, if it was',
}


def n_floats(spec: EnvSpec) -> int:
    """F, the length of the float vector (its layout: ``tmexp.envs.observation``)."""
    return 9 + 4 * spec.n_prev_actions_in_inputs + 3 * spec.n_zone_centers_in_inputs


def observation_space(spec: EnvSpec) -> gym.spaces.Dict:
    """``{"img": uint8 (1, H, W), "floats": float32 (F,)}``; the float layout is in ``tmexp.envs.observation``."""
    return gym.spaces.Dict(
        {
            "img": gym.spaces.Box(0, 255, (1, spec.h_downsized, spec.w_downsized), dtype=np.uint8),
            "floats": gym.spaces.Box(-np.inf, np.inf, (n_floats(spec),), dtype=np.float32),
        }
    )


def action_space() -> gym.spaces.Discrete:
    """The 12 actions of ``ACTIONS``."""
    return gym.spaces.Discrete(N_ACTIONS)


@runtime_checkable
class Env(Protocol):
    """What the training core uses of a backend's environment (see the module docstring for the semantics)."""

    observation_space: gym.spaces.Dict
    action_space: gym.spaces.Discrete

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Start a race: ``(obs, info)`` at race time 0."""
        ...

    def step(self, action: int) -> tuple[dict, float, bool, bool, dict]:
        """Play one action: ``(obs, reward, terminated, truncated, info)``."""
        ...

    def float_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-float ``(mean, std)``, each float32 (F,), measured on this env's track; None when the backend has
        none. A float that does not vary gets mean 0 and std 1 (it passes through unscaled)."""
        ...

    def close(self) -> None:
        """Release the env's resources; a later ``reset`` may acquire them again."""
        ...
