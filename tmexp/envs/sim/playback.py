"""Watch a run: drive a saved race again on the simulator and draw where it gains or loses time.

A run keeps the actions of each new best race in ``best_runs/<map>_<ms>.npy``. ``play`` drives such actions (or
any policy) on the run's own map and simulator settings (read from its ``config_resolved.yaml``) and records the
car's line, speed and checkpoint times; the simulator is deterministic, so a best race comes back at its recorded
time (with the default ``env.sim.start_lateral_jitter_m=0``). ``draw_race`` puts it on the track from above, beside
the reference driver's line, with the time gained or lost against the reference at each checkpoint;
``animate_race`` makes it a GIF or MP4 with the reference as a ghost; ``draw_races`` puts several runs' races on
one track, one colour each (a study's arms; ``draw_best_races`` replays them first, from a run directory's settings
or, through ``settings_from_config``, from a study's export). ``python -m tmexp.sim replay RUN_DIR`` is the command
line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tmexp import rundir
from tmexp.envs.base import EnvSpec, RewardSpec
from tmexp.envs.driver import ReferenceDriver
from tmexp.envs.maps import CycleMap, cycle_maps
from tmexp.envs.sim.core import track_world
from tmexp.envs.sim.env import SimEnv
from tmexp.envs.sim.params import SimParams
from tmexp.envs.sim.physics import driver_car
from tmexp.envs.track import SPACING_M, Track, load_map

BEST_RUN = re.compile(r"(?P<map>.+)_(?P<ms>\d+)\.npy")
MAX_ANIMATION_FRAMES = 100  # an animation shows at most this many moments of the race (evenly spread)


class PlaybackError(ValueError):
    """A run directory or race file that cannot be played back (the message names it and the fix)."""


@dataclass
class Trace:
    """One race driven on the simulator, sampled after each action.

    Attributes:
        xz: (T + 1, 2) the car's position, from the start line on.
        speed_kmh: (T + 1,) its speed; race_time_ms: (T + 1,) ints, 0 first.
    """

    name: str
    xz: np.ndarray
    speed_kmh: np.ndarray
    race_time_ms: np.ndarray
    cp_times: list  # race time (ms) at each intermediate checkpoint passed
    finished: bool
    progress_m: float  # how far along the centreline it got

    @property
    def time_ms(self) -> int:
        return int(self.race_time_ms[-1])

    def label(self, name: str | None = None) -> str:
        """``name`` (default: the race's) and its time, or how far it got."""
        name = name or self.name
        if self.finished:
            return f"{name}: {self.time_ms / 1000:.2f} s"
        return f"{name}: did not finish ({self.progress_m:.0f} m)"


# ----- the run's settings ------------------------------------------------------------------------------------------
@dataclass
class RunSettings:
    """What a run drove on: its maps, observation and race settings, rewards and simulator physics."""

    run_dir: Path
    maps: list[CycleMap]
    spec: EnvSpec
    rewards: RewardSpec
    params: SimParams
    backend: str

    def track(self, map_name: str) -> Track:
        m = self.map(map_name)
        return load_map(m.short_name, m.reference_line_path)

    def map(self, map_name: str) -> CycleMap:
        for m in self.maps:
            if m.short_name == map_name:
                return m
        raise PlaybackError(
            f"{self.run_dir} has no map {map_name!r} (its maps: "
            f"{', '.join(m.short_name for m in self.maps)}); choose one of them with --map."
        )


def from_fields(cls, values: Mapping | None):
    """A ``cls`` from the keys of ``values`` that are its fields (the rest keep their defaults)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in (values or {}).items() if k in names})


def run_settings(run_dir: str | Path) -> RunSettings:
    """The settings of the run in ``run_dir``, from its ``config_resolved.yaml`` (or Hydra's config)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PlaybackError(
            f"run directory {str(run_dir)!r} does not exist; give the folder of a run "
            "(it holds config_resolved.yaml and best_runs/)."
        )
    cfg = rundir.read_config(run_dir)
    if not isinstance(cfg, dict):
        raise PlaybackError(
            f"{run_dir} holds no config_resolved.yaml: it is not a run directory of tmexp (or it "
            "stopped before it started); give the folder of a run."
        )
    return settings_from_config(cfg, run_dir)


def settings_from_config(cfg: Mapping, run_dir: str | Path) -> RunSettings:
    """The settings a run's resolved config (a plain dict, e.g. from a study's export) says it drove on; ``run_dir``
    names the run in messages (it need not exist)."""
    env, map_values = cfg.get("env") or {}, dict(cfg.get("map") or {})
    map_values.setdefault("short_name", "A01")
    map_cfg = SimpleNamespace(
        **{
            "map_path": "",
            "reference_line_path": None,
            "explo_races_per_cycle": 64,
            "eval_races_per_cycle": 1,
            "cycle": None,  # a run from before map cycles has no such key
            **map_values,
        }
    )
    map_cfg.cycle = [
        SimpleNamespace(
            **{
                "map_path": "",
                "reference_line_path": None,
                "explo_races_per_cycle": None,
                "eval_races_per_cycle": None,
                **entry,
            }
        )
        for entry in (map_cfg.cycle or [])
    ]
    return RunSettings(
        Path(run_dir),
        cycle_maps(map_cfg),
        from_fields(EnvSpec, env),
        from_fields(RewardSpec, cfg.get("rewards")),
        from_fields(SimParams, env.get("sim")),
        str(env.get("backend", "sim")),
    )


def best_races(run_dir: str | Path) -> list[tuple[str, int, Path]]:
    """(map, race time in ms, file) of each race in the run's ``best_runs/``, fastest first."""
    folder = rundir.RunDir(Path(run_dir)).best_runs
    found = []
    for path in folder.glob("*.npy") if folder.is_dir() else []:
        match = BEST_RUN.fullmatch(path.name)
        if match:
            found.append((match["map"], int(match["ms"]), path))
    return sorted(found, key=lambda race: (race[1], race[0]))


def choose_race(settings: RunSettings, which: str, map_name: str | None = None) -> tuple[str, Path, int | None]:
    """(map, actions file, recorded time in ms or None) of ``which``: "best" (the fastest best race of the map),
    "latest" (the most recently saved) or the path of an actions file (``<map>_<ms>.npy``, or any (T,) .npy).

    Without ``map_name``: the first map of the run's cycle that has a saved race.
    """
    if which not in ("best", "latest"):
        path = Path(which)
        if not path.is_file():
            raise PlaybackError(f"--race {which!r} is neither best, latest nor an existing .npy file of actions.")
        match = BEST_RUN.fullmatch(path.name)
        name = map_name or (
            match["map"]
            if match and match["map"] in [m.short_name for m in settings.maps]
            else settings.maps[0].short_name
        )
        settings.map(name)
        return name, path, int(match["ms"]) if match else None
    races = best_races(settings.run_dir)
    names = [map_name] if map_name else [m.short_name for m in settings.maps]
    for name in names:
        settings.map(name)
        mine = [race for race in races if race[0] == name]
        if mine:
            pick = mine[0] if which == "best" else max(mine, key=lambda race: race[2].stat().st_mtime)
            return name, pick[2], pick[1]
    raise PlaybackError(
        f"{settings.run_dir} has no saved race of {' or '.join(names)} in best_runs/ (a run saves one "
        "at each new best finished race); train longer, or replay the policy with --checkpoint."
    )


def load_actions(path: Path) -> np.ndarray:
    """The (T,) action indices of a saved race."""
    try:
        actions = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise PlaybackError(f"{path} is not a readable .npy file of actions ({error}).") from None
    if actions.ndim != 1 or not np.issubdtype(actions.dtype, np.integer) or np.any((actions < 0) | (actions >= 12)):
        raise PlaybackError(
            f"{path} holds no race: expected a (T,) array of action indices in [0, 12), found "
            f"{actions.dtype} {actions.shape}."
        )
    return actions.astype(np.int64)


# ----- driving ------------------------------------------------------------------------------------------------------
def play(
    track: Track,
    spec: EnvSpec,
    rewards: RewardSpec,
    params: SimParams,
    choose: Callable,
    name: str,
    max_actions: int | None = None,
) -> Trace:
    """Drive one race; ``choose(obs, info, env)`` returns each action (None: stop there).

    Stops at the finish, at a cutoff, or after ``max_actions``.
    """
    env = SimEnv(track, spec, rewards, params, seed=0)
    obs, info = env.reset()
    xz, speed, time_ms = [(float(env.batch.car.x[0]), float(env.batch.car.z[0]))], [0.0], [0]
    steps = 0
    while max_actions is None or steps < max_actions:
        action = choose(obs, info, env)
        if action is None:
            break
        obs, _, terminated, truncated, info = env.step(action)
        steps += 1
        xz.append((float(env.batch.car.x[0]), float(env.batch.car.z[0])))
        speed.append(float(info["speed_kmh"]))
        time_ms.append(int(info["race_time_ms"]))
        if terminated or truncated:
            break
    return Trace(
        name,
        np.asarray(xz),
        np.asarray(speed),
        np.asarray(time_ms),
        list(info["cp_times"]),
        bool(info["finished"]),
        float(info["progress_m"]),
    )


def play_actions(track: Track, settings: RunSettings, actions: np.ndarray, name: str) -> Trace:
    """Drive the saved ``actions`` (a race ends at the finish or a cutoff, or when they run out)."""
    it = iter(actions.tolist())
    return play(track, settings.spec, settings.rewards, settings.params, lambda *_: next(it, None), name)


def play_reference(track: Track, spec: EnvSpec, rewards: RewardSpec, params: SimParams) -> Trace:
    """The reference driver's race (``tmexp.envs.driver``), the line every race is compared with."""
    driver = ReferenceDriver(track, driver_car(params))
    dt = spec.tm_engine_step_per_action * spec.ms_per_tm_engine_step / 1000.0
    return play(
        track,
        spec,
        rewards,
        params,
        lambda obs, info, env: driver.act(env.batch.car.view(0), info["progress_m"], dt),
        "reference driver",
    )


def time_deltas(race: Trace, reference: Trace) -> np.ndarray:
    """(K,) seconds the race is behind (+) or ahead (-) of the reference at each checkpoint both passed, the
    finish last when both finished."""
    race_times = list(race.cp_times) + ([race.time_ms] if race.finished else [])
    ref_times = list(reference.cp_times) + ([reference.time_ms] if reference.finished else [])
    k = min(len(race_times), len(ref_times))
    if not race.finished or not reference.finished:
        k = min(k, len(race.cp_times), len(reference.cp_times))
    return (np.asarray(race_times[:k], dtype=np.float64) - np.asarray(ref_times[:k], dtype=np.float64)) / 1000


# ----- drawing ------------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _track_axes(ax, track: Track, spec: EnvSpec, params: SimParams) -> None:
    """The track's road from above, cropped to the track, z down the page (as in the observations)."""
    raster = track_world(track, spec, params).raster
    xz = track.xz
    lo = np.floor((xz.min(axis=0) - 30 - raster.origin) / raster.cell).astype(int)
    hi = np.ceil((xz.max(axis=0) + 30 - raster.origin) / raster.cell).astype(int)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, raster.gray.shape[::-1])
    x0, z0 = raster.origin + lo * raster.cell
    x1, z1 = raster.origin + hi * raster.cell
    ax.imshow(
        raster.gray[lo[1] : hi[1], lo[0] : hi[0]],
        cmap="gray",
        vmin=0,
        vmax=255,
        origin="lower",
        extent=(x0, x1, z0, z1),
        alpha=0.55,
    )
    ax.plot(*xz[0], "o", color="tab:green", ms=6, label="start")
    ax.plot(*xz[-1], "s", color="black", ms=5, label="finish")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m)")
    ax.set_aspect("equal")
    ax.invert_yaxis()


