"""The real game backend (``env=tmi``): Trackmania Nations Forever driven through TMInterface 2 and the plugin
Linesight users already run (``Python_Link.as``; install notes in ``docs/game.md``).

``protocol.py`` (the messages, Linesight's numbering), ``client.py`` (the socket client), ``state.py`` (save
states via ``tminterface.structs``), ``instances.py`` (launching, reconnecting, rebooting games), ``race.py``
(race semantics and rewards from game states), ``env.py`` (``TmiEnv``). The fake game the tests play against
uses the simulator, so it lives outside this package: ``tmexp/envs/fake_game.py``.
"""

from tmexp.envs.tmi.errors import GameConnectionLost, GameNotConfigured, GameTimeout, GameUnavailable, TmiProtocolError
from tmexp.envs.tmi.params import TmiParams

__all__ = ["GameConnectionLost", "GameNotConfigured", "GameTimeout", "GameUnavailable", "TmiParams",
           "TmiProtocolError"]
