"""The CPU-scale BTR study (experiments/btr_A01_cpu) regenerates from what the repository keeps: runs.yaml, the
export of its runs' scalars and each job's status.json, with no run directory's logs."""

import gzip
import json
import re
import shutil
from pathlib import Path

import pytest

from tmexp import report
from tmexp.analysis import export

STUDY = Path(__file__).resolve().parents[1] / "experiments" / "btr_A01_cpu"
KEPT = ["runs.yaml", export.EXPORT_FILE, "README.md"]


def _spec_paths() -> list[str]:
    import yaml

    spec = yaml.safe_load((STUDY / "runs.yaml").read_text())
    return [p for entry in spec["runs"] for p in entry["paths"]]


def test_every_run_the_report_names_is_exported_and_its_sweep_job_finished():
    exported = json.loads(gzip.decompress((STUDY / export.EXPORT_FILE).read_bytes()))["runs"]
    paths = _spec_paths()
    assert paths and set(paths) <= set(exported)
    for path in paths:
        status = json.loads((STUDY / path / "status.json").read_text())  # what a rerun of the sweep skips on
        assert status["status"] == "finished" and status["wall_minutes"] >= 15 - 1e-6
        assert exported[path]["status"]["frames"] == status["frames"]
        assert exported[path]["config"]["training"]["max_minutes"] == 15
    assert (STUDY / export.EXPORT_FILE).stat().st_size < 4 * 2**20  # compact: a few MB at most


@pytest.mark.parametrize("arm", ["no_btr", "none"])
def test_the_baseline_and_the_bundle_ran_the_configs_their_experiments_compose(arm):
    from omegaconf import OmegaConf

    from tmexp.compose import compose_config

    exported = json.loads(gzip.decompress((STUDY / export.EXPORT_FILE).read_bytes()))["runs"]
    experiment = {"no_btr": "A01_cpu_v2", "none": "A01_cpu_btr"}[arm]
    for path, run in exported.items():
        if path.split("/")[1] != arm:
            continue
        expected = OmegaConf.to_container(OmegaConf.structured(compose_config([f"+experiment={experiment}"])))
        for group in ("nn", "btr", "training", "memory", "exploration", "rewards"):
            # a key the schema gained after the run (e.g. btr.noisy_bias_sigma_fan) is not a difference: its
            # default keeps what the run did; every key the run recorded must match
            common = set(expected[group]) & set(run["config"][group]) - {"max_minutes"}
            want = {k: expected[group][k] for k in common}
            got = {k: run["config"][group][k] for k in common}
            assert len(common) >= 3 and got == want, (path, group)


def test_the_report_regenerates_from_a_fresh_clone(tmp_path, monkeypatch, capsys):
    copy = tmp_path / "experiments" / "btr_A01_cpu"
    copy.mkdir(parents=True)
    for name in KEPT:
        shutil.copy(STUDY / name, copy / name)
    shutil.copytree(STUDY / "bench", copy / "bench")  # the learner benchmark's costs per update (projected axis)
    for status in STUDY.glob("runs/*/seed*/status.json"):  # what a clone holds of the runs
        target = copy / status.relative_to(STUDY)
        target.parent.mkdir(parents=True)
        shutil.copy(status, target)
    monkeypatch.chdir(tmp_path)
    assert report.main([str(copy)]) == 0
    out = capsys.readouterr().out
    n = len(_spec_paths())
    assert out.startswith(f"read {n} run{'s' if n > 1 else ''} from {copy / export.EXPORT_FILE} (")
    regenerated = (copy / "README.md").read_text()
    assert regenerated == (STUDY / "README.md").read_text()
    assert (copy / "tables.md").read_text() == (STUDY / "tables.md").read_text()  # the full tables beside it
    assert len(regenerated.splitlines()) <= 300 and "disjoint" not in regenerated + (copy / "tables.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", regenerated)
    assert figures and all((copy / f).is_file() for f in figures)
    assert {f for f in figures} <= {f"figures/{p.name}" for p in (STUDY / "figures").iterdir()}
