"""The worked examples' commands work as written: the sweep in each experiments/*/runs.yaml composes and checks, and
its commands together make every run it lists (a grid sweep's jobs and the learning benchmark's seeds; a search's
trials are not a study's runs)."""

import shlex
from pathlib import Path

import pytest
import yaml

from tmexp.bench import learning
from tmexp.compose import compose_config
from tmexp.launch import search
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


def is_search(argv: list[str]) -> bool:
    """Whether a ``--multirun`` command line is a search (its sweeper draws trials) rather than a grid."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    return search.is_search(compose_config(fixed, return_hydra_config=True).hydra.sweeper)


def learning_runs(argv: list[str], tmp_path: Path) -> int:
    """Check every run of a ``python -m tmexp.bench learning`` command as the benchmark does before training (its
    ``--out`` moved to a temporary directory); return how many runs it makes."""
    assert argv[0] == "learning"
    args = learning.parse_args(argv[1:])
    assert args.runs is None and args.out is not None, "a study's learning runs go to a named --out"
    learning.check_runs(args.seed_list, args.minutes, tmp_path / args.out, args.overrides)
    return len(args.seed_list)


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
        checked = precheck(argv + [f"hydra.sweep.dir={tmp_path}"])
        jobs += 0 if is_search(argv) else checked
    for argv in commands(spec["description"], "tmexp.bench"):
        jobs += learning_runs(argv, tmp_path)
    # the commands together make every listed run; a study under way lists the runs it has so far
    assert jobs == groups if "under way" not in spec["description"] else jobs >= groups
    report = commands(spec["description"], "tmexp.report")
    assert len(report) == 1 and report[0][0] == str(runs_yaml.parent.relative_to(ROOT))
    assert set(report[0][1:]) <= {"--export"}
