"""Statistics across seeds against rliable on fixed numbers."""

import importlib.util
import sys
import types

import numpy as np
import pytest
from rliable import metrics as rly_metrics

from tmexp.analysis import stats, synthetic
from tmexp.analysis.loading import RunInfo

SCORES = np.array([[24.1], [24.5], [25.0], [24.3], [26.0]])
OTHER = np.array([[24.0], [24.5], [25.5], [26.0]])
MULTI_TASK = np.random.RandomState(0).normal(size=(5, 3))


def _rliable_library():
    """rliable.library, or None. arch's top-level package fails to import with pandas 3 (it decorates a method
    with a pandas helper whose signature changed); rliable only needs arch.bootstrap, so load that alone."""
    try:
        from rliable import library

        return library
    except Exception:
        pass
    spec = importlib.util.find_spec("arch")
    if spec is None:
        return None
    for name in [m for m in sys.modules if m == "arch" or m.startswith("arch.") or m.startswith("rliable.library")]:
        del sys.modules[name]
    package = types.ModuleType("arch")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["arch"] = package
    try:
        from rliable import library

        return library
    except Exception:
        return None


def test_iqm_matches_rliable():
    assert stats.iqm(SCORES) == rly_metrics.aggregate_iqm(SCORES)
    assert stats.iqm(MULTI_TASK) == rly_metrics.aggregate_iqm(MULTI_TASK)
    # 8 values: the middle 4 (drop 2 each side)
    assert stats.iqm(np.arange(8.0)) == pytest.approx(np.mean([2, 3, 4, 5]))


def test_probability_of_improvement_matches_rliable():
    assert stats.probability_of_improvement(SCORES, OTHER) == rly_metrics.probability_of_improvement(SCORES, OTHER)
    b = MULTI_TASK[:4] + 0.3
    assert stats.probability_of_improvement(MULTI_TASK, b) == pytest.approx(
        rly_metrics.probability_of_improvement(MULTI_TASK, b)
    )
    assert stats.probability_of_improvement(SCORES, SCORES) == 0.5


def test_bootstrap_ci_follows_rliables_definition():
    # rliable: per replicate, np.random.choice(n_runs, (n_runs, n_tasks)) indexes runs within each task; the IQM of
    # each resample; the 2.5 / 97.5 percentiles. Written out here directly.
    reps, seed = 500, 11
    rs = np.random.RandomState(seed)
    estimates = []
    for _ in range(reps):
        idx = rs.choice(MULTI_TASK.shape[0], MULTI_TASK.shape, replace=True)
        estimates.append(rly_metrics.aggregate_iqm(MULTI_TASK[idx, np.arange(MULTI_TASK.shape[1])]))
    expected = np.percentile(estimates, [2.5, 97.5])
    assert stats.stratified_bootstrap_ci(MULTI_TASK, reps=reps, seed=seed) == pytest.approx(tuple(expected))


def test_bootstrap_ci_equals_rliable_library():
    library = _rliable_library()
    if library is None:
        pytest.skip("rliable.library cannot be imported here")
    for scores, reps, seed in ((SCORES, 2000, 3), (MULTI_TASK, 1000, 1)):
        np.random.seed(seed)  # rliable draws its indices from numpy's global generator
        _, intervals = library.get_interval_estimates(
            {"x": scores}, lambda x: np.array([rly_metrics.aggregate_iqm(x)]), reps=reps
        )
        assert stats.stratified_bootstrap_ci(scores, reps=reps, seed=seed) == pytest.approx(
            tuple(intervals["x"].ravel()), abs=1e-12
        )


def test_below_five_seeds_a_group_is_its_median_and_every_seed():
    est = stats.estimate("g", [24.5])
    assert est.n_seeds == 1 and est.low is None and est.high is None
    assert est.describe() == "24.500 (single seed)"
    few = stats.estimate("h", [24.0, 26.0, 60.0], reps=2000)  # the IQM of 3 values would be their mean, 36.7
    assert few.value == 26.0 and few.low is None
    assert few.describe("{:.1f}") == "median 26.0 (seeds 24.0, 26.0, 60.0)"
    many = stats.estimate("k", [24.0, 24.5, 25.0, 26.0, 60.0], reps=2000)
    assert many.value == pytest.approx(stats.iqm([24.0, 24.5, 25.0, 26.0, 60.0]))
    assert many.low <= many.value <= many.high
    assert many.describe().startswith("IQM ") and "(5 seeds)" in many.describe()


def _verdict(a, b, resamples=stats.PERMUTATIONS):
    comparison = stats.compare_groups(
        stats.estimate("a", a, reps=2000), stats.estimate("b", b, reps=2000), reps=2000, resamples=resamples
    )
    return stats.adjust([comparison])[0]


def test_three_against_three_far_apart_is_too_few_seeds():
    c = _verdict(synthetic.best_times(3, 24.0, seed=1), synthetic.best_times(3, 30.0, seed=2))
    assert c.verdict == "too few seeds" and c.low is None and c.p_improvement == 1.0 and c.a_better
    assert c.p_value > 0.05  # a complete separation of 3 vs 3 is no evidence at 5 % two-sided, whatever Holm says


