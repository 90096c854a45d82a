"""The tests' guard against data read from beside the repository: a virtual environment beside the clone is the
Python environment, not data; a data folder beside it still fails the session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

READS_THE_VENV = """
import sidecar_module


def test_imports_a_module_of_the_environment():
    assert sidecar_module.VALUE == 3
"""

READS_BESIDE = """
from pathlib import Path


def test_reads_data_beside_the_repository():
    assert (Path(__file__).resolve().parents[2] / "data" / "table.csv").read_text() == "a,b"
"""


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    """~/code/tmexp (the guard's conftest), ~/code/venv (a virtual environment with a module of its own) and
    ~/code/data, made before the inner session starts (files made during a session do not count as reads)."""
    code = tmp_path_factory.mktemp("code")
    clone = code / "tmexp"
    (clone / "tests").mkdir(parents=True)
    shutil.copy(TESTS / "conftest.py", clone / "tests" / "conftest.py")
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(code / "venv")],
        check=True,
        timeout=120,
    )
    purelib = sysconfig.get_path("purelib", vars={"base": str(code / "venv"), "platbase": str(code / "venv")})
    Path(purelib).mkdir(parents=True, exist_ok=True)
    (Path(purelib) / "sidecar_module.py").write_text("VALUE = 3\n")
    (code / "data").mkdir()
    (code / "data" / "table.csv").write_text("a,b")
    time.sleep(2.0)  # older than the inner session's start by more than the guard's one second of slack
    return code


def _pytest(layout: Path, test: str, body: str) -> subprocess.CompletedProcess:
    tests = layout / "tmexp" / "tests"
    for old in tests.glob("test_*.py"):
        old.unlink()
    (tests / test).write_text(body)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(layout / "venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests / test)],
        cwd=layout / "tmexp",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_virtual_environment_beside_the_clone_is_not_data_beside_it(layout):
    done = _pytest(layout, "test_env.py", READS_THE_VENV)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "outside the repository" not in done.stderr


def test_data_read_from_beside_the_clone_still_fails_the_session(layout):
    done = _pytest(layout, "test_data.py", READS_BESIDE)
    assert done.returncode == 1 and "1 passed" in done.stdout, done.stdout[-2000:]
    assert "tests read files outside the repository" in done.stderr and "table.csv" in done.stderr
