"""The checks a command line gets before Hydra starts anything: every job of a ``python -m tmexp.train`` command
(each combination of a grid, the grids an experiment file defines, each candidate value of a search) is composed and
checked, and so is a SLURM request against its partition.

``precheck(argv)`` raises ``ConfigError`` with one line naming the key or file; ``tmexp.train`` and the benchmarks that
start runs call it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, open_dict
from omegaconf.errors import ValidationError

from tmexp import rundir
from tmexp.compose import compose_config
from tmexp.config import Config
from tmexp.launch import freeze, search, slurm, slurm_launcher
from tmexp.validation import ConfigError, check_config, check_output_dir, choice_message, choice_type, config_warnings

_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}


def _one_line(error: BaseException) -> str:
    """A composition error as one line; a value outside a closed set of the schema as check_config words it."""
    cause = error
    while cause is not None:
        if isinstance(cause, ValidationError) and cause.full_key and choice_type(cause.full_key) is not None:
            return choice_message(cause.full_key, cause.value, choice_type(cause.full_key))
        cause = cause.__cause__
    parts = []
    while error is not None:
        text = " ".join(str(error).split())
        if text and text not in parts:
            parts.append(text)
        error = error.__cause__
    return "; ".join(parts) or type(error).__name__


def _split_argv(argv: list[str]) -> tuple[list[str], bool, bool]:
    """Return (overrides, multirun, print_only) from a ``python -m tmexp.train`` command line."""
    overrides, multirun, print_only, skip = [], False, False, False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--multirun", "-m"):
            multirun = True
        elif arg in (
            "--cfg",
            "-c",
            "--package",
            "-p",
            "--config-path",
            "-cp",
            "--config-name",
            "-cn",
            "--config-dir",
            "-cd",
            "--experimental-rerun",
        ):
            print_only = print_only or arg in ("--cfg", "-c")
            skip = True
        elif arg.startswith("-"):
            print_only = print_only or arg.startswith("--cfg")
        else:
            overrides.append(arg)
    return overrides, multirun, print_only


def _expand(overrides: list[str]) -> list[list[str]]:
    """Every job's override list: the cartesian product of the sweeps, as Hydra's basic sweeper forms it."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    for override in parsed:
        if override.is_interval_sweep():
            raise ConfigError(
                f"{override.input_line} is a search space, which a grid cannot expand: add "
                "hydra/sweeper=optuna to search it, or list values (a,b,c) for a grid."
            )
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for batch in batches for job in batch] or [[]]