def _checkpoint_xz(track: Track, spacing_m: float) -> np.ndarray:
    """(K, 2) where the intermediate checkpoints are, then the finish."""
    distances = np.append(track.checkpoint_distances(spacing_m), track.length)
    idx = np.minimum(np.round(distances / SPACING_M).astype(int), len(track.xz) - 1)
    return track.xz[idx]


def draw_race(
    track: Track, race: Trace, reference: Trace, spec: EnvSpec, params: SimParams, out: str | Path, title: str = ""
) -> Path:
    """A PNG: the race's line coloured by speed beside the reference driver's, the time gained (green) or lost
    (red) against the reference at each checkpoint on the track, and that gap along the track below."""
    plt = _pyplot()
    from matplotlib.collections import LineCollection

    fig, (ax, gap_ax) = plt.subplots(2, 1, figsize=(10, 12), gridspec_kw={"height_ratios": [4, 1.3]})
    _track_axes(ax, track, spec, params)
    ax.plot(
        reference.xz[:, 0], reference.xz[:, 1], color="tab:blue", lw=1.0, ls="--", label=reference.label(), zorder=3
    )  # over the race's line: where they part shows
    segments = np.stack([race.xz[:-1], race.xz[1:]], axis=1)
    # an (N, 2, 2) array, as matplotlib documents; its stub asks for a Sequence
    lines = LineCollection(segments, cmap="plasma", linewidths=2.2)  # type: ignore[arg-type]
    lines.set_array(race.speed_kmh[1:])
    ax.add_collection(lines)
    fig.colorbar(lines, ax=ax, fraction=0.03, pad=0.01, label="speed (km/h)")
    ax.plot([], [], color="tab:purple", lw=2.2, label=race.label())  # the speed-coloured line's legend entry
    deltas = time_deltas(race, reference)
    where = _checkpoint_xz(track, spec.checkpoint_spacing_m)[: len(deltas)]
    section = np.diff(deltas, prepend=0.0)  # what each stretch since the previous checkpoint gained or lost
    for (x, z), total, part in zip(where, deltas, section):
        colour = "tab:red" if part > 0 else "tab:green"
        ax.plot(x, z, "o", color=colour, ms=7, mec="black", mew=0.5)
        ax.annotate(
            f"{total:+.2f}", (x, z), xytext=(5, 5), textcoords="offset points", fontsize=7, color=colour, weight="bold"
        )
    ax.set_title(title or f"{track.name}: {race.label()} vs {reference.label()}")
    ax.legend(loc="best", fontsize=8)

    distances = np.append(track.checkpoint_distances(spec.checkpoint_spacing_m), track.length)[: len(deltas)]
    gap_ax.axhline(0.0, color="tab:blue", lw=0.8, ls="--")
    gap_ax.bar(
        distances,
        section,
        width=0.8 * spec.checkpoint_spacing_m,
        color=["tab:red" if s > 0 else "tab:green" for s in section],
        alpha=0.6,
        label="gained (-) / lost (+) since the previous checkpoint",
    )
    gap_ax.plot(distances, deltas, "k.-", lw=1.2, label="behind (+) / ahead (-) of the reference")
    gap_ax.set_xlabel("distance along the track (m)")
    gap_ax.set_ylabel("s vs reference")
    gap_ax.set_xlim(0, track.length)
    gap_ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


