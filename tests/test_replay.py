import numpy as np
import pytest
import torch

from tmexp.core.losses import iqn_target
from tmexp.core.replay import ReplayBuffer, mini_race_batch, nstep_transitions, rollout_end, stuck_value


def rollout(T, F=3):
    img = np.arange(T + 1, dtype=np.uint8).reshape(T + 1, 1, 1, 1) * np.ones((1, 1, 2, 2), np.uint8)
    floats = np.arange(T + 1, dtype=np.float32)[:, None] * np.ones((1, F), np.float32)
    actions = np.arange(T) % 12
    rewards = np.arange(1, T + 1, dtype=np.float32)  # r_t = t + 1
    return img, floats, actions, rewards


def test_nstep_middle_of_rollout_sums_n_discounted_rewards():
    img, floats, actions, rewards = rollout(10)
    tr = nstep_transitions(img, floats, actions, rewards, np.ones(10, bool), False, 3, 0.5)
    # t = 2: r = 3 + 0.5 * 4 + 0.25 * 5
    assert tr.reward[2] == pytest.approx(3 + 2 + 1.25)
    assert tr.gamma_n[2] == pytest.approx(0.125)
    assert tr.next_img[2, 0, 0, 0] == 5 and tr.next_floats[2, 0] == 5
    assert tr.terminal[2] == 0


def test_nstep_at_finished_race_end_is_terminal_with_shorter_sum():
    img, floats, actions, rewards = rollout(5)
    tr = nstep_transitions(img, floats, actions, rewards, np.ones(5, bool), True, 3, 0.9)
    # t = 4 is the last action: one reward, terminal, next obs is the final one
    assert tr.reward[4] == pytest.approx(5)
    assert tr.terminal[4] == 1 and tr.next_img[4, 0, 0, 0] == 5
    assert tr.gamma_n[4] == pytest.approx(0.9)
    # t = 3: two rewards then the finish
    assert tr.reward[3] == pytest.approx(4 + 0.9 * 5)
    assert tr.terminal[3] == 1 and tr.gamma_n[3] == pytest.approx(0.81)
    # t = 1: full three steps, not terminal
    assert tr.terminal[1] == 0


def test_truncation_is_not_termination():
    img, floats, actions, rewards = rollout(5)
    tr = nstep_transitions(img, floats, actions, rewards, np.ones(5, bool), False, 3, 0.9)
    assert tr.terminal.sum() == 0
    assert tr.next_img[4, 0, 0, 0] == 5  # bootstraps from the last observation


def test_non_greedy_action_cuts_the_sum():
    img, floats, actions, rewards = rollout(10)
    greedy = np.ones(10, bool)
    greedy[4] = False
    tr = nstep_transitions(img, floats, actions, rewards, greedy, False, 3, 0.5)
    # t = 2: the action at t = 4 is exploratory, so only r_2 and r_3 are summed and it bootstraps from obs 4
    assert tr.reward[2] == pytest.approx(3 + 0.5 * 4)
    assert tr.gamma_n[2] == pytest.approx(0.25) and tr.next_img[2, 0, 0, 0] == 4
    # t = 4 itself keeps its own full sum (its first action may be exploratory)
    assert tr.gamma_n[4] == pytest.approx(0.125)
    tr2 = nstep_transitions(
        img, floats, actions, rewards, greedy, False, 3, 0.5, discard_non_greedy_actions_in_nsteps=False
    )
    assert tr2.gamma_n[2] == pytest.approx(0.125)


def test_ring_buffer_grows_and_overwrites_oldest():
    img, floats, actions, rewards = rollout(6)
    tr = nstep_transitions(img, floats, actions, rewards, np.ones(6, bool), True, 1, 1.0)
    buf = ReplayBuffer(10, (1, 2, 2), 3)
    buf.set_capacity(4)
    buf.add(tr)
    assert len(buf) == 4
    # the six rewards 1..6 went through a ring of 4: slots hold 5, 6, 3, 4
    assert sorted(buf.reward[:4].tolist()) == [3, 4, 5, 6]
    buf.set_capacity(8)
    buf.add(tr)
    assert len(buf) == 8


