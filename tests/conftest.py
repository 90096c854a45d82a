import signal
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
_SESSION_START = time.time() - 1.0  # file times may be rounded down to the second
_outside_reads: set[str] = set()


def _environment_roots() -> list[Path]:
    """The Python environment's own folders (a virtual environment may sit beside the clone: ~/code/venv next to
    ~/code/tmexp); a folder that holds the repository itself is never one, so the check stays on beside it."""
    import site
    import sysconfig

    roots = {
        sys.prefix,
        sys.exec_prefix,
        sys.base_prefix,
        sys.base_exec_prefix,
        *sysconfig.get_paths().values(),
        *getattr(site, "getsitepackages", lambda: [])(),
        site.getusersitepackages(),
    }
    resolved = {Path(root).resolve() for root in roots if root}
    return [root for root in resolved if not REPO.is_relative_to(root)]


_ENVIRONMENT = _environment_roots()


def _audit_open(event: str, args: tuple) -> None:
    """Record files opened beside the repository (a sibling folder): a clone of the project alone must pass.

    Files the tests themselves made during this session are not outside data: a clone in the temporary directory
    has every pytest and benchmark scratch folder beside it; nor are the Python environment's own files.
    """
    if event != "open" or not args or not isinstance(args[0], (str, Path)):
        return
    try:
        path = Path(args[0]).resolve()
        if not path.is_relative_to(REPO.parent) or path.is_relative_to(REPO):
            return
        if any(path.is_relative_to(root) for root in _ENVIRONMENT):
            return
        if path.stat().st_ctime >= _SESSION_START:
            return  # made by this test session (a copy keeps its source's mtime, not its ctime)
    except (OSError, RuntimeError, ValueError):
        return  # not there yet: opened to be written, not read
    _outside_reads.add(str(path))


sys.addaudithook(_audit_open)


def _let_runs_take_ctrl_c() -> None:
    """Tests send Ctrl-C's SIGINT to the runs they start. A shell without job control (``pytest ... &`` in a script)
    starts the suite with SIGINT ignored, every child inherits that, and Python then installs no KeyboardInterrupt
    handler: the run would rightly ignore the test's Ctrl-C. Handling SIGINT here (as an interactive Python does)
    lets exec reset it to the default in each child, so the runs see Ctrl-C as a user's terminal sends it."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_let_runs_take_ctrl_c()


def pytest_sessionfinish(session, exitstatus):
    if _outside_reads:
        print(
            f"\ntests read files outside the repository (carry them in tests/data/): {sorted(_outside_reads)}",
            file=sys.stderr,
        )
        session.exitstatus = 1


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waiting when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- the fake game in a thread of the test process (tests/test_tmi_*.py) -----------------------------------------


class FakeGameThread:
    """A fake game (``tmexp.envs.fake_game``) serving on a free loopback port in a thread of the test process."""

    def __init__(self, track=None, spec=None, faults=None, countdown_ms: int = 100, **options):
        import threading

        from tmexp.envs.base import EnvSpec
        from tmexp.envs.fake_game import FakeGame, FakeRace
        from tmexp.envs.track import load_map

        race = FakeRace(track if track is not None else load_map("A01"), spec or EnvSpec(), countdown_ms=countdown_ms)
        self.game = FakeGame(race, port=0, faults=faults, **options)
        self.game.listen()
        self.port = self.game.port
        self.thread = threading.Thread(target=self.game.serve_forever, daemon=True)
        self.thread.start()

    def client(self, timeout_s: float = 10.0):
        """A connected client whose greeting was read (left pending)."""
        from tmexp.envs.tmi.client import TmiClient
        from tmexp.envs.tmi.protocol import MessageType

        client = TmiClient(self.port, response_timeout_s=timeout_s)
        client.connect(timeout_s=5)
        assert client.read_message().type == MessageType.ON_CONNECT_SYNC
        return client

    def stop(self) -> None:
        self.game.stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the fake game did not stop"


def _fake_games():
    started: list[FakeGameThread] = []

    def start(*args, **kwargs) -> FakeGameThread:
        started.append(FakeGameThread(*args, **kwargs))
        return started[-1]

    yield start
    for game in started:
        game.stop()


@pytest.fixture
def fake_game():
    """Factory: ``fake_game(track=None, spec=None, faults=None, **options)`` starts a ``FakeGameThread`` (A01 by
    default; options as ``FakeGame``'s); every one started is stopped at the test's end."""
    yield from _fake_games()


@pytest.fixture(scope="module")
def module_fake_game():
    """``fake_game`` for module-scoped fixtures: the games stop at the module's end."""
    yield from _fake_games()