def draw_races(
    track: Track,
    races: Mapping[str, Trace],
    out: str | Path,
    spec: EnvSpec | None = None,
    params: SimParams | None = None,
    reference: Trace | None = None,
    title: str = "",
    colours: Mapping[str, object] | None = None,
) -> Path:
    """A PNG of several races on one track, one colour each (``colours``: name -> matplotlib colour, default
    tab10 in order; e.g. each arm's best race of a study), the reference driver's line dashed when given."""
    plt = _pyplot()
    spec, params = spec or EnvSpec(), params or SimParams()
    fig, ax = plt.subplots(figsize=(10, 10))
    _track_axes(ax, track, spec, params)
    if reference is not None:
        ax.plot(reference.xz[:, 0], reference.xz[:, 1], color="black", lw=0.9, ls="--", label=reference.label())
    tab10 = plt.get_cmap("tab10")
    for i, (name, race) in enumerate(races.items()):
        colour = (colours or {}).get(name, tab10(i % 10))
        ax.plot(race.xz[:, 0], race.xz[:, 1], color=colour, lw=1.6, alpha=0.9, label=race.label(name))
    ax.set_title(title or f"{track.name}: best races")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def best_races_figure(run_dirs: Mapping[str, str | Path], out: str | Path, map_name: str | None = None) -> Path:
    """Draw the best race of each run (label -> run directory) on one track: the figure of a study's arms.

    Every run must have driven ``map_name`` (default: the first run's first map); a run without a saved race of it
    is left out of the figure. Raises PlaybackError when none has one.
    """
    races: dict[str, tuple[RunSettings, np.ndarray]] = {}
    first = None
    for label, run_dir in run_dirs.items():
        settings = run_settings(run_dir)
        first = first or settings
        name = map_name or first.maps[0].short_name
        try:
            name, path, _ = choose_race(settings, "best", name)
        except PlaybackError:
            continue
        races[label] = settings, load_actions(path)
    if first is None or not races:
        raise PlaybackError(
            f"none of the runs {', '.join(map(str, run_dirs.values()))} has a saved best race of "
            f"{map_name or 'its first map'} in best_runs/."
        )
    return draw_best_races(races, map_name or first.maps[0].short_name, out)[0]


