"""The experiment report: runs.yaml in, README.md with the published structure and figures out."""

import re

import pytest

from tmexp import report
from tmexp.analysis.study import ReportError, read_spec
from tmexp.analysis.synthetic import training_rows, write_run_dir

SECTIONS = [
    "## The question",
    "## The runs",
    "## Key findings",
    "## Wall time and the machine",
    "## Figures",
    "## Recommendation",
    "## Conclusions",
]
TABLE_SECTIONS = ["## Run analysis", "## Detailed metrics", "## Configuration changes", "## Hardware"]


def read_both(folder):
    return (folder / "README.md").read_text(), (folder / "tables.md").read_text()


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    meta = {
        "host": "box",
        "platform": "Linux",
        "cpu": "x86",
        "cpu_count": 16,
        "gpu": "RTX 4090",
        "torch": "2.13",
        "python": "3.11",
        "tmexp": "0.1.0",
        "git_commit": "abc123",
        "started_at": "2026-11-24T10:00:00",
    }
    # baseline: 40 minutes, slower; candidate: 30 minutes, faster
    write_run_dir(
        root / "base",
        training_rows(minutes=40, seed=0, best_end_s=26.0),
        config={"seed": 0, "btr": {"use_munchausen": False}, "performance": {"gpu_collectors_count": 8}},
        meta=meta,
    )
    write_run_dir(
        root / "cand",
        training_rows(minutes=30, seed=1, best_end_s=24.0),
        config={"seed": 0, "btr": {"use_munchausen": True}, "performance": {"gpu_collectors_count": 8}},
    )
    for s in range(3):
        write_run_dir(
            root / f"group{s}",
            training_rows(minutes=30, seed=10 + s, best_end_s=24.0 + 0.1 * s),
            config={"seed": s, "btr": {"use_munchausen": True}, "performance": {"gpu_collectors_count": 8}},
        )
    return root


def make_experiment(tmp_path, runs_root, body):
    folder = tmp_path / "experiments" / "demo"
    folder.mkdir(parents=True)
    (folder / "runs.yaml").write_text(body.format(root=runs_root))
    return folder


def test_report_for_two_runs(tmp_path, runs_root):
    folder = make_experiment(
        tmp_path,
        runs_root,
        """
title: Munchausen on the demo map
description: Does Munchausen help?
steps: [1M, 2M]
runs:
  - {{label: base, path: {root}/base, baseline: true}}
  - {{label: munchausen, path: {root}/cand}}
""",
    )
    assert report.main([str(folder)]) == 0
    text, full = read_both(folder)
    assert text.startswith("# Experiment: Munchausen on the demo map")
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions) and len(text.splitlines()) <= 300
    positions = [full.index(s) for s in TABLE_SECTIONS]
    assert positions == sorted(positions)
    assert "Does Munchausen help?" in text and "**base** (baseline)" in text and "[tables.md](tables.md)" in text
    assert "common window shared by all runs (30 wall minutes" in text
    assert re.search(
        r"\*\*By wall time, at (end )?30(\.\d+)? min \(the end of the common window\)\*\*, best A01 time "
        r"so far \(s\): base \d+\.\d{3} \(single seed\); munchausen \d+\.\d{3} \(single seed\)\.",
        text,
    )
    assert "**By frames, at 2M (the last common checkpoint)**" in text
    # single runs: no comparison, so no verdict; the recommendation says why
    findings = text.split("## Key findings")[1].split("## Wall time")[0]
    assert "Against the" not in findings and "p(Holm)" not in findings
    assert "Fewer than 5 seeds (no verdict is possible): base, munchausen" in text
    # each figure of the full tables follows its table and exists; PNG by default
    for doc in (text, full):
        figures = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", doc)
        assert figures and all((folder / f).is_file() and f.endswith(".png") for f in figures)
    table_end = full.index("| end 30.00 min |") if "| end 30.00 min |" in full else full.index("| 30 min |")
    assert full.index("figures/best_time_A01_by_wall.png") > table_end
    # config diff and hardware, in the full tables
    assert "| btr.use_munchausen | False | True |" in full
    assert "gpu_collectors_count" not in full.split("## Configuration changes")[1].split("## Hardware")[0]
    assert "RTX 4090" in full and "Not recorded (no run_meta.json): munchausen" in full
    assert "(single seed)" not in full  # no seed groups, no group tables


