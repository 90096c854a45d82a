"""Write an experiment report: ``python -m tmexp.report experiments/<name>``.

Reads ``experiments/<name>/runs.yaml`` (format documented in ``tmexp.analysis.writeup``) and writes
``experiments/<name>/README.md`` with its figures under ``experiments/<name>/figures/``.
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
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", EventFileWarning)
            path = write_report(args.experiment)
        for w in caught:  # damaged files: one line each, the read goes on
            if issubclass(w.category, EventFileWarning):
                print(f"tmexp.report: warning: {w.message}", file=sys.stderr)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    except ReportError as err:
        print(f"tmexp.report: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
