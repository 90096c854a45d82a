"""Settings of the real-game backend (``env.tmi.*``), with documented defaults (Linesight's where it has one)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TmiParams:
    """How tmexp starts, reaches and drives Trackmania Nations Forever through TMInterface 2.

    Collector ``i`` talks to the game instance listening on ``base_tmi_port + i`` when the game is started by hand;
    a game tmexp launches gets the first port from there on that no other program on the machine uses (chosen
    under a machine-wide lock, so that tasks sharing a node never collide: ``docs/game.md``).
    """

    base_tmi_port: int = 8478
    host: str = "127.0.0.1"
    # Game speed multiplier while a race runs (the game is paused while the agent picks an action).
    running_speed: float = 32.0
    # Command that starts one game instance whose plugin listens on {port}; empty = not configured.
    # Windows: a TMLoader command line; Linux: a Wine script. ``{port}`` is replaced by the collector's port. It may
    # block while the game runs or return once the game is started: tmexp owns the game's process either way.
    launch_command: str = ""
    # The game's process, found by this name prefix among the processes that appeared during the launch (as
    # Linesight: TmForever, TmForever.exe under Wine); tmexp watches and kills that pid.
    game_process_name: str = "TmForever"
    # Run once per launched game, after its first frame ({pid}: the game's pid): the game must be focused once to
    # work properly (Linesight). "auto": xdotool on Linux when installed, PowerShell's AppActivate on Windows;
    # "" = never.
    focus_command: str = "auto"
    # The machine-wide launch lock (a file every task on the machine must see); "" = tmexp-game-launch.lock in
    # the temporary directory. Set it where tasks get private temporary directories (SLURM's job_container/tmpfs).
    launch_lock_path: str = ""
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
    # Hide the race HUD so that captured frames show the road only (again after every map load, as Linesight).
    hide_interface: bool = True
    # ---- the game's settings, sent as console commands (Linesight's values; docs/game.md) ----
    # ``set autologin NAME`` at every connection: a restarted game logs in by itself. "" = not sent (a relaunched
    # game may then wait at its login screen for a click).
    autologin: str = ""
    # ``cam N`` at the first run step of every connection (Linesight's game_camera_number).
    game_camera_number: int = 2
    disable_forced_camera: bool = True  # ``set disable_forced_camera true``
    # ``set unfocused_fps_limit false``: an unfocused game otherwise caps its frame rate (a large loss with 8 games).
    unfocused_fps_limit: bool = False
    # ``set countdown_speed S``; null = running_speed (Linesight).
    countdown_speed: float | None = None
    skip_map_load_screens: bool = True  # ``set skip_map_load_screens true``
    autorewind: bool = False  # ``set autorewind false``
    auto_reload_plugins: bool = False  # ``set auto_reload_plugins false``
    # A freshly launched game opens with its console shown: ``toggle_console`` hides it (Linesight).
    toggle_console_after_launch: bool = True
    # Move the personal-best replay of the map aside (``<autologin>_<map>.Replay.gbx`` -> ``.bak`` under
    # ``<trackmania_dir>/Tracks/Replays/Autosaves``) before loading it, so that its ghost never shows in the frames.
    hide_personal_best_ghost: bool = True
    # The game's user folder (Documents/TrackMania); "" = the ghost cannot be hidden (a warning says so).
    trackmania_dir: str = ""
    # ``rewind_to_current_state`` after reading the state at each action (Linesight): frame, state and inputs
    # stay on one engine step.
    rewind_each_action: bool = True
    # A race whose time stops advancing (a finish the game did not let tmexp prevent) ends with GameStalled
    # after this many run steps at the same race time; the race is discarded and reset() goes on.
    max_frozen_run_steps: int = 200
    # ---- progress through real checkpoints (Linesight's sync_virtual_and_real_checkpoints) ----
    # A .npy (K, 3) of the map's checkpoint centres in world metres; progress only passes the centreline point
    # nearest a checkpoint when the car came within real_checkpoint_radius_m of it. "" = no gating.
    checkpoint_positions_path: str = ""
    real_checkpoint_radius_m: float = 12.0
    # A JSON file of the float statistics measured on this map (nn.normalize_floats): read when it exists, else
    # measured on the game (three reference-driver races) and written there; empty = measure at every run.
    float_stats_path: str = ""
