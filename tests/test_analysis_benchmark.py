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


def test_benchmark_times_split_folder_discovery():
    """Split runs are given by their first folder: the rows only add up if the `<run>_2` folders are found."""
    result = benchmark.run(runs=3, points=200, repeat=1, split_every=2)
    assert result["split_runs"] == 2
    assert result["rows"] == 3 * 200 * len(benchmark.TAGS)
    assert result["identical"] is True
