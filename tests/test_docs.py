"""The README and every page under docs/ say what works: each command they show runs in a cheap form, each link lands.

Generic: it parses the pages (fenced code blocks, inline code, links, headings), so a new page is checked as soon
as it exists. A command is a line (or inline code span) starting ``python -m tmexp.``; backslash continuations are
joined, ``a && b`` is split, and a placeholder in angle brackets (``<sweep_dir>``) stands for one word. What each is
checked for:

- ``python -m tmexp.train ...``: every job of the command is composed and checked as the CLI checks it before it
  starts anything (``precheck``: unknown keys, wrong types, unknown options, bad values), its run and sweep
  directories moved to a temporary one and the SLURM partition check left out (no SLURM here); its flags must be
  Hydra's.
- any other ``python -m tmexp.MODULE [SUBCOMMAND] ...``: ``--help`` of that (sub)command works, every flag the command
  shows is in it, and (for the benchmarks, which take ``tmexp.train`` overrides) its overrides compose.
- A code block whose first line is a comment starting ``# not run here`` (the game, a cluster) is only parsed: its
  overrides must parse as Hydra overrides and its flags must exist.
- A link must name a file that exists and, after ``#``, one of that Markdown file's headings (GitHub's anchors).

The README's first set-up command also runs for real, for a few hundred frames
(``test_the_readme_first_command_trains``).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tmexp.train import precheck  # sets up hydra/sweeper=optuna, as the CLI does

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN_MARKER = "# not run here"
FENCE = re.compile(r"^(```+|~~~+)([^\n]*)\n(.*?)^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
PLACEHOLDER = re.compile(r"<[^<>\n]*>")
FLAG = re.compile(r"(?<![\w\-=])(--?[A-Za-z][\w\-]*)")


@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    text: str  # from "python -m tmexp." on, continuations joined
    runnable: bool  # False: in a block marked "# not run here"

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def argv(self) -> list[str]:
        """The command's words, a placeholder in angle brackets (``<sweep_dir>``, ``<the best trial's overrides>``) as
        the one word PLACEHOLDER."""
        try:
            return shlex.split(PLACEHOLDER.sub("PLACEHOLDER", self.text), comments=True)
        except ValueError:  # an unbalanced quote: test_commands_parse names it
            return self.text.split()

    @property
    def module(self) -> str:
        return self.argv[2]


def _strip_code(text: str) -> str:
    """The text with its fenced blocks and inline code blanked (line numbers kept)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return INLINE_CODE.sub(lambda m: " " * len(m.group(0)) if "\n" not in m.group(0) else "\n", text)


def _commands_in(page: Path) -> list[Command]:
    text = page.read_text(encoding="utf-8")
    found = []
    for block in FENCE.finditer(text):
        language, body = block.group(2).strip().lower(), block.group(3)
        if language not in ("", "bash", "sh", "shell", "console"):
            continue
        first_line = text.count("\n", 0, block.start()) + 2
        lines = body.splitlines()
        runnable = not (lines and lines[0].strip().lower().startswith(NOT_RUN_MARKER))
        joined, start = [], None
        for offset, raw in enumerate(lines):  # join continuations, remembering where each command starts
            if start is None:
                start = first_line + offset
                joined.append([start, ""])
            joined[-1][1] += raw.rstrip("\\").rstrip() + " " if raw.rstrip().endswith("\\") else raw
            if not raw.rstrip().endswith("\\"):
                start = None
        for line_no, line in joined:
            for part in line.lstrip("$ ").split("&&"):
                part = part.strip()
                if part.startswith("python -m tmexp."):
                    found.append(Command(page, line_no, part, runnable))
    blanked = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for span in INLINE_CODE.finditer(blanked):
        code = " ".join(span.group(2).split())
        if code.startswith("python -m tmexp."):
            found.append(Command(page, blanked.count("\n", 0, span.start()) + 1, code, True))
    return found


COMMANDS = [c for page in PAGES for c in _commands_in(page)]


def _unique(commands: list[Command]) -> list[Command]:
    """One of each command (the first place it is shown; one shown on several pages, or with other comments, is
    checked once)."""
    first: dict[tuple[tuple[str, ...], bool], Command] = {}
    for c in commands:
        first.setdefault((tuple(c.argv), c.runnable), c)
    return list(first.values())


