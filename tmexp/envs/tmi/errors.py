"""Exceptions of the real-game backend.

``GameConnectionLost`` (a ``ConnectionError``, with its subclasses) is what the collector catches: the rollout in
progress is discarded whole and ``reset()`` is called again, which reconnects to the game or restarts it. The other
two are errors a user must fix (configuration, a game that never comes up) and stop the run with one clear sentence.
"""

from __future__ import annotations


class GameConnectionLost(ConnectionError):
    """The plugin connection dropped, stalled or spoke nonsense mid-race: discard the rollout and reset()."""


class GameTimeout(GameConnectionLost):
    """The plugin sent nothing for longer than the configured timeout."""


class GameStalled(GameConnectionLost):
    """The race time stopped advancing while run steps kept coming (a finish that was not prevented)."""


class TmiProtocolError(GameConnectionLost):
    """The plugin sent a message tmexp does not understand (unknown type, impossible length)."""


class GameNotConfigured(RuntimeError):
    """env=tmi was chosen but no game can be started or reached."""


class GameUnavailable(RuntimeError):
    """The game could not be (re)started and reached after every allowed attempt."""
