"""Float statistics: the per-float mean and std that ``nn.normalize_floats`` standardises the float vector with.

Every backend measures them the same way, on its own track: the reference driver (``tmexp.envs.driver``) drives
one race per fraction of random actions (0, 20 and 40 %, which widen the spread beyond the driver's own line:
slides, wall contact, slow corners), and the floats of every observation it acts on count. A float (nearly)
constant over those races, such as the vertical components on a flat track, gets mean 0 and std 1, so it passes
through unscaled should it vary later.

Measuring on the game takes a few races of game time, so a JSON file keeps the result for later runs on the same
map (``env.tmi.float_stats_path``). The file names the map, the track length and the observation settings the
statistics depend on; ``load`` refuses a file that does not match the run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tmexp.envs.base import EnvSpec
from tmexp.envs.driver import CarView, ReferenceDriver
from tmexp.envs.observation import float_count
from tmexp.envs.track import Track

RANDOM_FRACTIONS = (0.0, 0.2, 0.4)
# The observation settings that change what a float means (its index or its scale).
LAYOUT_KEYS = (
    "n_prev_actions_in_inputs",
    "n_zone_centers_in_inputs",
    "one_every_n_zone_centers_in_inputs",
    "margin_to_announce_finish_meters",
)
_TRACK_LENGTH_TOLERANCE_M = 1.0
_ATTEMPTS_PER_RACE = 3


class FloatStatsError(ValueError):
    """A float-statistics file cannot be used for this run (the message names the file and the fix)."""


@dataclass
class FloatStats:
    """Per-float mean and std, float32 (F,) each, and what they were measured on."""

    mean: np.ndarray
    std: np.ndarray
    races: int = 0
    finished: int = 0  # races the driver finished
    furthest_m: float = 0.0  # the furthest progress of any race
    frames: int = 0  # observations counted


def measure(
    env,
    view: Callable[[], CarView],
    driver: ReferenceDriver,
    spec: EnvSpec,
    random_fractions: tuple[float, ...] = RANDOM_FRACTIONS,
    seed: int = 0,
    min_std: float = 1e-3,
) -> FloatStats:
    """Drive ``env`` with ``driver``, one race per fraction of random actions, and return the floats' statistics.

    Args:
        env: an env of the contract in ``tmexp.envs.base``.
        view: the car of ``env`` as the driver sees it, after the latest ``reset`` or ``step``.
        spec: the env's observation settings (the action period).
    A race cut by a lost connection (``ConnectionError``, as the game backend raises) is driven again, up to
    three times.
    """
    rng = np.random.default_rng(seed)
    dt_action = spec.tm_engine_step_per_action * spec.ms_per_tm_engine_step / 1000.0
    rows, finished, furthest = [], 0, 0.0
    for fraction in random_fractions:
        for attempt in range(_ATTEMPTS_PER_RACE):
            race_rows = []
            try:
                obs, info = env.reset()
                while True:
                    action = driver.act(view(), info["progress_m"], dt_action)
                    if rng.random() < fraction:
                        action = int(rng.integers(env.action_space.n))
                    race_rows.append(obs["floats"])
                    obs, _, terminated, truncated, info = env.step(action)
                    if terminated or truncated:
                        break
            except ConnectionError:
                if attempt + 1 == _ATTEMPTS_PER_RACE:
                    raise
                continue
            rows.extend(race_rows)
            finished += bool(info["finished"])
            furthest = max(furthest, float(info["progress_m"]))
            break
    floats = np.asarray(rows, dtype=np.float64)
    mean, std = floats.mean(axis=0), floats.std(axis=0)
    constant = std < min_std
    return FloatStats(
        np.where(constant, 0.0, mean).astype(np.float32),
        np.where(constant, 1.0, std).astype(np.float32),
        races=len(random_fractions),
        finished=finished,
        furthest_m=furthest,
        frames=len(rows),
    )


def save(path: str | Path, stats: FloatStats, track: Track, spec: EnvSpec, backend: str) -> None:
    """Write ``stats`` to ``path`` as JSON (atomically: a run killed meanwhile leaves no half file)."""
    path = Path(path)
    data = {
        "mean": [float(v) for v in stats.mean],
        "std": [float(v) for v in stats.std],
        "map": track.name,
        "track_length_m": track.length,
        "n_floats": len(stats.mean),
        "layout": {key: getattr(spec, key) for key in LAYOUT_KEYS},
        "backend": backend,
        "measured": {
            "races": stats.races,
            "finished": stats.finished,
            "furthest_m": stats.furthest_m,
            "frames": stats.frames,
            "at": datetime.now(timezone.utc).isoformat(),
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def load(
    path: str | Path, track: Track, spec: EnvSpec, setting: str = "the float statistics file", n: int | None = None
) -> FloatStats:
    """Read statistics written by ``save``; FloatStatsError unless they fit ``track``, ``spec`` and ``n`` floats
    (None: the count of ``spec``'s backend, the simulator's when it names none)."""
    path = Path(path)
    where = f"{setting} {str(path)!r}"
    remedy = "delete it to measure them again, or point the setting at another file"
    try:
        data = json.loads(path.read_text())
        mean = np.asarray(data["mean"], dtype=np.float32)
        std = np.asarray(data["std"], dtype=np.float32)
    except FileNotFoundError:
        raise FloatStatsError(f"{where} does not exist.") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FloatStatsError(
            f"{where} is not a float statistics file ({type(error).__name__}: {error}); {remedy}."
        ) from None
    n = float_count(spec) if n is None else n
    if mean.shape != (n,) or std.shape != (n,):
        raise FloatStatsError(
            f"{where} holds {mean.size} means and {std.size} stds; this run's observations have {n} floats: {remedy}."
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise FloatStatsError(f"{where} holds a non-finite mean or a std that is not positive; {remedy}.")
    layout = data.get("layout", {})
    for key in LAYOUT_KEYS:
        if key in layout and layout[key] != getattr(spec, key):
            raise FloatStatsError(
                f"{where} was measured with env.{key}={layout[key]}; this run has {getattr(spec, key)}: {remedy}."
            )
    length = data.get("track_length_m")
    if length is not None and abs(float(length) - track.length) > _TRACK_LENGTH_TOLERANCE_M:
        raise FloatStatsError(
            f"{where} was measured on map {data.get('map')!r} ({float(length):.0f} m); this run "
            f"drives {track.name!r} ({track.length:.0f} m): {remedy}."
        )
    measured = data.get("measured", {})
    return FloatStats(
        mean,
        std,
        races=int(measured.get("races", 0)),
        finished=int(measured.get("finished", 0)),
        furthest_m=float(measured.get("furthest_m", 0.0)),
        frames=int(measured.get("frames", 0)),
    )