def test_report_with_a_seed_group_keeps_conclusions(tmp_path, runs_root):
    folder = make_experiment(
        tmp_path,
        runs_root,
        """
runs:
  - label: base
    path: {root}/base
    baseline: true
  - label: btr
    paths: [{root}/group0, {root}/group1, {root}/group2]
""",
    )
    assert report.main([str(folder)]) == 0
    text, full = read_both(folder)
    assert "**btr**: 3 seeds" in text
    assert re.search(r"btr \| 3 \| median \d+\.\d{3} \(seeds \d+\.\d{3}, \d+\.\d{3}, \d+\.\d{3}\)", full)
    assert "base | 1 | " in full and "(single seed)" in full
    assert re.search(
        r"Against the baseline base: \*\*too few seeds\*\* for btr \([+-]\d+\.\d{3} s, p\(Holm\) "
        r"\d\.\d{3}, P\(faster\) \d\.\d{2}\)\.",
        text,
    )
    assert "disjoint" not in text + full and "overlap" not in text + full
    # a researcher's conclusions survive regeneration
    readme = folder / "README.md"
    readme.write_text(readme.read_text().replace("_To be written by the researcher._", "Munchausen wins here."))
    assert report.main([str(folder)]) == 0
    assert "Munchausen wins here." in readme.read_text()


def test_an_ablation_study_compares_every_group_with_its_reference_too(tmp_path, runs_root):
    for s in range(5):  # the full bundle: slower than the btr group, faster than the baseline
        write_run_dir(
            runs_root / f"full{s}",
            training_rows(minutes=30, seed=40 + s, best_end_s=25.0 + 0.1 * s),
            config={"seed": s, "btr": {"use_munchausen": True, "use_noisy_linear": True}},
        )
        write_run_dir(
            runs_root / f"base{s}",
            training_rows(minutes=30, seed=50 + s, best_end_s=27.0 + 0.1 * s),
            config={"seed": s, "btr": {"use_munchausen": False, "use_noisy_linear": False}},
        )
        write_run_dir(
            runs_root / f"ablated{s}",
            training_rows(minutes=30, seed=60 + s, best_end_s=24.0 + 0.1 * s),
            config={"seed": s, "btr": {"use_munchausen": True}},
        )
    folder = make_experiment(
        tmp_path,
        runs_root,
        """
by: [frames, updates]
published:
  source: a report
  by_wall: the bundle ahead
runs:
  - label: v2
    paths: [{root}/base0, {root}/base1, {root}/base2, {root}/base3, {root}/base4]
    baseline: true
  - label: no_noisy
    paths: [{root}/ablated0, {root}/ablated1, {root}/ablated2, {root}/ablated3, {root}/ablated4]
  - label: full
    paths: [{root}/full0, {root}/full1, {root}/full2, {root}/full3, {root}/full4]
    reference: true
""",
    )
    assert report.main([str(folder)]) == 0
    text, full = read_both(folder)
    assert "**full** (reference)" in text and "**v2** (baseline)" in text
    whole = text.split("**Over each whole run**")[1].split("## ")[0]
    # 24.x against 25.x against 27.x in every seed, 5 seeds each: the permutation test establishes both
    assert re.search(
        r"Against the baseline v2: \*\*established\*\* for no_noisy \(faster, -\d\.\d{3} s "
        r"\[-\d\.\d{3}, -\d\.\d{3}\], p\(Holm\) 0\.0\d\d, P\(faster\) 1\.00\), full \(faster",
        whole,
    )
    assert re.search(r"Against the reference full: \*\*established\*\* for no_noisy \(faster", whole)
    assert "v2 (" not in whole.split("Against the reference full:")[1]  # the baseline is not compared with the ref
    assert "best_time_A01: groups against the reference full by updates" in full
    assert "IQM " in full and "(5 seeds)" in full
    assert "## Against the published report" in text and "the bundle ahead. Here, " in text
    # at the checkpoints, Holm over the whole table (every checkpoint x every group) asks more than 5 seeds give
    assert re.search(
        r"Verdicts of full against v2 over these checkpoints: \d+ not established; so this study "
        r"neither confirms nor contradicts",
        text,
    )
    assert "figures/best_time_A01_intervals.png" in text
    (folder / "runs.yaml").write_text("runs:\n  - {label: a, path: x, reference: true}\n  - {label: b, path: y}\n")
    with pytest.raises(ReportError, match="reference group is the baseline"):
        read_spec(folder)


