"""What the benchmarks that time a run's parts share: compose the run's config, build the run, measure, close it.

    cfg = compose_run(args.experiment, args.overrides)      # checked as tmexp.train checks, BenchmarkError if not
    with built_run(cfg, "collect") as (run, tmp):           # tmexp.core.build in a temporary directory, closed after
        result = measure(args, cfg, run)
    report(result, args.json)

A benchmark module imports this module, never another benchmark.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator
from typing import Any


class BenchmarkError(ValueError):
    """A benchmark option that cannot be used (the message names the option and the fix)."""


def compose_run(experiment: str | None, overrides: list[str]):
    """The run's config: ``+experiment=NAME`` (when given) and the overrides, checked as ``tmexp.train`` checks."""
    from tmexp.compose import compose_config
    from tmexp.launch.precheck import precheck
    from tmexp.validation import ConfigError

    argv = ([f"+experiment={experiment}"] if experiment else []) + list(overrides)
    try:
        precheck(argv)
    except ConfigError as err:
        raise BenchmarkError(str(err)) from None
    return compose_config(argv)


@contextlib.contextmanager
def built_run(cfg, name: str) -> Iterator[tuple[Any, str]]:
    """The run ``cfg`` describes, built in a temporary directory (``tmexp-bench-<name>-*``); yields (run, directory)
    and closes the run (its collectors, its writer), then removes the directory, however the measurement ends."""
    from tmexp.core.build import build

    with tempfile.TemporaryDirectory(prefix=f"tmexp-bench-{name}-") as tmp:
        run = build(cfg, tmp)
        try:
            yield run, tmp
        finally:
            run.close()


def report(result: dict, as_json: bool) -> None:
    """One JSON object (``--json``), or one ``key: value`` line per figure."""
    if as_json:
        print(json.dumps(result))
        return
    width = max((len(key) for key in result), default=0)
    for key, value in result.items():
        print(f"{key:>{width}}: {value}")


def fail(name: str, error: BaseException) -> int:
    """The one line a user's mistake ends in (``tmexp.bench NAME: error: ...``); the exit status 2."""
    print(f"tmexp.bench {name}: error: {error}", file=sys.stderr)
    return 2
