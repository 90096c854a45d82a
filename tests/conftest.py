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

    roots = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, *sysconfig.get_paths().values(),
             *getattr(site, "getsitepackages", lambda: [])(), site.getusersitepackages()}
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


def pytest_sessionfinish(session, exitstatus):
    if _outside_reads:
        print(f"\ntests read files outside the repository (carry them in tests/data/): {sorted(_outside_reads)}",
              file=sys.stderr)
        session.exitstatus = 1


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waiting when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
