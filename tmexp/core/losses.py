"""The IQN loss and its targets as pure functions of tensors (paper notation).

Notation (Dabney et al., 2018, "Implicit Quantile Networks"; Vieillard et al., 2020, "Munchausen RL"):
    B   batch size, A number of actions
    N   quantile fractions tau_i of the online network at s_t       (``taus``, shape (B, N))
    N'  quantile fractions tau'_j of the target network at s_{t+n}  (shape (B, N'))
    Z(s, a; tau)   quantile values, shape (B, N, A)
    T_j            the target for fraction tau'_j, shape (B, N')
    delta_ij = T_j - Z(s_t, a_t; tau_i)                             shape (B, N', N)

Loss per sample (Linesight's form): (1 / N') * sum_j sum_i |tau_i - 1{delta_ij < 0}| * L_kappa(delta_ij) / kappa,
with L_kappa the Huber loss of threshold kappa. Dividing by kappa makes the large-error branch |delta| - kappa/2,
so the gradient scale does not depend on kappa (Linesight's kappa is 5e-3).

Targets (n-step, ``reward`` is the discounted n-step reward sum, ``gamma_n`` = gamma ** k for the k steps summed,
``terminal`` = 1 only when the race finished within them):
    plain / DDQN:  T_j = R_n + gamma_n * (1 - terminal) * Z_target(s', a*; tau'_j)
                   a* = argmax_a mean_j Z(s', a) of the online network (DDQN) or of the target network (plain)
                   Without DDQN this is the IQN paper's form: one action a* for every fraction. Linesight's code
                   takes instead, per fraction, max_a Z_target(s', a; tau'_j) (a max per quantile, which is not the
                   return distribution of any one action); with DDQN, its default, both take a*.
    Munchausen:    T_j = R_n + alpha * clip(tau_m * log pi_online(a_t | s_t), l0, 0)
                         + gamma_n * (1 - terminal) * sum_a' pi_target(a' | s') (Z_target(s', a'; tau'_j)
                                                                                - tau_m * log pi_target(a' | s'))
                   pi = softmax(Q-bar / tau_m), Q-bar = mean over quantiles, log pi computed with logsumexp.
                   With alpha = 0 this is the soft-IQN target. No argmax is taken, so ``nn.use_ddqn`` has no
                   effect with Munchausen on (as in BTR's code; composing such a config warns).
Kappa: BTR's code uses kappa = 1; the experiments keep Linesight's 5e-3 (``nn.iqn_kappa``).
"""

from __future__ import annotations

import torch
from torch import Tensor


class LossConfigError(ValueError):
    """A loss setting that cannot work (the message names the key and the fix)."""


