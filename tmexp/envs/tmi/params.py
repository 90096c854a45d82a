"""Settings of the real-game backend (``env.tmi.*``), with documented defaults (Linesight's where it has one)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TmiParams:
    """How tmexp starts, reaches and drives Trackmania Nations Forever through TMInterface 2.

    Collector ``i`` talks to the game instance listening on ``base_tmi_port + i``.
    """

    base_tmi_port: int = 8478
    host: str = "127.0.0.1"
    # Game speed multiplier while a race runs (the game is paused while the agent picks an action).
    running_speed: float = 32.0
    # Command that starts one game instance whose plugin listens on {port}; empty = not configured.
    # Windows: a TMLoader command line; Linux: a Wine script. ``{port}`` is replaced by the collector's port.
    launch_command: str = ""
    # The game's .Challenge.Gbx to load with TMInterface's ``map`` command; empty = the launch command loads it.
    map_path: str = ""
    # Reboot a game instance we launched after this many seconds (between races, never mid-race).
    game_reboot_interval: float = 43_200.0
    # Longest silence from the plugin during a race before the rollout is dropped and the game reached again.
    timeout_during_run_ms: int = 10_100
    # Longest wait for a freshly (re)started game to load the map and start a race before it is restarted.
    tmi_protection_timeout_s: float = 500.0
    # How long to keep retrying the TCP connection after (re)starting the game (it takes a while to boot).
    connect_timeout_s: float = 60.0
    # How many times reset() restarts an instance before giving up with GameUnavailable.
    max_restarts_per_reset: int = 3
    # Hide the race HUD so that captured frames show the road only.
    hide_interface: bool = True
    # A JSON file of the float statistics measured on this map (nn.normalize_floats): read when it exists, else
    # measured on the game (three reference-driver races) and written there; empty = measure at every run.
    float_stats_path: str = ""