def test_ten_against_ten_far_apart_is_established():
    c = _verdict(synthetic.best_times(10, 24.0, seed=1), synthetic.best_times(10, 26.0, seed=2))
    assert c.verdict == "established" and c.p_adjusted < 0.05 and c.a_better
    assert c.low < c.difference < c.high < 0  # A's IQM lower: the whole interval below zero


def test_ten_against_ten_from_one_distribution_is_rarely_established():
    verdicts = [
        _verdict(
            synthetic.best_times(10, 24.0, seed=2 * k), synthetic.best_times(10, 24.0, seed=2 * k + 1), resamples=999
        ).verdict
        for k in range(100)
    ]
    assert set(verdicts) <= {"established", "not established"}
    assert verdicts.count("not established") >= 90


@pytest.mark.parametrize(
    "a, b",
    [([21.0, 22.5, 23.0, 24.0, 29.0], [23.5, 25.0, 26.0, 27.0, 28.0, 31.0]), ([24.0, 25.0, 27.0], [24.5, 26.0, 30.0])],
)
def test_exact_permutation_test_counts_every_relabelling(a, b):
    import itertools

    pooled = np.array(a + b)
    observed = stats.point_estimate(np.array(a)) - stats.point_estimate(np.array(b))
    null = []
    for chosen in itertools.combinations(range(len(pooled)), len(a)):
        rest = [i for i in range(len(pooled)) if i not in chosen]
        null.append(stats.point_estimate(pooled[list(chosen)]) - stats.point_estimate(pooled[rest]))
    null = np.array(null)
    tol = 1e-9 * abs(observed)
    expected = min(1.0, 2 * min(np.mean(null <= observed + tol), np.mean(null >= observed - tol)))
    assert stats.permutation_p(np.array(a), np.array(b)) == pytest.approx(expected)


def test_holm_adjusts_in_step_down_order():
    adjusted = stats.holm([0.01, 0.04, 0.03, np.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(adjusted[3])


def test_the_planner_asks_more_seeds_for_a_smaller_difference():
    assert stats.seeds_needed(1.0, 1.0) == 17  # the textbook t-test answer at 80 % power, alpha 0.05
    assert stats.seeds_needed(1.0, 0.5) > stats.seeds_needed(1.0, 1.0) >= stats.MIN_SEEDS
    assert stats.seeds_needed(0.01, 5.0) == stats.MIN_SEEDS and stats.seeds_needed(float("nan"), 0.5) is None


def test_seed_groups_join_configs_that_differ_only_in_seed(tmp_path):
    def run(label, seed, lr, overrides):
        return RunInfo(label, tmp_path, [], overrides, {"seed": seed, "training": {"lr": lr}})

    runs = {
        r.label: r
        for r in [
            run("a", 0, 1e-4, ["seed=0"]),
            run("b", 1, 1e-4, ["seed=1"]),
            run("c", 0, 3e-4, ["training.lr=3e-4", "seed=0"]),
            run("d", 1, 3e-4, ["training.lr=3e-4", "seed=1"]),
            run("e", 0, 5e-4, ["training.lr=5e-4"]),
        ]
    }
    groups = stats.seed_groups(runs)
    assert sorted(map(sorted, groups.values())) == [["a", "b"], ["c", "d"], ["e"]]
    assert groups["training.lr=3e-4"] == ["c", "d"]


def test_seed_groups_ignore_a_key_the_schema_gained_between_runs_but_not_one_that_differs(tmp_path):
    def run(label, seed, **extra):
        return RunInfo(label, tmp_path, [], [f"seed={seed}"], {"seed": seed, "training": {"lr": 1e-4, **extra}})

    old, new = run("old", 0), run("new", 1, min_replay_ratio=4)  # the newer commit logs a key the older lacks
    assert list(stats.seed_groups({"old": old, "new": new}).values()) == [["old", "new"]]
    half = run("half", 2, min_replay_ratio=4, size_scale=0.5)
    whole = run("whole", 3, min_replay_ratio=4, size_scale=1.0)  # size_scale differs where held: a difference
    groups = stats.seed_groups({"old": old, "new": new, "half": half, "whole": whole})
    assert sorted(map(sorted, groups.values())) == [["half"], ["new", "old"], ["whole"]]


def test_iqm_band_is_the_seed_interval_at_every_point():
    values = np.random.RandomState(1).normal(size=(4, 57))  # 4 seeds, a curve of 57 points
    iqm, low, high = stats.iqm_band(values, reps=3000, seed=2)
    assert iqm.shape == low.shape == high.shape == (57,)
    for j in (0, 30, 56):
        assert iqm[j] == stats.iqm(values[:, j])
        assert (low[j], high[j]) == stats.stratified_bootstrap_ci(values[:, j], reps=3000, seed=2)
    assert np.all(low <= iqm) and np.all(iqm <= high)
