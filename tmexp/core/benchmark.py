"""Learner benchmark: samples/s of one full training step, ours vs a plain eager PyTorch one.

    python -m tmexp.bench learner --batch-size 512 [--experiment A01_v4_btr] --json

One step = forward of the online and the target network, the loss, backward, gradient clipping (norm then value),
the optimiser step and the decoupled weight decay; replay sampling is excluded (the batch is already a tensor).

"ours" is ``optimization.train_step`` on ``networks.build_network`` (channels-last convolutions, the dueling
heads as one GEMM each, foreach optimiser / clipping / weight decay). "naive" is the same network and loss
written below the straightforward way, as Linesight's trainer reads: separate A and V heads on a repeated state
tensor, tau-major (B * N, A) layout, NCHW convolutions, the optimiser's and the clipping's per-tensor defaults and
a Python loop for the weight decay. Both have the same parameter count (checked) and run on the same batches,
interleaved round by round so that load from other processes hits both alike; the reported figures are medians
over rounds. Without ``--experiment`` the network is Linesight's (``A01_v2``'s: the default run's network is sized
down for a CPU, ``conf/nn/cpu.yaml``). ``--vs-baseline`` also times ours on that baseline (the BTR cost-per-sample
figure).

What the speed-ups are, measured on a 2-core AVX-512 CPU at batch 512 (default config):
- channels-last convolutions: the largest single gain (NCHW conv backward was ~3x slower, plus layout copies);
- the dueling heads as one (d -> 2 * hidden) GEMM and V + A - mean(A) folded into one output layer;
- DDQN's online argmax from the advantage head alone (argmax Q = argmax A): ~6% fewer FLOPs per step;
- the Munchausen bonus from the online pass already made for the loss (no second forward of s_t);
- broadcast instead of repeat for state * phi(tau); in-place activations where autograd allows;
- foreach RAdam / Adam, foreach gradient clipping and weight decay (small: ~1M parameters).
Tried without gain: torch.compile of both networks (about 30 s to compile, same step time on CPU, the GEMMs
dominate and stay in MKL). Not used: bfloat16 autocast on CPU (a 2.5x faster GEMM on this CPU, but the design
keeps AMP to CUDA). The step runs at roughly 150 GFLOP/s against ~175 for a bare fp32 GEMM here, so the
remaining gap is arithmetic, not overhead.

The BTR bundle's cost per sample is set by arithmetic too: IMPALA x2 at full 64x64 resolution is ~114 M
multiply-adds per image against ~2.8 M for Linesight's CNN, and the 2560-wide state (6x6x64 + 256) makes the
heads ~3x wider; one BTR step is ~12x the FLOPs of a baseline step (no DDQN pass, but four conv-heavy passes).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from tmexp.config import BTRConfig, NNConfig
from tmexp.core.networks import build_network, count_parameters
from tmexp.core.optimization import make_grad_scaler, make_optimizer, pick_device, train_step
from tmexp.core.params import EXPERIMENTS, LINESIGHT_FLOAT_DIM, experiment_configs

BASELINE = "A01_v2"  # Linesight's network: the published baseline



class BenchmarkError(ValueError):
    """A benchmark option that cannot be used (the message names the option and the fix)."""


# ---------------------------------------------------------------------------------------------------------------
# The naive reference: the same network and loss, written plainly.
# ---------------------------------------------------------------------------------------------------------------


class PlainNoisyLinear(nn.Module):
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
    def __init__(self, c: int, sn: bool):
        super().__init__()
        wrap = nn.utils.parametrizations.spectral_norm if sn else (lambda m: m)
        self.conv0 = wrap(nn.Conv2d(c, c, 3, padding=1))
        self.conv1 = wrap(nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class NaiveIQN(nn.Module):
    def __init__(self, nn_cfg: NNConfig, btr: BTRConfig, img_shape, float_dim: int, n_actions: int):
        super().__init__()
        cnn = nn_cfg.vis.cnn
        if cnn.type == "linesight":
            self.img_head = nn.Sequential(
                nn.Conv2d(img_shape[0], 16, 4, stride=2), nn.LeakyReLU(), nn.Conv2d(16, 32, 4, stride=2), nn.LeakyReLU(),
                nn.Conv2d(32, 64, 3, stride=2), nn.LeakyReLU(), nn.Conv2d(64, 32, 3, stride=1), nn.LeakyReLU(), nn.Flatten(),
            )
        else:
            layers, c_in = [], img_shape[0]
            for c in (16, 32, 32):
                c_out = c * cnn.width_scale
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.MaxPool2d(3, 2, padding=1),
                           PlainResBlock(c_out, cnn.spectral_norm), PlainResBlock(c_out, cnn.spectral_norm)]
                c_in = c_out
            layers.append(nn.ReLU())
            if cnn.adaptive_maxpool_size:
                layers.append(nn.AdaptiveMaxPool2d(cnn.adaptive_maxpool_size))
            layers.append(nn.Flatten())
            self.img_head = nn.Sequential(*layers)
        img_dim = self.img_head(torch.zeros(1, *img_shape)).shape[1]
        fh = nn_cfg.float_hidden_dim
        self.float_feature_extractor = nn.Sequential(nn.Linear(float_dim, fh), nn.LeakyReLU(), nn.Linear(fh, fh), nn.LeakyReLU())
        d = img_dim + fh
        h = nn_cfg.dense_hidden_dimension // 2

        def lin(i, o):
            return PlainNoisyLinear(i, o, btr.noisy_sigma0) if btr.use_noisy_linear else nn.Linear(i, o)

        def head(n_out):
            return nn.Sequential(lin(d, h), *([nn.LayerNorm(h)] if btr.use_layer_norm else []), nn.LeakyReLU(), lin(h, n_out))

        self.A_head = head(n_actions)
        self.V_head = head(1)
        self.iqn_fc = nn.Linear(nn_cfg.iqn_embedding_dimension, d)
        self.D = nn_cfg.iqn_embedding_dimension

    def reset_noise(self):
        for m in self.modules():
            if isinstance(m, PlainNoisyLinear):
                m.reset_noise()

    def forward(self, img, floats, n, tau):
        """img uint8 (B, C, H, W), tau (B * N, 1) tau-major -> Q (B * N, A)."""
        b = img.shape[0]
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
                a_star = online(batch["next_img"], batch["next_floats"], n, naive_taus(b, n)).reshape(n, b, a_n).mean(dim=0).argmax(dim=1, keepdim=True).repeat(n, 1)
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


# ---------------------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------------------


def random_batch(b: int, img_shape, float_dim: int, device, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = {
        "img": torch.randint(0, 256, (b, *img_shape), dtype=torch.uint8, generator=g),
        "floats": torch.randn(b, float_dim, generator=g),
        "action": torch.randint(0, 12, (b,), generator=g),
        "reward": torch.randn(b, generator=g) * 0.1,
        "next_img": torch.randint(0, 256, (b, *img_shape), dtype=torch.uint8, generator=g),
        "next_floats": torch.randn(b, float_dim, generator=g),
        "terminal": (torch.rand(b, generator=g) < 0.05).float(),
        "gamma_n": torch.full((b,), 0.999**3),
        "weight": torch.ones(b),
    }
    return {k: v.to(device) for k, v in batch.items()}


def time_call(fn, iters: int, device) -> float:
    """Seconds per call of ``fn`` over ``iters`` calls."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def setup_ours(nn_cfg: NNConfig, btr_cfg: BTRConfig, training, args, device, batch, lr: float):
    """(one-step callable, online network) of our implementation for one configuration."""
    img_shape = tuple(batch["img"].shape[1:])
    online = build_network(nn_cfg, btr_cfg, img_shape, args.float_dim, channels_last=not args.no_channels_last).to(device)
    target = copy.deepcopy(online).requires_grad_(False)
    optimizer = make_optimizer(online.parameters(), training)
    scaler = make_grad_scaler(device)
    net_o, net_t = (torch.compile(online), torch.compile(target)) if args.compile else (online, target)
    wd = training.weight_decay_lr_ratio

    def step():
        train_step(net_o, net_t, optimizer, scaler, batch, nn_cfg=nn_cfg, btr_cfg=btr_cfg, lr=lr, gamma=0.999, weight_decay_lr_ratio=wd)

    return step, online


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tmexp.bench learner", description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--experiment", default=BASELINE,
                   help=f"one of {', '.join(EXPERIMENTS)} (default: {BASELINE}, Linesight's network)")
    p.add_argument("--img-size", type=int, default=64, help="square grayscale image side (default 64)")
    p.add_argument("--float-dim", type=int, default=LINESIGHT_FLOAT_DIM)
    p.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds (median reported)")
    p.add_argument("--iters", type=int, default=2, help="steps per round and implementation")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-channels-last", action="store_true", help="ours without channels-last convolutions")
    p.add_argument("--compile", action="store_true", help="ours with torch.compile on both networks")
    p.add_argument("--no-naive", action="store_true", help="skip the naive reference")
    p.add_argument("--vs-baseline", action="store_true", help="also time ours on the default config (cost per sample ratio)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.rounds < 1 or args.iters < 1 or args.warmup < 0:
        raise BenchmarkError("--batch-size, --rounds and --iters must be positive integers and --warmup not negative; "
                             "pass e.g. --batch-size 512.")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        nn_cfg, btr_cfg, training = experiment_configs(args.experiment)
    except (BenchmarkError, ValueError) as err:
        print(f"tmexp.bench learner: error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    torch.manual_seed(0)
    img_shape, b = (1, args.img_size, args.img_size), args.batch_size
    batch = random_batch(b, img_shape, args.float_dim, device)
    lr, wd = 1e-4, training.weight_decay_lr_ratio

    ours, online = setup_ours(nn_cfg, btr_cfg, training, args, device, batch, lr)
    impls = {"ours": ours}
    if args.vs_baseline:
        impls["baseline"] = setup_ours(*experiment_configs(BASELINE), args, device, batch, lr)[0]
    if not args.no_naive:
        naive_online = NaiveIQN(nn_cfg, btr_cfg, img_shape, args.float_dim, 12).to(device)
        if count_parameters(naive_online) != count_parameters(online):
            raise AssertionError(f"naive network has {count_parameters(naive_online)} parameters, ours {count_parameters(online)}")
        naive_target = copy.deepcopy(naive_online).requires_grad_(False)
        opt_cls = torch.optim.RAdam if training.optimizer == "radam" else torch.optim.Adam
        naive_opt = opt_cls(naive_online.parameters(), lr=lr, betas=(training.adam_beta1, training.adam_beta2), eps=training.adam_epsilon)
        impls["naive"] = lambda: naive_step(naive_online, naive_target, naive_opt, batch, nn_cfg, btr_cfg, lr, wd)

    for fn in impls.values():
        if args.warmup:
            time_call(fn, args.warmup, device)
    per_round: dict[str, list[float]] = {k: [] for k in impls}
    for _ in range(args.rounds):
        for name, fn in impls.items():
            per_round[name].append(b / time_call(fn, args.iters, device))

    result = {
        "benchmark": "learner",
        "experiment": args.experiment,
        "batch_size": b,
        "img_shape": list(img_shape),
        "float_dim": args.float_dim,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "parameters": count_parameters(online),
        "channels_last": not args.no_channels_last,
        "compile": args.compile,
        "samples_per_s": statistics.median(per_round["ours"]),
        "samples_per_s_rounds": per_round["ours"],
    }
    if "baseline" in impls:
        result["baseline_samples_per_s"] = statistics.median(per_round["baseline"])
        result["cost_per_sample_vs_baseline"] = statistics.median(
            bl / o for o, bl in zip(per_round["ours"], per_round["baseline"])
        )
    if "naive" in impls:
        result["naive_samples_per_s"] = statistics.median(per_round["naive"])
        result["naive_samples_per_s_rounds"] = per_round["naive"]
        # Ratio per round (both measured back to back), then the median: robust to load from other processes.
        result["speedup_vs_naive"] = statistics.median(o / n for o, n in zip(per_round["ours"], per_round["naive"]))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
