"""Learner benchmark: samples/s of one full training step, ours vs a plain eager PyTorch one.

    python -m tmexp.bench learner --batch-size 512 [--experiment A01_v4_btr] [--vs-baseline] --json

One step = forward of the online and the target network, the loss, backward, gradient clipping (norm then value),
the optimiser step and the decoupled weight decay; replay sampling is excluded (the batch is already a tensor).

"ours" is ``optimization.train_step`` on ``networks.build_network``; "naive" is the same network and loss written
plainly (``reference_iqn.py``). Both have the same parameter count (checked) and run on the same batches,
interleaved round by round so that load from other processes hits both alike; the reported figures are medians
over rounds. Without ``--experiment`` the network is Linesight's (``A01_v2``'s: the default run's network is sized
down for a CPU, ``conf/nn/cpu.yaml``). ``--vs-baseline`` also times ours on that baseline (the BTR cost-per-sample
figure). The README's benchmark table has the figures and why they are what they are.

Where ours saves work over the plain step:
- channels-last convolutions (NCHW convolution backward is several times slower on CPU, plus layout copies);
- the dueling heads as one (d -> 2 * hidden) GEMM, V + A - mean(A) folded into one output layer;
- DDQN's online argmax from the advantage head alone (argmax Q = argmax A);
- the Munchausen bonus from the online pass already made for the loss (no second forward of s_t);
- broadcast instead of repeat for state * phi(tau); in-place activations where autograd allows;
- foreach RAdam / Adam, foreach gradient clipping and weight decay.
Tried without gain: torch.compile of both networks (``--compile``: long compile, same step time on CPU, where the
GEMMs dominate). Not used: bfloat16 autocast on CPU (the design keeps AMP to CUDA).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch

from tmexp.bench.param_count import EXPERIMENTS, LINESIGHT_FLOAT_DIM, experiment_configs
from tmexp.bench.reference_iqn import NaiveIQN, naive_step
from tmexp.config import BTRConfig, Device, NNConfig, Optimizer
from tmexp.core.networks import build_network, count_parameters
from tmexp.core.optimization import make_grad_scaler, make_optimizer, pick_device, train_step

BASELINE = "A01_v2"  # Linesight's network: the published baseline


class BenchmarkError(ValueError):
    """A benchmark option that cannot be used (the message names the option and the fix)."""


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
    online = build_network(nn_cfg, btr_cfg, img_shape, args.float_dim,
                           channels_last=not args.no_channels_last).to(device)
    target = copy.deepcopy(online).requires_grad_(False)
    optimizer = make_optimizer(online.parameters(), training)
    scaler = make_grad_scaler(device)
    net_o, net_t = (torch.compile(online), torch.compile(target)) if args.compile else (online, target)
    wd = training.weight_decay_lr_ratio

    def step():
        train_step(net_o, net_t, optimizer, scaler, batch, nn_cfg=nn_cfg, btr_cfg=btr_cfg, lr=lr, gamma=0.999,
                   weight_decay_lr_ratio=wd)

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
    p.add_argument("--device", default=Device.auto.value, choices=[d.value for d in Device])
    p.add_argument("--no-channels-last", action="store_true", help="ours without channels-last convolutions")
    p.add_argument("--compile", action="store_true", help="ours with torch.compile on both networks")
    p.add_argument("--no-naive", action="store_true", help="skip the naive reference")
    p.add_argument("--vs-baseline", action="store_true",
                   help="also time ours on the default config (cost per sample ratio)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.rounds < 1 or args.iters < 1 or args.warmup < 0:
        raise BenchmarkError("--batch-size, --rounds and --iters must be positive integers and --warmup not negative; "
                             "pass e.g. --batch-size 512.")
    if args.experiment not in EXPERIMENTS:
        raise BenchmarkError(f"--experiment {args.experiment!r} is unknown; choose one of {', '.join(EXPERIMENTS)}.")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        nn_cfg, btr_cfg, training = experiment_configs(args.experiment)
    except BenchmarkError as err:
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
            raise AssertionError(f"naive network has {count_parameters(naive_online)} parameters, "
                                 f"ours {count_parameters(online)}")
        naive_target = copy.deepcopy(naive_online).requires_grad_(False)
        opt_cls = torch.optim.RAdam if training.optimizer == Optimizer.radam else torch.optim.Adam
        naive_opt = opt_cls(naive_online.parameters(), lr=lr, betas=(training.adam_beta1, training.adam_beta2),
                            eps=training.adam_epsilon)
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
