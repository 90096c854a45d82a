"""The plain reference IQN the learner benchmark measures against: the same network and loss as ``tmexp.core``,
written the straightforward way, as Linesight's trainer reads.

Separate A and V heads on a repeated state tensor, tau-major (B * N, A) layout, NCHW convolutions, the optimiser's
and the clipping's per-tensor defaults and a Python loop for the weight decay. It has the core network's parameter
count (the benchmark checks it) and is never used for training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tmexp.config import BTRConfig, CnnType, NNConfig


class PlainNoisyLinear(nn.Module):
    """Factorised NoisyNet linear layer (sigma0 / sqrt(fan_in) initial noise scale)."""

    def __init__(self, n_in: int, n_out: int, sigma0: float):
        super().__init__()
        self.weight_mu = nn.Parameter(torch.empty(n_out, n_in).uniform_(-1 / math.sqrt(n_in), 1 / math.sqrt(n_in)))
        self.weight_sigma = nn.Parameter(torch.full((n_out, n_in), sigma0 / math.sqrt(n_in)))
        self.bias_mu = nn.Parameter(torch.empty(n_out).uniform_(-1 / math.sqrt(n_in), 1 / math.sqrt(n_in)))
        self.bias_sigma = nn.Parameter(torch.full((n_out,), sigma0 / math.sqrt(n_in)))
        self.register_buffer("eps_in", torch.zeros(n_in))
        self.register_buffer("eps_out", torch.zeros(n_out))

    def reset_noise(self):
        f = lambda x: x.sign() * x.abs().sqrt()  # noqa: E731
        self.eps_in = f(torch.randn_like(self.eps_in))
        self.eps_out = f(torch.randn_like(self.eps_out))

    def forward(self, x):
        if self.training:
            w = self.weight_mu + self.weight_sigma * torch.outer(self.eps_out, self.eps_in)
            b = self.bias_mu + self.bias_sigma * self.eps_out
            return F.linear(x, w, b)
        return F.linear(x, self.weight_mu, self.bias_mu)


class PlainResBlock(nn.Module):
    """IMPALA residual block, optionally spectral-normalised."""

    def __init__(self, c: int, sn: bool):
        super().__init__()
        wrap = nn.utils.parametrizations.spectral_norm if sn else (lambda m: m)
        self.conv0 = wrap(nn.Conv2d(c, c, 3, padding=1))
        self.conv1 = wrap(nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class NaiveIQN(nn.Module):
    """The IQN network, plainly: forward(img, floats, n, tau) -> Q (B * N, A), tau-major."""

    def __init__(self, nn_cfg: NNConfig, btr: BTRConfig, img_shape, float_dim: int, n_actions: int):
        super().__init__()
        cnn = nn_cfg.vis.cnn
        if cnn.type == CnnType.linesight:
            self.img_head = nn.Sequential(
                nn.Conv2d(img_shape[0], 16, 4, stride=2),
                nn.LeakyReLU(),
                nn.Conv2d(16, 32, 4, stride=2),
                nn.LeakyReLU(),
                nn.Conv2d(32, 64, 3, stride=2),
                nn.LeakyReLU(),
                nn.Conv2d(64, 32, 3, stride=1),
                nn.LeakyReLU(),
                nn.Flatten(),
            )
        else:
            layers, c_in = [nn.AvgPool2d(cnn.input_pool)] if cnn.input_pool > 1 else [], img_shape[0]
            for c in (16, 32, 32):
                c_out = c * cnn.width_scale
                layers += [
                    nn.Conv2d(c_in, c_out, 3, padding=1),
                    nn.MaxPool2d(3, 2, padding=1),
                    PlainResBlock(c_out, cnn.spectral_norm),
                    PlainResBlock(c_out, cnn.spectral_norm),
                ]
                c_in = c_out
            layers.append(nn.ReLU())
            if cnn.adaptive_maxpool_size:
                layers.append(nn.AdaptiveMaxPool2d(cnn.adaptive_maxpool_size))
            layers.append(nn.Flatten())
            self.img_head = nn.Sequential(*layers)
        img_dim = self.img_head(torch.zeros(1, *img_shape)).shape[1]
        fh = nn_cfg.float_hidden_dim
        self.float_feature_extractor = nn.Sequential(
            nn.Linear(float_dim, fh), nn.LeakyReLU(), nn.Linear(fh, fh), nn.LeakyReLU()
        )
        d = img_dim + fh
        dense, embedding = (
            round(nn_cfg.dense_hidden_dimension * nn_cfg.size_scale),
            round(nn_cfg.iqn_embedding_dimension * nn_cfg.size_scale),
        )
        h = dense // 2

        def lin(i, o):
            return PlainNoisyLinear(i, o, btr.noisy_sigma0) if btr.use_noisy_linear else nn.Linear(i, o)

        def head(n_out):
            norm = [nn.LayerNorm(h)] if btr.use_layer_norm else []
            return nn.Sequential(lin(d, h), *norm, nn.LeakyReLU(), lin(h, n_out))

        self.A_head = head(n_actions)
        self.V_head = head(1)
        self.iqn_fc = nn.Linear(embedding, d)
        self.D = embedding

    def reset_noise(self):
        for m in self.modules():
            if isinstance(m, PlainNoisyLinear):
                m.reset_noise()

    def forward(self, img, floats, n, tau):
        """img uint8 (B, C, H, W), tau (B * N, 1) tau-major -> Q (B * N, A)."""
        x = (img.float() - 128) / 128
        concat = torch.cat((self.img_head(x), self.float_feature_extractor(floats)), 1)
        q_net = torch.cos(torch.arange(1, self.D + 1, device=img.device) * math.pi * tau)
        q_net = F.leaky_relu(self.iqn_fc(q_net))
        concat = concat.repeat(n, 1) * q_net
        a = self.A_head(concat)
        v = self.V_head(concat)
        return v + a - a.mean(dim=-1).unsqueeze(-1)


def naive_taus(b, n):
    half = (torch.arange(n // 2).repeat_interleave(b).unsqueeze(1) + torch.rand(b * n // 2, 1)) / n
    return torch.cat((half, 1 - half), dim=0)  # (B * N, 1), tau-major


def naive_loss(targets, outputs, taus, kappa, n, b):
    """targets, outputs (B, N, 1); taus (B * N, 1) tau-major -> (B,)."""
    td = targets[:, :, None, :] - outputs[:, None, :, :]
    loss = torch.where(td.abs() < kappa, (0.5 / kappa) * td**2, td.abs() - 0.5 * kappa)
    tau = taus.reshape(n, b, 1).transpose(0, 1)[:, None, :, :].expand(-1, n, -1, -1)
    return (torch.where(td < 0, 1 - tau, tau) * loss).sum(dim=2).mean(dim=1)[:, 0]


def naive_step(online, target, optimizer, batch, nn_cfg: NNConfig, btr: BTRConfig, lr: float, wd_ratio: float):
    for g in optimizer.param_groups:
        g["lr"] = lr
    if btr.use_noisy_linear:
        online.reset_noise()
        target.reset_noise()
    b, n, a_n = batch["img"].shape[0], nn_cfg.iqn_n, 12
    optimizer.zero_grad()
    rewards = batch["reward"].unsqueeze(-1).repeat(n, 1)  # (B * N, 1)
    gammas = (batch["gamma_n"] * (1 - batch["terminal"])).unsqueeze(-1).repeat(n, 1)
    actions = batch["action"].unsqueeze(-1).repeat(n, 1)
    with torch.no_grad():
        tau2 = naive_taus(b, n)
        q_next = target(batch["next_img"], batch["next_floats"], n, tau2)  # (B * N, A)
        if btr.use_munchausen:
            t = btr.munchausen_entropy_tau
            q_next_bna = q_next.reshape(n, b, a_n).transpose(0, 1)  # (B, N, A)
            q_mean = q_next_bna.mean(dim=1)
            v_next = q_mean.max(dim=1, keepdim=True)[0]
            log_sum = torch.logsumexp((q_mean - v_next) / t, dim=1, keepdim=True)
            tau_log_pi_next = (q_mean - v_next - t * log_sum).unsqueeze(1)
            pi_next = F.softmax(q_mean / t, dim=1).unsqueeze(1)
            soft = (pi_next * (q_next_bna - tau_log_pi_next)).sum(2)  # (B, N)
            q_now = online(batch["img"], batch["floats"], n, naive_taus(b, n)).reshape(n, b, a_n).mean(dim=0)
            v_now = q_now.max(dim=1, keepdim=True)[0]
            tau_log_pi = q_now - v_now - t * torch.logsumexp((q_now - v_now) / t, dim=1, keepdim=True)
            bonus = tau_log_pi.gather(1, batch["action"].unsqueeze(-1)).clamp(btr.munchausen_lo, 0)
            r = batch["reward"].unsqueeze(-1) + btr.munchausen_alpha * bonus  # (B, 1)
            g = (batch["gamma_n"] * (1 - batch["terminal"])).unsqueeze(-1)
            targets = (r + g * soft).unsqueeze(-1)  # (B, N, 1)
        else:
            if nn_cfg.use_ddqn:
                q_online = online(batch["next_img"], batch["next_floats"], n, naive_taus(b, n))
                a_star = q_online.reshape(n, b, a_n).mean(dim=0).argmax(dim=1, keepdim=True).repeat(n, 1)
            else:
                a_star = q_next.reshape(n, b, a_n).mean(dim=0).argmax(dim=1, keepdim=True).repeat(n, 1)
            targets = (rewards + gammas * q_next.gather(1, a_star)).reshape(n, b, 1).transpose(0, 1)
    tau3 = naive_taus(b, n)
    outputs = online(batch["img"], batch["floats"], n, tau3).gather(1, actions).reshape(n, b, 1).transpose(0, 1)
    loss = naive_loss(targets, outputs, tau3, nn_cfg.iqn_kappa, n, b)
    total = torch.sum(batch["weight"] * loss)
    total.backward()
    torch.nn.utils.clip_grad_norm_(online.parameters(), nn_cfg.clip_grad_norm)
    torch.nn.utils.clip_grad_value_(online.parameters(), nn_cfg.clip_grad_value)
    optimizer.step()
    with torch.no_grad():
        for p in online.parameters():
            p.mul_(1 - wd_ratio * lr)
    return total.item()
