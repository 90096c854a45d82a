"""The real game backend (``env=tmi``): Trackmania Nations Forever driven through TMInterface 2 and the plugin
Linesight users already run (``Python_Link.as``; install notes in ``docs/game.md``).

``protocol.py`` (the messages, Linesight's numbering, and the framing both ends use), ``client.py`` (the socket
client), ``state.py`` (save states via ``tminterface.structs``), ``instances.py`` (launching, reconnecting,
rebooting games), ``processes.py`` (the machine's processes, the launch lock, free ports), ``commands.py`` (the
console commands Linesight sends), ``race.py`` (race semantics, rewards and observations from game states),
``env.py`` (``TmiEnv``). The fake game the tests play against
uses the simulator, so it lives outside this package: ``tmexp/envs/fake_game.py``.
"""

from tmexp.envs.tmi.errors import (
    GameConnectionLost,
    GameNotConfigured,
    GameStalled,
    GameTimeout,
    GameUnavailable,
    TmiProtocolError,
)
from tmexp.envs.tmi.params import TmiParams

__all__ = [
    "GameConnectionLost",
    "GameNotConfigured",
    "GameStalled",
    "GameTimeout",
    "GameUnavailable",
    "TmiParams",
    "TmiProtocolError",
]
