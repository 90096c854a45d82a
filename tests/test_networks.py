"""The IQN network: shapes, Linesight's architecture facts, and the fused heads equal the literal ones."""

from __future__ import annotations

import pytest
import torch

from tmexp.config import BTRConfig, CNNConfig, NNConfig, VisConfig
from tmexp.core import losses
from tmexp.core.networks import NetworkConfigError, build_network, count_parameters

IMG = (1, 64, 64)
FLOATS = 7
SMALL = dict(dense_hidden_dimension=32, iqn_embedding_dimension=8)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def inputs(b: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, *IMG), dtype=torch.uint8, generator=g), torch.randn(b, FLOATS, generator=g)


def test_linesight_network_shapes_and_features():
    net = build_network(NNConfig(), BTRConfig(), IMG, 184)
    assert net.img_feature_dim == 512  # Linesight's CNN at 64x64
    assert net.dense_input_dimension == 512 + 256
    img = torch.randint(0, 256, (2, *IMG), dtype=torch.uint8)
    quantiles, taus = net(img, torch.randn(2, 184), 5)
    assert quantiles.shape == (2, 5, 12) and taus.shape == (2, 5)
    assert ((taus >= 0) & (taus <= 1)).all()


def test_given_taus_are_used_and_returned():
    torch.manual_seed(0)
    net = build_network(NNConfig(**SMALL), BTRConfig(), IMG, FLOATS)
    img, floats = inputs()
    taus = torch.tensor([[0.1, 0.9]] * 3)
    q, t = net(img, floats, 2, taus)
    assert t is taus
    q_same, _ = net(img, floats, 2, taus)
    torch.testing.assert_close(q, q_same)
    q_other, _ = net(img, floats, 2, taus.flip(1))
    torch.testing.assert_close(q_other, q.flip(1))  # quantiles follow their tau, per sample


