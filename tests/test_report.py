"""The experiment report: runs.yaml in, README.md with the published structure and figures out."""

import re

import pytest

from tmexp import report
from tmexp.analysis.study import ReportError, read_spec
from tmexp.analysis.synthetic import training_rows, write_run_dir

SECTIONS = ["## Experiment overview", "## Key results", "## Run analysis", "## Detailed metrics",
            "## Configuration changes", "## Hardware", "## Conclusions"]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    meta = {"host": "box", "platform": "Linux", "cpu": "x86", "cpu_count": 16, "gpu": "RTX 4090", "torch": "2.13",
            "python": "3.11", "tmexp": "0.1.0", "git_commit": "abc123", "started_at": "2026-11-24T10:00:00"}
    # baseline: 40 minutes, slower; candidate: 30 minutes, faster
    write_run_dir(root / "base", training_rows(minutes=40, seed=0, best_end_s=26.0),
                  config={"seed": 0, "btr": {"use_munchausen": False}, "performance": {"gpu_collectors_count": 8}},
                  meta=meta)
    write_run_dir(root / "cand", training_rows(minutes=30, seed=1, best_end_s=24.0),
                  config={"seed": 0, "btr": {"use_munchausen": True}, "performance": {"gpu_collectors_count": 8}})
    for s in range(3):
        write_run_dir(root / f"group{s}", training_rows(minutes=30, seed=10 + s, best_end_s=24.0 + 0.1 * s),
                      config={"seed": s, "btr": {"use_munchausen": True}, "performance": {"gpu_collectors_count": 8}})
    return root


def make_experiment(tmp_path, runs_root, body):
    folder = tmp_path / "experiments" / "demo"
    folder.mkdir(parents=True)
    (folder / "runs.yaml").write_text(body.format(root=runs_root))
    return folder


def test_report_for_two_runs(tmp_path, runs_root):
    folder = make_experiment(tmp_path, runs_root, """
title: Munchausen on the demo map
description: Does Munchausen help?
steps: [1M, 2M]
runs:
  - {{label: base, path: {root}/base, baseline: true}}
  - {{label: munchausen, path: {root}/cand}}
""")
    assert report.main([str(folder)]) == 0
    text = (folder / "README.md").read_text()
    assert text.startswith("# Experiment: Munchausen on the demo map")
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert "Does Munchausen help?" in text and "**base** (baseline)" in text
    # key results are generated from the tables: the candidate ends lower at the 30-minute common window
    assert "common window (30 wall minutes)" in text
    assert re.search(r"At the end of the common window .* lowest for \*\*munchausen\*\*", text)
    assert "At 1M frames" in text and "At 2M frames" in text
    # each figure follows its table and exists
    figures = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", text)
    assert figures and all((folder / f).is_file() for f in figures)
    table_end = text.index("| end 30.00 min |") if "| end 30.00 min |" in text else text.index("| 30 min |")
    assert text.index("figures/best_time_A01_by_wall.jpg") > table_end
    # config diff and hardware
    assert "| btr.use_munchausen | False | True |" in text
    assert "gpu_collectors_count" not in text.split("## Configuration changes")[1].split("## Hardware")[0]
    assert "RTX 4090" in text and "Not recorded (no run_meta.json): munchausen" in text
    assert "(single seed)" not in text  # no seed groups, no group statistics


def test_report_with_a_seed_group_keeps_conclusions(tmp_path, runs_root):
    folder = make_experiment(tmp_path, runs_root, """
runs:
  - label: base
    path: {root}/base
    baseline: true
  - label: btr
    paths: [{root}/group0, {root}/group1, {root}/group2]
""")
    assert report.main([str(folder)]) == 0
    text = (folder / "README.md").read_text()
    assert "3 seeds" in text
    assert re.search(r"btr \| 3 \| \d+\.\d{3} \[\d+\.\d{3}, \d+\.\d{3}\] \(3 seeds\)", text)
    assert "base | 1 | " in text and "(single seed)" in text
    assert "Single-seed runs (base) carry no interval" in text
    # a researcher's conclusions survive regeneration
    readme = folder / "README.md"
    readme.write_text(readme.read_text().replace("_To be written by the researcher._", "Munchausen wins here."))
    assert report.main([str(folder)]) == 0
    assert "Munchausen wins here." in readme.read_text()


