"""Building blocks the IQN network is assembled from: NoisyNet layers, IMPALA stages, dueling heads.

Each BTR ingredient that lives inside a layer is a constructor argument here, so ``networks.py`` only wires
switches to blocks:

- ``NoisyLinear``: factorised Gaussian NoisyNet layer (Fortunato et al., 2018), sigma0 = 0.5 in BTR.
- ``ImpalaStage``: conv 3x3 -> max-pool 3x3 stride 2 -> two residual blocks (Espeholt et al., 2018), optional
  spectral normalisation (Miyato et al., 2018) on the residual blocks' convolutions, optional LayerNorm.
- ``DuelingHeads``: the advantage and value heads of Linesight's IQN, Q = V + A - mean(A), optional NoisyNet
  layers and LayerNorm after the hidden dense layer.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEAKY_SLOPE = 1e-2  # torch's LeakyReLU default, the slope Linesight's orthogonal init assumes


def init_orthogonal(module: nn.Module, gain: float = 1.0) -> None:
    """Orthogonal weights, zero bias: Linesight's initialisation for its convolutions and dense layers."""
    weight, bias = cast(Tensor, module.weight), cast("Tensor | None", module.bias)
    nn.init.orthogonal_(weight, gain)
    if bias is not None:
        nn.init.zeros_(bias)


class NoisyLinear(nn.Module):
    """Linear layer with factorised Gaussian noise: w = mu_w + sigma_w * f(eps_out) f(eps_in)^T, f(x) = sgn(x) sqrt|x|.

    In ``train()`` mode the current noise sample is used; ``reset_noise()`` draws a new one. In ``eval()`` mode
    only the mean weights are used, so eval races are deterministic.

    Who resamples: the collectors before every acting step of an exploration race, ``train_step`` before every
    learner batch (online and target network). Exploration with NoisyNets on: epsilon-greedy and Boltzmann
    perturbation are switched off (BTR explores through the noise alone) unless ``btr.noisy_keep_epsilon`` is
    true, which keeps both on top of the noise (see ``tmexp/core/agent.py``).
    """

    eps_in: Tensor  # (in_features,) buffers: the current noise sample
    eps_out: Tensor  # (out_features,)

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5, bias_sigma_fan: str = "fan_in"):
        super().__init__()
        if str(bias_sigma_fan) not in ("fan_in", "fan_out"):
            raise ValueError(f"bias_sigma_fan must be fan_in or fan_out, got {bias_sigma_fan!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.sigma0 = sigma0
        self.bias_sigma_fan = str(bias_sigma_fan)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_sigma = nn.Parameter(torch.empty(out_features, in_features))
        self.bias_mu = nn.Parameter(torch.empty(out_features))
        self.bias_sigma = nn.Parameter(torch.empty(out_features))
        # Noise is not state worth saving: it is redrawn before every use.
        self.register_buffer("eps_in", torch.zeros(in_features), persistent=False)
        self.register_buffer("eps_out", torch.zeros(out_features), persistent=False)
        self.reset_parameters()
        self.reset_noise()

    def reset_parameters(self) -> None:
        # The NoisyNet paper's factorised initialisation; BTR's code divides the bias sigma by sqrt(out_features)
        # instead (bias_sigma_fan="fan_out").
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight_mu, -bound, bound)
        nn.init.uniform_(self.bias_mu, -bound, bound)
        nn.init.constant_(self.weight_sigma, self.sigma0 / math.sqrt(self.in_features))
        bias_fan = self.in_features if self.bias_sigma_fan == "fan_in" else self.out_features
        nn.init.constant_(self.bias_sigma, self.sigma0 / math.sqrt(bias_fan))

    @staticmethod
    def _scaled_noise(n: int, device: torch.device) -> Tensor:
        x = torch.randn(n, device=device)
        return x.sign() * x.abs().sqrt()

    @torch.no_grad()
    def reset_noise(self) -> None:
        self.eps_in.copy_(self._scaled_noise(self.in_features, self.eps_in.device))
        self.eps_out.copy_(self._scaled_noise(self.out_features, self.eps_out.device))

    def effective_weight_bias(self) -> tuple[Tensor, Tensor]:
        """The weight (out, in) and bias (out,) this layer applies in its current mode."""
        if not self.training:
            return self.weight_mu, self.bias_mu
        weight = self.weight_mu + self.weight_sigma * torch.outer(self.eps_out, self.eps_in)
        bias = self.bias_mu + self.bias_sigma * self.eps_out
        return weight, bias

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.effective_weight_bias()
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, sigma0={self.sigma0}, "
            f"bias_sigma_fan={self.bias_sigma_fan}"
        )


