"""Sentences generated from a study's verdicts: each group's estimate and its comparisons, grouped by verdict."""

from __future__ import annotations

import pandas as pd

from tmexp.analysis import stats


def minutes(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def axis_unit(axis: str) -> str:
    return "wall minutes" if axis == "wall" else "training minutes"


def family_line(
    rows: list[tuple[str, stats.GroupComparison]],
    label: str,
    role: str,
    base: str,
    unit: str = "s",
    fmt: str = "{:+.3f}",
    words: tuple[str, str] = ("faster", "slower"),
) -> str | None:
    """The comparisons of one table's family at one checkpoint ``label``, grouped by verdict: 'Against the baseline
    v2: established: A (faster by ...); not established: B (...); too few seeds: C (+0.210 s, P(faster) 0.17).'"""
    here = [c for cp, c in rows if cp == label]
    if not here:
        return None
    parts = []
    for verdict in (stats.ESTABLISHED, stats.NOT_ESTABLISHED, stats.TOO_FEW_SEEDS):
        members = [c for c in here if c.verdict == verdict]
        if not members:
            continue
        texts = []
        for c in members:
            side = f"{words[0] if c.a_better else words[1]}, " if verdict == stats.ESTABLISHED else ""
            interval = "" if c.low is None else f" [{fmt.format(c.low)}, {fmt.format(c.high)}]"
            texts.append(
                f"{c.a.group} ({side}{fmt.format(c.difference)} {unit}{interval}, p(Holm) "
                f"{c.p_adjusted:.3f}, P({words[0]}) {c.p_improvement:.2f})"
            )
        parts.append(f"**{verdict}** for {', '.join(texts)}")
    return f"against the {role} {base}: " + "; ".join(parts) + "."


def estimates_line(values: pd.Series, groups: dict[str, list[str]], fmt: str = "{:.3f}") -> str:
    """'v2 median 22.800 (seeds ...); btr ...': each group's estimate as the tables give it."""
    return "; ".join(
        f"{g} {est.describe(fmt)}" for g, est in stats.group_estimates(values, groups).items() if est.n_seeds
    )
