"""A study's report regenerates from its export (runs_export.json.gz) when the run directories are gone."""

import gzip
import json
import math
import shutil

import pandas as pd
import pytest

from tmexp import report
from tmexp.analysis import export
from tmexp.analysis.study import load_experiment, read_spec
from tmexp.analysis.synthetic import training_rows, write_events, write_run_dir
from tmexp.core import metrics

RUNS_YAML = """\
title: Export demo
map: A01
interval: 5
by: [frames, updates]
runs:
  - {label: base, path: outputs/base, baseline: true}
  - label: btr
    paths: [outputs/btr/seed0, outputs/btr/seed1, outputs/btr/seed2]
  - {label: linesight, path: outputs/linesight/synA}
  - {label: crashed, path: outputs/crashed}
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Runs of every kind the report reads: a tmexp run with metadata, a seed group, another project's split log
    folder whose learner busy time is a 0-1 fraction (converted on load), and a run that crashed before logging."""
    root = tmp_path_factory.mktemp("template")
    out = root / "outputs"
    meta = {
        "host": "box",
        "platform": "Linux",
        "cpu": "x86",
        "cpu_count": 2,
        "gpu": None,
        "torch": "2.13",
        "python": "3.11",
        "tmexp": "0.1.0",
        "git_commit": "abc123",
        "started_at": "2026-11-24T10:00:00",
    }
    write_run_dir(
        out / "base",
        training_rows(minutes=30, seed=0, best_end_s=26.0),
        config={"seed": 0, "btr": {"use_munchausen": False}, "performance": {"gpu_collectors_count": 2}},
        meta=meta,
        status={"status": "finished", "frames": 3_000_000},
    )
    for s in range(3):
        rows = training_rows(minutes=24 + 2 * s, seed=10 + s, best_end_s=24.0 + s / 10)
        write_run_dir(
            out / "btr" / f"seed{s}",
            rows,
            config={"seed": s, "btr": {"use_munchausen": True}, "performance": {"gpu_collectors_count": 2}},
            meta={**meta, "host": f"node{s}"},
        )
    fraction = [
        (tag, step, wall, value / 100.0 if tag == metrics.LEARNER_PERCENTAGE else value)
        for tag, step, wall, value in training_rows(minutes=20, seed=5, best_end_s=27.0)
    ]
    write_events(out / "linesight" / "synA", fraction[: len(fraction) // 2])
    write_events(out / "linesight" / "synA_2", fraction[len(fraction) // 2 :])
    write_run_dir(out / "crashed", [], config={"seed": 0, "btr": {"use_munchausen": True}}, status={"status": "failed"})
    study = root / "experiments" / "demo"
    study.mkdir(parents=True)
    (study / "runs.yaml").write_text(RUNS_YAML)
    return root


@pytest.fixture
def repo(template, tmp_path, monkeypatch):
    """A copy of the template as a repository root (the current directory, as runs.yaml's paths expect)."""
    root = tmp_path / "repo"
    shutil.copytree(template, root)
    monkeypatch.chdir(root)
    return root


STUDY = "experiments/demo"
EXPORT = f"{STUDY}/{export.EXPORT_FILE}"


def run_report(capsys, *args) -> tuple[int, str, str]:
    code = report.main([STUDY, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def readme(repo) -> str:
    """The README and the full tables beside it."""
    return (repo / STUDY / "README.md").read_text() + (repo / STUDY / "tables.md").read_text()


def test_the_readme_regenerates_from_the_export_alone(repo, capsys):
    code, out, _ = run_report(capsys)
    assert code == 0 and "read 6 runs from their directories\n" in out
    from_logs = readme(repo)
    assert "converted on load" in from_logs and "No resolved config found for: linesight" in from_logs
    assert "| crashed | 0 | 0 | no data: no event files (status: failed) |" in from_logs
    assert "| linesight | 2 | 2 |" in from_logs  # the split folder's two folders and files are counted

    code, out, _ = run_report(capsys, "--export")
    assert code == 0 and f"exported 6 runs to {EXPORT} (" in out
    assert readme(repo) == from_logs
    event_bytes = sum(f.stat().st_size for f in (repo / "outputs").rglob("events.out.tfevents.*"))
    assert (repo / EXPORT).stat().st_size < event_bytes / 2  # compact: no checkpoints, a fraction of the logs

    shutil.rmtree(repo / "outputs")
    (repo / STUDY / "README.md").unlink()
    shutil.rmtree(repo / STUDY / "figures")
    code, out, _ = run_report(capsys)
    assert code == 0 and out.startswith(
        f"read 6 runs from {EXPORT} (their directories are missing or hold no event files)\n"
    )
    assert readme(repo) == from_logs
    figures = sorted(p.name for p in (repo / STUDY / "figures").iterdir())
    assert "best_time_A01_by_wall.png" in figures and "best_time_A01_by_updates.png" in figures


def test_the_export_loads_the_same_scalars_and_metadata(repo):
    spec = read_spec(STUDY)
    from_logs = load_experiment(spec)
    export.write_export(spec.export_file, from_logs.runset, from_logs.keys)
    shutil.rmtree(repo / "outputs")
    from_export = load_experiment(read_spec(STUDY))
    assert from_export.from_export == list(from_logs.runset.runs) and from_logs.from_export == []
    pd.testing.assert_frame_equal(from_export.runset.scalars, from_logs.runset.scalars, check_exact=True)
    assert from_export.runset.conversions() == from_logs.runset.conversions() != {}
    for label, info in from_logs.runset.runs.items():
        got = from_export.runset.runs[label]
        for name in ("overrides", "config", "meta", "status", "tmexp_run", "conversions", "no_data"):
            assert getattr(got, name) == getattr(info, name), (label, name)
        assert (len(got.folders), len(got.event_files)) == (len(info.folders), len(info.event_files))
        assert got.first_wall_time == info.first_wall_time or (
            math.isnan(got.first_wall_time) and math.isnan(info.first_wall_time)
        )
    # the file is the format the module documents, keyed by the paths as runs.yaml spells them
    raw = json.loads(gzip.decompress((repo / EXPORT).read_bytes()))
    assert raw["format"] == export.FORMAT and list(raw["runs"]) == [
        "outputs/base",
        "outputs/btr/seed0",
        "outputs/btr/seed1",
        "outputs/btr/seed2",
        "outputs/linesight/synA",
        "outputs/crashed",
    ]
    assert raw["runs"]["outputs/linesight/synA"]["event_files"][1].startswith("../synA_2/events.out.tfevents")


def test_runs_come_from_their_directories_where_they_exist(repo, capsys):
    assert run_report(capsys, "--export")[0] == 0
    from_logs = readme(repo)
    shutil.rmtree(repo / "outputs" / "btr" / "seed1")
    code, out, _ = run_report(capsys)
    assert code == 0
    assert out.startswith(
        f"read 4 runs from their directories and 2 runs from {EXPORT} (their directories are "
        f"missing or hold no event files)\n"
    )  # btr/seed1, and crashed, which logged nothing
    assert readme(repo) == from_logs


def test_a_study_that_keeps_only_its_jobs_status_files_reads_their_logs_from_the_export(repo, capsys):
    """What a study commits: each job's status.json (its sweep resumes from it) and the export (its report)."""
    assert run_report(capsys, "--export")[0] == 0
    from_logs = readme(repo)
    for path in (repo / "outputs").rglob("*"):
        if path.is_file() and path.name != "status.json":
            path.unlink()
    assert (repo / "outputs" / "crashed" / "status.json").is_file()
    code, out, _ = run_report(capsys)
    assert code == 0 and out.startswith(f"read 6 runs from {EXPORT} (")
    assert readme(repo) == from_logs


def test_exporting_again_keeps_the_runs_whose_directory_is_gone(repo, capsys):
    assert run_report(capsys, "--export")[0] == 0
    first = (repo / EXPORT).read_bytes()
    shutil.rmtree(repo / "outputs" / "base")
    code, out, _ = run_report(capsys, "--export")
    assert code == 0 and "2 runs from" in out  # base, and crashed (no event files: the export holds it)
    assert (repo / EXPORT).read_bytes() == first  # the kept entry is unchanged, and the file is deterministic


def test_a_run_with_neither_directory_nor_export_entry_is_named(repo, capsys):
    assert run_report(capsys, "--export")[0] == 0
    before = readme(repo)
    spec_file = repo / STUDY / "runs.yaml"
    spec_file.write_text(RUNS_YAML + "  - {label: ghost, path: outputs/ghost}\n")
    code, out, err = run_report(capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "'outputs/ghost'" in err and "exists neither" in err and f"{EXPORT} does not hold it" in err
    assert f"python -m tmexp.report {STUDY} --export" in err
    assert readme(repo) == before  # nothing written

    # a fresh clone of a study that was never exported: the first missing runs are named, and the missing export
    spec_file.write_text(RUNS_YAML)
    (repo / EXPORT).unlink()
    shutil.rmtree(repo / "outputs")
    code, _, err = run_report(capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "run paths 'outputs/base', 'outputs/btr/seed0', 'outputs/btr/seed1' and 3 more" in err
    assert f"there is no export ({EXPORT})" in err


def test_a_damaged_export_is_one_line(repo, capsys):
    assert run_report(capsys, "--export")[0] == 0
    shutil.rmtree(repo / "outputs")
    (repo / EXPORT).write_bytes(b"not gzip")
    code, _, err = run_report(capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is not a readable run export" in err

    (repo / EXPORT).write_bytes(gzip.compress(json.dumps({"format": 99, "runs": {}}).encode()))
    code, _, err = run_report(capsys)
    assert code == 2 and "is not a run export of format 1" in err

    entry = {"tags": ["a"], "tag": [0, 0], "step": [1], "wall_time": [1.0], "value": [1.0]}
    runs = {
        key: entry
        for key in (
            "outputs/base",
            "outputs/btr/seed0",
            "outputs/btr/seed1",
            "outputs/btr/seed2",
            "outputs/linesight/synA",
            "outputs/crashed",
        )
    }
    (repo / EXPORT).write_bytes(gzip.compress(json.dumps({"format": 1, "runs": runs}).encode()))
    code, _, err = run_report(capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{EXPORT}: the entry 'outputs/base' is damaged (KeyError" in err
