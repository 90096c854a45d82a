"""logger.wandb=true mirrors a run to Weights & Biases: tested offline (no network), reading W&B's own run file."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tmexp import rundir
from tmexp.core import metrics
from tmexp.launch import wandb_logging
from tmexp.train import precheck
from tmexp.validation import ConfigError

REPO = Path(__file__).resolve().parents[1]


def wandb_records(path: Path) -> list:
    """The protobuf records of a W&B run file (``run-<id>.wandb``): a 7-byte header (":W&B", magic, version), then
    LevelDB-style log records (crc32 4, length 2, type 1) in 32 KiB blocks, a record split across blocks as
    FIRST/MIDDLE/LAST pieces."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, pieces, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pieces += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            records.append(record)
            pieces = b""
    return records


def test_an_offline_run_lands_with_its_scalars_config_and_metadata(tmp_path):
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_DISABLE_CODE": "true"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tmexp.train",
            "+experiment=smoke",
            "training.max_frames=200",
            "logger.wandb=true",
            "logger.wandb_mode=offline",
            "logger.wandb_project=tmexp-test",
            "seed=7",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    files = list((run_dir / "wandb").glob(f"offline-run-*-{wandb_logging.run_id(run_dir)}/run-*.wandb"))
    assert len(files) == 1, sorted(p.name for p in (run_dir / "wandb").rglob("*"))
    records = wandb_records(files[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.project == "tmexp-test" and run.display_name == f"smoke/{run_dir.name}" and run.run_group == "smoke"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["seed"] == 7 and config["run_name"] == "smoke" and config["training"]["max_frames"] == 200
    assert config["run_meta"]["git_commit"] == rundir.read_run_meta(run_dir)["git_commit"]

    history = [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    frames = [h[metrics.CUMUL_FRAMES] for h in history if metrics.CUMUL_FRAMES in h]
    assert frames and frames[-1] == rundir.read_status(run_dir)["frames"]  # the last TensorBoard point, mirrored
    assert any(metrics.alltime_min_ms("A01") in h for h in history)
    # W&B's folder holds no copy of the event files: the analysis would read it as a second run
    assert not list((run_dir / "wandb").rglob("events.out.tfevents.*"))


def test_without_the_package_the_key_names_the_extra(tmp_path):
    """Run the check in a process where ``import wandb`` fails, as on an install without the extra."""
    code = (
        "import sys\n"
        "sys.modules['wandb'] = None  # import wandb raises ImportError; find_spec('wandb') is None\n"
        "sys.argv = ['tmexp.train', '+experiment=smoke', 'logger.wandb=true', "
        f"'hydra.run.dir={tmp_path / 'run'}']\n"
        "from tmexp.train import cli\n"
        "cli()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install -e '.[wandb]'" in lines[0] and "logger.wandb" in lines[0]
    assert not (tmp_path / "run").exists()


def test_an_empty_project_name_is_refused():
    with pytest.raises(ConfigError, match="logger.wandb_project"):
        precheck(["+experiment=smoke", "logger.wandb_project=' '"])
