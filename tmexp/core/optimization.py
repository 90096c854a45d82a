"""One optimisation step of the IQN learner, plus the optimiser, soft target update and device/AMP helpers.

``train_step`` is the whole learner update, readable top to bottom:
    1. set the learning rate; resample NoisyNet noise of the online and the target network (when on)
    2. target T_j (B, N') under no_grad: Munchausen-IQN, DDQN or plain (``losses.py``)
    3. online quantiles Z(s_t, a_t; tau_i) (B, N); per-sample quantile Huber loss; optional Linesight
       self-loss rescaling; total loss = sum_b weight_b * loss_b (Linesight sums over the batch)
    4. backward (GradScaler on CUDA), clip the gradient by norm then by value, optimiser step
    5. decoupled weight decay: w *= 1 - weight_decay_lr_ratio * lr (every parameter, as Linesight)

The target network is only read; it changes only through ``soft_update``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor

from tmexp.config import BTRConfig, Device, NNConfig, Optimizer, TrainingConfig
from tmexp.core import losses
from tmexp.core.networks import IQNNetwork

OPTIMIZERS = tuple(o.value for o in Optimizer)  # one definition of each closed set: tmexp/config.py
DEVICES = tuple(d.value for d in Device)


class OptimizationConfigError(ValueError):
    """An optimiser or device setting that cannot be used (the message names the key and the fix)."""


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU."""
    if name not in DEVICES:
        raise OptimizationConfigError(f"performance.device={name!r} is unknown; choose one of {', '.join(DEVICES)}.")
    if name == "cuda" and not torch.cuda.is_available():
        raise OptimizationConfigError(
            "performance.device=cuda but torch sees no CUDA device; use performance.device=auto or cpu."
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """AMP gradient scaler: active only on CUDA (with ``enabled``); on CPU a pass-through scaler."""
    device = torch.device(device)
    return torch.amp.GradScaler(device.type, enabled=enabled and device.type == "cuda")


def make_optimizer(params, training_cfg: TrainingConfig) -> torch.optim.Optimizer:
    """RAdam (Linesight) or Adam with ``training.adam_epsilon`` and betas; weight decay is applied by ``train_step``.

    The learning rate is set on every step by ``train_step`` from the schedule.
    """
    params = list(params)
    betas = (training_cfg.adam_beta1, training_cfg.adam_beta2)
    lr = 1e-3  # placeholder until the first train_step sets the scheduled value
    on_cuda = bool(params) and params[0].is_cuda
    if training_cfg.optimizer == "radam":
        # foreach: one kernel per op over all parameters instead of one per tensor (RAdam has no fused kernel).
        return torch.optim.RAdam(params, lr=lr, betas=betas, eps=training_cfg.adam_epsilon, foreach=True)
    if training_cfg.optimizer == "adam":
        return torch.optim.Adam(
            params,
            lr=lr,
            betas=betas,
            eps=training_cfg.adam_epsilon,
            fused=on_cuda or None,
            foreach=None if on_cuda else True,
        )
    raise OptimizationConfigError(
        f"training.optimizer={training_cfg.optimizer!r} is unknown; choose one of {', '.join(OPTIMIZERS)}."
    )


@torch.no_grad()
def soft_update(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    """theta_target <- (1 - tau) * theta_target + tau * theta_online; persistent buffers are copied."""
    target_params: list[Tensor] = list(target.parameters())
    online_params: list[Tensor] = list(online.parameters())
    torch._foreach_lerp_(target_params, online_params, tau)
    for t_module, o_module in zip(target.modules(), online.modules()):
        for name, buf in t_module._buffers.items():
            # Non-persistent buffers (NoisyNet noise, constants) belong to each network.
            if buf is not None and name not in t_module._non_persistent_buffers_set:
                buf.copy_(cast(Tensor, o_module._buffers[name]))


_DISABLED_SCALER = torch.amp.GradScaler("cpu", enabled=False)


@dataclass
class SelfLossState:
    """Running means for Linesight's target self-loss rescaling (``losses.target_self_loss_scale``).

    Keep one per learner and pass it to every ``train_step``; save it in checkpoints with ``state_dict``.
    """

    # floats between steps; tensors within one (train_step converts them back at its end)
    typical_self_loss: float | Tensor = 0.01
    typical_clamped_self_loss: float | Tensor = 0.01

    def state_dict(self) -> dict[str, float]:
        return {
            "typical_self_loss": float(self.typical_self_loss),
            "typical_clamped_self_loss": float(self.typical_clamped_self_loss),
        }

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.typical_self_loss = float(state["typical_self_loss"])
        self.typical_clamped_self_loss = float(state["typical_clamped_self_loss"])


def compute_targets(
    online: IQNNetwork,
    target: IQNNetwork,
    batch: dict[str, Tensor],
    q_mean_online: Tensor | None,
    *,
    nn_cfg: NNConfig,
    btr_cfg: BTRConfig,
) -> tuple[Tensor, Tensor]:
    """T_j (B, N') and tau'_j (B, N') for the batch; call under no_grad.

    ``q_mean_online`` (B, A) is Q-bar_online(s_t, .) (detached), needed only for the Munchausen bonus.
    """
    b, n = batch["img"].shape[0], nn_cfg.iqn_n
    device = batch["img"].device
    target_taus = losses.training_taus(b, n, device)
    next_quantiles, _ = target(batch["next_img"], batch["next_floats"], n, target_taus)  # (B, N', A)
    next_quantiles = next_quantiles.float()
    if btr_cfg.use_munchausen:
        assert q_mean_online is not None, "the Munchausen target needs the online network's mean Q at s_t"
        targets = losses.munchausen_iqn_target(
            batch["reward"],
            batch["gamma_n"],
            batch["terminal"],
            next_quantiles,
            q_mean_online,
            batch["action"],
            alpha=btr_cfg.munchausen_alpha,
            entropy_tau=btr_cfg.munchausen_entropy_tau,
            l0=btr_cfg.munchausen_lo,
        )
        return targets, target_taus
    if nn_cfg.use_ddqn:
        # The online network picks a*, with its own fresh fractions (Linesight).
        # argmax of the quantile mean of Q equals that of A (Q = V + A - mean A), so the V head is skipped.
        online_next_advantages = online.advantages(
            batch["next_img"], batch["next_floats"], losses.training_taus(b, n, device)
        )
        next_actions = losses.greedy_actions(online_next_advantages.float())
    else:
        next_actions = losses.greedy_actions(next_quantiles)
    return losses.iqn_target(
        batch["reward"], batch["gamma_n"], batch["terminal"], next_quantiles, next_actions
    ), target_taus


def train_step(
    online: IQNNetwork,
    target: IQNNetwork,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    batch: dict[str, Tensor],
    *,
    nn_cfg: NNConfig,
    btr_cfg: BTRConfig,
    lr: float,
    weight_decay_lr_ratio: float,
    self_loss_state: SelfLossState | None = None,
) -> dict[str, float | np.ndarray]:
    """One learner update on ``batch`` (see the module docstring for the steps).

    Args:
        scaler: from ``make_grad_scaler``; None means no AMP (full precision, no loss scaling).
        batch: tensors on the networks' device, B rows: ``img`` uint8 (B, 1, H, W), ``floats`` float32 (B, F),
            ``action`` int64 (B,), ``reward`` float32 (B,) discounted n-step sum, ``next_img``, ``next_floats``,
            ``terminal`` float32 (B,), ``gamma_n`` float32 (B,), ``weight`` float32 (B,) importance weights.
        lr: learning rate for this step (from the schedule). No gamma: ``batch["gamma_n"]`` carries each
            transition's gamma ** k, as replay filled it.
        weight_decay_lr_ratio: decoupled weight decay factor; 0 turns it off.
        self_loss_state: pass a ``SelfLossState`` to apply Linesight's target self-loss rescaling with
            ``nn.target_self_loss_clamp_ratio`` (updated in place); None (or ratio <= 0) leaves the loss as is.

    Returns:
        ``loss``: the optimised total loss, sum_b weight_b * loss_b (float);
        ``loss_mean``: the unweighted, unscaled per-sample loss averaged over the batch (float);
        ``grad_norm``: the global gradient L2 norm before clipping (float; inf/nan when AMP skipped the step);
        ``mean_q``: mean over batch and fractions of Z_online(s_t, a_t; tau_i) (float);
        ``mean_target``: mean of T_j (float);
        ``td_errors``: numpy float32 (B,), |mean_j T_j - mean_i Z(s_t, a_t; tau_i)| per sample, the new PER
        priorities before epsilon / alpha (Linesight's priority).
    """
    device = batch["img"].device
    for group in optimizer.param_groups:
        group["lr"] = lr
    if btr_cfg.use_noisy_linear:
        online.reset_noise()
        target.reset_noise()
    b, n = batch["img"].shape[0], nn_cfg.iqn_n
    if scaler is None:
        scaler = _DISABLED_SCALER
    use_amp = scaler.is_enabled()

    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        taus = losses.training_taus(b, n, device)
        quantiles, _ = online(batch["img"], batch["floats"], n, taus)  # (B, N, A)
        quantiles = quantiles.float()
        with torch.no_grad():
            q_mean_online = quantiles.detach().mean(dim=1) if btr_cfg.use_munchausen else None
            targets, target_taus = compute_targets(online, target, batch, q_mean_online, nn_cfg=nn_cfg, btr_cfg=btr_cfg)
        predictions = quantiles.gather(2, batch["action"].view(-1, 1, 1).expand(-1, n, 1)).squeeze(2)  # (B, N)
        per_sample = losses.iqn_loss(targets, predictions, taus, nn_cfg.iqn_kappa)  # (B,)
        scaled = per_sample
        if self_loss_state is not None and nn_cfg.target_self_loss_clamp_ratio > 0:
            scale, typical, typical_clamped = losses.target_self_loss_scale(
                targets,
                target_taus,
                nn_cfg.iqn_kappa,
                self_loss_state.typical_self_loss,
                self_loss_state.typical_clamped_self_loss,
                nn_cfg.target_self_loss_clamp_ratio,
            )
            self_loss_state.typical_self_loss, self_loss_state.typical_clamped_self_loss = typical, typical_clamped
            scaled = per_sample * scale
        total_loss = (batch["weight"] * scaled).sum()

    scaler.scale(total_loss).backward()
    scaler.unscale_(optimizer)
    params = [p for p in online.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, nn_cfg.clip_grad_norm, foreach=True)
    torch.nn.utils.clip_grad_value_(params, nn_cfg.clip_grad_value, foreach=True)
    scaler.step(optimizer)
    scaler.update()
    if weight_decay_lr_ratio:
        with torch.no_grad():
            torch._foreach_mul_(list(online.parameters()), 1.0 - weight_decay_lr_ratio * lr)

    with torch.no_grad():
        td_errors = (targets.mean(dim=1) - predictions.detach().mean(dim=1)).abs()
        stats = torch.stack(
            (total_loss.detach(), per_sample.detach().mean(), grad_norm, predictions.detach().mean(), targets.mean())
        ).cpu()
    if self_loss_state is not None:
        self_loss_state.typical_self_loss = float(self_loss_state.typical_self_loss)
        self_loss_state.typical_clamped_self_loss = float(self_loss_state.typical_clamped_self_loss)
    loss, loss_mean, norm, mean_q, mean_target = stats.tolist()
    return {
        "loss": loss,
        "loss_mean": loss_mean,
        "grad_norm": norm,
        "mean_q": mean_q,
        "mean_target": mean_target,
        "td_errors": td_errors.float().cpu().numpy(),
    }
