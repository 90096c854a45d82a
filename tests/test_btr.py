"""Each BTR ingredient verifiably changes the computation (IMPALA, max-pool, spectral norm, Munchausen, NoisyNet,
layer norm), and the published networks have the parameter counts ``python -m tmexp.bench params`` prints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tmexp.bench import param_count as params
from tmexp.config import BTRConfig, CNNConfig, NNConfig, VisConfig
from tmexp.core import losses
from tmexp.core.layers import ImpalaResidualBlock, NoisyLinear
from tmexp.core.networks import build_network, count_parameters

IMG = (1, 64, 64)
FLOATS = 10


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def impala_cfg(**cnn) -> NNConfig:
    base = dict(type="impala", width_scale=2, adaptive_maxpool_size=6, spectral_norm=True)
    base.update(cnn)
    return NNConfig(dense_hidden_dimension=64, iqn_embedding_dimension=16, vis=VisConfig(CNNConfig(**base)))


def inputs(b: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, *IMG), dtype=torch.uint8, generator=g), torch.randn(b, FLOATS, generator=g)


# --- IMPALA and max-pool ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "width, pool, features",
    [
        (2, 6, 64 * 6 * 6),  # BTR: 64 channels pooled to 6x6
        (2, None, 64 * 8 * 8),  # 64 -> 32 -> 16 -> 8 without the max-pool
        (1, None, 32 * 8 * 8),
        (1, 4, 32 * 4 * 4),
    ],
)
def test_impala_output_sizes(width, pool, features):
    net = build_network(impala_cfg(width_scale=width, adaptive_maxpool_size=pool), BTRConfig(), IMG, FLOATS)
    img, floats = inputs()
    assert net.img_feature_dim == features
    x = (img.float() - 128) / 128
    assert net.img_head(x).shape == (3, features)
    quantiles, taus = net(img, floats, 4)
    assert quantiles.shape == (3, 4, 12) and taus.shape == (3, 4)


def test_impala_stage_channels_scale_with_width():
    net = build_network(impala_cfg(width_scale=3), BTRConfig(), IMG, FLOATS)
    stages = [m for m in net.img_head if m.__class__.__name__ == "ImpalaStage"]
    assert [s.conv.out_channels for s in stages] == [48, 96, 96]


# --- spectral norm ---------------------------------------------------------------------------------------------


def residual_convs(net):
    return [
        conv for block in net.modules() if isinstance(block, ImpalaResidualBlock) for conv in (block.conv0, block.conv1)
    ]


def largest_singular_value(conv) -> float:
    w = conv.weight.detach()
    return torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item()


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_spectral_norm_bounds_residual_convs(spectral_norm):
    torch.manual_seed(0)
    net = build_network(impala_cfg(spectral_norm=spectral_norm), BTRConfig(), IMG, FLOATS)
    with torch.no_grad():  # blow the raw weights up: only spectral norm can bring them back to ~1
        for conv in residual_convs(net):
            raw = conv.parametrizations.weight.original if spectral_norm else conv.weight
            raw.mul_(20.0)
    img, floats = inputs(2)
    for _ in range(15):  # one power iteration per training-mode forward
        net(img, floats, 2)
    sigmas = [largest_singular_value(conv) for conv in residual_convs(net)]
    assert len(sigmas) == 12
    if spectral_norm:
        assert max(sigmas) == pytest.approx(1.0, abs=0.05)
    else:
        assert min(sigmas) > 2.0


# --- NoisyNet --------------------------------------------------------------------------------------------------


def test_noisy_layer_resamples_in_training_and_is_deterministic_in_eval():
    torch.manual_seed(0)
    layer = NoisyLinear(5, 3, sigma0=0.5)
    x = torch.randn(4, 5)
    y0 = layer(x)
    assert torch.equal(y0, layer(x))  # same noise until resampled
    layer.reset_noise()
    y1 = layer(x)
    assert not torch.allclose(y0, y1)
    layer.eval()
    e0 = layer(x)
    layer.reset_noise()
    assert torch.equal(e0, layer(x))
    torch.testing.assert_close(e0, x @ layer.weight_mu.T + layer.bias_mu)


def test_noisy_network_outputs_differ_across_resamples_only_in_training():
    torch.manual_seed(0)
    net = build_network(impala_cfg(), BTRConfig(use_noisy_linear=True), IMG, FLOATS)
    img, floats = inputs()
    taus = torch.full((3, 4), 0.5)
    a = net(img, floats, 4, taus)[0]
    net.reset_noise()
    b = net(img, floats, 4, taus)[0]
    assert not torch.allclose(a, b)
    net.eval()
    c = net(img, floats, 4, taus)[0]
    net.reset_noise()
    torch.testing.assert_close(c, net(img, floats, 4, taus)[0], rtol=0, atol=0)


def test_noisy_switch_changes_the_head_layers():
    plain = build_network(impala_cfg(), BTRConfig(), IMG, FLOATS)
    noisy = build_network(impala_cfg(), BTRConfig(use_noisy_linear=True), IMG, FLOATS)
    assert not any(isinstance(m, NoisyLinear) for m in plain.modules())
    assert sum(isinstance(m, NoisyLinear) for m in noisy.modules()) == 4  # hidden + output of A and V
    plain.reset_noise()  # no-op without noisy layers


# --- layer norm ------------------------------------------------------------------------------------------------


def test_layer_norm_normalises_each_head_hidden_layer():
    torch.manual_seed(0)
    net = build_network(impala_cfg(), BTRConfig(use_layer_norm=True), IMG, FLOATS)
    img, floats = inputs(4)
    state = net.state_features(img, floats)
    mixed = net.mixed_features(state, torch.rand(4, 5))
    hidden = net.heads.hidden(mixed).view(-1, 2, net.heads.hidden_dim)  # (rows, [A, V], hidden)
    torch.testing.assert_close(hidden.mean(-1), torch.zeros(hidden.shape[:2]), atol=1e-5, rtol=0)
    # unit variance up to LayerNorm's eps (1e-5) against the small pre-activation variance at init
    torch.testing.assert_close(hidden.var(-1, unbiased=False), torch.ones(hidden.shape[:2]), atol=0.05, rtol=0)
    without = build_network(impala_cfg(), BTRConfig(), IMG, FLOATS)
    raw = without.heads.hidden(without.mixed_features(without.state_features(img, floats), torch.rand(4, 5)))
    assert not torch.allclose(raw.mean(-1), torch.zeros(raw.shape[0]), atol=1e-3)


def test_layer_norm_in_stages_is_an_option_of_use_layer_norm():
    img, floats = inputs()
    on = build_network(impala_cfg(layer_norm_in_stages=True), BTRConfig(use_layer_norm=True), IMG, FLOATS)
    off = build_network(impala_cfg(layer_norm_in_stages=True), BTRConfig(use_layer_norm=False), IMG, FLOATS)
    stage_norms = [m for m in on.img_head.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(stage_norms) == 3
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in off.img_head.modules())
    out = on.img_head[0]((img.float() - 128) / 128)  # first stage's output is normalised over (C, H, W)
    flat = out.flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(3), atol=1e-5, rtol=0)


# --- Munchausen ------------------------------------------------------------------------------------------------


def test_munchausen_target_hand_computed():
    tau, alpha, l0 = 0.5, 0.9, -1.0
    reward = torch.tensor([1.0, 0.5])
    gamma_n = torch.tensor([0.9, 0.9])
    terminal = torch.tensor([0.0, 1.0])
    q_online = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # Q-bar_online(s_t, .)
    action = torch.tensor([1, 0])
    next_q = torch.tensor([[[1.0, 2.0], [3.0, 0.0]], [[1.0, 2.0], [3.0, 0.0]]])  # (B, N'=2, A=2), means (2, 1)
    targets = losses.munchausen_iqn_target(
        reward, gamma_n, terminal, next_q, q_online, action, alpha=alpha, entropy_tau=tau, l0=l0
    )
    # tau * log pi(a|s) = q_a - tau * log(sum exp(q / tau)); log(e^2 + 1) = 2.126928
    lse = math.log(math.exp(2.0) + 1.0)
    bonus0 = alpha * max(l0, min(0.0, 0.0 - tau * lse))  # -1.0635 clipped to -1 -> -0.9
    bonus1 = alpha * max(l0, min(0.0, 1.0 - tau * lse))  # -0.0635 -> -0.0571
    assert bonus0 == pytest.approx(-0.9)
    # next state: pi = softmax((2, 1) / 0.5) = (0.8808, 0.1192), tau log pi = (-0.0635, -1.0635)
    pi = (1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(2.0)))
    tlp = (0.5 * math.log(pi[0]), 0.5 * math.log(pi[1]))
    soft = [pi[0] * (1.0 - tlp[0]) + pi[1] * (2.0 - tlp[1]), pi[0] * (3.0 - tlp[0]) + pi[1] * (0.0 - tlp[1])]
    assert soft[0] == pytest.approx(1.301870, abs=1e-5)
    expected = torch.tensor(
        [
            [1.0 + bonus0 + 0.9 * soft[0], 1.0 + bonus0 + 0.9 * soft[1]],
            [0.5 + bonus1, 0.5 + bonus1],
        ]  # terminal: no bootstrap
    )
    torch.testing.assert_close(targets, expected, atol=1e-5, rtol=0)


def test_munchausen_with_alpha_zero_is_the_soft_iqn_target():
    g = torch.Generator().manual_seed(3)
    b, n, a = 4, 6, 5
    reward, gamma_n = torch.randn(b, generator=g), torch.full((b,), 0.97)
    terminal = torch.tensor([0.0, 0.0, 1.0, 0.0])
    next_q = torch.randn(b, n, a, generator=g)
    q_online, action = torch.randn(b, a, generator=g), torch.randint(0, a, (b,), generator=g)
    tau = 0.03
    m = losses.munchausen_iqn_target(
        reward, gamma_n, terminal, next_q, q_online, action, alpha=0.0, entropy_tau=tau, l0=-1.0
    )
    # soft-IQN: R + gamma * sum_a pi(a) (Z(a) - tau log pi(a)), pi the target's softmax policy
    log_pi = torch.log_softmax(next_q.mean(1) / tau, dim=1)
    soft = (log_pi.exp()[:, None, :] * (next_q - tau * log_pi[:, None, :])).sum(-1)
    torch.testing.assert_close(m, reward[:, None] + (gamma_n * (1 - terminal))[:, None] * soft)
    # and as the temperature goes to 0, the soft target becomes the plain greedy IQN target
    cold = losses.munchausen_iqn_target(
        reward, gamma_n, terminal, next_q, q_online, action, alpha=0.0, entropy_tau=1e-4, l0=-1.0
    )
    plain = losses.iqn_target(reward, gamma_n, terminal, next_q, losses.greedy_actions(next_q))
    torch.testing.assert_close(cold, plain, atol=1e-3, rtol=0)


def test_munchausen_bonus_is_clipped_to_l0_and_zero():
    q_online = torch.tensor([[0.0, 100.0]])  # action 0 is very unlikely: tau log pi = -100
    next_q = torch.zeros(1, 2, 2)
    kwargs = dict(alpha=1.0, entropy_tau=1.0, l0=-1.0)
    low = losses.munchausen_iqn_target(
        torch.zeros(1), torch.zeros(1), torch.zeros(1), next_q, q_online, torch.tensor([0]), **kwargs
    )
    high = losses.munchausen_iqn_target(
        torch.zeros(1), torch.zeros(1), torch.zeros(1), next_q, q_online, torch.tensor([1]), **kwargs
    )
    assert low[0, 0].item() == pytest.approx(-1.0)
    assert -1e-6 < high[0, 0].item() <= 0.0


# --- parameter counts ------------------------------------------------------------------------------------------


def linear(i, o):
    return i * o + o


def noisy(i, o):
    return 2 * linear(i, o)


def expected_count(impala: bool, dense: int, emb: int, floats: int = 184) -> int:
    """Hand count from the architecture description (DESIGN.md / REFERENCE.md)."""
    if impala:
        vision, c_in = 0, 1
        for c in (32, 64, 64):
            vision += linear(c_in * 9, c) + 4 * linear(c * 9, c)  # stage conv + 2 residual blocks of 2 convs
            c_in = c
        img_features = 64 * 6 * 6
    else:
        vision = linear(1 * 16, 16) + linear(16 * 16, 32) + linear(32 * 9, 64) + linear(64 * 9, 32)
        img_features = 32 * 4 * 4
    d = img_features + 256
    total = vision + linear(floats, 256) + linear(256, 256) + linear(emb, d)
    h = dense // 2
    if impala:  # BTR: NoisyNet heads with LayerNorm
        total += noisy(d, h) + noisy(h, 12) + noisy(d, h) + noisy(h, 1) + 2 * 2 * h
    else:
        total += linear(d, h) + linear(h, 12) + linear(d, h) + linear(h, 1)
    return total


def test_params_command_counts_what_each_run_builds(capsys):
    assert params.main(["--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert {"A01_v2", "A01_v4_btr", "A01_v4.1_btr", "A01_v4.2_btr", "A01_cpu_v2", "A01_cpu_btr"} <= set(counts)
    # The runs' own input: 149 floats (the env's), not Linesight's 184.
    assert counts["A01_v2"]["float_dim"] == 149 and counts["A01_v2"]["img"] == "64x64"
    assert counts["A01_v2"]["total"] == expected_count(False, 1024, 128, floats=149) == 1_042_845
    assert counts["A01_v4_btr"]["total"] == expected_count(True, 1024, 128, floats=149) == 6_082_906
    assert counts["A01_v4.1_btr"]["total"] == counts["A01_v4_btr"]["total"]
    assert counts["A01_v4.2_btr"]["total"] == expected_count(True, 512, 64, floats=149) == 3_288_922
    assert counts["A01_cpu_btr"]["img"] == "48x48" and counts["A01_cpu_btr"]["cnn"] == "impala"
    for row in counts.values():
        assert row["total"] == row["vision"] + row["floats"] + row["tau_embedding"] + row["heads"]
    assert params.main(["--json", "--float-dim", "184", "--experiment", "A01_v2", "A01_v4.2_btr"]) == 0
    linesight = json.loads(capsys.readouterr().out)
    assert linesight["A01_v2"]["total"] == expected_count(False, 1024, 128) == 1_051_805
    assert linesight["A01_v4.2_btr"]["total"] == expected_count(True, 512, 64) == 3_297_882
    assert params.main([]) == 0
    assert "A01_v4.2_btr" in capsys.readouterr().out


def test_count_parameters_excludes_buffers():
    net = build_network(impala_cfg(), BTRConfig(use_noisy_linear=True), IMG, FLOATS)
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())
    assert count_parameters(net) < sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())


def test_impala_input_pool_sees_the_image_at_a_fraction_of_its_size():
    pooled = build_network(
        NNConfig(vis=VisConfig(cnn=CNNConfig(type="impala", input_pool=2))), BTRConfig(), (1, 48, 48), FLOATS
    )
    full = build_network(NNConfig(vis=VisConfig(cnn=CNNConfig(type="impala"))), BTRConfig(), (1, 24, 24), FLOATS)
    assert pooled.img_feature_dim == full.img_feature_dim == 32 * 3 * 3  # 24 -> 12 -> 6 -> 3
    x = (torch.randint(0, 256, (2, 1, 48, 48)).float() - 128) / 128
    stages = pooled.img_head[1:]  # the same stages, fed the 2x2 means of the pixels
    assert torch.allclose(pooled.img_head(x), stages(torch.nn.functional.avg_pool2d(x, 2)), atol=1e-6)
    assert not torch.allclose(pooled.img_head(x), stages(x[:, :, ::2, ::2]), atol=1e-3)
