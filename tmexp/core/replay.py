"""Transition storage with n-step returns and uniform or prioritized sampling.

A rollout (one race) arrives from a collector as arrays over its T actions (observations have T + 1 entries: the
last is the state after the final action). ``nstep_transitions`` turns it into transitions whose reward is the
discounted sum of up to ``n`` rewards; the replay buffer stores them in a ring whose capacity follows the
memory-size schedule.

Termination versus truncation: a finished race is terminal (no bootstrap, value 0 after it). A race cut off by the
race timeout bootstraps from the last observation like any other state. A race cut off for making no progress
(``training.no_progress_cutoff_value``) either bootstraps likewise (``bootstrap``), or ends terminal with the value
of staying stuck (``stuck``: the time penalty of every action until the race timeout, discounted; ``stuck_value``),
or ends terminal with value 0 (``zero``). The stuck car's last observation looks like the start line when it stalled
there, so a bootstrap credits the stall with the value of a race about to be driven.

Mini-races (Linesight's clipped horizon, ``mini_race_batch``): at sampling time each transition is placed at a random
time t of a "mini-race" of ``duration`` actions; the network sees t as an extra float, and the mini-race's end is
terminal. Q(s, t, a) is then the reward until the mini-race ends, a bounded horizon that lets gamma reach 1. Acting
uses t = 0: the policy maximises the reward of the next ``duration`` actions. A stuck car's value then counts the
time penalty until the mini-race's end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Checkpoints save the ring in chunks of this many rows (tmexp.core.checkpoint): about 34 MB of 48x48 transitions,
# 70 MB of 64x64 ones; a periodic checkpoint rewrites only the chunks written since the one before.
CHUNK_ROWS = 8192
# The arrays a checkpoint saves for each stored transition (priorities are saved whole: they change on every batch).
STORED = (
    "img",
    "next_img",
    "floats",
    "next_floats",
    "action",
    "reward",
    "terminal",
    "gamma_n",
    "reward_partial",
    "n_steps",
    "stuck_actions",
)


@dataclass
class Transitions:
    """A block of n-step transitions. Shapes: K transitions, image (1, H, W), F floats."""

    img: np.ndarray  # uint8 (K, 1, H, W)
    floats: np.ndarray  # float32 (K, F)
    action: np.ndarray  # int64 (K,)
    reward: np.ndarray  # float32 (K,) discounted sum of the k rewards actually summed
    next_img: np.ndarray  # uint8 (K, 1, H, W) observation after those k actions
    next_floats: np.ndarray  # float32 (K, F)
    terminal: np.ndarray  # float32 (K,) 1 when the race finished within the k steps
    gamma_n: np.ndarray  # float32 (K,) gamma ** k
    reward_partial: np.ndarray  # float32 (K, n): discounted sums of the first 1..n rewards (held at the k-sum past k)
    n_steps: np.ndarray  # int64 (K,) k, the number of rewards summed
    # int64 (K,): actions the car stays stuck after the rollout's end (the race timeout's distance), for transitions
    # whose k steps reach a no-progress cutoff valued as stuck (``reward`` then includes that return); else 0
    stuck_actions: np.ndarray

    def __len__(self) -> int:
        return len(self.action)


def stuck_value(reward_per_action: float, gamma, actions) -> np.ndarray:
    """The return of a car that stays stuck ``actions`` more actions, each costing ``reward_per_action``.

    reward_per_action * sum_{j < actions} gamma ** j, elementwise over ``gamma`` and ``actions`` (arrays or scalars).
    """
    gamma = np.asarray(gamma, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.float64)
    below_one = gamma < 1.0
    safe = np.where(below_one, gamma, 0.0)
    geometric = np.where(below_one, (1.0 - safe**actions) / (1.0 - safe), actions)
    return reward_per_action * geometric


def rollout_end(
    terminated: bool,
    cutoff: str | None,
    race_time_ms: int,
    no_progress_cutoff_value: str,
    race_timeout_ms: int,
    ms_per_action: int,
) -> tuple[bool, int]:
    """How a rollout's end is valued: (terminal, actions stuck after it) for ``nstep_transitions``.

    A finished race is terminal; a no-progress cutoff is terminal under ``stuck`` (the car then stays stuck until
    the race timeout: that many actions) and ``zero``, a truncation under ``bootstrap``; any other cutoff is a
    truncation.
    """
    if terminated:
        return True, 0
    if cutoff != "no_progress" or no_progress_cutoff_value == "bootstrap":
        return False, 0
    if no_progress_cutoff_value == "zero":
        return True, 0
    return True, max(0, race_timeout_ms - race_time_ms) // ms_per_action


def nstep_transitions(
    img: np.ndarray,
    floats: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    greedy: np.ndarray,
    terminated: bool,
    n_steps: int,
    gamma: float,
    discard_non_greedy_actions_in_nsteps: bool = True,
    stuck_actions: int = 0,
    stuck_reward_per_action: float = 0.0,
) -> Transitions:
    """Build the n-step transitions of one rollout.

    Args:
        img: uint8 (T + 1, 1, H, W); floats: float32 (T + 1, F): observations before each action and after the last.
        actions, rewards, greedy: (T,) the action taken, the reward received, whether the action was the greedy one.
        terminated: no bootstrap from the final observation: the race finished, or a cutoff is valued as terminal.
        discard_non_greedy_actions_in_nsteps: cut a transition's sum before the first later non-greedy action,
            because the return after an exploratory action does not estimate the greedy policy's value.
        stuck_actions, stuck_reward_per_action: with ``terminated``, the car stays stuck this many actions after
            the rollout's end, each costing this reward: the transitions that reach the end get that discounted
            return (``stuck_value``) in their reward, in place of a bootstrap (a no-progress cutoff valued ``stuck``).
    Returns:
        T transitions, one per action.
    """
    T = len(actions)
    if T == 0:
        raise ValueError("a rollout needs at least one action")
    t = np.arange(T)
    k = np.minimum(n_steps, T - t)  # steps available before the rollout ends
    if discard_non_greedy_actions_in_nsteps and n_steps > 1:
        non_greedy = ~np.asarray(greedy, dtype=bool)
        for j in range(1, n_steps):
            # If the action at t + j is not greedy, stop the sum before it (keep at least the first step).
            idx = t + j
            valid = idx < T
            cut = np.zeros(T, dtype=bool)
            cut[valid] = non_greedy[idx[valid]]
            k = np.where(cut & (k > j), j, k)
    discounts = gamma ** np.arange(n_steps, dtype=np.float64)
    reward = np.zeros(T, dtype=np.float64)
    partial = np.empty((T, n_steps), dtype=np.float64)
    for j in range(n_steps):
        use = j < k
        reward[use] += discounts[j] * rewards[t[use] + j]
        partial[:, j] = reward
    next_idx = t + k
    terminal = (next_idx == T) & bool(terminated)
    stuck = terminal & (stuck_actions > 0)
    reward += np.where(stuck, gamma**k * stuck_value(stuck_reward_per_action, gamma, stuck_actions), 0.0)
    return Transitions(
        img=img[t],
        floats=floats[t],
        action=np.asarray(actions, dtype=np.int64),
        reward=reward.astype(np.float32),
        next_img=img[next_idx],
        next_floats=floats[next_idx],
        terminal=terminal.astype(np.float32),
        gamma_n=(gamma**k).astype(np.float32),
        reward_partial=partial.astype(np.float32),
        n_steps=k.astype(np.int64),
        stuck_actions=np.where(stuck, stuck_actions, 0).astype(np.int64),
    )


def mini_race_batch(
    batch: dict[str, np.ndarray],
    rng: np.random.Generator,
    duration: int,
    oversample_long_term_steps: int = 40,
    oversample_maximum_term_steps: int = 5,
    stuck_reward_per_action: float = 0.0,
) -> dict[str, np.ndarray]:
    """Place each sampled transition at a random time of a mini-race of ``duration`` actions (Linesight's rule).

    The time is t = max(0, |u| - M) for u uniform in [M - L, duration + M) (L = ``oversample_long_term_steps``,
    M = ``oversample_maximum_term_steps``): uniform over [0, duration) with extra weight on t near 0, the states
    whose whole horizon lies ahead (what acting at t = 0 asks for). A transition whose k steps run past the
    mini-race's end keeps only the rewards up to it, and ending the mini-race is terminal. A transition that
    reaches a cutoff valued as stuck before the mini-race ends gets the return of staying stuck until that end
    (``stuck_reward_per_action`` per action, the same as when it was stored).

    Args:
        batch: from ``ReplayBuffer.sample`` (``floats``, ``next_floats`` (B, F), ``reward_partial`` (B, n),
            ``n_steps``, ``terminal``, ``reward``, ``gamma_n``, ``stuck_actions``).
    Returns:
        a new batch whose ``floats`` / ``next_floats`` are (B, F + 1) with t / duration and (t + k) / duration
        first, and whose ``reward`` and ``terminal`` follow the mini-race.
    """
    b = len(batch["n_steps"])
    m = oversample_maximum_term_steps
    t = np.maximum(np.abs(rng.integers(m - oversample_long_term_steps, duration + m, size=b)) - m, 0)
    k = batch["n_steps"]
    past_end = np.maximum(t + k - duration, 0)
    kept = k - past_end  # >= 1 since t < duration
    out = dict(batch)
    reward = np.take_along_axis(batch["reward_partial"], (kept - 1)[:, None], axis=1)[:, 0].astype(np.float64)
    stuck = (batch["stuck_actions"] > 0) & (t + k < duration)
    if stuck.any():
        gamma_n = batch["gamma_n"][stuck].astype(np.float64)
        gamma = gamma_n ** (1.0 / k[stuck])
        left = np.minimum(batch["stuck_actions"][stuck], duration - t[stuck] - k[stuck])
        reward[stuck] += gamma_n * stuck_value(stuck_reward_per_action, gamma, left)
    out["reward"] = reward.astype(np.float32)
    out["terminal"] = np.where(t + k >= duration, 1.0, batch["terminal"]).astype(np.float32)
    out["floats"] = np.concatenate(((t / duration).astype(np.float32)[:, None], batch["floats"]), axis=1)
    next_t = ((t + k) / duration).astype(np.float32)[:, None]
    out["next_floats"] = np.concatenate((next_t, batch["next_floats"]), axis=1)
    return out


class ReplayBuffer:
    """Ring buffer of transitions; capacity can grow (memory-size schedule); uniform or prioritized sampling.

    Storage is allocated once for ``max_capacity`` with ``np.empty`` (pages are only touched when written).
    Prioritized sampling draws with probability proportional to priority ** alpha through a cumulative sum over the
    stored priorities: O(size) per batch, which is well under a millisecond at Linesight's sizes and negligible next
    to a training step, so no sum tree is needed.
    """

    def __init__(
        self,
        max_capacity: int,
        img_shape: tuple[int, int, int],
        float_dim: int,
        seed: int = 0,
        n_steps: int = 3,
        prio_alpha: float = 0.0,
        prio_beta: float = 1.0,
        prio_epsilon: float = 2e-3,
        chunk_rows: int = CHUNK_ROWS,
    ):
        self.max_capacity = int(max_capacity)
        self.capacity = self.max_capacity
        n = self.max_capacity
        self.img = np.empty((n, *img_shape), dtype=np.uint8)
        self.next_img = np.empty((n, *img_shape), dtype=np.uint8)
        self.floats = np.empty((n, float_dim), dtype=np.float32)
        self.next_floats = np.empty((n, float_dim), dtype=np.float32)
        self.action = np.empty(n, dtype=np.int64)
        self.reward = np.empty(n, dtype=np.float32)
        self.terminal = np.empty(n, dtype=np.float32)
        self.gamma_n = np.empty(n, dtype=np.float32)
        self.reward_partial = np.empty((n, n_steps), dtype=np.float32)
        self.n_steps = np.empty(n, dtype=np.int64)
        self.stuck_actions = np.empty(n, dtype=np.int64)
        self.priority = np.zeros(n, dtype=np.float64)
        self.size = 0
        self.write_pos = 0
        self.prio_alpha = prio_alpha
        self.prio_beta = prio_beta
        self.prio_epsilon = prio_epsilon
        self.max_priority = 1.0
        self.rng = np.random.default_rng(seed)
        # Persistence: which chunks changed since a checkpoint last took them, and a hook a checkpoint being written
        # sets so that it copies a chunk before ``add`` overwrites it (``tmexp.core.checkpoint``).
        self.chunk_rows = int(chunk_rows)
        self.dirty = np.zeros(-(-n // self.chunk_rows), dtype=bool)
        self.before_write: Callable[[np.ndarray], None] | None = None

    def __len__(self) -> int:
        return self.size

    def set_capacity(self, capacity: int) -> None:
        """Follow the memory-size schedule (the buffer keeps what it holds when the capacity grows)."""
        capacity = min(int(capacity), self.max_capacity)
        if capacity < self.size:
            # Shrinking keeps the most recent transitions in place; rare (schedules normally grow).
            self.size = capacity
            self.write_pos %= capacity
        self.capacity = capacity

    def _positions(self, count: int) -> np.ndarray:
        """Slots for ``count`` new transitions: append while below capacity, then overwrite the oldest."""
        n_append = min(count, self.capacity - self.size)
        appended = np.arange(self.size, self.size + n_append)
        self.size += n_append
        rest = count - n_append
        overwritten = (self.write_pos + np.arange(rest)) % self.capacity
        self.write_pos = (self.write_pos + rest) % self.capacity
        return np.concatenate([appended, overwritten]).astype(np.int64)

    def add(self, block: Transitions) -> None:
        count = len(block)
        if count > self.capacity:
            block = Transitions(*(getattr(block, f)[-self.capacity :] for f in Transitions.__dataclass_fields__))
            count = self.capacity
        pos = self._positions(count)
        self._will_write(pos)
        self.img[pos] = block.img
        self.next_img[pos] = block.next_img
        self.floats[pos] = block.floats
        self.next_floats[pos] = block.next_floats
        self.action[pos] = block.action
        self.reward[pos] = block.reward
        self.terminal[pos] = block.terminal
        self.gamma_n[pos] = block.gamma_n
        width = block.reward_partial.shape[1]
        self.reward_partial[pos, :width] = block.reward_partial
        self.reward_partial[pos, width:] = block.reward_partial[:, -1:]
        self.n_steps[pos] = block.n_steps
        self.stuck_actions[pos] = block.stuck_actions
        self.priority[pos] = self.max_priority

    def sample(self, batch_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Draw a batch. Returns (batch dict of arrays with an importance ``weight`` per sample, indices)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        if self.prio_alpha > 0:
            p = self.priority[: self.size] ** self.prio_alpha
            cdf = np.cumsum(p)
            total = cdf[-1]
            idx = np.searchsorted(cdf, self.rng.random(batch_size) * total, side="right")
            idx = np.minimum(idx, self.size - 1)
            probs = p[idx] / total
            weight = (self.size * probs) ** (-self.prio_beta)
            weight = (weight / weight.max()).astype(np.float32)
        else:
            idx = self.rng.integers(0, self.size, size=batch_size)
            weight = np.ones(batch_size, dtype=np.float32)
        batch = {
            "img": self.img[idx],
            "floats": self.floats[idx],
            "action": self.action[idx],
            "reward": self.reward[idx],
            "next_img": self.next_img[idx],
            "next_floats": self.next_floats[idx],
            "terminal": self.terminal[idx],
            "gamma_n": self.gamma_n[idx],
            "reward_partial": self.reward_partial[idx],
            "n_steps": self.n_steps[idx],
            "stuck_actions": self.stuck_actions[idx],
            "weight": weight,
        }
        return batch, idx

    def update_priorities(self, idx: np.ndarray, td_errors: np.ndarray) -> None:
        if self.prio_alpha <= 0:
            return
        prio = np.abs(np.asarray(td_errors, dtype=np.float64)) + self.prio_epsilon
        self.priority[idx] = prio
        self.max_priority = max(self.max_priority, float(prio.max()))

    # ----- persistence (tmexp.core.checkpoint) -------------------------------------------------------------------
    def _will_write(self, pos: np.ndarray) -> None:
        chunks = np.unique(pos // self.chunk_rows)
        hook = self.before_write
        if hook is not None:
            hook(chunks)
        self.dirty[chunks] = True

    def chunk_count(self) -> int:
        """Chunks holding stored rows (rows ``[0, size)`` are the stored ones)."""
        return -(-self.size // self.chunk_rows)

    def chunk_span(self, i: int, size: int | None = None) -> tuple[int, int]:
        """Rows ``[start, stop)`` of chunk ``i`` that hold transitions when the buffer holds ``size`` (now: None)."""
        start = i * self.chunk_rows
        return start, max(start, min(start + self.chunk_rows, self.size if size is None else size))

    def copy_rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Copies of the stored arrays' rows ``[start, stop)``."""
        return {name: getattr(self, name)[start:stop].copy() for name in STORED}

    def put_rows(self, start: int, arrays: dict[str, np.ndarray]) -> None:
        """Write saved rows back at ``start`` (a resume: not marked as changed)."""
        for name in STORED:
            value = arrays[name]
            getattr(self, name)[start : start + len(value)] = value

    def drop_spans(self, spans: list[tuple[int, int]]) -> int:
        """Remove the rows of ``spans`` (disjoint ``[start, stop)`` within ``[0, size)``), moving the rows after them
        down so that the stored ones stay ``[0, size)`` in their ring order; return the number removed.

        Once the buffer is full again, overwrites start at the oldest row kept, as they would have; every chunk from
        the first span on has moved, so it counts as changed.
        """
        spans = sorted((a, b) for a, b in spans if b > a)
        if not spans:
            return 0
        keep = []  # the runs of rows kept, in order
        at = 0
        for a, b in spans:
            keep.append((at, a))
            at = b
        keep.append((at, self.size))
        dest = 0
        for a, b in keep:
            if a >= b:
                continue
            if dest != a:  # overlapping moves down are safe: numpy copies through a buffer when they overlap
                for name in (*STORED, "priority"):
                    array = getattr(self, name)
                    array[dest : dest + b - a] = array[a:b]
            dest += b - a
        self.write_pos -= sum(max(0, min(b, self.write_pos) - a) for a, b in spans)
        removed = self.size - dest
        self.size = dest
        self.dirty[spans[0][0] // self.chunk_rows :] = True
        return removed