def test_an_ablation_study_compares_every_group_with_its_reference_too(tmp_path, runs_root):
    for s in range(3):  # the full bundle: slower than the btr group, faster than the baseline
        write_run_dir(runs_root / f"full{s}", training_rows(minutes=30, seed=40 + s, best_end_s=25.0 + 0.1 * s),
                      config={"seed": s, "btr": {"use_munchausen": True, "use_noisy_linear": True}})
        write_run_dir(runs_root / f"base{s}", training_rows(minutes=30, seed=50 + s, best_end_s=27.0 + 0.1 * s),
                      config={"seed": s, "btr": {"use_munchausen": False, "use_noisy_linear": False}})
    folder = make_experiment(tmp_path, runs_root, """
by: [frames, updates]
runs:
  - label: v2
    paths: [{root}/base0, {root}/base1, {root}/base2]
    baseline: true
  - label: no_noisy
    paths: [{root}/group0, {root}/group1, {root}/group2]
  - label: full
    paths: [{root}/full0, {root}/full1, {root}/full2]
    reference: true
""")
    assert report.main([str(folder)]) == 0
    text = (folder / "README.md").read_text()
    assert "**full** (reference)" in text and "**v2** (baseline)" in text
    assert re.search(r"- At [\d.]+K updates \(the last common checkpoint\), the best A01 time so far is lowest for "
                     r"\*\*no_noisy\*\*", text)
    header = next(line for line in text.splitlines() if line.startswith("| group |") and "P(better than" in line)
    assert "P(better than baseline)" in header and "vs full" in header and "P(better than full)" in header
    row = next(line for line in text.splitlines() if line.startswith("| no_noisy |") and "seeds)" in line)
    assert row.rstrip(" |").endswith("1.00")  # 24.x against 25.x, every seed
    assert re.search(r"no_noisy \(.*\) against the reference full \(.*\): the 95 % intervals do not overlap; "
                     r"probability of improvement P\(no_noisy faster\) = 1\.00", text)
    assert "v2 (" not in text.split("against the reference")[0].rsplit("Across seeds,", 1)[-1]  # no baseline vs ref
    (folder / "runs.yaml").write_text("runs:\n  - {label: a, path: x, reference: true}\n  - {label: b, path: y}\n")
    with pytest.raises(ReportError, match="reference group is the baseline"):
        read_spec(folder)


def test_report_before_any_finish_compares_distances(tmp_path, runs_root):
    # Nobody finishes within 20 minutes (first finish at minute 99): the best time is the cutoff, distance is not.
    for k, track in enumerate((800.0, 800.0, 800.0, 400.0, 400.0, 400.0)):
        write_run_dir(runs_root / f"unfinished{k}", training_rows(minutes=20, seed=20 + k, first_finish_min=99.0,
                                                                  track_m=track),
                      config={"seed": k % 3, "nn": {"big": track > 500}})
    folder = make_experiment(tmp_path, runs_root, """
by: [frames, updates]
runs:
  - label: small
    paths: [{root}/unfinished3, {root}/unfinished4, {root}/unfinished5]
    baseline: true
  - label: big
    paths: [{root}/unfinished0, {root}/unfinished1, {root}/unfinished2]
""")
    assert report.main([str(folder)]) == 0
    text = (folder / "README.md").read_text()
    key_results = text.split("## Key results")[1].split("## Run analysis")[0]
    assert "lowest for" not in key_results  # no finished race, no time ranking
    # the distance ranking: big's races reach about twice as far
    sentence = re.search(r"At the end of the common window \(20 wall minutes\), the furthest eval race so far "
                         r"\(Race/eval_race_progress_trained_A01\) is longest for \*\*big\*\* \((\d+\.\d) m IQM "
                         r"over 3 seeds\), then small \((\d+\.\d) m", text)
    assert sentence and float(sentence[1]) > 1.5 * float(sentence[2])
    assert re.search(r"the furthest eval race of big .* intervals do not overlap; P\(big further\) = 1\.00", text)
    assert "furthest_eval_A01: groups against small by wall time" in text
    assert "## furthest eval race across seeds" in text.replace("#### ", "## ")
    assert "figures/furthest_eval_A01_by_wall.jpg" in text and (folder / "figures/furthest_eval_A01_by_wall.jpg").is_file()
    assert re.search(r"\| run \|.*\| furthest_eval_m \|", text)  # the run table has the distance column
    # a step table per step axis: frames (the key results' axis) and gradient updates
    assert "### By steps (frames)" in text and "### By steps (updates)" in text
    assert "Common window by updates: 500K updates" in text
    assert (folder / "figures/furthest_eval_A01_by_updates.jpg").is_file()
    assert re.search(r"At 2M frames, the furthest eval race so far .* longest for \*\*big\*\*", key_results)


