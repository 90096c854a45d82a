"""User mistakes end in one clear line naming the key or file, before any run directory or process exists."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tmexp.train import precheck
from tmexp.validation import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def bad_npy(tmp_path):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros((50, 2)))
    return str(path)


CASES = [
    # (id, overrides, text the message must contain)
    ("unknown_key", ["training.batch_sizee=3"], "batch_sizee"),
    ("wrong_type", ["training.batch_size=abc"], "batch_size"),
    ("unknown_group_option", ["nn=huge"], "huge"),
    ("unknown_experiment", ["+experiment=nope"], "nope"),
    ("negative_batch_size", ["training.batch_size=-5"], "training.batch_size"),
    ("odd_iqn_n", ["nn.iqn_n=7"], "nn.iqn_n"),
    ("schedule_not_at_zero", ["training.lr_schedule=[[10,0.001],[20,0.0001]]"], "training.lr_schedule"),
    ("schedule_not_increasing", ["exploration.epsilon_schedule=[[0,1.0],[0,0.5]]"], "exploration.epsilon_schedule"),
    ("epsilon_above_one", ["exploration.epsilon_schedule=[[0,1.5]]"], "exploration.epsilon_schedule"),
    ("gamma_above_one", ["training.gamma_schedule=[[0,1.2]]"], "training.gamma_schedule"),
    (
        "mini_race_shorter_than_an_action",
        ["training.temporal_mini_race_duration_ms=20"],
        "training.temporal_mini_race_duration_ms",
    ),
    ("missing_reference_line", ["map.reference_line_path=/nonexistent/line.npy"], "/nonexistent/line.npy"),
    ("bad_reference_line", ["map.reference_line_path={bad_npy}"], "bad.npy"),
    ("unwritable_output_dir", ["hydra.run.dir=/proc/tmexp-cannot-write/run"], "/proc/tmexp-cannot-write/run"),
    ("no_collectors", ["performance.gpu_collectors_count=0"], "performance.gpu_collectors_count"),
    ("negative_job_slots", ["performance.job_slots=-1"], "performance.job_slots"),
    ("zero_cars_per_collector", ["performance.cars_per_collector=0"], "performance.cars_per_collector"),
    ("negative_cars_per_collector", ["performance.cars_per_collector=-4"], "performance.cars_per_collector"),
    ("cars_per_collector_not_an_int", ["performance.cars_per_collector=2.5"], "performance.cars_per_collector"),
    ("several_cars_per_game", ["env=tmi", "performance.cars_per_collector=4"], "performance.cars_per_collector"),
    ("unknown_backend", ["env.backend=carla"], "env.backend"),
    ("unknown_cnn", ["nn.vis.cnn.type=resnet"], "nn.vis.cnn.type"),
    ("unknown_optimizer", ["training.optimizer=sgd"], "training.optimizer"),
    (
        "numbered_cuda_device",
        ["performance.device=cuda:1"],
        "performance.device is 'cuda:1': choose one of auto, cpu, cuda",
    ),
    ("zero_n_steps", ["training.n_steps=0"], "training.n_steps"),
    ("start_learn_above_capacity", ["memory.memory_size_schedule=[[0,[100,200]]]"], "memory.memory_size_schedule"),
    (
        "batch_above_capacity",
        ["training.batch_size=600", "memory.memory_size_schedule=[[0,[500,100]]]"],
        "training.batch_size",
    ),
    ("zero_soft_update_tau", ["nn.soft_update_tau=0"], "nn.soft_update_tau"),
    ("negative_max_frames", ["training.max_frames=-1"], "training.max_frames"),
    ("game_not_configured", ["env=tmi"], "env.tmi.launch_command"),
    ("bad_value_inside_a_sweep", ["--multirun", "training.batch_size=32,-1"], "training.batch_size"),
    ("negative_max_retries", ["performance.max_retries=-1"], "performance.max_retries"),
    ("save_replay_not_a_bool", ["training.save_replay=maybe"], "training.save_replay"),
    ("min_replay_ratio_above_the_max", ["training.min_replay_ratio=64"], "training.min_replay_ratio"),
    ("negative_min_replay_ratio", ["training.min_replay_ratio=-1"], "training.min_replay_ratio"),
    ("zero_size_scale", ["nn.size_scale=0"], "nn.size_scale"),
    ("zero_input_pool", ["nn.vis.cnn.input_pool=0"], "nn.vis.cnn.input_pool"),
]


@pytest.mark.parametrize("overrides, must_contain", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(overrides, must_contain, tmp_path):
    overrides = [o.format(bad_npy=bad_npy(tmp_path)) if "{bad_npy}" in o else o for o in overrides]
    with pytest.raises(ConfigError) as info:
        precheck(overrides)
    message = str(info.value)
    assert must_contain in message
    assert "\n" not in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda():
    with pytest.raises(ConfigError, match="performance.device"):
        precheck(["performance.device=cuda"])


@pytest.mark.parametrize(
    "override",
    ["training.batch_size=-5", "nn=huge", "map.reference_line_path=/nope.npy", "performance.cars_per_collector=0"],
)
def test_cli_exits_non_zero_with_one_line_and_no_run_directory(override, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "tmexp.train", override, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tmexp.train: error:")
    assert not run_dir.exists()


def test_a_config_built_in_code_gets_the_same_closed_set_check():
    from tmexp.config import Config
    from tmexp.validation import check_config

    cfg = Config()
    cfg.nn.vis.cnn.type = "resnet"
    with pytest.raises(ConfigError, match=r"^nn.vis.cnn.type is 'resnet': choose one of linesight, impala.$"):
        check_config(cfg)


def test_resuming_a_run_directory_with_another_network_is_refused(tmp_path):
    from omegaconf import OmegaConf

    from tmexp.compose import compose_config

    run_dir = tmp_path / "run"
    (run_dir / "checkpoint").mkdir(parents=True)
    torch.save({"online": {}}, run_dir / "checkpoint" / "latest.pt")  # readable; precheck reads nothing more
    cfg = compose_config(["+experiment=smoke"])
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    precheck(["+experiment=smoke", f"hydra.run.dir={run_dir}"])  # same network: resumes
    with pytest.raises(ConfigError, match="nn"):
        precheck(["+experiment=smoke", "nn.dense_hidden_dimension=128", f"hydra.run.dir={run_dir}"])


def test_a_sweep_with_its_own_subdir_layout_checks_the_directories_it_will_resume(tmp_path):
    from omegaconf import OmegaConf

    from tmexp.compose import compose_config

    job_dir = tmp_path / "sweep" / "smoke_run" / "seed1"  # hydra.sweep.subdir=${run_name}/seed${seed}, job seed=1
    (job_dir / "checkpoint").mkdir(parents=True)
    torch.save({"online": {}}, job_dir / "checkpoint" / "latest.pt")
    cfg = compose_config(["+experiment=smoke", "seed=1", "run_name=smoke_run"])
    (job_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    sweep = [
        "--multirun",
        "+experiment=smoke",
        "seed=0,1",
        "run_name=smoke_run",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.sweep.subdir=${run_name}/seed${seed}",
    ]
    assert precheck(sweep) == 2
    with pytest.raises(ConfigError, match="nn"):
        precheck(sweep + ["nn.dense_hidden_dimension=128"])


def test_a_sweep_that_narrows_its_experiments_params_checks_the_jobs_hydra_will_run(tmp_path):
    """The command line's ablation= replaces the experiment's list in its place (Hydra's BasicSweeper): no job
    composes both, and the seeds stay the outer loop."""
    from tmexp.launch.precheck import _multirun_jobs

    sweep = ["+experiment=A01_cpu_btr_ablation", "ablation=no_btr,none"]
    jobs, searching = _multirun_jobs(sweep)
    assert not searching
    assert [[o for o in job if not o.startswith("+experiment")] for job in jobs] == [
        [f"seed={seed}", f"ablation={arm}"] for seed in (0, 1, 2) for arm in ("no_btr", "none")
    ]
    assert precheck(["--multirun", *sweep, f"hydra.sweep.dir={tmp_path / 'sweep'}"]) == 6


def test_appending_a_group_the_experiment_already_chooses_says_to_drop_the_plus(tmp_path):
    with pytest.raises(ConfigError, match=r"^\+ablation=no_btr,none: .* write ablation=no_btr,none without the \+\.$"):
        precheck(
            ["--multirun", "+experiment=A01_cpu_btr_ablation", "+ablation=no_btr,none", f"hydra.sweep.dir={tmp_path}"]
        )