TRAIN = _unique([c for c in COMMANDS if c.module == "tmexp.train"])
OTHERS = _unique([c for c in COMMANDS if c.module != "tmexp.train"])


def _flags(command: Command) -> set[str]:
    """The flags a command shows, optional ones (``[--json]``) and alternatives (``--a N | --b N``) included."""
    return set(FLAG.findall(" ".join(a for a in command.argv[3:] if "=" not in a or a.startswith("-"))))


def _overrides(argv: list[str]) -> list[str]:
    return [a for a in argv if "=" in a and not a.startswith("-")]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.id)
def test_commands_parse(command):
    """A shell can read every command shown (quotes balanced)."""
    try:
        shlex.split(PLACEHOLDER.sub("PLACEHOLDER", command.text), comments=True)
    except ValueError as error:
        pytest.fail(f"{command.id}: {command.text}\n  {error}")


# --- the pages hold what the test reads -------------------------------------------------------------------------


def test_the_pages_show_commands():
    assert (ROOT / "README.md") in PAGES and len(PAGES) > 3
    assert any(c.page.name == "README.md" and c.text == "python -m tmexp.train" for c in COMMANDS)
    assert len(TRAIN) > 5 and len(OTHERS) > 5


def test_the_readme_test_command_is_the_one_ci_runs():
    readme = (ROOT / "README.md").read_text()
    command = "pip install torch==2.13.0 && pip install -e '.[test]' && python -m pytest"
    assert command in readme
    ci = (ROOT / ".ci" / "run").read_text().replace(" -q", "")  # CI installs quietly
    assert any(line.strip() == command for line in ci.splitlines()), ".ci/run must run the README's test command"


def test_a_block_marked_not_run_here_is_parsed_not_run(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\n# not run here (needs the game)\npython -m tmexp.train env=tmi \\\n    seed=1\n```\n\n"
        "```bash\npython -m tmexp.sim drive --map A01 && python -m tmexp.compare <sweep_dir> --sweep\n```\n"
        "Inline: `python -m tmexp.bench params --json`.\n"
    )
    found = _commands_in(page)
    assert [(c.line, c.runnable, c.argv[2:]) for c in found] == [
        (3, False, ["tmexp.train", "env=tmi", "seed=1"]),
        (8, True, ["tmexp.sim", "drive", "--map", "A01"]),
        (8, True, ["tmexp.compare", "PLACEHOLDER", "--sweep"]),
        (10, True, ["tmexp.bench", "params", "--json"]),
    ]


# --- links --------------------------------------------------------------------------------------------------------


