"""Compare runs by relative time and by steps: ``python -m tmexp.compare RUN_OR_SWEEP_DIR ... [options]``.

Prints (or writes under ``--out``) tables of the scalar metrics and race statistics at common checkpoints, seed-group
estimates when runs differ only in ``seed`` (``--groups``: each group tested against the baseline group, with its
verdict, and the seeds planner; ``docs/analysis.md``), and with ``--plot`` one figure per metric (a seed group as
its centre with its seeds as thin lines of its colour). ``--metrics TAG ...`` tabulates any scalars instead of
the default set, ``--all-scalars`` every tag logged. ``--sweep`` prints one row per job of multirun directories
instead. The tables and figures come from the pipeline the experiment write-up uses (``tmexp.analysis.pipeline``).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from tmexp.analysis import document, loading, pipeline, plots, sweep, tables
from tmexp.analysis.eventfile import EventFileWarning
from tmexp.analysis.render import FORMATS, heading, render_table


class UsageError(Exception):
    """A command-line value the user can fix."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, exit 2 (argparse would add a usage block)
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m tmexp.compare", description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", help="run directories, sweep (multirun) directories or event files")
    p.add_argument("--interval", type=float, default=10.0, help="minutes between time checkpoints (default 10)")
    p.add_argument(
        "--time-axis",
        choices=tables.TIME_AXES,
        default="wall",
        help="wall minutes, or training time from cumul_training_hours (robust to calendar gaps)",
    )
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", help="step checkpoints, e.g. 10M,20M")
    steps.add_argument("--step-interval", help="a step checkpoint every N steps (e.g. 5M)")
    p.add_argument("--by", choices=tables.STEP_AXES, default="frames", help="count steps in frames or updates")
    p.add_argument("--format", choices=FORMATS, default="md", help="table format (default md)")
    p.add_argument("--out", type=Path, help="write tables (and figures) to this directory instead of stdout")
    p.add_argument(
        "--plot",
        action="store_true",
        help="draw one figure per metric, by time and by steps, into --out (default ./compare_out)",
    )
    p.add_argument("--plot-format", choices=plots.PLOT_FORMATS, default="png", help="figure format (default png)")
    p.add_argument("--map", help="map short name (default: every map found in the logs)")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--metrics",
        nargs="+",
        metavar="TAG",
        help="tabulate and plot these scalar tags instead of the default set (after the paths)",
    )
    which.add_argument("--all-scalars", action="store_true", help="add a table and figure of every other tag logged")
    p.add_argument("--sweep", action="store_true", help="one row per job of each multirun directory")
    p.add_argument(
        "--groups",
        action="store_true",
        help="test each seed group against the baseline group: difference, 95%% interval, permutation "
        "p (Holm-adjusted), P(better), verdict, and the seeds planner",
    )
    p.add_argument("--baseline", help="the group the others are compared with (default: the first found)")
    p.add_argument(
        "--difference",
        type=float,
        default=0.5,
        help="the seeds planner's difference of best time to detect, in s (default 0.5)",
    )
    return p


def sweep_text(paths: list[Path], fmt: str) -> str:
    parts = []
    for path in paths:
        table = sweep.sweep_table(path)
        parts += [heading(f"sweep {path}", 2, fmt), render_table(table, fmt, sweep.SWEEP_FORMATS, index_name="job")]
    return "\n\n".join(parts) + "\n"


def options_from(args) -> pipeline.Options:
    if args.steps:
        steps, interval = tables.parse_steps(args.steps), None
    else:
        steps, interval = None, None
        if args.step_interval is not None:
            parsed = tables.parse_steps(args.step_interval)
            if len(parsed) != 1:
                raise UsageError(f"--step-interval takes one step count, not {args.step_interval!r}.")
            interval = parsed[0]
    if args.difference <= 0:
        raise UsageError(f"--difference must be a positive number of seconds, not {args.difference:g}.")
    return pipeline.Options(
        args.time_axis,
        args.interval,
        (args.by,),
        steps,
        interval,
        [args.map] if args.map else None,
        args.metrics,
        args.all_scalars,
        args.baseline,
        group_tests=args.groups,
        difference=args.difference,
    )


def run_comparisons(runset: loading.RunSet, args) -> tuple[list[document.Section], pipeline.Analysis]:
    """All sections of a compare run (figures drawn and linked with ``--plot``), and the analysis."""
    analysis = pipeline.analyse(runset, options_from(args))
    if args.baseline and args.baseline not in analysis.groups:
        raise UsageError(
            f"--baseline {args.baseline!r} is not a group of these runs; the groups are {', '.join(analysis.groups)}."
        )
    if args.plot:
        analysis.plot(args.out or Path("compare_out"), args.plot_format)
    for cmp in analysis.by_steps:
        if cmp.dropped:
            print(
                f"tmexp.compare: skipped step checkpoints beyond the common window "
                f"({tables.format_steps(cmp.window)} {cmp.axis}): "
                + ", ".join(tables.format_steps(s) for s in cmp.dropped),
                file=sys.stderr,
            )
    return analysis.sections(), analysis


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        paths = [Path(p) for p in args.paths]
        for p in paths:
            if not p.exists():
                raise UsageError(f"{p} does not exist; pass run or sweep directories.")
        if args.sweep:
            text = sweep_text(paths, args.format)
            return _emit(text, args, "sweep")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", EventFileWarning)
            runset = loading.load_runs(paths)
        for w in caught:  # damaged files: one line each, the read goes on
            if issubclass(w.category, EventFileWarning):
                print(f"tmexp.compare: warning: {w.message}", file=sys.stderr)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        sections, _ = run_comparisons(runset, args)
        if args.out and args.format == "csv":
            args.out.mkdir(parents=True, exist_ok=True)
            for s in sections:
                (args.out / f"{plots.safe_name(s.key)}.csv").write_text(
                    render_table(s.table, "csv", s.formats, s.default, s.index_name) + "\n"
                )
            return 0
        text = document.render_sections(sections, args.format, figure_dir=args.out if args.plot else None)
        return _emit(text, args, "comparison")
    except (UsageError, loading.RunLoadError, tables.TableError) as err:
        print(f"tmexp.compare: {err}", file=sys.stderr)
        return 2


def _emit(text: str, args, name: str) -> int:
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"{name}.{args.format}"
        path.write_text(text)
        print(f"wrote {path}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