def test_prioritized_sampling_prefers_high_priority_and_weights():
    img, floats, actions, rewards = rollout(4)
    tr = nstep_transitions(img, floats, actions, rewards, np.ones(4, bool), True, 1, 1.0)
    buf = ReplayBuffer(4, (1, 2, 2), 3, prio_alpha=1.0, prio_beta=1.0, prio_epsilon=0.0)
    buf.add(tr)
    buf.update_priorities(np.arange(4), np.array([1.0, 1.0, 1.0, 97.0]))
    batch, idx = buf.sample(2000)
    assert (idx == 3).mean() > 0.9
    assert batch["weight"][idx == 3].max() < batch["weight"][idx != 3].min()
    uniform = ReplayBuffer(4, (1, 2, 2), 3)
    uniform.add(tr)
    b, _ = uniform.sample(8)
    assert np.all(b["weight"] == 1)


def test_partial_sums_hold_each_prefix_of_the_nstep_sum():
    img, floats, actions, rewards = rollout(10)
    tr = nstep_transitions(img, floats, actions, rewards, np.ones(10, bool), False, 3, 0.5)
    np.testing.assert_allclose(tr.reward_partial[2], [3, 3 + 2, 3 + 2 + 1.25])
    # t = 8: only two rewards remain before the rollout ends; the sum is held past k
    np.testing.assert_allclose(tr.reward_partial[8], [9, 9 + 5, 9 + 5])
    assert tr.n_steps[8] == 2 and tr.reward[8] == pytest.approx(14)


class FixedDraws:
    """Stands in for a numpy Generator: ``integers`` returns the given draws u (t = max(0, |u| - M))."""

    def __init__(self, draws):
        self.draws = np.asarray(draws)

    def integers(self, low, high, size):
        assert len(self.draws) == size and np.all((self.draws >= low) & (self.draws < high))
        return self.draws


def sampled(n_steps=3, T=10, terminated=False):
    img, floats, actions, rewards = rollout(T)
    buf = ReplayBuffer(T, (1, 2, 2), 3, n_steps=n_steps)
    buf.add(nstep_transitions(img, floats, actions, rewards, np.ones(T, bool), terminated, n_steps, 0.5))
    batch = {
        k: v[:4]
        for k, v in {
            "floats": buf.floats,
            "next_floats": buf.next_floats,
            "reward": buf.reward,
            "reward_partial": buf.reward_partial,
            "n_steps": buf.n_steps,
            "terminal": buf.terminal,
            "gamma_n": buf.gamma_n,
            "stuck_actions": buf.stuck_actions,
        }.items()
    }
    return batch


def test_mini_race_time_is_the_first_float_and_advances_by_k():
    batch = sampled()
    # M = 5: u = 5 -> t = 0; u = 9 -> t = 4; u = -3 -> t = 0 (clipped); u = 12 -> t = 7
    out = mini_race_batch(
        batch, FixedDraws([5, 9, -3, 12]), duration=20, oversample_long_term_steps=40, oversample_maximum_term_steps=5
    )
    np.testing.assert_allclose(out["floats"][:, 0], np.array([0, 4, 0, 7]) / 20)
    np.testing.assert_allclose(out["next_floats"][:, 0], np.array([3, 7, 3, 10]) / 20)
    np.testing.assert_array_equal(out["floats"][:, 1:], batch["floats"])
    # far from the mini-race's end nothing else changes
    np.testing.assert_allclose(out["reward"], batch["reward"])
    assert out["terminal"].sum() == 0


def test_mini_race_end_cuts_the_sum_and_is_terminal():
    batch = sampled()
    # duration 10, k = 3 for these rows: t = 9 keeps 1 reward, t = 8 keeps 2, t = 7 keeps 3 and ends exactly,
    # t = 6 goes on
    out = mini_race_batch(
        batch, FixedDraws([14, 13, 12, 11]), duration=10, oversample_long_term_steps=0, oversample_maximum_term_steps=5
    )
    np.testing.assert_allclose(
        out["reward"],
        [
            batch["reward_partial"][0, 0],
            batch["reward_partial"][1, 1],
            batch["reward_partial"][2, 2],
            batch["reward_partial"][3, 2],
        ],
    )
    np.testing.assert_array_equal(out["terminal"], [1, 1, 1, 0])