def github_anchor(heading: str, seen: dict[str, int]) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped (not - and _), spaces as -; repeats
    get -1, -2, ..."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    return slug if count == 0 else f"{slug}-{count}"


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {github_anchor(m.group(1), seen) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def test_github_anchor():
    seen: dict[str, int] = {}
    assert github_anchor("Learning: `python -m tmexp.bench learning`", seen) == "learning-python--m-tmexpbench-learning"
    assert github_anchor("Weights & Biases", seen) == "weights--biases"
    assert github_anchor("Weights & Biases", seen) == "weights--biases-1"


def broken_links(page: Path) -> list[str]:
    """The links of ``page`` (outside code) to a file that does not exist, or to a heading its file does not have."""
    text = _strip_code(page.read_text(encoding="utf-8"))
    broken = []
    for match in LINK.finditer(text):
        target = match.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        line = text.count("\n", 0, match.start()) + 1
        if not file.exists():
            broken.append(f"line {line}: {target}: no file {file.relative_to(ROOT) if ROOT in file.parents else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"line {line}: {target}: {file.name} has no heading with the anchor #{anchor}")
    return broken


def test_broken_links_are_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n[ok](other.md#a-code-heading) [here](#page) [web](https://example.org/x)\n"
        "[gone](missing.md) [no heading](other.md#nothing) `[in code](missing.md)`\n"
    )
    found = broken_links(page)
    assert len(found) == 2 and "missing.md" in found[0] and "#nothing" in found[1], found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_land(page):
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(ROOT)}:\n" + "\n".join(broken)


# --- tmexp.train commands -----------------------------------------------------------------------------------------


def _hydra_flags() -> set[str]:
    from hydra._internal.utils import get_args_parser

    return {s for action in get_args_parser()._actions for s in action.option_strings}


@pytest.mark.parametrize("command", TRAIN, ids=lambda c: c.id)
def test_train_command_composes(command, tmp_path, monkeypatch):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from tmexp.compose import experiment_first
    from tmexp.envs.tmi.instances import GameInstance
    from tmexp.launch import slurm
    from tmexp.validation import ConfigError

    argv = command.argv[3:]
    unknown = _flags(command) - _hydra_flags()
    assert not unknown, f"{command.id}: {command.text}\n  flags tmexp.train (Hydra) does not have: {sorted(unknown)}"
    OverridesParser.create().parse_overrides(_overrides(argv))  # raises on a malformed override
    if not command.runnable:
        return
    # the run and sweep directories go to a temporary one; what needs the outside is left out: SLURM's partition
    # check, and the check that a game is configured or listening (env=tmi)
    argv = [a for a in argv if not a.startswith(("hydra.run.dir=", "hydra.sweep.dir="))]
    argv += [f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    monkeypatch.setattr(slurm, "check_request", lambda launcher: None)
    monkeypatch.setattr(GameInstance, "check_configured", lambda self: None)
    try:
        precheck(experiment_first(argv))
    except ConfigError as error:
        pytest.fail(f"{command.id}: {command.text}\n  {error}")


# --- other commands: their --help, their flags, their overrides ---------------------------------------------------


def _help_text(module: str, argv: list[str]) -> tuple[int, str]:
    """What ``python -m module argv`` prints (stdout and stderr) and its exit status, run in this process."""
    target = importlib.import_module(module)
    if not hasattr(target, "main"):
        target = importlib.import_module(module + ".__main__")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = target.main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return int(code or 0), out.getvalue()


def _subcommands(command: Command) -> list[list[str]]:
    """The (sub)command prefixes to ask for ``--help``: the first argument unless it is a flag, an override or a
    placeholder in capitals (``NAME``); ``a|b|c`` each."""
    args = command.argv[3:]
    if not args or args[0].startswith("-") or "=" in args[0] or re.fullmatch(r"[A-Z][A-Z_]*", args[0]):
        return [[]]
    return [[alternative] for alternative in args[0].split("|")]


@pytest.mark.parametrize("command", OTHERS, ids=lambda c: c.id)
def test_command_flags_exist(command):
    for prefix in _subcommands(command):
        code, text = _help_text(command.module, prefix + ["--help"])
        where = f"{command.id}: {command.text}\n  python -m {command.module} {' '.join(prefix + ['--help'])}"
        assert code == 0, f"{where} exits {code}:\n{text}"
        missing = [f for f in sorted(_flags(command)) if not re.search(rf"(?<![\w\-]){re.escape(f)}(?![\w\-])", text)]
        assert not missing, f"{where} does not list {missing}"


BENCH_WITH_OVERRIDES = [c for c in OTHERS if c.module == "tmexp.bench" and c.runnable and _overrides(c.argv[3:])]


@pytest.mark.parametrize("command", BENCH_WITH_OVERRIDES, ids=lambda c: c.id)
def test_benchmark_overrides_compose(command):
    from tmexp.compose import compose_config, experiment_first
    from tmexp.validation import check_config

    argv = command.argv[3:]
    overrides = _overrides(argv)
    if "--experiment" in argv:
        overrides.insert(0, f"+experiment={argv[argv.index('--experiment') + 1]}")
    check_config(compose_config(experiment_first(overrides)))


# --- the README's first command, for real ---------------------------------------------------------------------------


def test_the_readme_first_command_trains(tmp_path):
    """``python -m tmexp.train`` as the README's first command runs it, stopped after a few hundred frames: it says
    where the run is written and how to watch it, and leaves a run directory."""
    readme_first = next(c for c in COMMANDS if c.page.name == "README.md" and c.module == "tmexp.train")
    run_dir = tmp_path / "run"
    argv = readme_first.argv + ["training.max_frames=300", f"hydra.run.dir={run_dir}"]
    done = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert str(run_dir) in done.stdout and "tensorboard --logdir" in done.stdout
    assert (run_dir / "status.json").exists()
