"""Piecewise schedules over frames played (actions), as in Linesight.

A schedule is a list of ``[frame, value]`` points, the first at frame 0, frames strictly increasing. Before the
last point the value is interpolated between the surrounding points; after it, it stays at the last value.
``global_schedule_speed`` (gss) multiplies every point's frame coordinate (gamma's schedule excepted): gss 4 makes
the schedule four times longer in frames.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class ScheduleError(ValueError):
    """A schedule in the configuration is malformed."""


@dataclass(frozen=True)
class Schedule:
    frames: tuple[float, ...]
    values: tuple[Any, ...]
    kind: str  # exponential | linear | staircase

    def __call__(self, frame: float) -> Any:
        i = bisect.bisect_right(self.frames, frame) - 1
        if i < 0:
            return self.values[0]
        if i >= len(self.frames) - 1 or self.kind == "staircase":
            return self.values[i]
        f0, f1 = self.frames[i], self.frames[i + 1]
        v0, v1 = self.values[i], self.values[i + 1]
        t = (frame - f0) / (f1 - f0)
        if self.kind == "linear":
            return v0 + t * (v1 - v0)
        # Exponential interpolation: constant ratio per frame between the points.
        return v0 * math.exp(t * math.log(v1 / v0))


def make_schedule(points: Sequence[Sequence[Any]], kind: str, name: str, speed: float = 1.0) -> Schedule:
    """Validate ``points`` (config key ``name``) and build the schedule, stretched by ``speed``."""
    if kind not in ("exponential", "linear", "staircase"):
        raise ValueError(f"unknown schedule kind {kind!r}")
    if not points:
        raise ScheduleError(f"{name} is empty: give at least one [frame, value] point starting at frame 0.")
    frames, values = [], []
    for point in points:
        if len(point) != 2:
            raise ScheduleError(f"{name} has the point {list(point)!r}: each point must be [frame, value].")
        frames.append(float(point[0]) * speed)
        values.append(point[1])
    if frames[0] != 0:
        raise ScheduleError(f"{name} starts at frame {points[0][0]}: the first point must be at frame 0.")
    if any(b <= a for a, b in zip(frames, frames[1:])):
        raise ScheduleError(f"{name} has frames that do not increase strictly: {[p[0] for p in points]}.")
    if kind == "exponential" and any(float(v) <= 0 for v in values):
        raise ScheduleError(f"{name} has a value <= 0: exponential schedules need positive values.")
    if kind != "staircase":
        values = [float(v) for v in values]
    return Schedule(tuple(frames), tuple(values), kind)


@dataclass(frozen=True)
class Schedules:
    """Every schedule of a run, built once from the config."""

    lr: Schedule
    gamma: Schedule
    epsilon: Schedule
    epsilon_boltzmann: Schedule
    memory_size: Schedule  # values are [capacity, size to start learning]

    def at(self, frame: float) -> dict[str, Any]:
        capacity, start_learn = self.memory_size(frame)
        return {
            "lr": self.lr(frame),
            "gamma": self.gamma(frame),
            "epsilon": self.epsilon(frame),
            "epsilon_boltzmann": self.epsilon_boltzmann(frame),
            "memory_capacity": int(capacity),
            "memory_start_learn": int(start_learn),
        }


def build_schedules(training, memory, exploration) -> Schedules:
    """Build all schedules from the training, memory and exploration sub-configs."""
    gss = float(training.global_schedule_speed)
    if gss <= 0:
        raise ScheduleError(f"training.global_schedule_speed is {gss}: it must be > 0.")
    for point in memory.memory_size_schedule:
        if len(point) != 2 or len(point[1]) != 2 or int(point[1][1]) > int(point[1][0]) or int(point[1][1]) < 1:
            raise ScheduleError(
                f"memory.memory_size_schedule has the point {list(point)!r}: each point must be "
                "[frame, [capacity, size_to_start_learning]] with 1 <= size_to_start_learning <= capacity."
            )
    return Schedules(
        lr=make_schedule(training.lr_schedule, "exponential", "training.lr_schedule", gss),
        gamma=make_schedule(training.gamma_schedule, "linear", "training.gamma_schedule", 1.0),
        epsilon=make_schedule(exploration.epsilon_schedule, "exponential", "exploration.epsilon_schedule", gss),
        epsilon_boltzmann=make_schedule(
            exploration.epsilon_boltzmann_schedule, "exponential", "exploration.epsilon_boltzmann_schedule", gss
        ),
        memory_size=make_schedule(
            [[p[0], [int(p[1][0]), int(p[1][1])]] for p in memory.memory_size_schedule],
            "staircase",
            "memory.memory_size_schedule",
            gss,
        ),
    )