def weight_bias(layer: nn.Module) -> tuple[Tensor, Tensor]:
    """(weight, bias) that ``layer`` (nn.Linear or NoisyLinear) applies right now."""
    if isinstance(layer, NoisyLinear):
        return layer.effective_weight_bias()
    return cast(Tensor, layer.weight), cast(Tensor, layer.bias)


def dense(
    in_features: int, out_features: int, *, noisy: bool, sigma0: float, bias_sigma_fan: str = "fan_in"
) -> nn.Module:
    """A dense layer of the dueling heads: NoisyLinear when NoisyNets are on, else nn.Linear."""
    if noisy:
        return NoisyLinear(in_features, out_features, sigma0, bias_sigma_fan)
    return nn.Linear(in_features, out_features)


def maybe_spectral_norm(conv: nn.Conv2d, enabled: bool) -> nn.Module:
    """Spectral normalisation of ``conv``'s weight reshaped to (out, in * k * k), one power iteration per call."""
    if not enabled:
        return conv
    return nn.utils.parametrizations.spectral_norm(conv)


class ImpalaResidualBlock(nn.Module):
    """x + conv(relu(conv(relu(x)))), both convs 3x3, stride 1, padding 1."""

    def __init__(self, channels: int, spectral_norm: bool):
        super().__init__()
        self.conv0 = maybe_spectral_norm(nn.Conv2d(channels, channels, 3, padding=1), spectral_norm)
        self.conv1 = maybe_spectral_norm(nn.Conv2d(channels, channels, 3, padding=1), spectral_norm)

    def forward(self, x: Tensor) -> Tensor:
        # The inner ReLU may work in place (a fresh conv output); the outer one may not: x is the skip path.
        return x + self.conv1(F.relu(self.conv0(F.relu(x)), inplace=True))


class ImpalaStage(nn.Module):
    """conv 3x3 -> max-pool 3x3 stride 2 (padding 1) -> two residual blocks -> optional LayerNorm.

    The LayerNorm (``layer_norm=True``) normalises over (C, H, W) of the stage's output, a BTR option.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, spectral_norm: bool, layer_norm_hw: tuple[int, int] | None
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.res0 = ImpalaResidualBlock(out_channels, spectral_norm)
        self.res1 = ImpalaResidualBlock(out_channels, spectral_norm)
        self.norm = nn.LayerNorm([out_channels, *layer_norm_hw]) if layer_norm_hw is not None else nn.Identity()

    @staticmethod
    def output_hw(h: int, w: int) -> tuple[int, int]:
        """Spatial size after the stage's max-pool (kernel 3, stride 2, padding 1)."""
        return (h + 1) // 2, (w + 1) // 2

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.res1(self.res0(self.pool(self.conv(x)))))


