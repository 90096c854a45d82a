"""A training smoke run with env=tmi against two fake games (two collectors), beside the simulator's."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def two_free_ports() -> int:
    """A port p with p + 1 free too (collector i listens on base_tmi_port + i)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 1 < 65536:
            with socket.socket() as a, socket.socket() as b:
                try:
                    a.bind(("127.0.0.1", port))
                    b.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no two consecutive free ports")


def scalar_tags(run_dir: Path) -> set[str]:
    from tbparse import SummaryReader

    return set(SummaryReader(str(run_dir / "tensorboard")).scalars["tag"].unique())


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_training_smoke_run_with_two_fake_games_logs_the_simulators_tags(tmp_path):
    port = two_free_ports()
    common = ["+experiment=smoke", "performance.gpu_collectors_count=2", "performance.serial=false"]
    fake = f"{sys.executable} -m tmexp.sim fake-game --port {{port}}"
    tmi_cmd = [
        sys.executable,
        "-m",
        "tmexp.train",
        "env=tmi",
        *common,
        f"env.tmi.launch_command='{fake}'",
        f"env.tmi.base_tmi_port={port}",
        f"hydra.run.dir={tmp_path / 'tmi'}",
    ]
    sim_cmd = [sys.executable, "-m", "tmexp.train", "env=sim", *common, f"hydra.run.dir={tmp_path / 'sim'}"]
    runs = [
        subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for cmd in (tmi_cmd, sim_cmd)
    ]
    outputs = [run.communicate(timeout=400)[0] for run in runs]
    for run, output in zip(runs, outputs):
        assert run.returncode == 0, output[-3000:]
    tmi_tags, sim_tags = scalar_tags(tmp_path / "tmi"), scalar_tags(tmp_path / "sim")
    assert "Race/explo_race_time_trained_A01" in tmi_tags and "Training/loss" in tmi_tags
    assert tmi_tags == sim_tags
    assert f"fake game listening on 127.0.0.1:{port + 1}" in outputs[0]  # the second collector's game
    assert not port_open(port) and not port_open(port + 1)  # both fake games were shut down with the run
