"""Helpers of the committed studies' tests (experiments/<study>): what a fresh clone holds of a study, and the
report regenerated from it."""

import gzip
import json
import re
import shutil
from pathlib import Path

import yaml

from tmexp import report
from tmexp.analysis import export

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def spec_paths(study: Path) -> list[str]:
    """Every run directory the study's runs.yaml lists, relative to the study."""
    spec = yaml.safe_load((study / "runs.yaml").read_text())
    return [p for entry in spec["runs"] for p in entry["paths"]]


def exported_runs(study: Path) -> dict:
    """The study's export: run path -> its scalars, status and config."""
    return json.loads(gzip.decompress((study / export.EXPORT_FILE).read_bytes()))["runs"]


def check_runs_finished_and_exported(study: Path, minutes: float) -> None:
    """Every listed run is in the export, and its committed status.json (what a rerun skips on) says it finished
    after ``minutes`` of training, with the frames the export holds."""
    exported = exported_runs(study)
    paths = spec_paths(study)
    assert paths and set(paths) <= set(exported)
    for path in paths:
        status = json.loads((study / path / "status.json").read_text())
        assert status["status"] == "finished" and status["wall_minutes"] >= minutes - 1e-6, path
        assert exported[path]["status"]["frames"] == status["frames"], path
        assert exported[path]["config"]["training"]["max_minutes"] == minutes, path
    assert (study / export.EXPORT_FILE).stat().st_size < 4 * 2**20  # compact: a few MB at most


def check_report_regenerates(study: Path, tmp_path: Path, monkeypatch, capsys, extra_dirs=()) -> None:
    """The study's README and tables regenerate byte for byte from what a clone holds: runs.yaml, the export, each
    run's status.json (and ``extra_dirs``, e.g. a learner benchmark's costs)."""
    copy = tmp_path / "experiments" / study.name
    copy.mkdir(parents=True)
    for name in ["runs.yaml", export.EXPORT_FILE, "README.md"]:
        shutil.copy(study / name, copy / name)
    for name in extra_dirs:
        shutil.copytree(study / name, copy / name)
    for status in study.glob("runs/*/seed*/status.json"):
        target = copy / status.relative_to(study)
        target.parent.mkdir(parents=True)
        shutil.copy(status, target)
    monkeypatch.chdir(tmp_path)
    assert report.main([str(copy)]) == 0
    out = capsys.readouterr().out
    n = len(spec_paths(study))
    assert out.startswith(f"read {n} run{'s' if n > 1 else ''} from {copy / export.EXPORT_FILE} (")
    regenerated = (copy / "README.md").read_text()
    assert regenerated == (study / "README.md").read_text()
    assert (copy / "tables.md").read_text() == (study / "tables.md").read_text()  # the full tables beside it
    assert len(regenerated.splitlines()) <= 300 and "disjoint" not in regenerated + (copy / "tables.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", regenerated)
    assert figures and all((copy / f).is_file() for f in figures)
    assert set(figures) <= {f"figures/{p.name}" for p in (study / "figures").iterdir()}
