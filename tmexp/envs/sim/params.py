"""Physics and rendering parameters of the embedded simulator (``env.sim.*``), with documented defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SimParams:
    """Placeholder until the simulator lands; the simulator's owner extends this."""

    road_width_m: float = 12.0