def test_report_before_any_finish_compares_distances(tmp_path, runs_root):
    # Nobody finishes within 20 minutes (first finish at minute 99): the best time is the cutoff, distance is not.
    for k, track in enumerate((800.0, 800.0, 800.0, 400.0, 400.0, 400.0)):
        write_run_dir(
            runs_root / f"unfinished{k}",
            training_rows(minutes=20, seed=20 + k, first_finish_min=99.0, track_m=track),
            config={"seed": k % 3, "nn": {"big": track > 500}},
        )
    folder = make_experiment(
        tmp_path,
        runs_root,
        """
by: [frames, updates]
runs:
  - label: small
    paths: [{root}/unfinished3, {root}/unfinished4, {root}/unfinished5]
    baseline: true
  - label: big
    paths: [{root}/unfinished0, {root}/unfinished1, {root}/unfinished2]
""",
    )
    assert report.main([str(folder)]) == 0
    text, full = read_both(folder)
    findings = text.split("## Key findings")[1].split("## Wall time")[0]
    sentence = re.search(
        r"\*\*By wall time, at (end )?20(\.\d+)? min \(the end of the common window\)\*\*, "
        r"furthest eval race so "
        r"far \(m; some run has not finished yet\): small median (\d+\.\d) .*; big median (\d+\.\d) ",
        findings,
    )
    assert sentence and float(sentence[4]) > 1.5 * float(sentence[3])  # big's races reach about twice as far
    assert re.search(
        r"Against the baseline small: \*\*too few seeds\*\* for big \(\+\d+\.\d m, p\(Holm\) "
        r"\d\.\d{3}, P\(further\) 1\.00\)",
        findings,
    )
    assert "furthest_eval_A01: groups against the baseline small by wall time" in full
    assert "## furthest eval race across seeds" in full.replace("#### ", "## ")
    assert (folder / "figures/furthest_eval_A01_by_wall.png").is_file()
    assert re.search(r"\| run \|.*\| furthest_eval_m \|", full)  # the run table has the distance column
    assert "### By steps (frames)" in full and "### By steps (updates)" in full
    assert "Common window by updates: 500K updates" in full
    assert (folder / "figures/furthest_eval_A01_intervals.png").is_file()


@pytest.mark.parametrize(
    "body,message",
    [
        (None, "runs.yaml not found"),
        ("runs: []", "non-empty 'runs:' list"),
        ("runs:\n  - {{label: a}}", "exactly one of path / paths"),
        ("runs:\n  - {{label: a, path: nowhere}}", "exists neither"),
        ("steps: [ten]\nruns:\n  - {{label: a, path: {root}/base}}", "cannot read step count"),
        ("by: [frames, hours]\nruns:\n  - {{label: a, path: {root}/base}}", "by must be one of frames, updates"),
        ("metrics: [loss]\nall_scalars: true\nruns:\n  - {{label: a, path: {root}/base}}", "not both"),
        ("metrics: [Training/los]\nruns:\n  - {{label: a, path: {root}/base}}", "did you mean 'Training/loss'"),
    ],
)
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
        (folder / "runs.yaml").write_text(
            "runs:\n  - {label: a, path: base, baseline: true}\n  - {label: b, path: base, baseline: true}\n"
        )
        read_spec(folder)