class DuelingHeads(nn.Module):
    """Linesight's dueling heads on the (state x tau) features: Q = V + A - mean_a(A).

    A: dense(d_in -> hidden) [-> LayerNorm] -> LeakyReLU -> dense(hidden -> n_actions)
    V: dense(d_in -> hidden) [-> LayerNorm] -> LeakyReLU -> dense(hidden -> 1)

    The parameters are exactly the two heads above. The forward pass evaluates them in fewer, larger matrix
    products: both hidden layers as one (d_in -> 2 * hidden) GEMM and V + A - mean(A) folded into one
    (2 * hidden -> n_actions) layer; this is algebraically the same function (see ``tests/test_networks.py``)
    and measurably faster on the (batch * n_taus)-row input that dominates the learner's cost.
    """

    def __init__(
        self,
        d_in: int,
        hidden: int,
        n_actions: int,
        *,
        noisy: bool,
        sigma0: float,
        layer_norm: bool,
        bias_sigma_fan: str = "fan_in",
    ):
        super().__init__()
        self.hidden_dim = hidden
        self.n_actions = n_actions
        fan = bias_sigma_fan
        self.a_hidden = dense(d_in, hidden, noisy=noisy, sigma0=sigma0, bias_sigma_fan=fan)
        self.a_out = dense(hidden, n_actions, noisy=noisy, sigma0=sigma0, bias_sigma_fan=fan)
        self.v_hidden = dense(d_in, hidden, noisy=noisy, sigma0=sigma0, bias_sigma_fan=fan)
        self.v_out = dense(hidden, 1, noisy=noisy, sigma0=sigma0, bias_sigma_fan=fan)
        self.a_norm = nn.LayerNorm(hidden) if layer_norm else None
        self.v_norm = nn.LayerNorm(hidden) if layer_norm else None

    def hidden(self, x: Tensor) -> Tensor:
        """x (rows, d_in) -> [A hidden | V hidden] (rows, 2 * hidden), after the optional LayerNorm, before
        LeakyReLU."""
        wa, ba = weight_bias(self.a_hidden)
        wv, bv = weight_bias(self.v_hidden)
        h = F.linear(x, torch.cat((wa, wv)), torch.cat((ba, bv)))  # (rows, 2 * hidden): [A hidden | V hidden]
        if self.a_norm is not None and self.v_norm is not None:
            h = h.view(-1, 2, self.hidden_dim)
            h = F.layer_norm(h, (self.hidden_dim,))  # each head normalised on its own, then its own affine
            h = h * torch.stack((self.a_norm.weight, self.v_norm.weight)) + torch.stack(
                (self.a_norm.bias, self.v_norm.bias)
            )
            h = h.view(-1, 2 * self.hidden_dim)
        return h

    def forward(self, x: Tensor) -> Tensor:
        """x (rows, d_in) -> Q (rows, n_actions)."""
        h = self.hidden(x)
        # In place: h is a fresh product nobody else reads, and leaky_relu's backward needs only its output.
        h = F.leaky_relu(h, LEAKY_SLOPE, inplace=True)
        wa2, ba2 = weight_bias(self.a_out)  # (n_actions, hidden), (n_actions,)
        wv2, bv2 = weight_bias(self.v_out)  # (1, hidden), (1,)
        # V + A - mean(A) is linear in [h_A, h_V]: fold it into one weight matrix and bias.
        w_q = torch.cat((wa2 - wa2.mean(0, keepdim=True), wv2.expand(self.n_actions, -1)), dim=1)
        b_q = ba2 - ba2.mean() + bv2
        return F.linear(h, w_q, b_q)

    def advantage(self, x: Tensor) -> Tensor:
        """x (rows, d_in) -> A (rows, n_actions) alone: argmax_a Q = argmax_a A, so greedy choices skip V."""
        h = self.a_hidden(x)
        if self.a_norm is not None:
            h = self.a_norm(h)
        return self.a_out(F.leaky_relu(h, LEAKY_SLOPE))

    def forward_unfused(self, x: Tensor) -> Tensor:
        """The heads evaluated literally (reference for tests): V + A - mean(A)."""

        def head(hidden_layer, norm, out_layer):
            h = hidden_layer(x)
            if norm is not None:
                h = norm(h)
            return out_layer(F.leaky_relu(h, LEAKY_SLOPE))

        a = head(self.a_hidden, self.a_norm, self.a_out)
        v = head(self.v_hidden, self.v_norm, self.v_out)
        return v + a - a.mean(dim=-1, keepdim=True)
