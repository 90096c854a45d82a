"""Physics and rendering parameters of the embedded simulator (``env.sim.*``), with documented defaults.

Units: metres, seconds, m/s, m/s^2. The car is a point with a heading, a velocity that may point away from the
heading (sliding), and a steering state that moves at a limited rate. With the defaults the top speed is about
76 m/s (272 km/h), 0-100 km/h takes 2.1 s, braking from 200 km/h takes about 65 m, and the tightest turn
taken flat out has a radius of about 145 m (a 45 m turn: about 150 km/h).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SimParams:
    """The simulator's car, road and camera."""

    # Road: width of the driveable surface, a strip of slower off-road on each side, then walls.
    road_width_m: float = 14.0
    offroad_width_m: float = 2.0
    car_half_width_m: float = 1.0  # the car touches a wall when its centre is this close to it

    # Engine: acceleration engine_accel * (1 - v / engine_cutoff_speed) while accelerating forward.
    engine_accel_mps2: float = 16.0
    engine_cutoff_speed_mps: float = 110.0
    # Resistance: drag_coef * v^2 + rolling_resistance (always against the motion).
    drag_coef_per_m: float = 0.0008
    rolling_resistance_mps2: float = 0.4
    brake_decel_mps2: float = 22.0
    # Accelerate+brake: the brake wins but the engine takes this fraction of its force off it.
    brake_with_throttle_factor: float = 0.5
    # Braking while (nearly) stopped drives backwards, as in the game.
    reverse_accel_mps2: float = 6.0
    reverse_max_speed_mps: float = 12.0

    # Steering: the steering state moves towards the pressed direction at steer_rate (full lock after 1/rate s).
    steer_rate_per_s: float = 5.0
    max_curvature_per_m: float = 1.0 / 7.0  # turning radius at full lock and low speed: 7 m
    understeer_speed_mps: float = 35.0  # full-lock curvature shrinks by 1 / (1 + (v / this)^2)
    # Grip: the largest lateral acceleration before the car slides (and the rate sliding is caught).
    grip_mps2: float = 40.0
    offroad_grip_factor: float = 0.5
    offroad_drag_mps2: float = 6.0
    # The yaw rate may exceed what grip lets the velocity follow by this factor; the excess is a slide.
    yaw_over_grip: float = 1.6

    # Walls: contact removes the velocity into the wall and this fraction of the rest per 10 ms engine step.
    wall_speed_loss_per_step: float = 0.015
    # A wall met at a smaller angle than this turns the car along it (a glance); a steeper hit does not.
    wall_glance_max_deg: float = 15.0

    # Start: the car starts at rest on the centreline; a seed may move it sideways by up to this (0 = never).
    start_lateral_jitter_m: float = 0.0

    # Camera (the image): a stretched bird's-eye view in the car's frame, rows spaced like a perspective camera's
    # ground plane. The bottom row is view_behind_m behind the car, the top row view_ahead_m ahead; the view is
    # view_half_width_m wide either side at the car, widening by view_widening per metre ahead.
    view_behind_m: float = 4.0
    view_ahead_m: float = 90.0
    view_row_power: float = 1.7  # > 1: rows closer together near the car
    view_half_width_m: float = 11.0
    view_widening: float = 0.3
    grid_cell_m: float = 0.5  # raster cell of the road map the image is gathered from
    heading_bins: int = 512  # car headings the sample pattern is precomputed for