def test_report_lists_runs_without_data_and_takes_any_tag(tmp_path, runs_root):
    write_run_dir(runs_root / "crashed", [], config={"seed": 0}, status={"status": "failed"})
    folder = make_experiment(
        tmp_path,
        runs_root,
        """
metrics: [Training/loss, Performance/learner_percentage_training]
runs:
  - {{label: base, path: {root}/base, baseline: true}}
  - {{label: crashed, path: {root}/crashed}}
""",
    )
    assert report.main([str(folder)]) == 0
    readme, text = read_both(folder)
    assert "Runs with no data: crashed (no event files (status: failed))." in readme
    assert "| crashed | 0 | 0 | no data: no event files (status: failed) |" in text
    assert "- Runs with no data (in the run table only): crashed (no event files (status: failed))." in text
    detailed = text.split("## Detailed metrics")[1].split("## Configuration changes")[0]
    titles = re.findall(r"^#### (.*)$", detailed, flags=re.M)
    assert titles == [
        f"{what} by {axis}"
        for axis in ("wall time", "frames")
        for what in (
            "training loss (Training/loss, last value)",
            "learner busy time, % (Performance/learner_percentage_training, last value)",
        )
    ]
    assert "figures/loss_by_wall.png" in detailed and "best_time" not in detailed


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


def test_several_maps_get_their_own_findings_tables_and_figures(tmp_path, runs_root):
    for s in range(2):  # a map cycle: each run logs the usual per-map tags of both maps
        rows = training_rows(minutes=20, seed=70 + s, map_name="A01") + training_rows(
            minutes=20, seed=80 + s, map_name="B02", best_start_s=40.0, best_end_s=35.0
        )
        write_run_dir(runs_root / f"cycle{s}", sorted(rows, key=lambda r: (r[1], r[2])), config={"seed": s})
    folder = make_experiment(
        tmp_path,
        runs_root,
        """
runs:
  - {{label: single, path: {root}/base, baseline: true}}
  - {{label: cycle, paths: [{root}/cycle0, {root}/cycle1]}}
""",
    )
    assert report.main([str(folder)]) == 0
    text, full = read_both(folder)
    findings = text.split("## Key findings")[1].split("## Wall time")[0]
    assert "### A01" in findings and "### B02" in findings
    assert "best B02 time so far (s): cycle median" in findings.split("### B02")[1]
    assert "best_time_B02 across seeds by wall time" in full and "best_time_A01 across seeds by wall time" in full
    assert "figures/best_time_B02_intervals.png" in text and (folder / "figures/best_time_B02_by_wall.png").is_file()


def test_published_comparison_names_what_the_study_establishes(tmp_path, runs_root):
    # 10 seeds each; the bundle's every seed finishes 3 s faster than every baseline seed from minute 4 on
    for s in range(10):
        write_run_dir(
            runs_root / f"pub_base{s}",
            training_rows(minutes=20, seed=70 + s, first_finish_min=4.0, best_end_s=27.0 + 0.02 * s),
            config={"seed": s, "btr": {"use_munchausen": False}},
        )
        write_run_dir(
            runs_root / f"pub_btr{s}",
            training_rows(minutes=20, seed=90 + s, first_finish_min=4.0, best_start_s=27.0, best_end_s=24.0 + 0.02 * s),
            config={"seed": s, "btr": {"use_munchausen": True}},
        )
    base = ", ".join(f"{{root}}/pub_base{s}" for s in range(10))
    btr = ", ".join(f"{{root}}/pub_btr{s}" for s in range(10))
    folder = make_experiment(
        tmp_path,
        runs_root,
        f"""
by: [frames]
published:
  source: a report
  by_wall: the bundle ahead early
  by_steps: the baseline ahead
runs:
  - label: v2
    paths: [{base}]
    baseline: true
  - label: btr
    paths: [{btr}]
    reference: true
""",
    )
    assert report.main([str(folder)]) == 0
    text, _ = read_both(folder)
    published = text.split("## Against the published report")[1].split("## ")[0]
    # where the seeds separate, the verdict is "established" and the summary names the axis, the moment and the side
    assert "established, P(faster) 1.00" in published
    summary = published.split("Verdicts of btr against v2 over these checkpoints:")[1]
    assert re.search(r"\d+ established", summary)
    assert re.search(r"established here: by (wall time|frames) at [^;]+, btr faster by \d\.\d{3} s", summary)
    assert "neither confirms nor contradicts" not in summary
    assert "slower by" not in summary  # the bundle is never the slower one in any seed