@pytest.mark.parametrize("body,message", [
    (None, "runs.yaml not found"),
    ("runs: []", "non-empty 'runs:' list"),
    ("runs:\n  - {{label: a}}", "exactly one of path / paths"),
    ("runs:\n  - {{label: a, path: nowhere}}", "exists neither"),
    ("steps: [ten]\nruns:\n  - {{label: a, path: {root}/base}}", "cannot read step count"),
    ("by: [frames, hours]\nruns:\n  - {{label: a, path: {root}/base}}", "by must be one of frames, updates"),
    ("metrics: [loss]\nall_scalars: true\nruns:\n  - {{label: a, path: {root}/base}}", "not both"),
    ("metrics: [Training/los]\nruns:\n  - {{label: a, path: {root}/base}}", "did you mean 'Training/loss'"),
])
def test_bad_runs_yaml_exits_2_with_one_line(tmp_path, runs_root, capsys, body, message):
    folder = tmp_path / "exp"
    folder.mkdir()
    if body is not None:
        (folder / "runs.yaml").write_text(body.format(root=runs_root))
    assert report.main([str(folder)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_relative_paths_resolve_beside_runs_yaml(tmp_path, runs_root):
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "base").symlink_to(runs_root / "base")
    (folder / "runs.yaml").write_text("runs:\n  - {label: a, path: base}\n")
    spec = read_spec(folder)
    assert spec.runs[0].paths == [folder / "base"] and spec.baseline == "a"
    with pytest.raises(ReportError):
        (folder / "runs.yaml").write_text("runs:\n  - {label: a, path: base, baseline: true}\n"
                                          "  - {label: b, path: base, baseline: true}\n")
        read_spec(folder)


def test_ranking_sentences_state_ties_and_unfinished_runs():
    import pandas as pd

    from tmexp.analysis.sentences import ranking_sentence

    groups = {"a": ["a"], "b": ["b"], "c": ["c"]}
    s = ranking_sentence(pd.Series({"a": 25.0, "b": 24.5, "c": 24.5}), groups, "At 10M frames", "the best time")
    assert s == "At 10M frames, the best time is lowest for **b** and **c** (tied) (24.500 s), then a (25.000 s)."
    s = ranking_sentence(pd.Series({"a": 300.0, "b": 300.0, "c": float("nan")}), groups, "At 1M frames", "x")
    assert s == "At 1M frames, no run has finished a race yet (x is the 300 s cutoff)."
    s = ranking_sentence(pd.Series({"a": 25.0, "b": float("nan"), "c": 24.0}), groups, "At 2M frames", "y")
    assert s == "At 2M frames, y is lowest for **c** (24.000 s), then a (25.000 s); none logged yet for b."


def test_report_lists_runs_without_data_and_takes_any_tag(tmp_path, runs_root):
    write_run_dir(runs_root / "crashed", [], config={"seed": 0}, status={"status": "failed"})
    folder = make_experiment(tmp_path, runs_root, """
metrics: [Training/loss, Performance/learner_percentage_training]
runs:
  - {{label: base, path: {root}/base, baseline: true}}
  - {{label: crashed, path: {root}/crashed}}
""")
    assert report.main([str(folder)]) == 0
    text = (folder / "README.md").read_text()
    assert "| crashed | 0 | 0 | no data: no event files (status: failed) |" in text
    assert "- Runs with no data (in the run table only): crashed (no event files (status: failed))." in text
    detailed = text.split("## Detailed metrics")[1].split("## Configuration changes")[0]
    titles = re.findall(r"^#### (.*)$", detailed, flags=re.M)
    assert titles == [f"{what} by {axis}" for axis in ("wall time", "frames") for what in
                      ("training loss (Training/loss, last value)",
                       "learner busy time, % (Performance/learner_percentage_training, last value)")]
    assert "figures/loss_by_wall.jpg" in detailed and "best_time" not in detailed


def test_compare_and_report_share_one_pipeline(tmp_path, runs_root, monkeypatch, capsys):
    from tmexp import compare
    from tmexp.analysis import pipeline

    seen = []
    real = pipeline.analyse
    monkeypatch.setattr(pipeline, "analyse", lambda *a, **k: seen.append(a[1]) or real(*a, **k))
    folder = make_experiment(tmp_path, runs_root, "interval: 5\nruns:\n  - {{label: base, path: {root}/base}}\n")
    assert report.main([str(folder)]) == 0
    assert compare.main([str(runs_root / "base"), "--interval", "5"]) == 0
    capsys.readouterr()
    assert len(seen) == 2 and seen[0].interval == seen[1].interval == 5.0
