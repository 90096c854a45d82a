"""training.min_replay_ratio: the learner paces the collectors, so a fast simulator cannot outrun the learning."""

import math
from types import SimpleNamespace

from tmexp.core.checkpoint import load_checkpoint
from tmexp.core.learner import Learner
from tmexp.train import compose_config, train


class _Value:
    def __init__(self, value):
        self.value = value


def _run(ratio: float, replay_size: int, start_learn: int = 100, batch_size: int = 32):
    counters = SimpleNamespace(frames=0, samples_used=0, eval_time_ema_s=None, eval_time_ema_by_map={})
    return SimpleNamespace(
        settings=SimpleNamespace(min_replay_ratio=ratio, batch_size=batch_size, map_names=["A01"]),
        counters=counters,
        replay=[None] * replay_size,
        frames_allowed=_Value(math.inf),
        schedules=SimpleNamespace(at=lambda frames: {"memory_start_learn": start_learn}),
    )


def test_the_allowance_follows_the_samples_trained_since_learning_began():
    run = _run(ratio=4, replay_size=50)
    learner = Learner(run)
    learner.pace_collectors()
    assert run.frames_allowed.value == math.inf  # replay still filling: collectors play freely
    run.replay = [None] * 120
    run.counters.frames, run.counters.samples_used = 130, 0
    learner.pace_collectors()
    assert run.frames_allowed.value == 130 + 32 / 4  # one batch of slack
    run.counters.samples_used = 10 * 32  # ten batches later: 80 frames more
    learner.pace_collectors()
    assert run.frames_allowed.value == 130 + 11 * 32 / 4
    run.replay = [None] * 10  # replay emptied (a resume without it): free again, and a new base once it refills
    learner.pace_collectors()
    assert run.frames_allowed.value == math.inf


def test_without_a_minimum_the_collectors_are_never_held():
    run = _run(ratio=0, replay_size=500)
    run.counters.frames = 1000
    Learner(run).pace_collectors()
    assert run.frames_allowed.value == math.inf


def test_a_paced_collector_process_keeps_the_learners_ratio(tmp_path):
    # One collector process of 4 cars plays far more frames than the learner can train on 16 times each; paced,
    # the run's samples per frame since learning began stay near the minimum (races in flight count when they end).
    ratio, frames = 16, 3000
    cfg = compose_config(
        [
            "+experiment=smoke",
            "performance.serial=false",
            "performance.cars_per_collector=4",
            f"training.min_replay_ratio={ratio}",
            f"training.max_frames={frames}",
        ]
    )
    assert train(cfg, tmp_path) == "max_frames"
    c = load_checkpoint(tmp_path)["counters"]
    start_learn = 100  # the smoke experiment's memory_start_learn
    assert c["samples_used"] / (c["frames"] - start_learn) >= 0.7 * ratio
