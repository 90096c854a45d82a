"""The learner benchmark runs, measures Linesight's network by default and checks its naive twin's size."""

import json

from tmexp.bench import learner as benchmark
from tmexp.bench.__main__ import main as bench_main
from tmexp.bench.param_count import parameter_counts


def test_the_learner_benchmark_prints_its_figures_for_linesights_network(capsys):
    assert benchmark.main(["--batch-size", "4", "--rounds", "1", "--iters", "1", "--warmup", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["experiment"] == "A01_v2" and result["img_shape"] == [1, 64, 64]
    assert result["parameters"] == parameter_counts()["A01_v2"]["total"]  # not the CPU-sized default network
    assert result["samples_per_s"] > 0 and result["naive_samples_per_s"] > 0 and result["speedup_vs_naive"] > 0


def test_a_bad_benchmark_argument_is_one_line_and_exit_2(capsys):
    assert benchmark.main(["--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err


def test_an_unknown_experiment_is_one_line_and_exit_2(capsys):
    assert benchmark.main(["--experiment", "A01_v9"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--experiment 'A01_v9' is unknown" in err and "A01_v4_btr" in err


def test_the_bench_command_names_its_benchmarks_and_refuses_an_unknown_one(capsys):
    assert bench_main(["--help"]) == 0
    listed = capsys.readouterr().err
    assert all(name in listed for name in ("sim", "learner", "analysis", "sweep", "params"))
    assert bench_main(["nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