def draw_best_races(
    races: Mapping[str, tuple[RunSettings, np.ndarray]],
    map_name: str,
    out: str | Path,
    title: str = "",
    colours: Mapping[str, object] | None = None,
) -> tuple[Path, dict[str, Trace]]:
    """Replay each race (label -> its run's settings and its (T,) actions) on ``map_name`` with its own run's
    settings and draw them on one track, the first run's, with its reference driver's line (``colours`` as for
    ``draw_races``). The settings may come from a study's export (``settings_from_config``): no run directory is read.

    Returns the figure and each label's replayed race (whose time is what the figure's legend says).
    """
    if not races:
        raise PlaybackError(f"no race of {map_name} to draw.")
    traces = {
        label: play_actions(settings.track(map_name), settings, actions, label)
        for label, (settings, actions) in races.items()
    }
    first = next(iter(races.values()))[0]
    track = first.track(map_name)
    reference = play_reference(track, first.spec, first.rewards, first.params)
    title = title or f"{map_name}: each run's best race"
    return draw_races(track, traces, out, first.spec, first.params, reference, title, colours), traces


def animate_race(
    track: Track, race: Trace, reference: Trace, spec: EnvSpec, params: SimParams, out: str | Path, fps: int = 20
) -> Path:
    """An animated GIF (``out`` ending .gif, matplotlib's PillowWriter) or MP4 (.mp4, needs ffmpeg) of the race,
    the reference driver as a ghost at the same race time."""
    plt = _pyplot()
    from matplotlib import animation

    out = Path(out)
    writer: animation.AbstractMovieWriter
    if out.suffix.lower() == ".mp4":
        if not animation.FFMpegWriter.isAvailable():
            raise PlaybackError(f"{out}: an MP4 needs ffmpeg, which is not installed; install it or write a .gif.")
        writer = animation.FFMpegWriter(fps=fps)
    elif out.suffix.lower() == ".gif":
        writer = animation.PillowWriter(fps=fps)
    else:
        raise PlaybackError(f"{out}: an animation is a .gif or an .mp4; name the file with one of those.")
    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=80)
    _track_axes(ax, track, spec, params)
    ax.plot(reference.xz[:, 0], reference.xz[:, 1], color="tab:blue", lw=0.6, ls="--")
    (trail,) = ax.plot([], [], color="tab:red", lw=1.6)
    (car,) = ax.plot([], [], "o", color="tab:red", ms=7, label=race.label())
    (ghost,) = ax.plot([], [], "o", color="tab:blue", ms=6, alpha=0.6, label=f"{reference.label()} (ghost)")
    text = ax.text(
        0.02, 0.98, "", transform=ax.transAxes, va="top", fontsize=9, bbox={"facecolor": "white", "alpha": 0.8}
    )
    ax.legend(loc="lower right", fontsize=7)
    frames = np.unique(np.linspace(0, len(race.xz) - 1, min(MAX_ANIMATION_FRAMES, len(race.xz))).astype(int))

    def show(i: int):
        t = race.race_time_ms[i]
        j = min(int(np.searchsorted(reference.race_time_ms, t)), len(reference.xz) - 1)
        trail.set_data(race.xz[: i + 1, 0], race.xz[: i + 1, 1])
        car.set_data([race.xz[i, 0]], [race.xz[i, 1]])
        ghost.set_data([reference.xz[j, 0]], [reference.xz[j, 1]])
        text.set_text(f"{t / 1000:6.2f} s  {race.speed_kmh[i]:5.0f} km/h")
        return trail, car, ghost, text

    ax.set_title(f"{track.name}: {race.label()}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    animation.FuncAnimation(fig, show, frames=frames, blit=True).save(str(out), writer=writer)
    plt.close(fig)
    return out


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    _pyplot().close(fig)
    return out
