"""The IQN loss and targets against hand-computed values on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch

from tmexp.core import losses

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_training_taus_are_stratified_and_symmetric():
    taus = losses.training_taus(5, 8, generator=torch.Generator().manual_seed(0))
    assert taus.shape == (5, 8)
    first, second = taus[:, :4], taus[:, 4:]
    # one fraction per stratum [k/8, (k+1)/8) of [0, 1/2), mirrored into (1/2, 1]
    for k in range(4):
        assert ((first[:, k] >= k / 8) & (first[:, k] < (k + 1) / 8)).all()
    torch.testing.assert_close(second, 1 - first)
    torch.testing.assert_close(taus.mean(dim=1), torch.full((5,), 0.5))


@pytest.mark.parametrize("n", [0, 1, 7])
def test_training_taus_reject_odd_or_tiny_n(n):
    with pytest.raises(losses.LossConfigError, match="nn.iqn_n"):
        losses.training_taus(2, n)


def test_quantile_huber_loss_hand_computed():
    # kappa = 0.5: L/kappa = delta^2 for |delta| <= 0.5, |delta| - 0.25 beyond.
    # T = (1.0, -0.5), Z = (0.0, 0.2), tau = (0.25, 0.75)
    # j=0: delta = (1.0, 0.8)   -> L/k = (0.75, 0.55), weights (0.25, 0.75) -> 0.1875 + 0.4125 = 0.6
    # j=1: delta = (-0.5, -0.7) -> L/k = (0.25, 0.45), weights (0.75, 0.25) -> 0.1875 + 0.1125 = 0.3
    # mean over j: 0.45
    targets = torch.tensor([[1.0, -0.5]])
    predictions = torch.tensor([[0.0, 0.2]])
    taus = torch.tensor([[0.25, 0.75]])
    loss = losses.iqn_loss(targets, predictions, taus, kappa=0.5)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(0.45, abs=1e-6)


def test_quantile_huber_loss_small_kappa_is_pinball_loss():
    # With a tiny kappa every |delta| is in the linear branch: the loss is the pinball loss (minus kappa / 2).
    g = torch.Generator().manual_seed(1)
    targets, predictions = torch.randn(3, 4, generator=g), torch.randn(3, 6, generator=g)
    taus = torch.rand(3, 6, generator=g)
    td = targets[:, :, None] - predictions[:, None, :]
    pinball = torch.where(td < 0, (taus[:, None, :] - 1) * td, taus[:, None, :] * td).sum(2).mean(1)
    torch.testing.assert_close(losses.iqn_loss(targets, predictions, taus, kappa=1e-6), pinball, atol=1e-4, rtol=1e-4)


def test_quantile_loss_pulls_predictions_to_target_quantiles():
    # Minimising the loss over Z for a fixed target sample recovers its quantiles.
    targets = torch.linspace(0.0, 1.0, 101).unsqueeze(0)  # uniform on [0, 1]
    taus = torch.tensor([[0.1, 0.5, 0.9]])
    z = torch.zeros(1, 3, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.02)
    for _ in range(600):
        opt.zero_grad()
        losses.iqn_loss(targets, z, taus, kappa=1e-3).sum().backward()
        opt.step()
    torch.testing.assert_close(z.detach(), taus, atol=0.02, rtol=0)


def test_iqn_target_hand_computed():
    reward = torch.tensor([1.0, 2.0])
    gamma_n = torch.tensor([0.5, 0.5])
    terminal = torch.tensor([0.0, 1.0])
    next_quantiles = torch.tensor([[[1.0, 4.0], [3.0, 6.0]], [[10.0, 20.0], [30.0, 40.0]]])  # (B=2, N'=2, A=2)
    next_actions = torch.tensor([1, 0])
    targets = losses.iqn_target(reward, gamma_n, terminal, next_quantiles, next_actions)
    # sample 0: 1 + 0.5 * (4, 6) = (3, 4); sample 1 is terminal: (2, 2) whatever the next state says
    torch.testing.assert_close(targets, torch.tensor([[3.0, 4.0], [2.0, 2.0]]))


def test_greedy_actions_use_the_quantile_mean():
    # action 0 has the best single quantile, action 1 the best mean
    q = torch.tensor([[[5.0, 2.0], [-4.0, 1.0]]])  # (1, N=2, A=2): means (0.5, 1.5)
    assert losses.greedy_actions(q).tolist() == [1]


def test_scaled_log_policy_is_stable_for_large_values():
    q = torch.tensor([[1e4, 1e4 - 1.0, -1e4]])
    out = losses.scaled_log_policy(q, 0.03)
    assert torch.isfinite(out).all()
    assert out[0, 0].item() == pytest.approx(-0.03 * math.log1p(math.exp(-1 / 0.03)), abs=1e-5)
    assert (out <= 0).all()


def test_target_self_loss_scale_follows_linesight_running_means():
    # Two samples: one with spread targets, one with a constant (zero self-loss) target.
    targets = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    taus = torch.tensor([[0.25, 0.75], [0.25, 0.75]])
    scale, typical, typical_clamped = losses.target_self_loss_scale(targets, taus, 1.0, 0.01, 0.01, clamp_ratio=4.0)
    self_loss = losses.iqn_loss(targets, targets, taus, 1.0).sqrt()
    assert self_loss[1].item() == 0.0 and self_loss[0].item() > 0
    expected_typical = 0.99 * 0.01 + 0.01 * self_loss.mean()
    clamped = torch.clamp(self_loss, min=expected_typical.item() / 4.0)
    expected_clamped = 0.99 * 0.01 + 0.01 * clamped.mean()
    assert typical.item() == pytest.approx(expected_typical.item())
    assert typical_clamped.item() == pytest.approx(expected_clamped.item())
    torch.testing.assert_close(scale, expected_clamped / clamped)
    # the zero-spread sample is scaled by at most clamp_ratio-bounded amounts, not divided by zero
    assert torch.isfinite(scale).all()
