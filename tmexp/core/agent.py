"""Action selection and the map cycle of exploration and eval races.

Exploration races (Linesight): with probability epsilon a uniform random action; else with probability
epsilon_boltzmann the argmax of Q perturbed by tau_epsilon_boltzmann * N(0, 1); else the greedy action. Eval races
are greedy. With NoisyNet heads the exploration comes from the network's noise (resampled every acting step, one
sample for the exploring cars of a collector's batched forward pass), and epsilon / Boltzmann are switched off
unless ``btr.noisy_keep_epsilon`` is true; eval races use the mean weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MapCycle:
    """``explo`` exploration races then ``eval`` eval races, repeated."""

    explo: int
    eval: int

    def is_eval(self, race_index: int) -> bool:
        return race_index % (self.explo + self.eval) >= self.explo

    def first_race(self, car: int, cars: int) -> int:
        """Where car ``car`` of a run's ``cars`` starts in the cycle: staggered evenly, so that the run's eval races
        come spread out at the cycle's rate rather than all cars' at once."""
        return car * (self.explo + self.eval) // cars


def select_action(
    q_values: np.ndarray,
    rng: np.random.Generator,
    epsilon: float,
    epsilon_boltzmann: float,
    tau_epsilon_boltzmann: float,
) -> tuple[int, bool]:
    """Pick an action from ``q_values`` (n_actions,). Returns (action, whether it is the greedy action)."""
    greedy = int(np.argmax(q_values))
    u = rng.random()
    if u < epsilon:
        action = int(rng.integers(len(q_values)))
    elif u < epsilon + epsilon_boltzmann:
        action = int(np.argmax(q_values + tau_epsilon_boltzmann * rng.standard_normal(len(q_values))))
    else:
        action = greedy
    return action, action == greedy


def exploration_rates(
    epsilon: float, epsilon_boltzmann: float, noisy: bool, noisy_keep_epsilon: bool
) -> tuple[float, float]:
    """The epsilons actually used in exploration races, given whether NoisyNets explore instead."""
    if noisy and not noisy_keep_epsilon:
        return 0.0, 0.0
    return epsilon, epsilon_boltzmann
