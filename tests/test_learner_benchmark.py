"""The learner benchmark measures what a run trains: the default run's network, or an experiment's, at its sizes."""

import json

import pytest

from tmexp.bench import learner as benchmark
from tmexp.bench.__main__ import main as bench_main
from tmexp.compose import compose_config
from tmexp.core.networks import build_network, count_parameters
from tmexp.envs.base import n_floats

QUICK = ["--rounds", "1", "--iters", "1", "--warmup", "0", "--json"]


def run_json(capsys, *argv) -> dict:
    assert benchmark.main([*QUICK, *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_by_default_it_measures_the_default_runs_network_at_its_batch_size(capsys):
    result = run_json(capsys)
    cfg = compose_config([])
    assert result["experiment"] == "default" and result["img_shape"] == [1, 48, 48]
    assert result["float_dim"] == n_floats(cfg.env) == 149 and not result["mini_race"]
    assert result["batch_size"] == cfg.training.batch_size == 64
    assert result["threads"] == cfg.performance.torch_threads_learner
    assert result["parameters"] == count_parameters(build_network(cfg.nn, cfg.btr, (1, 48, 48), 149))
    assert result["samples_per_s"] > 0 and result["loop_samples_per_s"] > 0 and result["naive_samples_per_s"] > 0
    assert result["speedup_vs_naive"] > 0 and result["loop_vs_step"] > 0


def test_the_float_count_follows_the_run_mini_race_time_included(capsys):
    result = run_json(capsys, "--no-naive", "training.temporal_mini_race_duration_ms=7000")
    assert result["float_dim"] == 150 and result["mini_race"]  # the mini-race time is the network's first float
    result = run_json(capsys, "--no-naive", "env.n_zone_centers_in_inputs=10")
    assert result["float_dim"] == 149 - 3 * 30


def test_an_experiment_is_composed_with_its_image_size_and_the_runs_float_count(capsys):
    result = run_json(capsys, "--experiment", "A01_v2", "--batch-size", "4")
    cfg = compose_config(["+experiment=A01_v2"])
    assert result["experiment"] == "A01_v2" and result["img_shape"] == [1, 64, 64] and result["batch_size"] == 4
    assert result["float_dim"] == n_floats(cfg.env)
    assert result["parameters"] == count_parameters(build_network(cfg.nn, cfg.btr, (1, 64, 64), n_floats(cfg.env)))


def test_vs_baseline_times_the_published_baseline_beside_the_experiment(capsys):
    result = run_json(capsys, "--experiment", "A01_v4_btr", "--vs-baseline", "--batch-size", "2", "--no-naive")
    assert result["experiment"] == "A01_v4_btr" and result["baseline_samples_per_s"] > 0
    assert result["cost_per_sample_vs_baseline"] > 0 and result["baseline"] == "A01_as20_long_v2"


def test_the_cpu_scale_family_is_timed_against_its_own_baseline(capsys):
    result = run_json(capsys, "--experiment", "A01_cpu_btr", "--vs-baseline", "--batch-size", "2", "--no-naive")
    assert result["baseline"] == "A01_cpu_v2" and result["img_shape"] == [1, 48, 48]
    named = run_json(
        capsys,
        "--experiment",
        "A01_cpu_btr",
        "--vs-baseline",
        "A01_v2",
        "--batch-size",
        "2",
        "--no-naive",
        "--rounds",
        "1",
    )
    assert named["baseline"] == "A01_as20_long_v2"


def test_a_bad_benchmark_argument_is_one_line_and_exit_2(capsys):
    assert benchmark.main(["--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, named", [(["--experiment", "A01_v9"], "A01_v9"), (["training.batch_sise=3"], "batch_sise")]
)
def test_an_unknown_experiment_or_key_is_one_line_and_exit_2(capsys, argv, named):
    assert benchmark.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("tmexp.bench learner: error:") and named in err


def test_the_bench_command_names_its_benchmarks_and_refuses_an_unknown_one(capsys):
    assert bench_main(["--help"]) == 0
    listed = capsys.readouterr().err
    assert all(name in listed for name in ("sim", "learner", "learning", "analysis", "sweep", "params"))
    assert bench_main(["nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
