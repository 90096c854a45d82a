"""Statistics across seeds, as the rliable library defines them (Agarwal et al., 2021).

- IQM: the 25 % trimmed mean of all scores (``scipy.stats.trim_mean(..., 0.25, axis=None)``, as rliable).
- 95 % stratified bootstrap CI: resample the runs (seeds) of each task with replacement, recompute the aggregate,
  take the 2.5th and 97.5th percentiles of the replicates (rliable's default ``method='percentile'``). With
  ``np.random.RandomState(seed)`` the index draws are the ones rliable makes after ``np.random.seed(seed)``, so the
  intervals agree exactly (tested).
- Probability of improvement P(X > Y): for each task the fraction of run pairs where X beats Y, ties counting half
  (the Mann-Whitney U statistic over n_x * n_y), averaged over tasks.

Scores are matrices of shape (num_runs, num_tasks); here a task is a map (usually one). Race times are lower-is-
better, so comparisons of times negate them (``higher_is_better=False``). A group with a single seed gets its value
and no interval: one run says nothing about seed variance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import scipy.stats


BOOTSTRAP_REPS = 50_000  # resamples of every across-seed interval (compare, report, planner: one value)


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all entries of ``scores`` (any shape)."""
    return float(scipy.stats.trim_mean(np.asarray(scores, np.float64), proportiontocut=0.25, axis=None))


def _iqm_rows(samples: np.ndarray) -> np.ndarray:
    """IQM of each row of a (reps, k) matrix."""
    return scipy.stats.trim_mean(samples, proportiontocut=0.25, axis=1)


