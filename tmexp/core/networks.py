"""The IQN network (Linesight's, with every BTR ingredient as a switch).

    image (B, 1, H, W) uint8 -> (x - 128) / 128 -> vision CNN (linesight | impala) -> (B, d_img)
    floats (B, F)            -> (x - mean) / std -> Linear -> LeakyReLU -> Linear -> LeakyReLU -> (B, d_float)
    state = [image features, float features]                                   (B, d), d = d_img + d_float
    tau (B, N) -> cos(pi * i * tau), i = 1..D -> Linear(D -> d) -> LeakyReLU     (B, N, d)  (IQN's phi(tau))
    state * phi(tau) -> dueling heads -> Z(s, a; tau)                           (B, N, n_actions)

Switches: ``nn.size_scale``, ``nn.vis.cnn`` (type, width_scale, input_pool, adaptive_maxpool_size, spectral_norm,
layer_norm_in_stages) and ``btr`` (use_noisy_linear + noisy_sigma0, use_layer_norm). The Munchausen target is in
``losses.py``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tmexp.config import BTRConfig, CNNConfig, NNConfig
from tmexp.core.layers import LEAKY_SLOPE, DuelingHeads, ImpalaStage, NoisyLinear, init_orthogonal

CNN_TYPES = ("linesight", "impala")
IMPALA_CHANNELS = (16, 32, 32)


class NetworkConfigError(ValueError):
    """A network setting that cannot be built (the message names the key and the fix)."""


def scaled_sizes(nn_cfg: NNConfig) -> tuple[int, int]:
    """(dense hidden dimension, IQN embedding dimension) after ``nn.size_scale``."""
    scale = nn_cfg.size_scale
    return round(nn_cfg.dense_hidden_dimension * scale), max(1, round(nn_cfg.iqn_embedding_dimension * scale))


def linesight_cnn(in_channels: int) -> nn.Sequential:
    """Linesight's CNN: Conv(16, k4, s2), Conv(32, k4, s2), Conv(64, k3, s2), Conv(32, k3, s1), LeakyReLU each."""
    layers: list[nn.Module] = []
    for c_in, c_out, k, s in ((in_channels, 16, 4, 2), (16, 32, 4, 2), (32, 64, 3, 2), (64, 32, 3, 1)):
        conv = nn.Conv2d(c_in, c_out, k, stride=s)
        init_orthogonal(conv, nn.init.calculate_gain("leaky_relu", LEAKY_SLOPE))
        layers += [conv, nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def impala_cnn(in_channels: int, hw: tuple[int, int], cnn: CNNConfig, layer_norm: bool) -> nn.Sequential:
    """IMPALA CNN: optional average-pool of the image, three stages of (16, 32, 32) x width_scale channels, final
    ReLU, optional adaptive max-pool."""
    if cnn.width_scale < 1:
        raise NetworkConfigError(
            f"nn.vis.cnn.width_scale must be a positive integer, got {cnn.width_scale}; set it to 1 or more."
        )
    if cnn.input_pool < 1:
        raise NetworkConfigError(
            f"nn.vis.cnn.input_pool must be a positive integer, got {cnn.input_pool}; use 1 (off) or 2."
        )
    layers: list[nn.Module] = []
    c_in, (h, w) = in_channels, hw
    if cnn.input_pool > 1:
        layers.append(nn.AvgPool2d(cnn.input_pool))
        h, w = h // cnn.input_pool, w // cnn.input_pool
    for c in IMPALA_CHANNELS:
        c_out = c * cnn.width_scale
        h, w = ImpalaStage.output_hw(h, w)
        layers.append(
            ImpalaStage(c_in, c_out, spectral_norm=cnn.spectral_norm, layer_norm_hw=(h, w) if layer_norm else None)
        )
        c_in = c_out
    layers.append(nn.ReLU(inplace=True))  # acts on the last stage's fresh output
    if cnn.adaptive_maxpool_size is not None:
        if cnn.adaptive_maxpool_size < 1:
            raise NetworkConfigError(
                "nn.vis.cnn.adaptive_maxpool_size must be a positive integer or null, got "
                f"{cnn.adaptive_maxpool_size}; use e.g. 6, or null to turn the max-pool off."
            )
        layers.append(nn.AdaptiveMaxPool2d(cnn.adaptive_maxpool_size))
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def build_cnn(img_shape: tuple[int, int, int], cnn: CNNConfig, btr: BTRConfig) -> nn.Sequential:
    """The vision CNN chosen by ``nn.vis.cnn.type``.

    ``adaptive_maxpool_size``, ``spectral_norm`` and ``layer_norm_in_stages`` are IMPALA options; the Linesight
    CNN ignores them (so an ablation can switch ``type`` alone). LayerNorm inside the stages needs both
    ``nn.vis.cnn.layer_norm_in_stages`` and ``btr.use_layer_norm``.
    """
    c, h, w = img_shape
    if cnn.type == "linesight":
        return linesight_cnn(c)
    if cnn.type == "impala":
        return impala_cnn(c, (h, w), cnn, layer_norm=cnn.layer_norm_in_stages and btr.use_layer_norm)
    raise NetworkConfigError(f"nn.vis.cnn.type={cnn.type!r} is unknown; choose one of {', '.join(CNN_TYPES)}.")


class IQNNetwork(nn.Module):
    """Implicit quantile network Z(s, a; tau) with dueling heads (see the module docstring for the data flow)."""

    cos_index: Tensor  # (D,) buffers: pi * i for the cosine embedding
    float_mean: Tensor  # (F,) the float inputs' standardisation
    float_std: Tensor  # (F,)

    def __init__(
        self,
        nn_cfg: NNConfig,
        btr_cfg: BTRConfig,
        img_shape: tuple[int, int, int],
        float_dim: int,
        n_actions: int = 12,
        *,
        float_mean: np.ndarray | Tensor | None = None,
        float_std: np.ndarray | Tensor | None = None,
    ):
        super().__init__()
        if len(img_shape) != 3:
            raise NetworkConfigError(
                f"img_shape must be (channels, height, width), got {img_shape}; pass e.g. (1, 64, 64)."
            )
        self.img_shape = (img_shape[0], img_shape[1], img_shape[2])
        self.float_dim = float_dim
        self.n_actions = n_actions
        dense_dim, embedding_dim = scaled_sizes(nn_cfg)
        self.iqn_embedding_dimension = embedding_dim
        self.noisy = btr_cfg.use_noisy_linear
        self.channels_last = False  # set by build_network(..., channels_last=True)
        leaky_gain = nn.init.calculate_gain("leaky_relu", LEAKY_SLOPE)

        self.img_head = build_cnn(self.img_shape, nn_cfg.vis.cnn, btr_cfg)
        try:
            with torch.no_grad():
                img_dim = self.img_head(torch.zeros(1, *self.img_shape)).shape[1]
        except RuntimeError as err:
            raise NetworkConfigError(
                f"the image {img_shape[1]}x{img_shape[2]} is too small for the {nn_cfg.vis.cnn.type} CNN ({err}); "
                "raise env.w_downsized / env.h_downsized (Linesight uses 64x64)."
            ) from None
        self.img_feature_dim = img_dim

        lin0 = nn.Linear(float_dim, nn_cfg.float_hidden_dim)
        lin1 = nn.Linear(nn_cfg.float_hidden_dim, nn_cfg.float_hidden_dim)
        for lin in (lin0, lin1):
            init_orthogonal(lin, leaky_gain)
        self.float_feature_extractor = nn.Sequential(
            lin0, nn.LeakyReLU(LEAKY_SLOPE, inplace=True), lin1, nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
        )
        self.dense_input_dimension = img_dim + nn_cfg.float_hidden_dim

        self.iqn_fc = nn.Linear(embedding_dim, self.dense_input_dimension)
        # cos features have variance 1/2: double the weight variance so phi(tau) leaves with unit variance.
        init_orthogonal(self.iqn_fc, math.sqrt(2) * leaky_gain)
        # pi * i for i = 1..D (IQN's cosine embedding of tau)
        self.register_buffer(
            "cos_index", math.pi * torch.arange(1, embedding_dim + 1, dtype=torch.float32), persistent=False
        )

        if dense_dim < 2:
            raise NetworkConfigError(
                f"nn.dense_hidden_dimension x nn.size_scale must be at least 2 (each dueling head gets half), got "
                f"{nn_cfg.dense_hidden_dimension} x {nn_cfg.size_scale}."
            )
        self.heads = DuelingHeads(
            self.dense_input_dimension,
            dense_dim // 2,
            n_actions,
            noisy=btr_cfg.use_noisy_linear,
            sigma0=btr_cfg.noisy_sigma0,
            layer_norm=btr_cfg.use_layer_norm,
            bias_sigma_fan=str(btr_cfg.noisy_bias_sigma_fan),
        )
        if not btr_cfg.use_noisy_linear:
            for layer in (self.heads.a_hidden, self.heads.v_hidden):
                init_orthogonal(layer, leaky_gain)
            for layer in (self.heads.a_out, self.heads.v_out):
                init_orthogonal(layer)

        mean = torch.zeros(float_dim) if float_mean is None else torch.as_tensor(float_mean, dtype=torch.float32)
        std = torch.ones(float_dim) if float_std is None else torch.as_tensor(float_std, dtype=torch.float32)
        if mean.shape != (float_dim,) or std.shape != (float_dim,):
            raise NetworkConfigError(
                f"float_mean and float_std must have shape ({float_dim},), got "
                f"{tuple(mean.shape)} and {tuple(std.shape)}."
            )
        self.register_buffer("float_mean", mean.clone())
        self.register_buffer("float_std", std.clone())

    def state_features(self, img: Tensor, floats: Tensor) -> Tensor:
        """img uint8 (B, C, H, W), floats float32 (B, F) -> state features (B, d)."""
        x = (img.float() - 128.0) / 128.0
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        img_features = self.img_head(x)
        float_features = self.float_feature_extractor((floats - self.float_mean) / self.float_std)
        return torch.cat((img_features, float_features), dim=1)

    def mixed_features(self, state: Tensor, taus: Tensor) -> Tensor:
        """state (B, d), taus (B, N) -> state * phi(tau) (B * N, d), rows sample-major."""
        b, n = taus.shape
        phi = F.leaky_relu(
            self.iqn_fc(torch.cos(taus.unsqueeze(-1) * self.cos_index)), LEAKY_SLOPE, inplace=True
        )  # (B, N, d)
        return (state.unsqueeze(1) * phi).reshape(b * n, -1)

    def quantiles_from_state(self, state: Tensor, taus: Tensor) -> Tensor:
        """state (B, d), taus (B, N) -> quantiles Z(s, a; tau) (B, N, n_actions)."""
        b, n = taus.shape
        return self.heads(self.mixed_features(state, taus)).view(b, n, self.n_actions)

    def advantages(self, img: Tensor, floats: Tensor, taus: Tensor) -> Tensor:
        """Advantage head alone, A(s, a; tau) (B, N, n_actions) for taus (B, N).

        Since Q = V + A - mean_a(A), argmax_a mean_tau Q = argmax_a mean_tau A: greedy action choices (DDQN's
        online argmax, acting) need only this, which skips the V head's half of the largest matrix product.
        """
        b, n = taus.shape
        return self.heads.advantage(self.mixed_features(self.state_features(img, floats), taus)).view(
            b, n, self.n_actions
        )

    def forward(self, img: Tensor, floats: Tensor, n_taus: int, taus: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Quantile values for ``n_taus`` quantile fractions per sample.

        Args:
            img: uint8 (B, C, H, W); normalised inside as (x - 128) / 128.
            floats: float32 (B, F); normalised inside by the network's float_mean / float_std buffers.
            n_taus: N, the number of quantile fractions per sample.
            taus: float (B, N) in [0, 1], or None to draw them uniformly at random (acting; the learner passes
                stratified ones, see ``losses.training_taus``).

        Returns:
            quantiles (B, N, n_actions) and the taus used (B, N).
        """
        b = img.shape[0]
        if taus is None:
            taus = torch.rand(b, n_taus, device=img.device)
        return self.quantiles_from_state(self.state_features(img, floats), taus), taus

    @torch.no_grad()
    def reset_noise(self) -> None:
        """Draw new NoisyNet noise in every noisy layer (no-op when NoisyNets are off)."""
        for module in self.modules():
            if isinstance(module, NoisyLinear):
                module.reset_noise()


def build_network(
    nn_cfg: NNConfig,
    btr_cfg: BTRConfig,
    img_shape: tuple[int, int, int],
    float_dim: int,
    n_actions: int = 12,
    *,
    channels_last: bool = False,
    float_mean: np.ndarray | Tensor | None = None,
    float_std: np.ndarray | Tensor | None = None,
) -> IQNNetwork:
    """Build the IQN network; ``channels_last`` stores conv weights and activations NHWC (faster on most CPUs/GPUs)."""
    net = IQNNetwork(nn_cfg, btr_cfg, img_shape, float_dim, n_actions, float_mean=float_mean, float_std=float_std)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
        net.channels_last = True
    return net


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars (spectral norm's power-iteration vectors and NoisyNet noise are buffers)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