def training_taus(
    batch_size: int, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> Tensor:
    """Stratified, symmetric quantile fractions for training (Linesight): (B, N).

    The first N/2 are tau_k = (k + U_k) / N for k = 0..N/2-1 (one per stratum of [0, 1/2)), the other N/2 are
    1 - tau_k, so every sample sees both tails and the mean fraction is exactly 1/2.
    """
    if n < 2 or n % 2:
        raise LossConfigError(f"nn.iqn_n must be an even number >= 2 (stratified symmetric taus), got {n}; use e.g. 8.")
    half = (
        torch.arange(n // 2, device=device, dtype=torch.float32)
        + torch.rand(batch_size, n // 2, device=device, generator=generator)
    ) / n
    return torch.cat((half, 1.0 - half), dim=1)


def quantile_huber_loss(td: Tensor, taus: Tensor, kappa: float) -> Tensor:
    """Per-sample quantile Huber loss.

    Args:
        td: delta_ij = T_j - Z_i, shape (B, N', N).
        taus: online fractions tau_i, shape (B, N).
        kappa: Huber threshold (> 0).

    Returns:
        (B,): mean over j (target fractions) of the sum over i (online fractions).
    """
    abs_td = td.abs()
    huber_over_kappa = torch.where(abs_td <= kappa, (0.5 / kappa) * td * td, abs_td - 0.5 * kappa)
    weight = (taus.unsqueeze(1) - (td.detach() < 0).to(td.dtype)).abs()  # |tau_i - 1{delta_ij < 0}|
    return (weight * huber_over_kappa).sum(dim=2).mean(dim=1)


def iqn_loss(targets: Tensor, predictions: Tensor, taus: Tensor, kappa: float) -> Tensor:
    """targets T_j (B, N'), predictions Z(s_t, a_t; tau_i) (B, N), taus tau_i (B, N) -> per-sample loss (B,)."""
    td = targets.unsqueeze(2) - predictions.unsqueeze(1)  # (B, N', N)
    return quantile_huber_loss(td, taus, kappa)


def greedy_actions(quantiles: Tensor) -> Tensor:
    """argmax_a of the quantile mean: (B, N, A) -> (B,) int64."""
    return quantiles.mean(dim=1).argmax(dim=1)


def iqn_target(
    reward: Tensor, gamma_n: Tensor, terminal: Tensor, next_quantiles: Tensor, next_actions: Tensor
) -> Tensor:
    """Plain / DDQN n-step target.

    Args:
        reward: R_n (B,); gamma_n: (B,); terminal: (B,) 1.0 if the race finished within the n steps.
        next_quantiles: Z_target(s', a; tau'_j), (B, N', A).
        next_actions: a* (B,) int64, from ``greedy_actions`` of the online (DDQN) or target network.

    Returns:
        T_j (B, N').
    """
    n_prime = next_quantiles.shape[1]
    z_next = next_quantiles.gather(2, next_actions.view(-1, 1, 1).expand(-1, n_prime, 1)).squeeze(2)  # (B, N')
    return reward.unsqueeze(1) + (gamma_n * (1.0 - terminal)).unsqueeze(1) * z_next


def scaled_log_policy(q_mean: Tensor, entropy_tau: float) -> Tensor:
    """tau * log softmax(q / tau), stably via logsumexp: (B, A) -> (B, A), every entry <= 0."""
    return q_mean - entropy_tau * torch.logsumexp(q_mean / entropy_tau, dim=1, keepdim=True)


def munchausen_iqn_target(
    reward: Tensor,
    gamma_n: Tensor,
    terminal: Tensor,
    next_quantiles: Tensor,
    q_mean_online: Tensor,
    action: Tensor,
    *,
    alpha: float,
    entropy_tau: float,
    l0: float,
) -> Tensor:
    """Munchausen-IQN n-step target (module docstring), the bonus added once to the n-step return.

    Args:
        reward, gamma_n, terminal: (B,) as in ``iqn_target``.
        next_quantiles: Z_target(s', a'; tau'_j), (B, N', A).
        q_mean_online: Q-bar_online(s_t, a), the online quantile mean at s_t, (B, A) (detached).
        action: a_t (B,) int64.
        alpha, entropy_tau, l0: Munchausen scale, entropy temperature, lower clip of the scaled log-policy.

    Returns:
        T_j (B, N').
    """
    if entropy_tau <= 0:
        raise LossConfigError(f"btr.munchausen_entropy_tau must be > 0, got {entropy_tau}; BTR uses 0.03.")
    tau_log_pi_now = scaled_log_policy(q_mean_online, entropy_tau).gather(1, action.view(-1, 1)).squeeze(1)  # (B,)
    bonus = alpha * tau_log_pi_now.clamp(min=l0, max=0.0)  # (B,)
    q_mean_next = next_quantiles.mean(dim=1)  # (B, A)
    pi_next = torch.softmax(q_mean_next / entropy_tau, dim=1)  # (B, A)
    tau_log_pi_next = scaled_log_policy(q_mean_next, entropy_tau)  # (B, A)
    soft_next = (pi_next.unsqueeze(1) * (next_quantiles - tau_log_pi_next.unsqueeze(1))).sum(dim=2)  # (B, N')
    return (reward + bonus).unsqueeze(1) + (gamma_n * (1.0 - terminal)).unsqueeze(1) * soft_next


def target_self_loss_scale(
    targets: Tensor,
    target_taus: Tensor,
    kappa: float,
    typical_self_loss: float | Tensor,
    typical_clamped_self_loss: float | Tensor,
    clamp_ratio: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Linesight's per-sample loss rescaling by the target's "self-loss" (``nn.target_self_loss_clamp_ratio``).

    The target distribution's spread s_b = sqrt(iqn_loss(T, T, tau')) is a per-sample scale of the quantile loss:
    a wide target makes a large loss even when the prediction is right. Each sample's loss is multiplied by
    typical_clamped / max(s_b, typical / clamp_ratio), where the typical values are running means (momentum
    0.99) of s_b and of the clamped s_b; the clamp keeps near-deterministic targets from being blown up by more
    than clamp_ratio.

    Args:
        targets: T_j (B, N'); target_taus: tau'_j (B, N').
        typical_self_loss, typical_clamped_self_loss: the running means before this batch (Linesight starts at 0.01).

    Returns:
        (scale (B,), new typical_self_loss, new typical_clamped_self_loss), all detached.
    """
    with torch.no_grad():
        self_loss = iqn_loss(targets, targets, target_taus, kappa).sqrt()  # (B,)
        typical = 0.99 * typical_self_loss + 0.01 * self_loss.mean()
        clamped = self_loss.clamp(min=typical / clamp_ratio)
        typical_clamped = 0.99 * typical_clamped_self_loss + 0.01 * clamped.mean()
        return typical_clamped / clamped, typical, typical_clamped
