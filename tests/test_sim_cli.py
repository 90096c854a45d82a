"""``python -m tmexp.sim``: drive and render, and one-line errors for bad tracks."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from tmexp.sim import main

REPO = Path(__file__).resolve().parents[1]


def test_drive_prints_the_reference_lap_time(capsys):
    assert main(["drive", "--map", "A01"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("A01: ") and "reference driver lap" in out
    seconds = float(out.split("lap ")[1].split(" s")[0])
    assert 20.0 <= seconds <= 30.0


def test_render_writes_a_png(tmp_path, capsys):
    out = tmp_path / "a01.png"
    assert main(["render", "--map", "A01", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out) in capsys.readouterr().out


def test_bad_tracks_end_in_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 3)))
    for args in (["drive", "--map", "nowhere"], ["render", "--map", "X", "--reference-line", str(bad)]):
        proc = subprocess.run([sys.executable, "-m", "tmexp.sim", *args], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
        assert "Traceback" not in proc.stderr
    assert "bad.npy" in proc.stderr and "at least 10" in proc.stderr


def test_fake_game_on_a_port_in_use_ends_in_one_line_and_exit_2():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "tmexp.sim", "fake-game", "--port", str(port)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "choose another --port" in proc.stderr
