"""The console commands tmexp sends the game, as Linesight sends them, each from a setting (``TmiParams``).

At every connection (the plugin's ON_CONNECT_SYNC) the game's settings; at the first run step after a connection
the camera; before each ``map`` command the personal-best ghost is moved aside. ``docs/game.md`` lists them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PureWindowsPath

from tmexp.envs.tmi.params import TmiParams

log = logging.getLogger(__name__)


def _on_off(value: bool) -> str:
    return "true" if value else "false"


def on_connect(params: TmiParams, relaunched: bool) -> list[str]:
    """The commands sent while the plugin's greeting is pending (Linesight's order)."""
    out = ["toggle_console"] if relaunched and params.toggle_console_after_launch else []
    countdown = params.running_speed if params.countdown_speed is None else params.countdown_speed
    out.append(f"set countdown_speed {countdown:g}")
    if params.autologin:
        out.append(f"set autologin {params.autologin}")
    out += [
        f"set unfocused_fps_limit {_on_off(params.unfocused_fps_limit)}",
        f"set skip_map_load_screens {_on_off(params.skip_map_load_screens)}",
        f"set disable_forced_camera {_on_off(params.disable_forced_camera)}",
        f"set autorewind {_on_off(params.autorewind)}",
        f"set auto_reload_plugins {_on_off(params.auto_reload_plugins)}",
    ]
    return out


def on_first_run_step(params: TmiParams) -> list[str]:
    """The commands sent at the first run step after a connection or a map load."""
    return [f"cam {params.game_camera_number}"]


def personal_best_replay(params: TmiParams, map_path: str) -> Path | None:
    """``<trackmania_dir>/Tracks/Replays/Autosaves/<autologin>_<map name>.Replay.gbx``, or None when unknown.

    The map's name is its file's name without ``.Challenge.Gbx`` (true of the campaign maps; a custom map whose
    name differs keeps its ghost).
    """
    if not (params.trackmania_dir and params.autologin):
        return None
    name = PureWindowsPath(map_path.replace("/", "\\")).name
    for suffix in (".challenge.gbx", ".gbx"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return Path(params.trackmania_dir) / "Tracks" / "Replays" / "Autosaves" / f"{params.autologin}_{name}.Replay.gbx"


def hide_personal_best_ghost(params: TmiParams, map_path: str) -> None:
    """Move the map's personal-best replay aside (``.bak``), so that its ghost never shows in the frames."""
    replay = personal_best_replay(params, map_path)
    if replay is None:
        log.info(
            "the personal-best ghost is not hidden: set env.tmi.trackmania_dir and env.tmi.autologin (docs/game.md)"
        )
        return
    if replay.is_file():
        os.replace(replay, replay.with_name(replay.name + ".bak"))
        log.info("moved the personal-best replay aside: %s", replay)
