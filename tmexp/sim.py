"""Command line for the embedded simulator.

    python -m tmexp.sim drive --map A01                      # the reference driver's lap time
    python -m tmexp.sim render --map A01 --out a01.png       # the track from above + what the agent sees
    python -m tmexp.sim drive --map hock --reference-line path/to/line.npy

Both use the default ``env`` / ``env.sim`` settings. A bad track ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from tmexp.envs.base import EnvSpec
from tmexp.envs.sim.params import SimParams
from tmexp.envs.track import TrackError, builtin_track_names, load_map


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmexp.sim", description=__doc__.splitlines()[1])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("drive", "drive one race with the reference driver and print its time"),
                        ("render", "draw the track, the reference driver's line and observation images")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--map", default="A01", help=f"map short name (built-in: {', '.join(builtin_track_names())})")
        p.add_argument("--reference-line", default=None, help="a Linesight (N, 3) .npy centreline to drive instead")
        if name == "render":
            p.add_argument("--out", default=None, help="PNG path (default: <map>.png)")
    args = parser.parse_args(argv)

    from tmexp.envs.sim.driver import drive_lap

    try:
        track = load_map(args.map, args.reference_line)
    except TrackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    sys.exit(main())
