import numpy as np
import pytest

from tmexp.core.replay import ReplayBuffer, nstep_transitions


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
    tr2 = nstep_transitions(img, floats, actions, rewards, greedy, False, 3, 0.5, discard_non_greedy_actions_in_nsteps=False)
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
