"""The reference driver: pure pursuit on the reference line with a speed profile limited by curvature and grip.

It proves a track finishable in the simulator, gives the agent a time to beat, and drives the races on which
each backend measures its float statistics (``tmexp.envs.float_stats``). It is not optimal (it follows the
centreline instead of choosing a line) and plays the same 12 discrete actions as the agent.

It sees a car only through a ``CarView`` (position, heading, speed, steering state), so the same policy steers
the simulator's car and, through the game backend, the game's. What it assumes about the car (grip, braking,
steering) is a ``DriverCar``; the defaults are the simulator's car, whose figures approximate the game's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tmexp.envs.track import SPACING_M, Track

# (accelerate, brake) x steer command -1/0/+1 -> action index (see tmexp.envs.base.ACTIONS).
_ACTION = {
    ("accel", -1): 1,
    ("accel", 0): 0,
    ("accel", 1): 2,
    ("coast", -1): 4,
    ("coast", 0): 3,
    ("coast", 1): 5,
    ("brake", -1): 7,
    ("brake", 0): 6,
    ("brake", 1): 8,
}


@dataclass(frozen=True)
class DriverCar:
    """The car the driver plans for (units and meaning as in ``tmexp.envs.sim.params.SimParams``)."""

    grip_mps2: float = 40.0
    brake_decel_mps2: float = 22.0
    steer_rate_per_s: float = 5.0
    max_curvature_per_m: float = 1.0 / 7.0
    understeer_speed_mps: float = 35.0


@dataclass(frozen=True)
class CarView:
    """What the driver reads of a car: ground-plane position (m), unit heading, speed (m/s), steering state."""

    x: float
    z: float
    fx: float
    fz: float
    speed: float
    steer: float  # -1 full left .. +1 full right


@dataclass
class ReferenceDriver:
    """Pure pursuit + a grip-limited speed profile, for one track and one car."""

    track: Track
    car: DriverCar = field(default_factory=DriverCar)
    grip_fraction: float = 0.95  # corner at this fraction of the grip limit
    brake_fraction: float = 0.85  # plan braking at this fraction of the brake deceleration
    lookahead_m: float = 5.0
    lookahead_s: float = 0.25  # plus this many seconds of travel
    speed_profile: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        curvature = np.maximum(self.track.curvature(window_m=8.0), 1e-4)
        corner = np.sqrt(self.grip_fraction * self.car.grip_mps2 / curvature)
        v = np.minimum(corner, 120.0)
        decel = self.brake_fraction * self.car.brake_decel_mps2
        for i in range(len(v) - 2, -1, -1):  # the speed from which braking reaches the next limit in time
            v[i] = min(v[i], np.sqrt(v[i + 1] ** 2 + 2.0 * decel * SPACING_M))
        self.speed_profile = v

    def act(self, view: CarView, progress_m: float, dt_action: float) -> int:
        """The action for the car seen in ``view``, ``progress_m`` along the track; an action lasts ``dt_action`` s."""
        car, speed, steer = self.car, view.speed, view.steer
        i = min(int(progress_m / SPACING_M), len(self.track.s) - 1)
        ahead = self.lookahead_m + self.lookahead_s * speed
        j = min(i + int(ahead / SPACING_M), len(self.track.s) - 1)
        if j == i:  # at the very end: aim straight along the last tangent
            tx, tz = self.track.xz[-1] + self.track.tangent[-1] * ahead
        else:
            tx, tz = self.track.xz[j]
        dx, dz = tx - view.x, tz - view.z
        right, forward = dx * -view.fz + dz * view.fx, dx * view.fx + dz * view.fz
        dist2 = max(right * right + forward * forward, 1e-6)
        want_curvature = 2.0 * right / dist2  # pure pursuit: the arc through the target point
        ratio = speed / car.understeer_speed_mps
        full_lock = car.max_curvature_per_m / (1.0 + ratio * ratio)
        want_steer = float(np.clip(want_curvature / full_lock, -1.0, 1.0))
        rate = car.steer_rate_per_s * dt_action
        cmd = min((-1, 0, 1), key=lambda c: abs(steer + np.clip(c - steer, -rate, rate) - want_steer))

        target = self.speed_profile[min(i + int(speed * dt_action / SPACING_M) + 2, len(self.speed_profile) - 1)]
        if speed > target + 1.0:
            pedal = "brake"
        elif speed < target - 0.5:
            pedal = "accel"
        else:
            pedal = "coast"
        return _ACTION[(pedal, cmd)]
