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

Below 5 seeds (MIN_SEEDS) these intervals mean little (a percentile bootstrap of 3 seeds is the range of the seeds),
so a group's estimate is then its median with every seed shown, and a comparison gets no interval and no verdict.
A difference between two groups is tested by a two-sided permutation test (exact where the relabellings are few),
Holm-corrected across the comparisons one table makes; its verdict is ``established`` (adjusted p < 0.05, both
groups at 5 seeds or more), ``not established`` or ``too few seeds``. Seeds are never paired across groups.
"""

from __future__ import annotations

import functools
import itertools
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


def stratified_bootstrap_ci(
    scores: np.ndarray, reps: int = BOOTSTRAP_REPS, size: float = 0.95, seed: int = 0
) -> tuple[float, float]:
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


def iqm_band(
    values: np.ndarray, reps: int = 2000, size: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        samples = values[:, start : start + chunk][idx]  # (reps, n_runs, chunk)
        estimates = scipy.stats.trim_mean(samples, proportiontocut=0.25, axis=1)
        low[start : start + chunk], high[start : start + chunk] = np.percentile(estimates, [alpha, 100 - alpha], axis=0)
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


MIN_SEEDS = 5  # below this, a group's interval means little (rliable): the median and every seed, no verdict
ALPHA = 0.05  # significance of a verdict, after Holm's correction across a table's family
PERMUTATIONS = 9_999  # sampled relabellings where the exact count is larger (scipy's permutation_test then samples)
ESTABLISHED, NOT_ESTABLISHED, TOO_FEW_SEEDS = "established", "not established", "too few seeds"


def point_estimate(values: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """A group's point estimate: the IQM at MIN_SEEDS seeds or more, the median below (a trimmed mean of 3 values
    trims nothing); along ``axis``, whose length is the group's size."""
    n = np.shape(values)[axis]
    if n >= MIN_SEEDS:
        return scipy.stats.trim_mean(values, proportiontocut=0.25, axis=axis)
    return np.median(values, axis=axis)


@dataclass
class GroupEstimate:
    """One seed group's values (finite ones, in seed order) and its point estimate; ``low``/``high`` is the 95 %
    stratified bootstrap interval of the IQM, only at MIN_SEEDS seeds or more."""

    group: str
    values: np.ndarray
    value: float
    low: float | None = None
    high: float | None = None

    @property
    def n_seeds(self) -> int:
        return len(self.values)

    @property
    def method(self) -> str:
        return "IQM" if self.n_seeds >= MIN_SEEDS else "median" if self.n_seeds > 1 else "value"

    def describe(self, fmt: str = "{:.3f}") -> str:
        """'IQM x [low, high] (n seeds)', 'median x (seeds a, b, c)', 'x (single seed)' or '-'."""
        if self.n_seeds == 0:
            return "-"
        if self.n_seeds == 1:
            return f"{fmt.format(self.value)} (single seed)"
        if self.low is None:
            seeds = ", ".join(fmt.format(v) for v in self.values)
            return f"median {fmt.format(self.value)} (seeds {seeds})"
        return f"IQM {fmt.format(self.value)} [{fmt.format(self.low)}, {fmt.format(self.high)}] ({self.n_seeds} seeds)"


