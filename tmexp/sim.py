"""Command line for the embedded simulator.

    python -m tmexp.sim drive --map A01                      # the reference driver's lap time
    python -m tmexp.sim render --map A01 --out a01.png       # the track from above + what the agent sees
    python -m tmexp.sim drive --map hock --reference-line path/to/line.npy
    python -m tmexp.sim fake-game --port 8478                # a fake game on 127.0.0.1:8478 (env=tmi without the game)

All use the default ``env`` / ``env.sim`` settings. A bad track ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from tmexp.envs.base import EnvSpec
from tmexp.envs.sim.params import SimParams
from tmexp.envs.track import TrackError, builtin_track_names, load_map


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmexp.sim", description=__doc__.splitlines()[1])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("drive", "drive one race with the reference driver and print its time"),
                        ("render", "draw the track, the reference driver's line and observation images"),
                        ("fake-game", "serve a fake game (Linesight's plugin protocol, the simulator's physics)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--map", default="A01", help=f"map short name (built-in: {', '.join(builtin_track_names())})")
        p.add_argument("--reference-line", default=None, help="a Linesight (N, 3) .npy centreline to drive instead")
        if name == "render":
            p.add_argument("--out", default=None, help="PNG path (default: <map>.png)")
        if name == "fake-game":
            _fake_game_arguments(p)
    args = parser.parse_args(argv)

    try:
        track = load_map(args.map, args.reference_line)
    except TrackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.command == "fake-game":
        return _fake_game(track, args)

    from tmexp.envs.sim.driver import drive_lap

    spec, params = EnvSpec(), SimParams()
    lap = drive_lap(track, spec, params)
    if args.command == "drive":
        if lap.finished:
            print(f"{track.name}: {track.length:.1f} m, reference driver lap {lap.race_time_ms / 1000:.2f} s "
                  f"(checkpoints at {', '.join(f'{t / 1000:.2f}' for t in lap.cp_times)} s)")
        else:
            print(f"{track.name}: {track.length:.1f} m, reference driver did not finish "
                  f"(stopped at {lap.race_time_ms / 1000:.2f} s)")
        return 0 if lap.finished else 1
    from tmexp.envs.sim.render import render_overview

    out = render_overview(track, lap, spec, params, args.out or f"{track.name}.png")
    print(f"wrote {out}")
    return 0


def _fake_game_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--countdown-ms", type=int, default=100, help="negative race time before the start (>= 10)")
    p.add_argument("--menus", action="store_true", help="stay in the menus until a client sends a map command")
    p.add_argument("--drop-after", type=int, default=0, help="close the connection after N run steps (once)")
    p.add_argument("--stall-after", type=int, default=0, help="go silent after N run steps (once)")
    p.add_argument("--garbage-after", type=int, default=0, help="send an unknown message after N run steps")
    p.add_argument("--exit-after", type=int, default=0, help="exit (a crashed game) after N run steps")
    p.add_argument("--steps-first", action="store_true", help="send a tick's run step before its checkpoint")
    p.add_argument("--login-screen", action="store_true", help="stay at the login screen unless autologin is set")
    p.add_argument("--settings", default=None, help="a JSON file keeping the `set` variables across launches")
    p.add_argument("--process-name", default="TmForever", help="this process's name in the process list (Linux)")


def _fake_game(track, args) -> int:
    from tmexp.envs.fake_game import Faults, name_process, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s fake-game[%(process)d] %(message)s",
                        stream=sys.stderr)
    faults = Faults(args.drop_after, args.stall_after, args.garbage_after, args.exit_after)
    try:
        game = serve(track, args.port, args.host, args.countdown_ms, args.menus, faults,
                     steps_first=args.steps_first, login_screen=args.login_screen, settings_path=args.settings)
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port} ({err.strerror}); choose another --port.",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: game.stop())
    name_process(args.process_name)
    game.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
