"""The learner benchmark runs, measures Linesight's network by default and checks its naive twin's size."""

import json

from tmexp.core import benchmark
from tmexp.core.params import parameter_counts


def test_the_learner_benchmark_prints_its_figures_for_linesights_network(capsys):
    assert benchmark.main(["--batch-size", "4", "--rounds", "1", "--iters", "1", "--warmup", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["experiment"] == "A01_v2" and result["img_shape"] == [1, 64, 64]
    assert result["parameters"] == parameter_counts()["A01_v2"]["total"]  # not the CPU-sized default network
    assert result["samples_per_s"] > 0 and result["naive_samples_per_s"] > 0 and result["speedup_vs_naive"] > 0


def test_a_bad_benchmark_argument_is_one_line_and_exit_2(capsys):
    assert benchmark.main(["--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err
