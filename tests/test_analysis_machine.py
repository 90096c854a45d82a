"""Wall time without the machine's noise: rate flags, launches, load, and the projected wall-time axis."""

import json

import pytest

from tmexp.analysis import loading, machine, pipeline, tables
from tmexp.analysis.synthetic import training_rows, write_run_dir
from tmexp.core import metrics


def _with_rate(rows, rate, load=None):
    extra = [(metrics.UPDATES_PER_S, step, wall, rate) for tag, step, wall, _ in rows if tag == metrics.LOSS]
    if load is not None:
        extra += [(metrics.LOAD_AVERAGE, step, wall, load) for tag, step, wall, _ in rows if tag == metrics.LOSS]
    return rows + extra


@pytest.fixture(scope="module")
def runset(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for s, (rate, sweep) in enumerate([(20.0, "one"), (21.0, "one"), (26.0, "two")]):  # 26 is +24 % from 21
        write_run_dir(
            root / f"a{s}",
            _with_rate(training_rows(minutes=10, seed=s), rate, load=1.0 + s),
            config={"seed": s, "arm": "a", "training": {"batch_size": 64}},
            status={"sweep": sweep},
            meta={"started_at": f"2026-12-02T1{s}:00:00"},
        )
    # an older run: no updates_per_second, its rate from transitions learned per second / batch size
    rows = training_rows(minutes=10, seed=9)
    rows += [
        (metrics.TRANSITIONS_LEARNED_PER_S, step, wall, 640.0) for tag, step, wall, _ in rows if tag == metrics.LOSS
    ]
    write_run_dir(
        root / "b0", rows, config={"seed": 0, "arm": "b", "training": {"batch_size": 64}}, status={"sweep": "one"}
    )
    return loading.load_runs(root, workers=1)


GROUPS = {"a": ["a0", "a1", "a2"], "b": ["b0"]}


def test_a_run_far_from_its_groups_rate_is_flagged_and_launches_are_named(runset):
    table = machine.machine_table(runset, GROUPS)
    assert table.loc["a2", "flag"] and not table.loc["a0", "flag"] and not table.loc["a1", "flag"]
    assert table.loc["a2", "vs_group_median"] == pytest.approx(26 / 21 - 1)
    assert table.loc["b0", "updates_per_s"] == pytest.approx(10.0)
    assert table.loc["b0", "from"] == "transitions_learned_per_second / batch_size"
    assert table.loc["a1", "load_average"] == pytest.approx(2.0)
    text = " ".join(machine.machine_sentences(table))
    assert "a2 (26.0 updates/s, +24%)" in text and "2 launches" in text and "a: one, two" in text
    assert "load average per run: 1.00 to 3.00 (3 of 4 runs logged it)" in text


def test_the_projected_axis_places_updates_by_each_groups_cost(runset):
    options = pipeline.Options(interval=1, step_axes=("updates",), cost_per_update={"a": 0.06, "b": 0.03})
    analysis = pipeline.analyse(runset, options, GROUPS)
    projected, by_updates = analysis.by_projected, analysis.by_steps[0]
    assert projected is not None and projected in analysis.comparisons
    for run, cost in (("a0", 0.06), ("b0", 0.03)):
        got = projected.data[projected.data["run"] == run].sort_values(["tag", "step"])["x"].to_numpy()
        want = by_updates.data[by_updates.data["run"] == run].sort_values(["tag", "step"])["x"].to_numpy()
        assert got == pytest.approx(want * cost / 60.0, nan_ok=True)
    assert tables.checkpoint_label(projected.checkpoints[0], tables.PROJECTED) == "1 min"
    # the report's tables of the projected axis say how its races were placed (by their updates)
    footers = " ".join(section.footer for section in analysis.comparison_sections(projected) if section.footer)
    assert "projected wall minutes" in footers and "cumul_number_batches_done" in footers


def test_runs_yaml_takes_a_cost_or_the_benchmarks_json(tmp_path):
    from tmexp.analysis.study import ReportError, read_spec

    (tmp_path / "bench.json").write_text(json.dumps({"batch_size": 64, "loop_samples_per_s": 1280.0}))
    (tmp_path / "runs.yaml").write_text(
        "cost_per_update: {a: 0.05, b: bench.json}\nruns:\n  - {label: a, path: x}\n  - {label: b, path: y}\n"
    )
    assert read_spec(tmp_path).cost_per_update == {"a": 0.05, "b": pytest.approx(0.05)}
    (tmp_path / "runs.yaml").write_text("cost_per_update: {c: 0.05}\nruns:\n  - {label: a, path: x}\n")
    with pytest.raises(ReportError, match="names 'c', which is not a label"):
        read_spec(tmp_path)
    (tmp_path / "runs.yaml").write_text("cost_per_update: {a: missing.json}\nruns:\n  - {label: a, path: x}\n")
    with pytest.raises(ReportError, match="learner --json"):
        read_spec(tmp_path)