def test_mini_race_keeps_a_finish_terminal():
    batch = sampled(T=4, terminated=True)  # row 3 is the finishing action
    out = mini_race_batch(batch, np.random.default_rng(0), duration=100)
    assert out["terminal"][3] == 1 and out["reward"][3] == pytest.approx(batch["reward"][3])


def test_mini_race_times_cover_the_horizon_and_favour_its_start():
    batch = {k: np.repeat(v, 5000, axis=0) for k, v in sampled().items()}
    out = mini_race_batch(batch, np.random.default_rng(0), duration=140)
    t = np.rint(out["floats"][:, 0] * 140).astype(int)
    assert t.min() == 0 and t.max() == 139
    counts = np.bincount(t, minlength=140)
    assert counts[:30].mean() > 1.2 * counts[40:].mean()  # 0..30 are drawn twice (L = 40, M = 5)


# ----- the end of a race cut off for making no progress (training.no_progress_cutoff_value) --------------------------
def test_how_each_rollout_end_is_valued():
    # (terminated, cutoff, race time) under each setting -> (terminal, actions stuck after the end)
    for mode in ("bootstrap", "stuck", "zero"):
        assert rollout_end(True, None, 30_000, mode, 300_000, 50) == (True, 0)  # a finish: value 0 after it
        assert rollout_end(False, "race_timeout", 300_000, mode, 300_000, 50) == (False, 0)  # a timeout: bootstrap
    assert rollout_end(False, "no_progress", 2_000, "bootstrap", 300_000, 50) == (False, 0)
    assert rollout_end(False, "no_progress", 2_000, "zero", 300_000, 50) == (True, 0)
    assert rollout_end(False, "no_progress", 2_000, "stuck", 300_000, 50) == (True, 5960)  # 298 s of 50 ms actions


def test_stuck_value_is_the_discounted_time_penalty_until_the_timeout():
    assert stuck_value(-0.06, 0.5, 3) == pytest.approx(-0.06 * (1 + 0.5 + 0.25))
    assert stuck_value(-0.06, 1.0, 140) == pytest.approx(-0.06 * 140)  # gamma 1 (mini-races): the plain sum
    assert stuck_value(-0.06, 0.99, 5960) == pytest.approx(-6.0, abs=1e-3)  # about c / (1 - gamma)
    np.testing.assert_allclose(stuck_value(-1.0, np.array([0.5, 1.0]), np.array([2, 2])), [-1.5, -2.0])


def stalled_rollout(T, c=-0.06):
    """A car that never moves: T actions of reward c (the time penalty); every observation the start line's."""
    img = np.zeros((T + 1, 1, 2, 2), np.uint8)
    floats = np.zeros((T + 1, 3), np.float32)
    return img, floats, np.full(T, 6), np.full(T, c, np.float32)


def test_a_stall_valued_stuck_ends_terminal_with_the_return_of_staying_stuck():
    T, n, gamma, c, M = 40, 3, 0.99, -0.06, 5960
    img, floats, actions, rewards = stalled_rollout(T, c)
    terminal, stuck = rollout_end(False, "no_progress", 50 * T, "stuck", 300_000, 50)
    tr = nstep_transitions(
        img,
        floats,
        actions,
        rewards,
        np.ones(T, bool),
        terminal,
        n,
        gamma,
        stuck_actions=stuck,
        stuck_reward_per_action=c,
    )
    # The transitions that reach the cutoff are terminal, with the time penalty of the rest of the race in their
    # reward: the target of each is the return of staying at the start line until the race timeout.
    for t in (T - 3, T - 2, T - 1):
        assert tr.terminal[t] == 1 and tr.stuck_actions[t] == M
        assert tr.reward[t] == pytest.approx(stuck_value(c, gamma, T - t + M), rel=1e-5)
    assert tr.terminal[: T - 3].sum() == 0 and tr.stuck_actions[: T - 3].sum() == 0
    assert tr.reward[0] == pytest.approx(stuck_value(c, gamma, 3))  # inside the race: the plain n-step sum
    # The partial sums (for mini-races) hold the race's own rewards only.
    assert tr.reward_partial[T - 1, 0] == pytest.approx(c)
    # The IQN target of an end transition ignores the network's value of the start-like last observation...
    optimistic = torch.full((1, 8, 12), -3.8)  # what the network learned of the start line from driven races
    target = iqn_target(
        torch.tensor(tr.reward[T - 1 :]),
        torch.tensor(tr.gamma_n[T - 1 :]),
        torch.tensor(tr.terminal[T - 1 :]),
        optimistic,
        torch.zeros(1, dtype=torch.long),
    )
    assert target.unique().item() == pytest.approx(-6.0, abs=0.01)
    # ... which a bootstrap would take: the stall looks like one step of waiting before a driven race.
    boot = nstep_transitions(img, floats, actions, rewards, np.ones(T, bool), False, n, gamma)
    target = iqn_target(
        torch.tensor(boot.reward[T - 1 :]),
        torch.tensor(boot.gamma_n[T - 1 :]),
        torch.tensor(boot.terminal[T - 1 :]),
        optimistic,
        torch.zeros(1, dtype=torch.long),
    )
    assert target.unique().item() == pytest.approx(c + gamma * -3.8)


