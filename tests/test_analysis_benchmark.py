"""The load benchmark runs and its three readers agree (timings are reported, never asserted)."""

from tmexp.bench import analysis as benchmark


def test_benchmark_readers_agree_on_a_small_set():
    result = benchmark.run(runs=2, points=300, repeat=1)
    assert result["identical"] is True
    assert result["rows"] == 2 * 300 * len(benchmark.TAGS)
    assert result["tmexp_s"] > 0 and result["tbparse_s"] > 0


def test_benchmark_main_prints_json(capsys):
    import json

    assert benchmark.main(["--json", "--runs", "1", "--points", "50", "--repeat", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["identical"] is True
