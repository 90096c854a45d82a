"""Statistics across seeds against rliable on fixed numbers."""

import importlib.util
import sys
import types

import numpy as np
import pytest
from rliable import metrics as rly_metrics

from tmexp.analysis import stats
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
        rly_metrics.probability_of_improvement(MULTI_TASK, b))
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
            {"x": scores}, lambda x: np.array([rly_metrics.aggregate_iqm(x)]), reps=reps)
        assert stats.stratified_bootstrap_ci(scores, reps=reps, seed=seed) == pytest.approx(
            tuple(intervals["x"].ravel()), abs=1e-12)


def test_single_seed_gets_no_interval():
    est = stats.estimate("g", [24.5])
    assert est.n_seeds == 1 and est.low is None and est.high is None
    assert "single seed" in est.describe()
    many = stats.estimate("h", [24.0, 24.5, 25.0, 26.0], reps=2000)
    assert many.low <= many.iqm <= many.high


def test_group_comparison_for_race_times():
    fast = stats.estimate("fast", [24.0, 24.1, 24.2, 24.1], reps=2000)
    slow = stats.estimate("slow", [25.0, 25.2, 25.1, 25.3], reps=2000)
    cmp = stats.compare_groups(fast, [24.0, 24.1, 24.2, 24.1], slow, [25.0, 25.2, 25.1, 25.3])
    assert cmp.overlap is False and cmp.p_improvement == 1.0  # lower times are better
    single = stats.estimate("one", [24.0])
    cmp = stats.compare_groups(single, [24.0], slow, [25.0, 25.2, 25.1, 25.3])
    assert cmp.overlap is None and "single-seed" in cmp.describe()


def test_seed_groups_join_configs_that_differ_only_in_seed(tmp_path):
    def run(label, seed, lr, overrides):
        return RunInfo(label, tmp_path, [], overrides, {"seed": seed, "training": {"lr": lr}})

    runs = {r.label: r for r in [run("a", 0, 1e-4, ["seed=0"]), run("b", 1, 1e-4, ["seed=1"]),
                                 run("c", 0, 3e-4, ["training.lr=3e-4", "seed=0"]),
                                 run("d", 1, 3e-4, ["training.lr=3e-4", "seed=1"]),
                                 run("e", 0, 5e-4, ["training.lr=5e-4"])]}
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