def test_a_stall_valued_zero_would_pay_for_stopping():
    T, gamma, c = 40, 0.99, -0.06
    img, floats, actions, rewards = stalled_rollout(T, c)
    terminal, stuck = rollout_end(False, "no_progress", 50 * T, "zero", 300_000, 50)
    tr = nstep_transitions(
        img,
        floats,
        actions,
        rewards,
        np.ones(T, bool),
        terminal,
        3,
        gamma,
        stuck_actions=stuck,
        stuck_reward_per_action=c,
    )
    assert tr.terminal[-1] == 1 and tr.reward[-1] == pytest.approx(c)  # the stall ends its cost after 2 s


def test_a_mini_race_values_a_stuck_car_until_the_mini_race_ends():
    T, n, gamma, c = 10, 3, 0.5, -1.0
    img, floats, actions, rewards = stalled_rollout(T, c)
    tr = nstep_transitions(
        img, floats, actions, rewards, np.ones(T, bool), True, n, gamma, stuck_actions=100, stuck_reward_per_action=c
    )
    buf = ReplayBuffer(T, (1, 2, 2), 3, n_steps=n)
    buf.add(tr)
    rows = np.array([7, 8, 9, 0])  # the three transitions reaching the cutoff (k = 3, 2, 1), and one inside the race
    batch = {
        k: v[rows]
        for k, v in {
            "floats": buf.floats,
            "next_floats": buf.next_floats,
            "reward": buf.reward,
            "reward_partial": buf.reward_partial,
            "n_steps": buf.n_steps,
            "terminal": buf.terminal,
            "gamma_n": buf.gamma_n,
            "stuck_actions": buf.stuck_actions,
        }.items()
    }
    # t = 0, 2, 5, 0 in a mini-race of 8 actions (M = 5, L = 0: t = u - 5)
    out = mini_race_batch(
        batch,
        FixedDraws([5, 7, 10, 5]),
        duration=8,
        oversample_long_term_steps=0,
        oversample_maximum_term_steps=5,
        stuck_reward_per_action=c,
    )
    # row 7 at t = 0: 3 rewards, then stuck for the 5 actions left in the mini-race
    assert out["reward"][0] == pytest.approx(stuck_value(c, gamma, 3) + gamma**3 * stuck_value(c, gamma, 5))
    # row 8 at t = 2: 2 rewards, then stuck for 4 actions
    assert out["reward"][1] == pytest.approx(stuck_value(c, gamma, 2) + gamma**2 * stuck_value(c, gamma, 4))
    # row 9 at t = 5: 1 reward, then stuck for the 2 actions left
    assert out["reward"][2] == pytest.approx(stuck_value(c, gamma, 1) + gamma * stuck_value(c, gamma, 2))
    # row 0 at t = 0: an ordinary transition
    assert out["reward"][3] == pytest.approx(stuck_value(c, gamma, 3))
    np.testing.assert_array_equal(out["terminal"], [1, 1, 1, 0])
