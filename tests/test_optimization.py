"""The learner's optimisation step: target isolation, soft update, clipping, decoupled weight decay, DDQN, returns."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from tmexp.config import BTRConfig, NNConfig, TrainingConfig
from tmexp.core import losses
from tmexp.core.networks import build_network
from tmexp.core.optimization import (
    OptimizationConfigError,
    SelfLossState,
    compute_targets,
    make_grad_scaler,
    make_optimizer,
    pick_device,
    soft_update,
    train_step,
)

IMG = (1, 40, 40)
FLOATS = 6
B = 8


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def small_nn(**kw) -> NNConfig:
    return NNConfig(dense_hidden_dimension=32, iqn_embedding_dimension=8, iqn_n=4, **kw)


def make_batch(seed: int = 0, b: int = B) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "img": torch.randint(0, 256, (b, *IMG), dtype=torch.uint8, generator=g),
        "floats": torch.randn(b, FLOATS, generator=g),
        "action": torch.randint(0, 12, (b,), generator=g),
        "reward": torch.randn(b, generator=g),
        "next_img": torch.randint(0, 256, (b, *IMG), dtype=torch.uint8, generator=g),
        "next_floats": torch.randn(b, FLOATS, generator=g),
        "terminal": (torch.arange(b) % 3 == 0).float(),
        "gamma_n": torch.full((b,), 0.99**3),
        "weight": torch.ones(b),
    }


def pair(nn_cfg: NNConfig, btr: BTRConfig, seed: int = 0):
    torch.manual_seed(seed)
    online = build_network(nn_cfg, btr, IMG, FLOATS)
    target = copy.deepcopy(online).requires_grad_(False)
    return online, target


def step(online, target, optimizer, nn_cfg, btr, batch=None, lr=1e-3, wd=0.0, seed=1, **kw):
    torch.manual_seed(seed)
    return train_step(
        online,
        target,
        optimizer,
        None,
        make_batch() if batch is None else batch,
        nn_cfg=nn_cfg,
        btr_cfg=btr,
        lr=lr,
        weight_decay_lr_ratio=wd,
        **kw,
    )


def flat(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


# --- construction helpers ---------------------------------------------------------------------------------------


def test_make_optimizer_radam_and_adam():
    params = [torch.nn.Parameter(torch.zeros(3))]
    radam = make_optimizer(
        params, TrainingConfig(optimizer="radam", adam_epsilon=1e-4, adam_beta1=0.8, adam_beta2=0.99)
    )
    assert isinstance(radam, torch.optim.RAdam)
    assert radam.defaults["eps"] == 1e-4 and radam.defaults["betas"] == (0.8, 0.99)
    assert isinstance(make_optimizer(params, TrainingConfig(optimizer="adam")), torch.optim.Adam)
    with pytest.raises(OptimizationConfigError, match="training.optimizer"):
        make_optimizer(params, TrainingConfig(optimizer="sgd"))


def test_devices_and_grad_scaler():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(OptimizationConfigError, match="performance.device"):
        pick_device("tpu")
    assert not make_grad_scaler(torch.device("cpu")).is_enabled()


# --- target isolation and soft update ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "btr", [BTRConfig(), BTRConfig(use_munchausen=True, use_noisy_linear=True, use_layer_norm=True)]
)
def test_online_step_leaves_target_unchanged_until_soft_update(btr):
    nn_cfg = small_nn()
    online, target = pair(nn_cfg, btr)
    optimizer = make_optimizer(online.parameters(), TrainingConfig())
    target_before = copy.deepcopy(target.state_dict())
    online_before = flat(online)
    for i in range(3):
        out = step(online, target, optimizer, nn_cfg, btr, wd=0.1, seed=i)
        assert math.isfinite(out["loss"])
    for key, value in target.state_dict().items():
        assert torch.equal(value, target_before[key]), key
    assert not torch.equal(flat(online), online_before)
    assert all(p.grad is None for p in target.parameters())

    tau = 0.25
    old_target, online_now = flat(target), flat(online)
    soft_update(target, online, tau)
    torch.testing.assert_close(flat(target), old_target + tau * (online_now - old_target))
    soft_update(target, online, 1.0)
    torch.testing.assert_close(flat(target), online_now)


def test_soft_update_copies_persistent_buffers_but_not_noise():
    btr = BTRConfig(use_noisy_linear=True)
    online, target = pair(small_nn(), btr)
    online.float_mean.fill_(3.0)
    online.reset_noise()
    noise_before = target.heads.a_hidden.eps_in.clone()
    soft_update(target, online, 0.1)
    assert torch.equal(target.float_mean, online.float_mean)
    assert torch.equal(target.heads.a_hidden.eps_in, noise_before)


def test_noise_is_resampled_in_both_networks_every_step():
    nn_cfg, btr = small_nn(), BTRConfig(use_noisy_linear=True)
    online, target = pair(nn_cfg, btr)
    optimizer = make_optimizer(online.parameters(), TrainingConfig())
    eps_online, eps_target = online.heads.v_out.eps_out.clone(), target.heads.v_out.eps_out.clone()
    step(online, target, optimizer, nn_cfg, btr)
    assert not torch.equal(online.heads.v_out.eps_out, eps_online)
    assert not torch.equal(target.heads.v_out.eps_out, eps_target)


# --- clipping and weight decay (plain SGD makes the update equal -lr * gradient) -----------------------------------


def sgd_delta(nn_cfg, btr=None, lr=0.5, wd=0.0):
    btr = BTRConfig() if btr is None else btr
    online, target = pair(nn_cfg, btr)
    before = flat(online)
    out = step(online, target, torch.optim.SGD(online.parameters(), lr=lr), nn_cfg, btr, lr=lr, wd=wd)
    return (flat(online) - before) / -lr, out, online


def test_grad_norm_is_reported_before_clipping_and_clipped_by_norm():
    grad, out, _ = sgd_delta(small_nn(clip_grad_norm=1e9, clip_grad_value=1e9))
    assert grad.norm().item() == pytest.approx(out["grad_norm"], rel=1e-4)
    clipped, out_clipped, _ = sgd_delta(small_nn(clip_grad_norm=1e-2, clip_grad_value=1e9))
    assert out_clipped["grad_norm"] == pytest.approx(out["grad_norm"], rel=1e-5)  # same batch, same taus
    assert out["grad_norm"] > 1e-2
    assert clipped.norm().item() == pytest.approx(1e-2, rel=1e-3)
    torch.testing.assert_close(clipped, grad * (1e-2 / out["grad_norm"]), atol=1e-7, rtol=1e-3)


def test_gradient_is_clipped_by_value_after_norm():
    grad, out, _ = sgd_delta(small_nn(clip_grad_norm=1e9, clip_grad_value=1e9))
    v = grad.abs().max().item() / 10
    clipped, _, _ = sgd_delta(small_nn(clip_grad_norm=1e9, clip_grad_value=v))
    torch.testing.assert_close(clipped, grad.clamp(-v, v), atol=1e-7, rtol=1e-4)
    # norm first, then value: rescaled to norm c, then entries beyond v cut (the order Linesight uses)
    c = out["grad_norm"] / 2
    v2 = (grad * (c / out["grad_norm"])).abs().max().item() / 3
    both, _, _ = sgd_delta(small_nn(clip_grad_norm=c, clip_grad_value=v2))
    torch.testing.assert_close(both, (grad * (c / out["grad_norm"])).clamp(-v2, v2), atol=1e-7, rtol=1e-4)


def test_decoupled_weight_decay_scales_weights_after_the_step():
    lr, ratio = 0.5, 0.1
    online0, target0 = pair(small_nn(), BTRConfig())
    online1, target1 = pair(small_nn(), BTRConfig())
    step(online0, target0, torch.optim.SGD(online0.parameters(), lr=lr), small_nn(), BTRConfig(), lr=lr, wd=0.0)
    step(online1, target1, torch.optim.SGD(online1.parameters(), lr=lr), small_nn(), BTRConfig(), lr=lr, wd=ratio)
    torch.testing.assert_close(flat(online1), flat(online0) * (1 - ratio * lr))


def test_learning_rate_is_set_on_every_param_group():
    nn_cfg = small_nn()
    online, target = pair(nn_cfg, BTRConfig())
    optimizer = make_optimizer(online.parameters(), TrainingConfig())
    step(online, target, optimizer, nn_cfg, BTRConfig(), lr=3.5e-4)
    assert [g["lr"] for g in optimizer.param_groups] == [3.5e-4]


# --- targets -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_ddqn", [True, False])
def test_ddqn_lets_the_online_network_choose_the_next_action(use_ddqn):
    nn_cfg = small_nn(use_ddqn=use_ddqn)
    torch.manual_seed(0)
    online = build_network(nn_cfg, BTRConfig(), IMG, FLOATS)
    target = build_network(nn_cfg, BTRConfig(), IMG, FLOATS)  # different weights
    batch = make_batch(b=32)
    torch.manual_seed(5)
    with torch.no_grad():
        targets, target_taus = compute_targets(online, target, batch, None, nn_cfg=nn_cfg, btr_cfg=BTRConfig())
    torch.manual_seed(5)
    taus_target = losses.training_taus(32, 4)
    taus_online = losses.training_taus(32, 4)
    with torch.no_grad():
        z_next, _ = target(batch["next_img"], batch["next_floats"], 4, taus_target)
        online_choice = losses.greedy_actions(online(batch["next_img"], batch["next_floats"], 4, taus_online)[0])
    target_choice = losses.greedy_actions(z_next)
    assert not torch.equal(online_choice, target_choice)  # the test can tell the two apart
    chosen = online_choice if use_ddqn else target_choice
    expected = losses.iqn_target(batch["reward"], batch["gamma_n"], batch["terminal"], z_next, chosen)
    torch.testing.assert_close(target_taus, taus_target)
    torch.testing.assert_close(targets, expected, atol=1e-5, rtol=1e-5)


def test_munchausen_ignores_ddqn_and_uses_the_online_policy_at_s():
    nn_cfg = small_nn(use_ddqn=True)
    btr = BTRConfig(use_munchausen=True)
    online, target = pair(nn_cfg, btr)
    batch = make_batch()
    q_mean = torch.randn(B, 12)
    torch.manual_seed(2)
    with torch.no_grad():
        targets, taus = compute_targets(online, target, batch, q_mean, nn_cfg=nn_cfg, btr_cfg=btr)
        z_next, _ = target(batch["next_img"], batch["next_floats"], 4, taus)
    expected = losses.munchausen_iqn_target(
        batch["reward"],
        batch["gamma_n"],
        batch["terminal"],
        z_next,
        q_mean,
        batch["action"],
        alpha=0.9,
        entropy_tau=0.03,
        l0=-1.0,
    )
    torch.testing.assert_close(targets, expected)


# --- what train_step returns ---------------------------------------------------------------------------------------


def test_train_step_returns_loss_stats_and_priorities():
    nn_cfg = small_nn()
    online, target = pair(nn_cfg, BTRConfig())
    out = step(online, target, make_optimizer(online.parameters(), TrainingConfig()), nn_cfg, BTRConfig())
    assert set(out) == {"loss", "loss_mean", "grad_norm", "mean_q", "mean_target", "td_errors"}
    assert (
        isinstance(out["td_errors"], np.ndarray)
        and out["td_errors"].shape == (B,)
        and out["td_errors"].dtype == np.float32
    )
    assert (out["td_errors"] >= 0).all()
    assert out["loss"] == pytest.approx(out["loss_mean"] * B, rel=1e-5)  # unit weights: the batch sum


def test_importance_weights_scale_the_loss():
    nn_cfg = small_nn()
    results = []
    for w in (1.0, 0.5):
        online, target = pair(nn_cfg, BTRConfig())
        batch = make_batch()
        batch["weight"] = torch.full((B,), w)
        results.append(
            step(
                online, target, make_optimizer(online.parameters(), TrainingConfig()), nn_cfg, BTRConfig(), batch=batch
            )
        )
    assert results[1]["loss"] == pytest.approx(0.5 * results[0]["loss"], rel=1e-5)
    assert results[1]["grad_norm"] == pytest.approx(0.5 * results[0]["grad_norm"], rel=1e-4)
    np.testing.assert_allclose(results[1]["td_errors"], results[0]["td_errors"], rtol=1e-5)


def test_self_loss_state_rescales_and_is_updated():
    nn_cfg = small_nn()
    online, target = pair(nn_cfg, BTRConfig())
    state = SelfLossState()
    plain = step(online, target, make_optimizer(online.parameters(), TrainingConfig()), nn_cfg, BTRConfig())
    online, target = pair(nn_cfg, BTRConfig())
    scaled = step(
        online,
        target,
        make_optimizer(online.parameters(), TrainingConfig()),
        nn_cfg,
        BTRConfig(),
        self_loss_state=state,
    )
    assert state.typical_self_loss != 0.01 and isinstance(state.typical_self_loss, float)
    assert scaled["loss_mean"] == pytest.approx(plain["loss_mean"], rel=1e-5)  # the unscaled mean is reported
    assert scaled["loss"] != pytest.approx(plain["loss"], rel=1e-3)
    restored = SelfLossState()
    restored.load_state_dict(state.state_dict())
    assert restored == state


def test_repeated_steps_fit_a_fixed_batch():
    nn_cfg = small_nn()
    btr = BTRConfig(use_munchausen=True, use_layer_norm=True)
    online, target = pair(nn_cfg, btr)
    optimizer = make_optimizer(online.parameters(), TrainingConfig(optimizer="adam"))
    batch = make_batch()
    batch["terminal"] = torch.ones(B)  # fixed targets: R only
    first = step(online, target, optimizer, nn_cfg, btr, batch=batch, lr=1e-2)["loss_mean"]
    for i in range(25):
        last = step(online, target, optimizer, nn_cfg, btr, batch=batch, lr=1e-2, seed=i)["loss_mean"]
    assert last < 0.5 * first


@pytest.mark.parametrize("use_munchausen", [False, True])
def test_btr_bundle_with_and_without_munchausen_trains(use_munchausen):
    # IMPALA + spectral norm (one power iteration per forward, online called twice under DDQN) + NoisyNet + LN
    from tmexp.config import CNNConfig, VisConfig

    cnn = CNNConfig(
        type="impala", width_scale=1, adaptive_maxpool_size=3, spectral_norm=True, layer_norm_in_stages=True
    )
    nn_cfg = small_nn(use_ddqn=True, vis=VisConfig(cnn))
    btr = BTRConfig(use_munchausen=use_munchausen, use_noisy_linear=True, use_layer_norm=True)
    online, target = pair(nn_cfg, btr)
    optimizer = make_optimizer(online.parameters(), TrainingConfig())
    before = flat(online)
    for i in range(2):
        out = step(online, target, optimizer, nn_cfg, btr, wd=0.1, seed=i, self_loss_state=SelfLossState())
        assert math.isfinite(out["loss"]) and math.isfinite(out["grad_norm"])
    assert not torch.equal(flat(online), before)
    soft_update(target, online, 1.0)
    torch.testing.assert_close(flat(target), flat(online))
