"""The worked examples' commands work as written: the sweep in each experiments/*/runs.yaml composes and checks."""

import shlex
from pathlib import Path

import pytest
import yaml

from tmexp.train import precheck

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(ROOT.glob("experiments/*/runs.yaml"))


def commands(text: str, program: str) -> list[list[str]]:
    """The argument lists of every ``python -m <program>`` command in a text (backslash continuations joined)."""
    joined = text.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line.startswith(f"python -m {program} ") or line == f"python -m {program}":
            out.append(shlex.split(line)[3:])
    return out


def test_there_is_a_worked_example():
    assert any(p.parent.name == "btr_A01_sim" for p in EXAMPLES)


@pytest.mark.parametrize("runs_yaml", EXAMPLES, ids=lambda p: p.parent.name)
def test_the_example_sweep_composes_every_job(runs_yaml, tmp_path):
    spec = yaml.safe_load(runs_yaml.read_text())
    sweeps = commands(spec["description"], "tmexp.train")
    assert sweeps, f"{runs_yaml} gives no python -m tmexp.train command to reproduce it"
    groups = sum(len(r.get("paths", [r.get("path")])) for r in spec["runs"])
    jobs = 0
    for argv in sweeps:
        assert "--multirun" in argv
        # every job composes and passes the checks; the sweep directory moves to a temporary one
        jobs += precheck(argv + [f"hydra.sweep.dir={tmp_path}"])
    # the commands together make every listed run; a study under way lists the runs it has so far
    assert jobs == groups if "under way" not in spec["description"] else jobs >= groups
    report = commands(spec["description"], "tmexp.report")
    assert len(report) == 1 and report[0][0] == str(runs_yaml.parent.relative_to(ROOT))
    assert set(report[0][1:]) <= {"--export"}
