"""Compare runs by relative time and by steps: ``python -m tmexp.compare RUN_OR_SWEEP_DIR ... [options]``.

Prints (or writes under ``--out``) tables of the scalar metrics and race statistics at common checkpoints, seed-group
statistics when runs differ only in ``seed``, and with ``--plot`` one figure per metric. ``--sweep`` prints one row
per job of multirun directories instead. See ``tmexp.analysis`` for the definitions.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from tmexp.analysis import document, loading, plots, stats, summary, sweep, tables
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
    p.add_argument("--time-axis", choices=tables.TIME_AXES, default="wall",
                   help="wall minutes, or training time from cumul_training_hours (robust to calendar gaps)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", help="step checkpoints, e.g. 10M,20M")
    steps.add_argument("--step-interval", help="a step checkpoint every N steps (e.g. 5M)")
    p.add_argument("--by", choices=tables.STEP_AXES, default="frames", help="count steps in frames or updates")
    p.add_argument("--format", choices=FORMATS, default="md", help="table format (default md)")
    p.add_argument("--out", type=Path, help="write tables (and figures) to this directory instead of stdout")
    p.add_argument("--plot", action="store_true",
                   help="draw one figure per metric, by time and by steps, into --out (default ./compare_out)")
    p.add_argument("--plot-format", choices=plots.PLOT_FORMATS, default="jpg")
    p.add_argument("--map", help="map short name (default: every map found in the logs)")
    p.add_argument("--sweep", action="store_true", help="one row per job of each multirun directory")
    return p


def sweep_text(paths: list[Path], fmt: str) -> str:
    parts = []
    for path in paths:
        table = sweep.sweep_table(path)
        parts += [heading(f"sweep {path}", 2, fmt),
                  render_table(table, fmt, sweep.SWEEP_FORMATS, index_name="job")]
    return "\n\n".join(parts) + "\n"


def run_comparisons(runset: loading.RunSet, args) -> tuple[list[document.Section], dict]:
    """All sections of a compare run, plus the comparisons (for plots)."""
    scalars, runs = runset.scalars, runset.labels()
    runs = [r for r in runs if (scalars["run"] == r).any()]
    if not runs:
        raise UsageError("the event files hold no scalars to compare; point at runs that have logged metrics.")
    maps = [args.map] if args.map else tables.detect_maps(scalars)
    groups = stats.seed_groups({r: runset.runs[r] for r in runs})

    starts = runset.starts()
    by_time = tables.compare(scalars, args.time_axis, runs, interval=args.interval, maps=maps, starts=starts)
    if args.steps:
        step_list, interval = tables.parse_steps(args.steps), None
    else:
        step_list = None
        interval = None
        if args.step_interval is not None:
            parsed = tables.parse_steps(args.step_interval)
            if len(parsed) != 1:
                raise UsageError(f"--step-interval takes one step count, not {args.step_interval!r}.")
            interval = parsed[0]
    if step_list is None and interval is None:
        window = float(tables.spans(tables.with_axis(scalars[scalars["run"].isin(runs)], args.by)).min())
        interval = document.auto_step_interval(window)
    by_steps = tables.compare(scalars, args.by, runs, steps=step_list, step_interval=interval, maps=maps)

    run_table = summary.run_summary(scalars, runs, maps[0] if maps else None, starts)
    sections = [document.run_section(run_table)]
    for cmp in (by_time, by_steps):
        sections += document.metric_sections(cmp, maps)
        sections += document.race_sections(cmp)
        sections += document.all_seed_sections(cmp, groups, maps)
    if maps:
        sections += document.final_seed_sections(run_table, groups, None)
    if by_steps.dropped:
        print(f"tmexp.compare: skipped step checkpoints beyond the common window "
              f"({tables.format_steps(by_steps.window)} {args.by}): "
              + ", ".join(tables.format_steps(s) for s in by_steps.dropped), file=sys.stderr)
    return sections, {"time": by_time, "steps": by_steps, "maps": maps}


def attach_figures(sections: list[document.Section], figures: dict[str, object], axis: str) -> None:
    for s in sections:
        for key, path in figures.items():
            if s.key == f"{key}_by_{axis}":
                s.figure = path


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
        sections, cmps = run_comparisons(runset, args)
        if args.plot:
            out_dir = args.out or Path("compare_out")
            for cmp in (cmps["time"], cmps["steps"]):
                attach_figures(sections, plots.plot_comparison(cmp, cmps["maps"], out_dir, args.plot_format),
                               cmp.axis)
        if args.out and args.format == "csv":
            args.out.mkdir(parents=True, exist_ok=True)
            for s in sections:
                (args.out / f"{plots.safe_name(s.key)}.csv").write_text(
                    render_table(s.table, "csv", s.formats, s.default, s.index_name) + "\n")
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