def stratified_bootstrap_ci(scores: np.ndarray, reps: int = BOOTSTRAP_REPS, size: float = 0.95,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the IQM of ``scores`` (num_runs, num_tasks), resampling runs within each task."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    n_runs, n_tasks = scores.shape
    rng = np.random.RandomState(seed)
    # One draw of shape (reps, runs, tasks) yields the same stream as rliable's per-replicate draws.
    idx = rng.randint(0, n_runs, size=(reps, n_runs, n_tasks))
    samples = scores[idx, np.arange(n_tasks)[None, None, :]].reshape(reps, -1)
    estimates = _iqm_rows(samples)
    alpha = (1.0 - size) / 2.0
    low, high = np.percentile(estimates, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def iqm_band(values: np.ndarray, reps: int = 2000, size: float = 0.95,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM across runs and its 95 % stratified bootstrap CI at each of many points (a curve's x grid).

    ``values`` has shape (num_runs, num_points); each point is a one-task problem, and every point's interval is
    exactly ``stratified_bootstrap_ci(values[:, j], reps, size, seed)`` (the same resampled runs at every point).
    Returns (iqm, low, high), each of shape (num_points,).
    """
    values = np.asarray(values, np.float64)
    n_runs, n_points = values.shape
    idx = np.random.RandomState(seed).randint(0, n_runs, size=(reps, n_runs, 1))[:, :, 0]
    alpha = 100 * (1.0 - size) / 2.0
    low, high = np.empty(n_points), np.empty(n_points)
    chunk = max(1, (1 << 22) // (reps * n_runs))  # bounds the (reps, runs, points) sample array to ~32 MB
    for start in range(0, n_points, chunk):
        samples = values[:, start:start + chunk][idx]  # (reps, n_runs, chunk)
        estimates = scipy.stats.trim_mean(samples, proportiontocut=0.25, axis=1)
        low[start:start + chunk], high[start:start + chunk] = np.percentile(estimates, [alpha, 100 - alpha], axis=0)
    return scipy.stats.trim_mean(values, proportiontocut=0.25, axis=0), low, high


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y) averaged over tasks; inputs (num_runs_x, num_tasks) and (num_runs_y, num_tasks)."""
    x = np.asarray(scores_x, np.float64)
    y = np.asarray(scores_y, np.float64)
    if x.ndim == 1:
        x, y = x[:, None], y[:, None]
    per_task = []
    for task in range(x.shape[1]):
        a, b = x[:, task][:, None], y[:, task][None, :]
        per_task.append(float(np.mean((a > b) + 0.5 * (a == b))))
    return float(np.mean(per_task))


@dataclass
class GroupEstimate:
    """IQM and 95 % CI of one seed group (``low``/``high`` None for a single seed)."""

    group: str
    n_seeds: int
    iqm: float
    low: float | None
    high: float | None

    def describe(self, fmt: str = "{:.3f}") -> str:
        if self.low is None:
            return f"{fmt.format(self.iqm)} (single seed)"
        return f"{fmt.format(self.iqm)} [{fmt.format(self.low)}, {fmt.format(self.high)}] ({self.n_seeds} seeds)"


def estimate(group: str, values, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> GroupEstimate:
    """IQM across the seeds of a group, with a 95 % stratified bootstrap CI when there are several seeds."""
    values = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if len(values) == 0:
        return GroupEstimate(group, 0, float("nan"), None, None)
    if len(values) == 1:
        return GroupEstimate(group, 1, float(values[0]), None, None)
    low, high = stratified_bootstrap_ci(values[:, None], reps=reps, seed=seed)
    return GroupEstimate(group, len(values), iqm(values), low, high)


@dataclass
class GroupComparison:
    """Group A against group B: do the intervals overlap, and P(A better than B)."""

    a: GroupEstimate
    b: GroupEstimate
    overlap: bool | None          # None when either group has a single seed
    p_improvement: float          # P(A better than B)

    def describe(self) -> str:
        if self.overlap is None:
            verdict = "no interval for a single-seed group"
        else:
            verdict = "intervals overlap" if self.overlap else "intervals do not overlap"
        return f"{self.a.group} vs {self.b.group}: {verdict}; P({self.a.group} better) = {self.p_improvement:.2f}"


def compare_groups(a: GroupEstimate, values_a, b: GroupEstimate, values_b,
                   higher_is_better: bool = False) -> GroupComparison:
    """Compare two groups' per-seed values (race times by default: lower is better)."""
    sign = 1.0 if higher_is_better else -1.0
    va = sign * np.asarray([v for v in values_a if np.isfinite(v)], np.float64)
    vb = sign * np.asarray([v for v in values_b if np.isfinite(v)], np.float64)
    p = probability_of_improvement(va[:, None], vb[:, None]) if len(va) and len(vb) else float("nan")
    if a.low is None or b.low is None:
        overlap = None
    else:
        overlap = bool(a.low <= b.high and b.low <= a.high)
    return GroupComparison(a, b, overlap, p)


def group_values(values, groups: dict[str, list[str]]) -> dict[str, list[float]]:
    """Per-run values (a Series or dict by run label) -> group -> list of its seeds' values (NaN where missing)."""
    return {g: [float(values.get(r, np.nan)) for r in members] for g, members in groups.items()}


def group_estimates(values, groups: dict[str, list[str]], reps: int = BOOTSTRAP_REPS,
                    seed: int = 0) -> dict[str, GroupEstimate]:
    return {g: estimate(g, v, reps=reps, seed=seed) for g, v in group_values(values, groups).items()}


def group_comparisons(values, groups: dict[str, list[str]], baseline: str | None = None,
                      reps: int = BOOTSTRAP_REPS, higher_is_better: bool = False) -> list[GroupComparison]:
    """Each group against the baseline group (default: the first); values are lower-is-better (times) unless
    ``higher_is_better`` (distances)."""
    names = list(groups)
    if len(names) < 2:
        return []
    baseline = baseline if baseline in groups else names[0]
    per_group = group_values(values, groups)
    estimates = group_estimates(values, groups, reps=reps)
    return [compare_groups(estimates[g], per_group[g], estimates[baseline], per_group[baseline], higher_is_better)
            for g in names if g != baseline]


def flatten(tree, prefix: str = "") -> dict[str, object]:
    """Nested dict -> {'a.b.c': leaf}."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _added_keys(flats: list[dict]) -> set[str]:
    """Keys that some configs lack and all the others hold at one value: a key the schema gained between the runs'
    commits, which says nothing about how they differ."""
    present: dict[str, set[str]] = {}
    for flat in flats:
        for k, v in flat.items():
            present.setdefault(k, set()).add(json.dumps(v, default=str))
    return {k for k, values in present.items() if len(values) == 1 and any(k not in f for f in flats)}


def seed_groups(runs) -> dict[str, list[str]]:
    """Group runs whose configs differ only in ``seed`` (any key named seed); label each group by the rest.

    ``runs`` maps run label -> RunInfo. Without a config, the Hydra overrides minus ``seed=`` decide. A key that
    only some configs hold, at one value in all of them (added to the schema between the runs), is not a difference.
    """
    keys: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    flats = {label: {k: v for k, v in flatten(info.config).items() if k.split(".")[-1] != "seed"}
             for label, info in runs.items() if info.config is not None}
    added = _added_keys(list(flats.values()))
    for label, info in runs.items():
        rest = [o for o in info.overrides if o.split("=", 1)[0].lstrip("+~").split(".")[-1] != "seed"]
        if info.config is not None:
            flat = {k: v for k, v in flats[label].items() if k not in added}
            key = json.dumps(flat, sort_keys=True, default=str)
        elif info.overrides:
            key = json.dumps(sorted(rest))
        else:
            key = "run:" + label  # nothing says what it is: a group of its own
        keys.setdefault(key, []).append(label)
        names.setdefault(key, ",".join(rest) if rest else label)
    out: dict[str, list[str]] = {}
    for key, members in keys.items():
        name = names[key] if len(members) > 1 or not names[key] else members[0]
        if len(members) > 1 and name == members[0]:
            name = "base"
        while name in out:
            name += "'"
        out[name] = members
    return out