def _multirun_jobs(overrides: list[str]) -> tuple[list[list[str]], bool]:
    """What to compose and check for a --multirun: every job of a grid, or a search's candidate values; and whether
    it is a search (``hydra/sweeper=optuna``, which draws its trials as it goes)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    fixed = [o.input_line for o in OverridesParser.create().parse_overrides(overrides) if not o.is_sweep_override()]
    base = compose_config(fixed, return_hydra_config=True)
    if search.is_search(base.hydra.sweeper):
        search.check_search(overrides, base.hydra.sweeper, base.objective, base.hydra.sweep.dir)
        return search.search_jobs(overrides, base.hydra.sweeper), True
    jobs = _expand(overrides)
    first = compose_config(jobs[0], return_hydra_config=True)
    if first.hydra.sweeper.get("params"):  # as BasicSweeper.sweep: the config's params, then the command line's,
        # a key given by both keeping the params' place in the loops and the command line's values
        params = [f"{k}={v}" for k, v in first.hydra.sweeper.params.items()]
        jobs = _expand(params + overrides)
    return jobs, False


def _check_resume(cfg: Config, run_dir: Path, multirun: bool) -> None:
    """A run directory that holds a checkpoint is resumed: it must resume with this command's config (compared with
    what the checkpoint was written with), and no other process may be working in it.

    A single run in use is refused here, before Hydra writes into it; a sweep's job in use is said in one line and
    left to fail as in use when its turn comes, the other jobs going on."""
    from tmexp.core.checkpoint import CheckpointError, ResumeMismatch, check_resume, resume_structure

    holder = rundir.lock_holder(run_dir)
    if holder is not None:
        message = (
            f"{run_dir} is in use by {holder}: wait for it to end or stop it, or choose another "
            f"{'hydra.sweep.dir' if multirun else 'hydra.run.dir'}."
        )
        if not multirun:
            raise ConfigError(message)
        print(f"warning: {message} That job will be reported as in use; the others run.", file=sys.stderr)
        return
    capacity = max(int(point[1][0]) for point in cfg.memory.memory_size_schedule)
    try:
        check_resume(
            run_dir,
            resume_structure(cfg),
            rundir.read_resolved_config(run_dir),
            replay_capacity=capacity,
            discard_replay=cfg.training.resume_discards_replay,
        )
    except (CheckpointError, ResumeMismatch) as error:
        raise ConfigError(str(error)) from error


def _sweep_job_dir(hydra_node: DictConfig, index: int) -> Path:
    """Where job ``index`` of a multirun will run: ``hydra.sweep.dir / hydra.sweep.subdir`` as Hydra resolves it
    (``${hydra.job.num}`` by default; a subdir such as ``${run_name}/seed${seed}`` resolves from the job's config)."""
    with open_dict(hydra_node):
        hydra_node.job.num = index
    try:
        subdir = str(hydra_node.sweep.subdir)
    except Exception:  # an interpolation only the launcher can resolve: Hydra's default layout
        subdir = str(index)
    return Path(hydra_node.sweep.dir) / subdir


def precheck(argv: list[str]) -> int:
    """Compose and check every job of the command line; return the number of jobs (raises ConfigError)."""
    if any(a in _INFO_FLAGS for a in argv):
        return 0
    slurm_launcher.install()  # hydra/launcher=slurm's schema (idempotent)
    overrides, multirun, print_only = _split_argv(argv)
    try:
        jobs, searching = _multirun_jobs(overrides) if multirun else ([overrides], False)
        launcher = None
        warned: set[str] = set()
        # a grid's jobs composed fast: once per choice of config groups (tmexp/launch/freeze.py)
        checked: set[str] = set()
        for index, (hydra_node, cfg, key) in enumerate(freeze.composed_jobs(jobs)):
            if print_only:
                continue
            launcher = hydra_node.launcher
            if key is None or key not in checked:  # jobs that differ only in their seed are checked once
                checked.add(key)
                check_config(cfg)
                for warning in config_warnings(cfg):
                    if warning not in warned:  # once per command, not once per job
                        warned.add(warning)
                        print(f"warning: {warning}", file=sys.stderr)
                check_output_dir(hydra_node.sweep.dir if multirun else hydra_node.run.dir)
            # a search's trials get new job directories, numbered after the study's trials; a new sweep has none
            if not searching and (not multirun or Path(str(hydra_node.sweep.dir)).is_dir()):
                run_dir = _sweep_job_dir(hydra_node, index) if multirun else Path(hydra_node.run.dir)
                _check_resume(cfg, run_dir, multirun)
        if multirun and slurm.is_slurm(launcher):
            slurm.check_request(launcher)
    except ConfigError:
        raise
    except Exception as error:  # Hydra / OmegaConf composition errors: unknown key, bad type, unknown option
        raise ConfigError(_appended_twice(overrides, error) or _one_line(error)) from error
    return len(jobs)


def _appended_twice(overrides: list[str], error: BaseException) -> str | None:
    """Hydra's words for ``+group=x`` where the composed config already chooses the group (an ablation sweep's
    experiment lists ``ablation`` in its defaults) point to a config file; say what to type instead."""
    text = str(error)
    if not text.startswith("Multiple values for "):
        return None
    group = text.removeprefix("Multiple values for ").split(".", 1)[0].strip()
    appended = [o for o in overrides if o.startswith("+") and o.lstrip("+").split("=", 1)[0] == group]
    if not appended:
        return None
    value = appended[0].split("=", 1)[1]
    return (
        f"{appended[0]}: the composed config already chooses a {group} (an ablation sweep's experiment lists it "
        f"in its defaults); write {group}={value} without the +."
    )
