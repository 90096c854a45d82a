"""The learner stores a race's end as ``training.no_progress_cutoff_value`` says (the mechanism itself:
tests/test_replay.py)."""

import numpy as np
import pytest

from tmexp.compose import compose_config
from tmexp.core.build import build
from tmexp.core.learner import Learner
from tmexp.core.replay import stuck_value


def stalled_race(run, T: int, cutoff: str | None = "no_progress", finished: bool = False) -> dict:
    """A race of T actions at the start line, each costing the time penalty; ended by ``cutoff`` (or finished)."""
    c = run.settings.stuck_reward_per_action
    return {
        "img": np.zeros((T + 1, *run.spaces.img_shape), np.uint8),
        "floats": np.zeros((T + 1, run.spaces.float_dim), np.float32),
        "actions": np.full(T, 6, dtype=np.int64),
        "rewards": np.full(T, c, np.float32),
        "greedy": np.ones(T, bool),
        "q_taken": np.zeros(T, np.float32),
        "terminated": finished,
        "finished": finished,
        "race_time_ms": 50 * T,
        "progress_m": 0.0,
        "cp_times": [],
        "cutoff": cutoff,
        "is_eval": False,
        "collector": 0,
        "weights_version": 0,
    }


@pytest.mark.parametrize("mode", ["bootstrap", "stuck", "zero"])
def test_a_no_progress_cutoff_is_stored_as_configured(tmp_path, mode):
    run = build(
        compose_config(["+experiment=smoke", "nn.normalize_floats=false", f"training.no_progress_cutoff_value={mode}"]),
        tmp_path,
    )
    try:
        s = run.settings
        assert s.stuck_reward_per_action == pytest.approx(-0.0012 * 50) and s.ms_per_action == 50
        T, gamma = 40, run.schedules.at(0)["gamma"]
        Learner(run).ingest(stalled_race(run, T))
        replay = run.replay
        last = slice(T - s.n_steps, T)  # the transitions whose n steps reach the cutoff
        if mode == "bootstrap":
            assert replay.terminal[:T].sum() == 0 and replay.stuck_actions[:T].sum() == 0
        else:
            assert (replay.terminal[last] == 1).all() and replay.terminal[: T - s.n_steps].sum() == 0
        if mode == "stuck":
            left = (s.race_timeout_ms - 50 * T) // 50  # the smoke run's 10 s race timeout
            assert (replay.stuck_actions[last] == left).all()
            # the last action: its own penalty, then the penalty of every action left until the race timeout
            assert replay.reward[T - 1] == pytest.approx(
                s.stuck_reward_per_action + gamma * stuck_value(s.stuck_reward_per_action, gamma, left)
            )
        else:
            assert replay.reward[T - 1] == pytest.approx(s.stuck_reward_per_action)
        # A race timeout stays a truncation and a finish stays terminal, whatever the setting.
        Learner(run).ingest(stalled_race(run, T, cutoff="race_timeout"))
        assert replay.terminal[T : 2 * T].sum() == 0
        Learner(run).ingest(stalled_race(run, T, cutoff=None, finished=True))
        assert replay.terminal[3 * T - 1] == 1 and replay.stuck_actions[2 * T : 3 * T].sum() == 0
    finally:
        run.close()
