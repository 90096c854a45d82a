"""The real game backend (``env=tmi``): Trackmania Nations Forever driven through TMInterface 2.

``protocol.py`` (the messages), ``client.py`` (the socket client), ``state.py`` (save states via
``tminterface.structs``), ``instances.py`` (launching, reconnecting, rebooting games), ``race.py`` (race
semantics and rewards from game states), ``env.py`` (``TmiEnv``), ``fake.py`` (a fake plugin for tests),
``plugin/`` (the AngelScript plugin and its install instructions).
"""

from tmexp.envs.tmi.errors import GameConnectionLost, GameNotConfigured, GameTimeout, GameUnavailable, TmiProtocolError
from tmexp.envs.tmi.params import TmiParams

__all__ = ["GameConnectionLost", "GameNotConfigured", "GameTimeout", "GameUnavailable", "TmiParams",
           "TmiProtocolError"]
