"""A run's objective: the one number a search (``hydra/sweeper=optuna``) optimises, read from the run's own
TensorBoard logs when it ends.

``objective=<name>`` chooses it; its direction follows from the name (race times are minimised, distances
maximised). A run that logged no value for it (no race finished, no eval race played, no event file) returns the
value its metric gives an unfinished race: the 300 s race cutoff for a time, 0 m for a distance. Such a run is a
result, not a failure: the search learns that the configuration did badly. A run that raised returns nothing, and
the sweeper records its trial as failed.

| objective | direction | value |
|---|---|---|
| ``best_time`` | minimize | best race time so far, exploration or eval (``alltime_min_ms_<map>``), in s |
| ``best_eval_time`` | minimize | fastest eval (greedy) race, in s |
| ``robust_eval_time`` | minimize | fastest robust eval race (no slower than 1.02 x the rolling mean), in s |
| ``furthest_eval`` | maximize | furthest point an eval race reached along the centreline, in m |
| ``furthest_race`` | maximize | furthest point any race (exploration or eval) reached, in m |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tmexp.core import metrics


@dataclass(frozen=True)
class ObjectiveSpec:
    direction: str  # "minimize" or "maximize", as Optuna spells it
    tags: Callable[[str], list[str]]  # map name -> the tags whose values it reduces
    unit: str
    scale: float  # tag value x scale = objective value in its unit
    no_data: float  # the value of a run that logged none of the tags (or only unfinished races)
    no_data_means: str  # what such a run did


def _time(tag: Callable[[str], str], scale: float, no_data_means: str) -> ObjectiveSpec:
    # Unfinished races are logged at the cutoff, so a minimum at the cutoff means none finished.
    return ObjectiveSpec("minimize", lambda m: [tag(m)], "s", scale, metrics.RACE_CUTOFF_S, no_data_means)


def _distance(tags: Callable[[str], list[str]], no_data_means: str) -> ObjectiveSpec:
    return ObjectiveSpec("maximize", tags, "m", 1.0, 0.0, no_data_means)


OBJECTIVES: dict[str, ObjectiveSpec] = {
    "best_time": _time(metrics.alltime_min_ms, 1e-3, "no race finished"),
    "best_eval_time": _time(metrics.eval_race_time, 1.0, "no eval race finished"),
    "robust_eval_time": _time(metrics.eval_race_time_robust, 1.0, "no eval race finished"),
    "furthest_eval": _distance(lambda m: [metrics.eval_race_progress(m)], "no eval race played"),
    "furthest_race": _distance(
        lambda m: [metrics.eval_race_progress(m), metrics.explo_race_progress(m)], "no race played"
    ),
}


def spec(name: str) -> ObjectiveSpec:
    """The objective called ``name`` (the schema's ``Objective`` set; KeyError for any other)."""
    return OBJECTIVES[str(name)]


def direction(name: str) -> str:
    return spec(name).direction


@dataclass(frozen=True)
class ObjectiveValue:
    name: str
    value: float
    unit: str
    note: str = ""  # why the value is the no-data fallback ("" when it was measured)

    def __str__(self) -> str:
        return f"{self.name} {self.value:.6g} {self.unit}" + (f" ({self.note})" if self.note else "")


def map_names(map_cfg) -> list[str]:
    """The short names of a run's maps (``map.cycle``'s, in cycle order; the one map of a run without a cycle)."""
    from tmexp.envs.maps import cycle_maps

    return [m.short_name for m in cycle_maps(map_cfg)]


def measure(run_dir: str | Path, name: str, map_name: str | Sequence[str]) -> ObjectiveValue:
    """The objective ``name`` of the run in ``run_dir``, from its TensorBoard event files.

    ``map_name`` may list a map cycle's maps: the objective is then the sum of each map's value (a time: the total
    of the maps' best times, a map without one counting the race cutoff; a distance: the total reached), so a search
    cannot trade one map away for another, and the note names each map that gave no value."""
    from tmexp.analysis.loading import RunLoadError, load_scalars

    s = spec(name)
    try:
        scalars = load_scalars(Path(run_dir), workers=1)
    except RunLoadError:  # no event file at all: the run stopped before its writer started
        scalars = None
    maps = [map_name] if isinstance(map_name, str) else list(map_name)
    total, notes = 0.0, []
    for m in maps:
        values = scalars[scalars.tag.isin(s.tags(m))].value if scalars is not None else []
        best = s.no_data
        if len(values):
            best = float(values.min() if s.direction == "minimize" else values.max()) * s.scale
        if best == s.no_data:
            note = f"{s.no_data_means}: {s.no_data:g} {s.unit}" + (", the race cutoff" if s.unit == "s" else "")
            notes.append(note if len(maps) == 1 else f"{m}: {note}")
        total += best
    return ObjectiveValue(str(name), total, s.unit, "; ".join(notes))
