"""No drift: at submission each job's resolved config and the code's state are frozen in the sweep directory.

A SLURM job may start hours after its submission and be requeued days later. Composing its config again at each
start would pick up every edit made to ``conf/`` since; so ``hydra/launcher=slurm`` composes and checks each job once,
before it submits anything, and writes::

    <sweep_dir>/.frozen/<job num>.yaml      the job's config, interpolations resolved (the first submission's)
    <sweep_dir>/.frozen/code/<id>.json      the commit of the checkout at a submission, and whether it was dirty
    <sweep_dir>/.frozen/code/<id>.diff      ``git diff HEAD`` of a dirty checkout

Every start of the job runs the frozen config (``load_frozen``, called by ``tmexp.train``) and says so in its log,
naming the keys where the config files now compose differently; when the checkout's commit or uncommitted changes
differ from the submission's, it says that too (the code itself is imported from the checkout as it is).

Composing 5,000 jobs one by one through Hydra takes minutes (about 0.1 s each). ``JobComposer`` composes once per
distinct choice of config groups and applies each job's value overrides (``seed=3``) to a copy, the way Hydra applies
them (``OmegaConf.update`` with merge); each distinct value is converted once by OmegaConf against the schema. It
checks itself: the first job of every group choice is also composed by Hydra in full, and where the two differ the
whole group is composed by Hydra job by job.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

import tmexp

log = logging.getLogger(__name__)

FROZEN = ".frozen"
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# ----- composing many jobs ----------------------------------------------------------------------------------------
@dataclass
class _Group:
    """The jobs that share one choice of config groups: composed once."""

    base: DictConfig  # the task config (no hydra node), unresolved
    plain: dict  # ``base`` resolved, as plain containers
    exact: bool  # True: compose each job through Hydra (the fast path disagreed, or the config interpolates)
    schema: type | None
    obj: Any = None  # ``base`` as its schema's object, for checks
    values: dict[tuple[str, str], tuple[Any, Any]] = field(default_factory=dict)  # (key, text) -> (plain, object)


def _is_value_override(override) -> bool:
    from hydra.core.override_parser.types import OverrideType

    key = override.key_or_group
    return (
        override.type == OverrideType.CHANGE
        and override.package is None
        and not key.startswith("hydra.")
        and not override.is_sweep_override()
        and not isinstance(override.value(), (dict, list))
    )


class _NotFast(Exception):
    """A value override the fast path does not apply itself."""


class JobComposer:
    """Each job's resolved task config (and, for tmexp's schema, the typed ``Config``), from Hydra's config loader
    and the sweep's master config, fast (see the module docstring).

    Args:
        compose: overrides -> the composed config with its ``hydra`` node (Hydra's ``load_sweep_config``).
    """

    def __init__(self, compose, group_exists):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.compose = compose
        self.group_exists = group_exists
        self.parser = OverridesParser.create()
        self.groups: dict[tuple[str, ...], _Group] = {}
        self._parsed: dict[str, tuple[str, str, Any] | None] = {}
        self.fast = self.exact = 0

    @staticmethod
    def for_launcher(launcher) -> JobComposer:
        loader = launcher.hydra_context.config_loader
        master = launcher.config
        return JobComposer(
            lambda overrides: loader.load_sweep_config(master, list(overrides)),
            lambda name: loader.repository.group_exists(name),
        )

    def _split(self, overrides: list[str]) -> tuple[tuple[str, ...], list[tuple[str, str, Any]]]:
        slow, values = [], []
        for text in overrides:
            parsed = self._parsed.get(text)
            if parsed is None:  # each distinct override is parsed once: Hydra's parser takes about 1 ms
                override = self.parser.parse_overrides([text])[0]
                fast = _is_value_override(override) and not self.group_exists(override.key_or_group.replace(".", "/"))
                parsed = self._parsed[text] = (
                    (override.key_or_group, override.get_value_element_as_str(), override.value()) if fast else None
                )
            if parsed is None:
                slow.append(text)
            else:
                values.append(parsed)
        return tuple(slow), values

    def _task(self, composed: DictConfig) -> DictConfig:
        with open_dict(composed):
            del composed["hydra"]
        return composed

    def _group(self, slow: tuple[str, ...], first_job: list[str], values) -> _Group:
        group = self.groups.get(slow)
        if group is not None:
            return group
        base = self._task(self.compose(slow))
        plain = OmegaConf.to_container(base, resolve=True, enum_to_str=True)
        interpolates = plain != OmegaConf.to_container(base, resolve=False, enum_to_str=True)
        schema = OmegaConf.get_type(base)
        schema = schema if schema is not None and schema is not dict else None
        group = _Group(base, plain, interpolates, schema, obj=OmegaConf.to_object(base) if schema else None)
        self.groups[slow] = group
        if not group.exact:  # check the fast path against Hydra on this group's first job
            try:
                fast, _ = self._fast(group, values)
            except _NotFast:
                return group
            full = OmegaConf.to_container(self._task(self.compose(first_job)), resolve=True, enum_to_str=True)
            if fast != full:
                log.warning(
                    "fast composition differs from Hydra's for %s: composing those jobs one by one", " ".join(first_job)
                )
                group.exact = True
        return group

    def _value(self, group: _Group, key: str, text: str, value: Any) -> tuple[Any, Any]:
        """The override's value as the schema types it: (plain, object), converted once per distinct value by the
        key's own OmegaConf node (what ``OmegaConf.update`` does with a leaf), without copying the whole config."""
        from enum import Enum

        from omegaconf import ValueNode

        cached = group.values.get((key, text))
        if cached is None:
            parent_key, _, leaf = key.rpartition(".")
            parent = OmegaConf.select(group.base, parent_key) if parent_key else group.base
            node = parent._get_node(leaf) if isinstance(parent, DictConfig) else None
            if not isinstance(node, ValueNode) or (isinstance(value, str) and "${" in value):
                raise _NotFast(key)  # a new key, a container, an interpolation: Hydra composes it
            node = copy.deepcopy(node)
            try:
                node._set_value(value)
            except Exception:
                raise _NotFast(key) from None  # a value the schema refuses: Hydra composes the job, and says why
            obj = node._value()
            plain = obj.name if isinstance(obj, Enum) else obj
            cached = group.values[(key, text)] = (plain, obj)
        return cached

    def _fast(self, group: _Group, values) -> tuple[dict, Any]:
        plain = copy.deepcopy(group.plain)
        obj = copy.deepcopy(group.obj) if group.schema else None
        for key, text, value in values:
            plain_value, obj_value = self._value(group, key, text, value)
            *path, leaf = key.split(".")
            node = plain
            for part in path:
                node = node[part]
            node[leaf] = plain_value
            if obj is not None:
                target = obj
                for part in path:
                    target = getattr(target, part)
                setattr(target, leaf, obj_value)
        return plain, obj

    def job(self, overrides: list[str]) -> tuple[dict, Any]:
        """(the resolved task config as plain containers, the schema's object or None) of one job."""
        slow, values = self._split(overrides)
        group = self._group(slow, overrides, values)
        if not group.exact:
            try:
                result = self._fast(group, values)
                self.fast += 1
                return result
            except _NotFast:
                pass
        self.exact += 1
        task = self._task(self.compose(overrides))
        return (
            OmegaConf.to_container(task, resolve=True, enum_to_str=True),
            OmegaConf.to_object(task) if group.schema else None,
        )


def check_key(plain: dict) -> str:
    """What tmexp's checks of a job depend on: its config without the seed, which ``tmexp.validation`` never reads
    (``tests/test_sweep_local.py`` holds it to that). A 10-arm x 500-seed sweep is checked 10 times, not 5,000."""
    return json.dumps({k: v for k, v in plain.items() if k != "seed"}, sort_keys=True, default=str)


def composed_jobs(jobs: list[list[str]]) -> Iterator[tuple[DictConfig, Any, str | None]]:
    """(Hydra's node, the typed ``Config``, its ``check_key`` or None) of each job of a grid, for the training CLI's
    check before Hydra starts: through ``JobComposer`` when the job directories do not depend on the jobs' values
    (``hydra.sweep.subdir`` is ``${hydra.job.num}``, the default), else each job composed in full (key None)."""
    from hydra.core.config_store import ConfigStore

    from tmexp.compose import CONF_DIR, compose_config

    def compose(overrides) -> DictConfig:
        return compose_config(list(overrides), return_hydra_config=True)

    first = compose(jobs[0])
    fast = (
        len(jobs) > 1 and OmegaConf.to_container(first.hydra.sweep, resolve=False).get("subdir") == "${hydra.job.num}"
    )
    hydra_node = first.hydra
    store = ConfigStore.instance()

    def group_exists(name: str) -> bool:
        try:
            return (CONF_DIR / name).is_dir() or isinstance(store._open(name), dict)
        except Exception:  # not a path the store knows
            return False

    composer = JobComposer(compose, group_exists)
    for index, job in enumerate(jobs):
        if fast:
            plain, obj = composer.job(job)
            yield hydra_node, obj, check_key(plain)
            continue
        composed = first if index == 0 else compose(job)
        node = composed.hydra
        with open_dict(composed):
            del composed["hydra"]
        yield node, OmegaConf.to_object(composed), None


def check_job(obj: Any, num: int, overrides: list[str]) -> None:
    """tmexp's checks of one job's config (raises ConfigError naming the job); other schemas are not checked."""
    from tmexp.config import Config
    from tmexp.validation import ConfigError, check_config

    if not isinstance(obj, Config):
        return
    try:
        check_config(obj)
    except ConfigError as error:
        raise ConfigError(f"job #{num} ({' '.join(overrides)}): {error}") from None


# ----- the code's state -------------------------------------------------------------------------------------------
def code_state() -> tuple[dict, str]:
    """(commit and dirtiness of the checkout tmexp is imported from, ``git diff HEAD`` when dirty)."""
    where = ["git", "-C", str(Path(tmexp.__file__).resolve().parent)]

    def git(*args: str) -> str:
        try:
            return subprocess.run(where + list(args), capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD").strip() or None
    diff = git("diff", "HEAD") if commit else ""
    return {
        "commit": commit,
        "dirty": bool(diff.strip()),
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff.strip() else None,
    }, diff


def _code_id(state: dict) -> str:
    return f"{(state['commit'] or 'nogit')[:12]}" + (f"-{state['diff_sha256'][:8]}" if state["dirty"] else "")


def freeze_code(sweep_dir: str | Path) -> str:
    """Record the checkout's state under ``.frozen/code/``; return its id (what the ledger keeps per submission)."""
    state, diff = code_state()
    folder = Path(sweep_dir) / FROZEN / "code"
    folder.mkdir(parents=True, exist_ok=True)
    code_id = _code_id(state)
    if not (folder / f"{code_id}.json").exists():
        if state["dirty"]:
            (folder / f"{code_id}.diff").write_text(diff)
        (folder / f"{code_id}.json").write_text(json.dumps(state, indent=2))
    return code_id


# ----- freezing and loading ---------------------------------------------------------------------------------------
def frozen_path(sweep_dir: str | Path, num: int) -> Path:
    return Path(sweep_dir) / FROZEN / f"{num}.yaml"


def freeze_jobs(
    launcher,
    sweep_dir: str | Path,
    jobs: dict[int, list[str]],
    composer: JobComposer | None = None,
) -> str:
    """Compose and check every job of ``jobs`` (number -> overrides); write the config of those not frozen yet;
    record the code's state. Returns the code state's id. Raises ConfigError (nothing written) for a bad job."""
    composer = composer or JobComposer.for_launcher(launcher)
    folder = Path(sweep_dir) / FROZEN
    folder.mkdir(parents=True, exist_ok=True)
    texts, checked = {}, set()
    for num, overrides in sorted(jobs.items()):
        plain, obj = composer.job(overrides)
        key = check_key(plain)
        if key not in checked:
            check_job(obj, num, overrides)
            checked.add(key)
        if not frozen_path(sweep_dir, num).exists():
            texts[num] = yaml.dump(plain, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    for num, text in texts.items():  # only once every job passed its checks
        path = frozen_path(sweep_dir, num)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return freeze_code(sweep_dir)


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def load_frozen(sweep_dir: str | Path, num: int, composed: DictConfig | None = None) -> dict | None:
    """The frozen config of job ``num`` (plain containers), or None when the sweep froze none (not a SLURM sweep).

    Logs that the job runs it, the keys where ``composed`` (what the config files give now) differs, and whether the
    checkout changed since the submission (``.slurm_jobs.json`` names the submission's code state)."""
    path = frozen_path(sweep_dir, num)
    try:
        frozen = yaml.load(path.read_text(), Loader=_Loader)
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as error:
        from tmexp.validation import ConfigError

        raise ConfigError(
            f"{path} is unreadable ({error}): restore it, or delete it to compose job #{num} from "
            "the config files as they are now."
        ) from None
    changed = []
    if composed is not None:
        changed = _differences(frozen, OmegaConf.to_container(composed, resolve=True, enum_to_str=True))
    log.info(
        "job #%d runs the config frozen at submission (%s)%s",
        num,
        path,
        f"; the config files now give other values for: {', '.join(changed[:10])}"
        + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
        if changed
        else "",
    )
    drift = code_drift(sweep_dir, num)
    if drift:
        log.warning("job #%d: %s", num, drift)
    return frozen


def code_drift(sweep_dir: str | Path, num: int) -> str | None:
    """How the checkout differs from the code state recorded when job ``num`` was submitted; None: it does not."""
    from tmexp.launch.slurm_launcher import Ledger

    code_id = Ledger(sweep_dir).jobs.get(num, {}).get("code")
    if not code_id:
        return None
    recorded_path = Path(sweep_dir) / FROZEN / "code" / f"{code_id}.json"
    try:
        recorded = json.loads(recorded_path.read_text())
    except (OSError, ValueError):
        return None
    now, _ = code_state()
    if now == recorded:
        return None
    what = (
        f"commit {str(recorded['commit'])[:12]} -> {str(now['commit'])[:12]}"
        if now["commit"] != recorded["commit"]
        else "uncommitted changes differ"
    )
    return (
        f"the checkout changed since this job was submitted ({what}; the submission's state is in "
        f"{recorded_path}): this start runs the frozen config with the code as it is now"
    )


def iter_frozen(sweep_dir: str | Path) -> Iterable[int]:
    return sorted(int(p.stem) for p in (Path(sweep_dir) / FROZEN).glob("*.yaml") if p.stem.isdigit())
