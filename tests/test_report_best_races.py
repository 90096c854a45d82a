"""A study's report draws each group's best race on the track, from the runs or from their export alone."""

import gzip
import json
import re
import shutil

import numpy as np
import pytest
from omegaconf import OmegaConf
from test_sim_cli import RUN_OVERRIDES, record_race

from tmexp import report
from tmexp.analysis import export
from tmexp.analysis.synthetic import training_rows, write_run_dir
from tmexp.compose import compose_config

STUDY = "experiments/races"
RUNS_YAML = """\
title: Best races
map: A01
interval: 5
runs:
  - {label: steady, paths: [outputs/steady/seed0, outputs/steady/seed1], baseline: true}
  - {label: wild, path: outputs/wild/seed0}
  - {label: unfinished, path: outputs/unfinished/seed0}
"""
# group -> (seed, share of random actions) of each run; the report shows each group's fastest seed
RACES = {"steady": [(0, 0.3), (1, 0.0)], "wild": [(0, 0.2)]}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Runs on the A01/hock cycle with non-default physics (a replay on default settings would give other times):
    two seeds of one group and one of another with a best race of A01 each, and a run that saved none."""
    root = tmp_path_factory.mktemp("template")
    recorded = {}
    for group, seeds in {**RACES, "unfinished": [(0, None)]}.items():
        for seed, noise in seeds:
            config = OmegaConf.to_container(
                OmegaConf.structured(compose_config([*RUN_OVERRIDES, f"seed={seed}"])), resolve=True, enum_to_str=True
            )
            run = write_run_dir(
                root / "outputs" / group / f"seed{seed}", training_rows(minutes=10, seed=seed), config=config
            )
            if noise is not None:
                recorded[group, seed] = record_race(run, map_index=0, noise=noise, seed=seed)[1]
    (root / STUDY).mkdir(parents=True)
    (root / STUDY / "runs.yaml").write_text(RUNS_YAML)
    return root, recorded


@pytest.fixture
def repo(template, tmp_path, monkeypatch):
    root = tmp_path / "repo"
    shutil.copytree(template[0], root)
    monkeypatch.chdir(root)
    return root


def races_line(repo) -> str:
    return next(line for line in (repo / STUDY / "README.md").read_text().splitlines() if "best A01 race" in line)


def test_each_groups_fastest_seed_is_drawn_at_the_time_its_replay_reproduces(repo, template, capsys):
    recorded = template[1]
    assert report.main([STUDY]) == 0
    readme = (repo / STUDY / "README.md").read_text()
    assert "![best races A01](figures/best_races_A01.png)" in readme
    assert (repo / STUDY / "figures" / "best_races_A01.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    line = races_line(repo)
    seed = min(RACES["steady"], key=lambda s: recorded["steady", s[0]])[0]
    steady, wild = recorded["steady", seed], recorded["wild", 0]
    assert recorded["steady", 1 - seed] != steady  # the seeds raced differently: the line must pick one
    # The line's times are the replays': equal to what each run recorded (else it adds "recorded ...").
    assert f"steady (seed {seed}): {steady / 1000:.2f} s" in line and f"wild (seed 0): {wild / 1000:.2f} s" in line
    assert "(recorded" not in line and line.endswith("No recorded best race: unfinished.")
    # The section links the figure once, right above its line.
    lines = readme.splitlines()
    assert lines[lines.index(line) - 2] == "![best races A01](figures/best_races_A01.png)"


def test_the_export_keeps_each_runs_fastest_race_and_the_report_redraws_it_without_the_runs(repo, template, capsys):
    assert report.main([STUDY, "--export"]) == 0
    from_runs, line = (repo / STUDY / "README.md").read_text(), races_line(repo)
    entries = json.loads(gzip.decompress((repo / STUDY / export.EXPORT_FILE).read_bytes()))["runs"]
    race = entries["outputs/steady/seed1"]["best_races"]["A01"]
    saved = np.load(repo / f"outputs/steady/seed1/best_runs/A01_{race['ms']}.npy")
    assert race["actions"] == saved.tolist() and race["ms"] == template[1]["steady", 1]
    assert "best_races" not in entries["outputs/unfinished/seed0"]

    shutil.rmtree(repo / "outputs")
    (repo / STUDY / "README.md").unlink()
    shutil.rmtree(repo / STUDY / "figures")
    capsys.readouterr()
    assert report.main([STUDY]) == 0
    assert capsys.readouterr().out.startswith(f"read 4 runs from {STUDY}/{export.EXPORT_FILE} (")
    assert races_line(repo) == line and (repo / STUDY / "README.md").read_text() == from_runs
    assert (repo / STUDY / "figures" / "best_races_A01.png").is_file()

    # Exported again without the runs, the races stay (read from the previous export).
    assert report.main([STUDY, "--export"]) == 0
    again = json.loads(gzip.decompress((repo / STUDY / export.EXPORT_FILE).read_bytes()))["runs"]
    assert again["outputs/steady/seed1"]["best_races"] == entries["outputs/steady/seed1"]["best_races"]


def test_a_damaged_race_in_the_export_is_one_line(repo, capsys):
    assert report.main([STUDY, "--export"]) == 0
    path = repo / STUDY / export.EXPORT_FILE
    raw = json.loads(gzip.decompress(path.read_bytes()))
    raw["runs"]["outputs/wild/seed0"]["best_races"]["A01"]["actions"][3] = 12  # no such action
    path.write_bytes(gzip.compress(json.dumps(raw).encode()))
    shutil.rmtree(repo / "outputs")
    capsys.readouterr()
    assert report.main([STUDY]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'outputs/wild/seed0' is damaged" in err and "best race of 'A01'" in err


def test_no_best_race_anywhere_is_one_line_and_no_figure(repo, capsys):
    for npy in (repo / "outputs").rglob("best_runs/*.npy"):
        npy.unlink()
    assert report.main([STUDY]) == 0
    readme = (repo / STUDY / "README.md").read_text()
    assert not (repo / STUDY / "figures" / "best_races_A01.png").exists() and "best_races" not in readme
    assert re.search(r"^No run of any group has a recorded best race of A01 here .*\.$", readme, re.M)


def test_a_run_from_before_map_cycles_replays_with_its_one_map(tmp_path):
    from tmexp.envs.sim.playback import settings_from_config

    settings = settings_from_config({"map": {"short_name": "A01"}, "env": {"backend": "sim"}}, tmp_path)
    assert [m.short_name for m in settings.maps] == ["A01"]