def test_quantiles_depend_on_tau_and_samples_are_independent():
    torch.manual_seed(0)
    net = build_network(NNConfig(**SMALL), BTRConfig(), IMG, FLOATS)
    img, floats = inputs(4)
    taus = torch.rand(4, 3)
    q_all, _ = net(img, floats, 3, taus)
    q_one, _ = net(img[1:2], floats[1:2], 3, taus[1:2])
    torch.testing.assert_close(q_all[1:2], q_one, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(q_all[:, 0], q_all[:, 1])


def test_image_is_normalised_around_128():
    net = build_network(NNConfig(**SMALL), BTRConfig(), IMG, FLOATS)
    img = torch.full((1, *IMG), 128, dtype=torch.uint8)
    zeros_features = net.img_head(torch.zeros(1, *IMG))
    state = net.state_features(img, torch.zeros(1, FLOATS))
    torch.testing.assert_close(state[:, : net.img_feature_dim], zeros_features)


def test_float_normalisation_buffers():
    mean, std = torch.arange(FLOATS, dtype=torch.float32), torch.full((FLOATS,), 2.0)
    net = build_network(NNConfig(**SMALL), BTRConfig(), IMG, FLOATS, float_mean=mean, float_std=std)
    plain = build_network(NNConfig(**SMALL), BTRConfig(), IMG, FLOATS)
    plain.load_state_dict(net.state_dict(), strict=False)
    plain.float_mean.zero_()
    plain.float_std.fill_(1.0)
    img, floats = inputs()
    a = net.state_features(img, floats)
    b = plain.state_features(img, (floats - mean) / std)
    torch.testing.assert_close(a, b)
    assert "float_mean" in net.state_dict()  # saved with the checkpoint


@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_fused_dueling_heads_equal_the_literal_heads(noisy, layer_norm):
    torch.manual_seed(0)
    net = build_network(NNConfig(**SMALL), BTRConfig(use_noisy_linear=noisy, use_layer_norm=layer_norm), IMG, FLOATS)
    with torch.no_grad():  # non-trivial LayerNorm affine
        for p in net.heads.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(20, net.dense_input_dimension)
    for mode in (True, False):
        net.train(mode)
        fused, literal = net.heads(x), net.heads.forward_unfused(x)
        torch.testing.assert_close(fused, literal, atol=1e-5, rtol=1e-5)
        # dueling: the advantages have zero mean, so the mean over actions is V
        a = net.heads.advantage(x)
        torch.testing.assert_close(
            fused - fused.mean(-1, keepdim=True), a - a.mean(-1, keepdim=True), atol=1e-5, rtol=1e-5
        )


def test_advantage_argmax_equals_q_argmax():
    torch.manual_seed(1)
    net = build_network(NNConfig(**SMALL), BTRConfig(), IMG, FLOATS)
    img, floats = inputs(16)
    taus = losses.training_taus(16, 4)
    q, _ = net(img, floats, 4, taus)
    assert torch.equal(losses.greedy_actions(q), losses.greedy_actions(net.advantages(img, floats, taus)))


@pytest.mark.parametrize("cnn_type", ["linesight", "impala"])
def test_channels_last_gives_the_same_output(cnn_type):
    torch.manual_seed(0)
    nn_cfg = NNConfig(
        **SMALL, vis=VisConfig(CNNConfig(type=cnn_type, adaptive_maxpool_size=6 if cnn_type == "impala" else None))
    )
    net = build_network(nn_cfg, BTRConfig(), IMG, FLOATS)
    net_cl = build_network(nn_cfg, BTRConfig(), IMG, FLOATS, channels_last=True)
    net_cl.load_state_dict(net.state_dict())
    img, floats = inputs()
    taus = torch.rand(3, 2)
    torch.testing.assert_close(net(img, floats, 2, taus)[0], net_cl(img, floats, 2, taus)[0], atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter():
    net = build_network(NNConfig(**SMALL), BTRConfig(use_noisy_linear=True, use_layer_norm=True), IMG, FLOATS)
    img, floats = inputs()
    q, _ = net(img, floats, 4)
    q.square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_count_parameters_of_the_linesight_network():
    # convs 272 + 8224 + 18496 + 18464, floats 47360 + 65792, iqn_fc 99072, heads 2 * 393728 + 6156 + 513
    assert count_parameters(build_network(NNConfig(), BTRConfig(), IMG, 184)) == 1_051_805


@pytest.mark.parametrize(
    "nn_cfg, img_shape, match",
    [
        (NNConfig(vis=VisConfig(CNNConfig(type="resnet"))), IMG, "nn.vis.cnn.type"),
        (NNConfig(vis=VisConfig(CNNConfig(type="impala", width_scale=0))), IMG, "width_scale"),
        (NNConfig(vis=VisConfig(CNNConfig(type="impala", adaptive_maxpool_size=0))), IMG, "adaptive_maxpool_size"),
        (NNConfig(dense_hidden_dimension=1), IMG, "dense_hidden_dimension"),
        (NNConfig(), (64, 64), "img_shape"),
        (NNConfig(), (1, 16, 16), "too small"),
    ],
)
def test_bad_settings_name_the_key(nn_cfg, img_shape, match):
    with pytest.raises(NetworkConfigError, match=match):
        build_network(nn_cfg, BTRConfig(), img_shape, FLOATS)


@pytest.mark.parametrize("fan", ["fan_in", "fan_out"])
def test_noisy_bias_sigma_divides_sigma0_by_the_chosen_fan(fan):
    """btr.noisy_bias_sigma_fan: sigma0 / sqrt(inputs) (the NoisyNet paper's, the default) or / sqrt(outputs) (BTR's
    code) for the bias; the weights' sigma is sigma0 / sqrt(inputs) either way."""
    btr = BTRConfig(use_noisy_linear=True, noisy_sigma0=0.5, noisy_bias_sigma_fan=fan)
    net = build_network(NNConfig(), btr, IMG, FLOATS)
    layer = net.heads.a_out  # hidden -> 12 actions: the fans differ
    n_in, n_out = layer.in_features, layer.out_features
    assert n_in != n_out
    assert torch.allclose(layer.weight_sigma, torch.full_like(layer.weight_sigma, 0.5 / n_in**0.5))
    expected = 0.5 / (n_in if fan == "fan_in" else n_out) ** 0.5
    assert torch.allclose(layer.bias_sigma, torch.full_like(layer.bias_sigma, expected))


def test_noisy_bias_sigma_fan_default_is_the_noisynet_papers():
    assert str(BTRConfig().noisy_bias_sigma_fan) == "fan_in"
