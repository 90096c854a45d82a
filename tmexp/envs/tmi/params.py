"""Settings of the real-game backend (``env.tmi.*``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TmiParams:
    """Placeholder until the game backend lands; its owner extends this."""

    base_tmi_port: int = 8478
    running_speed: float = 32.0
