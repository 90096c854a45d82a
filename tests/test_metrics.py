"""Race logging and the robust eval time (metrics.py), without a training run."""

from __future__ import annotations

import pytest

from tmexp.core import metrics


class RecordingWriter:
    def __init__(self):
        self.scalars: dict[str, list[tuple[int, float]]] = {}

    def add_scalar(self, tag, value, step):
        self.scalars.setdefault(tag, []).append((step, value))


def _race(is_eval, finished, ms, q=(1.0, 3.0), progress=None):
    race = {"is_eval": is_eval, "finished": finished, "race_time_ms": ms, "q_taken": list(q)}
    if progress is not None:
        race["progress_m"] = progress
    return race


def test_robust_eval_time_against_the_rolling_mean():
    assert metrics.robust_eval_time(30.0, None) == (True, 30.0)  # the first finished race sets the mean
    robust, ema = metrics.robust_eval_time(30.5, 30.0)  # within 2 % of the mean
    assert robust and ema == pytest.approx(0.9 * 30.0 + 0.1 * 30.5)
    robust, ema = metrics.robust_eval_time(31.0, 30.0)  # 3.3 % slower: not robust, but still counted in the mean
    assert not robust and ema == pytest.approx(30.1)


def test_log_race_of_a_finished_eval_race():
    writer = RecordingWriter()
    ema = metrics.log_race(writer, _race(True, True, 24_500, progress=400.0), 100, "A01", None, 24_500)
    assert ema == 24.5
    assert writer.scalars == {
        "Race/eval_race_progress_trained_A01": [(100, 400.0)],
        "Race/eval_race_time_trained_A01": [(100, 24.5)],
        "Race/eval_race_finished_trained_A01": [(100, 1.0)],
        "Race/eval_race_time_robust_trained_A01": [(100, 24.5)],
        "RL/avg_Q_trained_A01": [(100, 2.0)],
        "alltime_min_ms_A01": [(100, 24_500)],
    }


def test_log_race_of_an_unfinished_exploration_race_counts_the_cutoff():
    writer = RecordingWriter()
    ema = metrics.log_race(writer, _race(False, False, 12_000, q=()), 7, "A01", 25.0, None)
    assert ema == 25.0  # exploration races leave the eval mean alone
    assert writer.scalars == {
        "Race/explo_race_time_trained_A01": [(7, 300.0)],
        "Race/explo_race_finished_trained_A01": [(7, 0.0)],
        "alltime_min_ms_A01": [(7, 300_000)],
    }


def test_a_slow_eval_race_is_not_robust():
    writer = RecordingWriter()
    ema = metrics.log_race(writer, _race(True, True, 40_000), 5, "A01", 30.0, 24_000)
    assert "Race/eval_race_time_robust_trained_A01" not in writer.scalars
    assert ema == pytest.approx(31.0)


def test_console_line_while_replay_fills_and_after():
    values = {metrics.FRAMES_PER_S: 50.0, metrics.LEARNER_PERCENTAGE: 40.0, metrics.EPSILON: 0.1, metrics.LOSS: 0.5}
    common = dict(map_name="A01", training_seconds=125.0, frames=1000, races=3, batches=10, best_ms=None)
    assert metrics.console_line(values, **common, memory_size=10, start_learn=20).endswith("filling replay 10/20")
    line = metrics.console_line(values, **{**common, "best_ms": 24_321}, memory_size=30, start_learn=20)
    assert line.startswith("[   2m05s] frames 1,000 (50/s) | races 3 | best A01 24.32 s")
    assert "loss 0.5 | eps 0.100 | memory 30" in line


def test_metrics_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, tmexp.core.metrics; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