def estimate(group: str, values, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> GroupEstimate:
    """A group's point estimate across its seeds (``point_estimate``), with the 95 % stratified bootstrap interval of
    its IQM at MIN_SEEDS seeds or more."""
    values = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if len(values) == 0:
        return GroupEstimate(group, values, float("nan"))
    if len(values) < MIN_SEEDS:
        return GroupEstimate(group, values, float(point_estimate(values)))
    low, high = _interval(tuple(values.tolist()), reps, seed)
    return GroupEstimate(group, values, iqm(values), low, high)


@functools.lru_cache(maxsize=4096)
def _interval(values: tuple[float, ...], reps: int, seed: int) -> tuple[float, float]:
    """The bootstrap interval of a group's seeds, computed once: tables, sentences and figures ask for the same
    group at the same checkpoint several times."""
    return stratified_bootstrap_ci(np.asarray(values)[:, None], reps=reps, seed=seed)


def difference_ci(
    values_a: np.ndarray, values_b: np.ndarray, reps: int = BOOTSTRAP_REPS, size: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of IQM(A) - IQM(B), resampling the seeds of each group independently (stratified)."""
    rng = np.random.RandomState(seed)
    a = values_a[rng.randint(0, len(values_a), size=(reps, len(values_a)))]
    b = values_b[rng.randint(0, len(values_b), size=(reps, len(values_b)))]
    diffs = _iqm_rows(a) - _iqm_rows(b)
    alpha = 100 * (1.0 - size) / 2.0
    low, high = np.percentile(diffs, [alpha, 100 - alpha])
    return float(low), float(high)


def _difference_statistic(a: np.ndarray, b: np.ndarray, axis: int = -1):
    return point_estimate(a, axis) - point_estimate(b, axis)


def permutation_p(values_a: np.ndarray, values_b: np.ndarray, resamples: int = PERMUTATIONS, seed: int = 0) -> float:
    """Two-sided permutation test of point(A) - point(B): exact over every relabelling of the pooled seeds when
    there are at most ``resamples`` of them, else over ``resamples`` random ones (scipy's permutation_test)."""
    if min(len(values_a), len(values_b)) < 2:  # scipy wants two values a sample: one seed has few relabellings
        pooled = np.concatenate([values_a, values_b])
        n = len(pooled)
        picks = np.array(list(itertools.combinations(range(n), len(values_a))))  # (relabellings, n_a)
        rest = np.array([[i for i in range(n) if i not in row] for row in picks])
        null = _difference_statistic(pooled[picks], pooled[rest], axis=1)
        observed = _difference_statistic(values_a, values_b)
        tol = 1e-12 * max(abs(observed), 1.0)
        return float(min(1.0, 2 * min(np.mean(null <= observed + tol), np.mean(null >= observed - tol))))
    result = scipy.stats.permutation_test(
        (values_a, values_b),
        _difference_statistic,
        vectorized=True,
        permutation_type="independent",
        alternative="two-sided",
        n_resamples=resamples,
        random_state=np.random.default_rng(seed),
    )
    return float(result.pvalue)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (a family-wise error of at most alpha when adjusted p < alpha); NaN stays
    NaN and does not count in the family. A few lines, not worth a dependency on statsmodels."""
    p = np.asarray(p_values, np.float64)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate([(m - k) * p[i] for k, i in enumerate(order)]) if m else []
    out[order] = np.minimum(adjusted, 1.0)
    return out


@dataclass
class GroupComparison:
    """Group A against group B: the difference of their point estimates (A - B, in the metric's unit), its 95 %
    stratified bootstrap interval (both groups at MIN_SEEDS seeds or more), the permutation test's p-value (and
    Holm's adjustment across the comparison's family, see ``adjust``), and P(A better than B)."""

    a: GroupEstimate
    b: GroupEstimate
    difference: float
    low: float | None
    high: float | None
    p_value: float
    p_improvement: float
    higher_is_better: bool = False
    p_adjusted: float = float("nan")

    @property
    def verdict(self) -> str:
        """'established' (adjusted p < ALPHA and both groups at MIN_SEEDS seeds or more), 'not established', or
        'too few seeds'."""
        if min(self.a.n_seeds, self.b.n_seeds) < MIN_SEEDS:
            return TOO_FEW_SEEDS
        return ESTABLISHED if self.p_adjusted < ALPHA else NOT_ESTABLISHED

    @property
    def a_better(self) -> bool:
        """The difference's direction: A's estimate better than B's."""
        return self.difference > 0 if self.higher_is_better else self.difference < 0

    def describe(self, fmt: str = "{:.3f}") -> str:
        interval = "" if self.low is None else f" [{fmt.format(self.low)}, {fmt.format(self.high)}]"
        return (
            f"{self.a.group} - {self.b.group}: {fmt.format(self.difference)}{interval}; p = {self.p_value:.3f} "
            f"(Holm {self.p_adjusted:.3f}); P({self.a.group} better) = {self.p_improvement:.2f}: {self.verdict}"
        )


def compare_groups(
    a: GroupEstimate,
    b: GroupEstimate,
    higher_is_better: bool = False,
    reps: int = BOOTSTRAP_REPS,
    resamples: int = PERMUTATIONS,
    seed: int = 0,
) -> GroupComparison:
    """Compare two groups' seeds (race times by default: lower is better); the seeds are never paired."""
    va, vb = a.values, b.values
    sign = 1.0 if higher_is_better else -1.0
    p_improvement = probability_of_improvement(sign * va[:, None], sign * vb[:, None])
    low = high = None
    if min(len(va), len(vb)) >= MIN_SEEDS:
        low, high = difference_ci(va, vb, reps=reps, seed=seed)
    return GroupComparison(
        a,
        b,
        a.value - b.value,
        low,
        high,
        permutation_p(va, vb, resamples, seed),
        p_improvement,
        higher_is_better,
        float("nan"),
    )


def adjust(comparisons: list[GroupComparison]) -> list[GroupComparison]:
    """Set each comparison's Holm-adjusted p-value across ``comparisons`` (one table's family); returns them."""
    for c, p in zip(comparisons, holm([c.p_value for c in comparisons])):
        c.p_adjusted = float(p)
    return comparisons


def group_values(values, groups: dict[str, list[str]]) -> dict[str, list[float]]:
    """Per-run values (a Series or dict by run label) -> group -> list of its seeds' values (NaN where missing)."""
    return {g: [float(values.get(r, np.nan)) for r in members] for g, members in groups.items()}


def group_estimates(
    values, groups: dict[str, list[str]], reps: int = BOOTSTRAP_REPS, seed: int = 0
) -> dict[str, GroupEstimate]:
    return {g: estimate(g, v, reps=reps, seed=seed) for g, v in group_values(values, groups).items()}


def group_comparisons(
    values,
    groups: dict[str, list[str]],
    baseline: str | None = None,
    reps: int = BOOTSTRAP_REPS,
    higher_is_better: bool = False,
    skip: tuple[str, ...] = (),
) -> list[GroupComparison]:
    """Each group (but ``skip``) with a value against the baseline group (default: the first), Holm-adjusted across
    them; values are lower-is-better (times) unless ``higher_is_better`` (distances). The one computation of an
    across-seed comparison that compare, the report and its sentences share."""
    names = list(groups)
    if len(names) < 2:
        return []
    baseline = baseline if baseline in groups else names[0]
    estimates = group_estimates(values, groups, reps=reps)
    base = estimates[baseline]
    if base.n_seeds == 0:
        return []
    out = [
        compare_groups(estimates[g], base, higher_is_better, reps)
        for g in names
        if g != baseline and g not in skip and estimates[g].n_seeds
    ]
    return adjust(out)


def seeds_needed(
    spread: float, difference: float, power: float = 0.8, alpha: float = ALPHA, most: int = 1000
) -> int | None:
    """Seeds per arm for a two-sided two-sample t-test at level ``alpha`` to detect ``difference`` with ``power``,
    given the arms' common standard deviation ``spread`` (the permutation test's power is close to the t-test's
    for roughly normal seeds); at least MIN_SEEDS (no verdict below), None past ``most`` or without a spread."""
    if not (np.isfinite(spread) and spread > 0 and difference > 0):
        return None
    for n in range(2, most + 1):
        df = 2 * n - 2
        ncp = difference / (spread * np.sqrt(2.0 / n))
        crit = scipy.stats.t.ppf(1 - alpha / 2, df)
        achieved = scipy.stats.nct.sf(crit, df, ncp) + scipy.stats.nct.cdf(-crit, df, ncp)
        if achieved >= power:
            return max(n, MIN_SEEDS)
    return None


def pooled_spread(*groups: np.ndarray) -> float:
    """Pooled sample standard deviation of the groups with two values or more (NaN when none has)."""
    usable = [np.asarray(g, np.float64) for g in groups if len(g) > 1]
    if not usable:
        return float("nan")
    dof = sum(len(g) - 1 for g in usable)
    return float(np.sqrt(sum((len(g) - 1) * np.var(g, ddof=1) for g in usable) / dof))


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
    flats = {
        label: {k: v for k, v in flatten(info.config).items() if k.split(".")[-1] != "seed"}
        for label, info in runs.items()
        if info.config is not None
    }
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
