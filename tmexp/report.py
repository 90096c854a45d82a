"""Write an experiment report: ``python -m tmexp.report experiments/<name> [--export]``.

Reads ``experiments/<name>/runs.yaml`` (format documented in ``tmexp.analysis.study``) and writes
``experiments/<name>/README.md`` with its figures under ``experiments/<name>/figures/``. A run whose directory is
missing is read from ``experiments/<name>/runs_export.json.gz``, which ``--export`` writes: the scalars and small
files the report reads from each run (``tmexp.analysis.export``), so a fresh clone regenerates the report.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from tmexp.analysis.eventfile import EventFileWarning
from tmexp.analysis.writeup import ReportError, write_report


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, exit 2
        print(f"tmexp.report: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m tmexp.report", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="experiment folder holding runs.yaml, e.g. experiments/btr_A01")
    parser.add_argument(
        "--export",
        action="store_true",
        help="also write runs_export.json.gz beside runs.yaml: what the report reads from each run "
        "(scalars, config, metadata), so that it regenerates where the run directories are not",
    )
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", EventFileWarning)
            written = write_report(args.experiment, export_runs=args.export)
        for w in caught:  # damaged files: one line each, the read goes on
            if issubclass(w.category, EventFileWarning):
                print(f"tmexp.report: warning: {w.message}", file=sys.stderr)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    except ReportError as err:
        print(f"tmexp.report: {err}", file=sys.stderr)
        return 2
    print(written.source)
    if written.export_file is not None:
        print(
            f"exported {written.n_runs} runs to {written.export_file} ({written.export_bytes / 1024:.0f} KB, "
            f"{written.export_bytes / 1024 / max(written.n_runs, 1):.0f} KB per run)"
        )
    print(f"wrote {written.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
