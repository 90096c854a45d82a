"""Write tables as Markdown, CSV or reStructuredText (no extra dependency: pandas' to_markdown needs tabulate)."""

from __future__ import annotations

import math

import pandas as pd

FORMATS = ("md", "csv", "rst")


def format_cell(value, fmt: str = "{:.3f}") -> str:
    """A table cell: '-' for missing values, ``fmt`` for floats, str() for the rest."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return fmt.format(value)
    if hasattr(value, "dtype") and value.dtype.kind == "f":
        return format_cell(float(value), fmt)
    return str(value)


def _cells(df: pd.DataFrame, formats: dict[str, str] | None, default: str, index_name: str):
    formats = formats or {}
    header = [index_name or (df.index.name or "")] + [str(c) for c in df.columns]
    rows = []
    # itertuples keeps each column's own type (iterrows would turn a row of ints and floats into floats).
    for idx, *values in df.itertuples(index=True, name=None):
        label = " / ".join(map(str, idx)) if isinstance(idx, tuple) else str(idx)
        rows.append([label] + [format_cell(v, formats.get(str(c), default)) for c, v in zip(df.columns, values)])
    return header, rows


def render_table(
    df: pd.DataFrame,
    fmt: str = "md",
    formats: dict[str, str] | None = None,
    default: str = "{:.3f}",
    index_name: str = "",
) -> str:
    """One table as text; ``formats`` maps column name -> format string for floats."""
    header, rows = _cells(df, formats, default, index_name)
    if fmt == "csv":
        out = pd.DataFrame(rows, columns=header)
        return out.to_csv(index=False).rstrip("\n")
    if fmt == "md":
        lines = [
            "| " + " | ".join(h.replace("|", "\\|") for h in header) + " |",
            "|" + "|".join("---" for _ in header) + "|",
        ]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        return "\n".join(lines)
    if fmt == "rst":
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
        widths = [max(w, 1) for w in widths]
        rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
        head_rule = "+" + "+".join("=" * (w + 2) for w in widths) + "+"

        def line(cells):
            return "|" + "|".join(f" {c:<{w}} " for c, w in zip(cells, widths)) + "|"

        lines = [rule, line(header), head_rule]
        for r in rows:
            lines += [line(r), rule]
        if not rows:
            lines.append(rule)
        return "\n".join(lines)
    raise ValueError(f"unknown table format {fmt!r}")  # callers validate user input against FORMATS


def heading(text: str, level: int, fmt: str) -> str:
    """A section heading in the output format (CSV gets a '# ' comment line)."""
    if fmt == "md":
        return "#" * level + " " + text
    if fmt == "rst":
        return text + "\n" + "=~-^"[min(level, 4) - 1] * len(text)
    return "# " + text
