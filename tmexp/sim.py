"""Command line for the embedded simulator.

    python -m tmexp.sim drive --map A01                      # the reference driver's lap time
    python -m tmexp.sim render --map A01 --out a01.png       # the track from above + what the agent sees
    python -m tmexp.sim drive --map hock --reference-line path/to/line.npy
    python -m tmexp.sim fake-game --port 8478                # a fake game on 127.0.0.1:8478 (env=tmi without the game)
    python -m tmexp.sim replay RUN_DIR                        # watch a run's best race: where it gains or loses time
    python -m tmexp.sim replay RUN_DIR --race latest --map hock --animate      # ... and a GIF of it
    python -m tmexp.sim replay RUN_DIR --checkpoint           # a greedy race of the run's latest checkpoint

drive, render and fake-game use the default ``env`` / ``env.sim`` settings; replay uses the run's own (its
config_resolved.yaml). A bad track, run directory or race file ends in one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import numpy as np

from tmexp.envs.base import EnvSpec
from tmexp.envs.sim.params import SimParams
from tmexp.envs.track import TrackError, builtin_track_names, load_map


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmexp.sim", description=__doc__.splitlines()[1])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("drive", "drive one race with the reference driver and print its time"),
        ("render", "draw the track, the reference driver's line and observation images"),
        ("fake-game", "serve a fake game (Linesight's plugin protocol, the simulator's physics)"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--map", default="A01", help=f"map short name (built-in: {', '.join(builtin_track_names())})")
        p.add_argument("--reference-line", default=None, help="a Linesight (N, 3) .npy centreline to drive instead")
        if name == "render":
            p.add_argument("--out", default=None, help="PNG path (default: <map>.png)")
        if name == "fake-game":
            _fake_game_arguments(p)
    _replay_arguments(sub.add_parser("replay", help="drive a run's saved race (or its policy) again and draw it"))
    args = parser.parse_args(argv)
    if args.command == "replay":
        return _replay(args)

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
            print(
                f"{track.name}: {track.length:.1f} m, reference driver lap {lap.race_time_ms / 1000:.2f} s "
                f"(checkpoints at {', '.join(f'{t / 1000:.2f}' for t in lap.cp_times)} s)"
            )
        else:
            print(
                f"{track.name}: {track.length:.1f} m, reference driver did not finish "
                f"(stopped at {lap.race_time_ms / 1000:.2f} s)"
            )
        return 0 if lap.finished else 1
    from tmexp.envs.sim.render import render_overview

    out = render_overview(track, lap, spec, params, args.out or f"{track.name}.png")
    print(f"wrote {out}")
    return 0


def _replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run's directory (it holds config_resolved.yaml, best_runs/)")
    p.add_argument(
        "--race",
        default="best",
        help="best (the fastest saved race), latest (the most recently saved) or an actions .npy file",
    )
    p.add_argument("--map", default=None, help="which map of the run's cycle (default: the first with a saved race)")
    p.add_argument(
        "--checkpoint",
        action="store_true",
        help="drive the greedy policy of the run's latest checkpoint instead of saved actions",
    )
    p.add_argument(
        "--animate",
        nargs="?",
        const="gif",
        choices=("gif", "mp4"),
        help="also write an animation (GIF by default; MP4 needs ffmpeg)",
    )
    p.add_argument("--out", default=None, help="PNG path (default: RUN_DIR/replay/<map>_<race>.png)")
    p.add_argument(
        "--game", action="store_true", help="env=tmi runs: send the saved actions to the game instead of the simulator"
    )


def _replay(args) -> int:
    from tmexp.envs.sim import playback

    try:
        settings = playback.run_settings(args.run_dir)
        if args.game:
            return _replay_on_game(settings, args)
        if args.checkpoint:
            name = args.map or settings.maps[0].short_name
            track = settings.track(name)
            race = playback.play(
                track,
                settings.spec,
                settings.rewards,
                settings.params,
                _checkpoint_policy(settings, track),
                "checkpoint (greedy)",
            )
            recorded, what = None, "checkpoint"
        else:
            name, path, recorded = playback.choose_race(settings, args.race, args.map)
            track = settings.track(name)
            race = playback.play_actions(track, settings, playback.load_actions(path), path.stem)
            what = path.stem
        reference = playback.play_reference(track, settings.spec, settings.rewards, settings.params)
        out = Path(args.out) if args.out else Path(args.run_dir) / "replay" / f"{what}.png"
        playback.draw_race(track, race, reference, settings.spec, settings.params, out)
        animation = None
        if args.animate:
            animation = playback.animate_race(
                track, race, reference, settings.spec, settings.params, out.with_suffix(f".{args.animate}")
            )
    except (playback.PlaybackError, TrackError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    marks = np.append(track.checkpoint_distances(settings.spec.checkpoint_spacing_m), track.length)
    print(_replay_summary(race, recorded, reference, playback.time_deltas(race, reference), marks))
    print(f"wrote {out}" + (f" and {animation}" if animation else ""))
    return 0


def _replay_summary(race, recorded_ms, reference, deltas, marks) -> str:
    """One line: the race's time (and the recorded one), against the reference, and where it lost most.

    ``deltas``: seconds behind the reference at each checkpoint both passed; ``marks``: (K,) metres of the
    checkpoints, the finish last.
    """
    line = f"{race.label()}"
    if recorded_ms is not None:
        line += f" (recorded {recorded_ms / 1000:.2f} s)"
    line += f"; {reference.label()}"
    if len(deltas):
        section = np.diff(deltas, prepend=0.0)
        worst = int(np.argmax(section))
        at = "the finish" if race.finished and reference.finished else f"{marks[len(deltas) - 1]:.0f} m"
        start = marks[worst - 1] if worst else 0.0
        line += (
            f"; {deltas[-1]:+.2f} s at {at}; most lost from {start:.0f} to {marks[worst]:.0f} m "
            f"({section[worst]:+.2f} s)"
        )
    return line


def _checkpoint_policy(settings, track):
    """The greedy policy of the run's latest checkpoint (eval mode: NoisyNet's mean weights), on the simulator."""
    import torch
    from omegaconf import OmegaConf

    from tmexp import rundir
    from tmexp.config import Config
    from tmexp.core.checkpoint import has_checkpoint, load_checkpoint
    from tmexp.core.networks import build_network
    from tmexp.envs.base import n_floats
    from tmexp.envs.sim.playback import PlaybackError

    run_dir = settings.run_dir
    if not has_checkpoint(run_dir):
        raise PlaybackError(
            f"{run_dir} holds no checkpoint (checkpoint/latest.pt); replay a saved race instead "
            "(leave out --checkpoint)."
        )
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), rundir.read_config(run_dir)))
    spec = settings.spec
    mini_race = (
        cfg.training.temporal_mini_race_duration_ms // (spec.ms_per_tm_engine_step * spec.tm_engine_step_per_action) > 0
    )
    mean = std = None
    recorded = rundir.read_float_stats(run_dir) if cfg.nn.normalize_floats else None
    if recorded is not None:
        mean, std = (np.asarray(v, dtype=np.float32) for v in recorded)
        if mini_race:
            mean, std = np.concatenate(([0.0], mean)), np.concatenate(([1.0], std))
    net = build_network(
        cfg.nn,
        cfg.btr,
        (1, spec.h_downsized, spec.w_downsized),
        n_floats(spec) + mini_race,
        12,
        float_mean=mean,
        float_std=std,
    )
    net.load_state_dict(load_checkpoint(run_dir)["online"])
    net.train(False)
    rng = np.random.default_rng(0)
    k = cfg.nn.iqn_k

    def choose(obs, info, env) -> int:
        floats = obs["floats"][None]
        if mini_race:  # act at the start of a mini-race, as the collectors do
            floats = np.concatenate([np.zeros((1, 1), dtype=np.float32), floats], axis=1)
        taus = torch.from_numpy(rng.random((1, k), dtype=np.float32))
        with torch.inference_mode():
            quantiles, _ = net(torch.from_numpy(obs["img"][None]), torch.from_numpy(floats), k, taus=taus)
        return int(quantiles.mean(dim=1).argmax(dim=1)[0])

    return choose


def _replay_on_game(settings, args) -> int:
    """Send a saved race's actions to the game (env=tmi runs), or say in one line why it cannot."""
    from tmexp.envs.sim import playback

    if settings.backend != "tmi":
        print(
            f"error: --game replays a run on the game, and {settings.run_dir} ran on the simulator "
            f"(env={settings.backend}); leave out --game to watch it on the simulator.",
            file=sys.stderr,
        )
        return 2
    if args.checkpoint:
        print(
            "error: --game sends saved actions; it does not drive a checkpoint's policy (leave out --checkpoint).",
            file=sys.stderr,
        )
        return 2
    from tmexp import rundir
    from tmexp.envs.tmi.env import TmiEnv
    from tmexp.envs.tmi.errors import GameNotConfigured, GameUnavailable
    from tmexp.envs.tmi.params import TmiParams

    name, path, recorded = playback.choose_race(settings, args.race, args.map)
    actions = playback.load_actions(path)
    tmi = playback.from_fields(TmiParams, (rundir.read_config(settings.run_dir).get("env") or {}).get("tmi"))
    tmi.map_path = settings.map(name).map_path or tmi.map_path
    try:
        env = TmiEnv(settings.track(name), settings.spec, settings.rewards, tmi)
        try:
            env.reset()
            for action in actions:
                _, _, terminated, truncated, info = env.step(int(action))
                if terminated or truncated:
                    break
        finally:
            env.close()
    except (GameNotConfigured, GameUnavailable, ConnectionError) as error:
        print(f"error: cannot replay {path.name} on the game: {error}", file=sys.stderr)
        return 2
    outcome = f"{info['race_time_ms'] / 1000:.2f} s" if info["finished"] else "did not finish"
    print(f"{path.name} on the game: {outcome}" + (f" (recorded {recorded / 1000:.2f} s)" if recorded else ""))
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

    logging.basicConfig(level=logging.INFO, format="%(asctime)s fake-game[%(process)d] %(message)s", stream=sys.stderr)
    faults = Faults(args.drop_after, args.stall_after, args.garbage_after, args.exit_after)
    try:
        game = serve(
            track,
            args.port,
            args.host,
            args.countdown_ms,
            args.menus,
            faults,
            steps_first=args.steps_first,
            login_screen=args.login_screen,
            settings_path=args.settings,
        )
    except OSError as err:
        print(
            f"error: cannot listen on {args.host}:{args.port} ({err.strerror}); choose another --port.", file=sys.stderr
        )
        return 2
    signal.signal(signal.SIGTERM, lambda *_: game.stop())
    name_process(args.process_name)
    game.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
