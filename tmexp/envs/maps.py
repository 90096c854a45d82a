"""The map cycle: a run's maps, each with its own track, and the order of their races.

Linesight trains on a ``map_cycle``: a list of (map, exploration or eval) entries repeated, e.g. 64 exploration
races of a map then 1 eval race of it, then the next map's, and round again. tmexp writes the same as ``map.cycle``
(``tmexp.config.MapEntry``): entry i contributes ``explo_races_per_cycle`` exploration races of its map, then
``eval_races_per_cycle`` eval races of it. A run without ``map.cycle`` is a cycle of one map, so one code path serves
both. Every car of a run walks the cycle on its own, starting at a staggered position (``MapCycle.first_race``),
so the run's races come in the cycle's proportions at any moment, not map by map in blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from tmexp.envs.track import Track, load_map


@dataclass(frozen=True)
class CycleMap:
    """One map of a cycle, its race counts resolved."""

    short_name: str
    map_path: str  # the game's .Challenge.Gbx ("" on the simulator)
    reference_line_path: str | None  # None: the built-in track of ``short_name``
    explo_races: int
    eval_races: int


def cycle_maps(map_cfg) -> list[CycleMap]:
    """The maps of ``map_cfg`` (a ``MapConfig``) in cycle order: its ``cycle`` entries, or the one map it names."""
    if not map_cfg.cycle:
        return [
            CycleMap(
                map_cfg.short_name,
                map_cfg.map_path,
                map_cfg.reference_line_path,
                int(map_cfg.explo_races_per_cycle),
                int(map_cfg.eval_races_per_cycle),
            )
        ]

    def count(value, default) -> int:
        return int(default if value is None else value)

    return [
        CycleMap(
            e.short_name,
            e.map_path,
            e.reference_line_path,
            count(e.explo_races_per_cycle, map_cfg.explo_races_per_cycle),
            count(e.eval_races_per_cycle, map_cfg.eval_races_per_cycle),
        )
        for e in map_cfg.cycle
    ]


def load_tracks(maps: list[CycleMap]) -> list[Track]:
    """Each map's track, in cycle order (raises ``TrackError`` naming the map that has none)."""
    return [load_map(m.short_name, m.reference_line_path) for m in maps]


@dataclass(frozen=True)
class MapCycle:
    """The races of a cycle of maps, in Linesight's order; a race index counts a car's races from 0."""

    maps: tuple[CycleMap, ...]

    @classmethod
    def of(cls, map_cfg) -> MapCycle:
        return cls(tuple(cycle_maps(map_cfg)))

    @property
    def names(self) -> list[str]:
        return [m.short_name for m in self.maps]

    def __len__(self) -> int:
        """Races in one turn of the cycle."""
        return sum(m.explo_races + m.eval_races for m in self.maps)

    def race(self, race_index: int) -> tuple[int, bool]:
        """(map index, whether it is an eval race) of race ``race_index``."""
        position = race_index % len(self)
        for i, m in enumerate(self.maps):
            if position < m.explo_races:
                return i, False
            position -= m.explo_races
            if position < m.eval_races:
                return i, True
            position -= m.eval_races
        raise AssertionError("unreachable: the position is below the cycle's length")

    def first_race(self, car: int, cars: int) -> int:
        """Where car ``car`` of a run's ``cars`` starts in the cycle: staggered evenly, so that the run's eval races
        (and its maps) come spread out at the cycle's rate rather than all cars' at once."""
        return car * len(self) // cars
