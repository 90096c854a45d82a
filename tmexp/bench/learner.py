"""Learner benchmark: samples/s of what a run's learner does per batch, and of one training step alone.

    python -m tmexp.bench learner [--experiment NAME] [--batch-size N] [--vs-baseline] [--json] [overrides...]

It composes the run's configuration (the default one, or ``+experiment=NAME``, plus any ``tmexp.train``
overrides) and builds that run (``tmexp.core.build``, in a temporary directory: ``harness.py``), so what it times is
what the run trains: the run's network (image size, its float count: the env's floats, plus the mini-race time when
mini-races are on), batch size (``training.batch_size``, or ``--batch-size``), optimiser, torch threads
(``performance.torch_threads_learner``, or ``--threads``) and device. Three figures, in samples per second:

- ``loop``: ``Learner.train_one_batch`` on a replay buffer of random transitions: sampling, batch assembly, the
  training step, priorities, target updates and weight publishing, i.e. the learner's work per batch in a run;
- ``step``: ``optimization.train_step`` alone on one batch already in tensors (the forward passes of the online and
  target networks, the loss, backward, clipping, the optimiser step and the weight decay);
- ``naive``: the same step written plainly (``reference_iqn.py``; same parameter count, checked).

The implementations are interleaved round by round so that load from other processes hits them alike, and the
figures are medians over rounds; ratios are taken per round. ``--vs-baseline [NAME]`` also times the step of a
baseline at the same batch size (the BTR cost-per-sample figure): ``A01_cpu_v2`` for the CPU-scale family
(``A01_cpu_*``) and the default run, ``A01_v2`` for the published experiments. The figures are in
``docs/benchmarks.md``.

Where the step saves work over the plain one:
- channels-last convolutions (NCHW convolution backward is several times slower on CPU, plus layout copies);
- the dueling heads as one (d -> 2 * hidden) GEMM, V + A - mean(A) folded into one output layer;
- DDQN's online argmax from the advantage head alone (argmax Q = argmax A);
- the Munchausen bonus from the online pass already made for the loss (no second forward of s_t);
- broadcast instead of repeat for state * phi(tau); in-place activations where autograd allows;
- foreach RAdam / Adam, foreach gradient clipping and weight decay.
Tried without gain: torch.compile of both networks (``--compile``: long compile, same step time on CPU, for the
default network at batch 64 as for Linesight's at 512); the optimiser on one flat tensor of all parameters (a few
percent: the step is the convolutions' and matrix products' arithmetic); sampling in a background thread (the
``loop`` figure shows what sampling and batch assembly cost). Not used: bfloat16 autocast on CPU (the design keeps
AMP to CUDA).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tmexp.bench.harness import BenchmarkError, built_run, compose_run, fail, report
from tmexp.bench.reference_iqn import NaiveIQN, naive_step
from tmexp.config import Device, Optimizer
from tmexp.core.networks import count_parameters
from tmexp.core.optimization import train_step
from tmexp.core.replay import nstep_transitions

BASELINE = "A01_v2"  # Linesight's network: the published baseline
CPU_BASELINE = "A01_cpu_v2"  # the default run: the baseline of the CPU-scale family (A01_cpu_*)


def baseline_of(experiment: str | None) -> str:
    """The baseline at the experiment's scale: A01_cpu_v2 for the default run and the A01_cpu_* family."""
    return CPU_BASELINE if experiment is None or experiment.startswith("A01_cpu") else BASELINE


REPLAY_FILL = 20_000  # random transitions sampled from (the default run starts learning at 20,000)


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


def fill_replay(replay, img_shape, env_float_dim: int, count: int, n_steps: int, gamma: float, seed: int = 0) -> None:
    """Add ``count`` random transitions, as races of 500 actions (the last one finished)."""
    rng = np.random.default_rng(seed)
    while len(replay) < count:
        t = min(500, count - len(replay))
        replay.add(
            nstep_transitions(
                rng.integers(0, 256, (t + 1, *img_shape), dtype=np.uint8),
                rng.standard_normal((t + 1, env_float_dim), dtype=np.float32),
                rng.integers(0, 12, t),
                0.1 * rng.standard_normal(t, dtype=np.float32),
                rng.random(t) < 0.9,
                True,
                n_steps,
                gamma,
            )
        )


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


def step_of(run, batch):
    """A callable doing ``train_step`` as the run's learner does, on a fixed batch."""
    s, c = run.settings, run.counters

    def step():
        sched = run.schedules.at(c.frames)
        train_step(
            run.online,
            run.target,
            run.optimizer,
            run.scaler,
            batch,
            nn_cfg=s.nn,
            btr_cfg=s.btr,
            lr=sched["lr"],
            weight_decay_lr_ratio=s.weight_decay_lr_ratio,
            self_loss_state=run.self_loss,
        )

    return step


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tmexp.bench learner", description=__doc__.split("\n")[0])
    p.add_argument("--experiment", default=None, help="+experiment=NAME (default: the default run)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's training.batch_size")
    p.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds (median reported)")
    p.add_argument("--iters", type=int, default=4, help="steps per round and implementation")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: the run's performance.torch_threads_learner)",
    )
    p.add_argument(
        "--device", default=None, choices=[d.value for d in Device], help="default: the run's performance.device"
    )
    p.add_argument("--compile", action="store_true", help="the step with torch.compile on both networks")
    p.add_argument("--no-naive", action="store_true", help="skip the naive reference")
    p.add_argument(
        "--vs-baseline",
        nargs="?",
        const="",
        default=None,
        metavar="NAME",
        help=f"also time the step of a baseline experiment at the same batch size (cost per sample "
        f"ratio); default: the experiment's scale's, {CPU_BASELINE} for A01_cpu_* and the default "
        f"run, else {BASELINE}",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "overrides", nargs="*", help="tmexp.train overrides (e.g. training.temporal_mini_race_duration_ms=7000)"
    )
    args = p.parse_args(argv)
    if (args.batch_size is not None and args.batch_size < 1) or args.rounds < 1 or args.iters < 1 or args.warmup < 0:
        raise BenchmarkError(
            "--batch-size, --rounds and --iters must be positive integers and --warmup not negative; "
            "pass e.g. --batch-size 512."
        )
    if args.threads is not None and args.threads < 0:
        raise BenchmarkError(f"--threads must be 0 (torch's default) or more, got {args.threads}.")
    return args


def run_overrides(args: argparse.Namespace) -> list[str]:
    """The benchmark's options as overrides of the run's config (the user's own come first)."""
    extra = ["performance.serial=true"]  # the run is built, never started: no collector processes to set up
    if args.batch_size is not None:
        extra.append(f"training.batch_size={args.batch_size}")
    if args.threads is not None:
        extra.append(f"performance.torch_threads_learner={args.threads}")
    if args.device is not None:
        extra.append(f"performance.device={args.device}")
    return list(args.overrides) + extra


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        overrides = run_overrides(args)
        cfg = compose_run(args.experiment, overrides)
        baseline = args.vs_baseline or baseline_of(args.experiment)
        baseline_cfg = compose_run(baseline, overrides) if args.vs_baseline is not None else None
    except BenchmarkError as err:
        return fail("learner", err)
    with built_run(cfg, "learner") as (run, tmp):
        result = measure(args, cfg, run, baseline_cfg, tmp)
    report(result, args.json)
    return 0


def measure(args, cfg, run, baseline_cfg, tmp: str) -> dict:
    from tmexp.core.build import build
    from tmexp.core.learner import Learner

    device, b = run.device, run.settings.batch_size
    img_shape, float_dim = run.spaces.img_shape, run.online.float_dim
    torch.manual_seed(0)
    batch = random_batch(b, img_shape, float_dim, device)
    learner = Learner(run)
    fill_replay(
        run.replay,
        img_shape,
        run.spaces.float_dim,
        max(REPLAY_FILL, b),
        run.settings.n_steps,
        run.schedules.at(0)["gamma"],
    )
    impls = {"loop": learner.train_one_batch}
    if args.compile:
        compiled = copy.copy(run)
        compiled.online, compiled.target = torch.compile(run.online), torch.compile(run.target)
        impls["step"] = step_of(compiled, batch)
    else:
        impls["step"] = step_of(run, batch)
    if baseline_cfg is not None:
        base_dir = Path(tmp) / "baseline"
        base_dir.mkdir()
        base_run = build(baseline_cfg, base_dir)
        base_batch = random_batch(b, base_run.spaces.img_shape, base_run.online.float_dim, device)
        impls["baseline"] = step_of(base_run, base_batch)
        base_run.close()
    if not args.no_naive:
        nn_cfg, btr_cfg = cfg.nn, cfg.btr
        naive_online = NaiveIQN(nn_cfg, btr_cfg, img_shape, float_dim, run.spaces.n_actions).to(device)
        if count_parameters(naive_online) != count_parameters(run.online):
            raise AssertionError(
                f"naive network has {count_parameters(naive_online)} parameters, ours {count_parameters(run.online)}"
            )
        naive_target = copy.deepcopy(naive_online).requires_grad_(False)
        t = cfg.training
        opt_cls = torch.optim.RAdam if t.optimizer == Optimizer.radam else torch.optim.Adam
        naive_opt = opt_cls(naive_online.parameters(), lr=1e-4, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_epsilon)
        impls["naive"] = lambda: naive_step(
            naive_online, naive_target, naive_opt, batch, nn_cfg, btr_cfg, 1e-4, t.weight_decay_lr_ratio
        )

    for fn in impls.values():
        if args.warmup:
            time_call(fn, args.warmup, device)
    per_round: dict[str, list[float]] = {k: [] for k in impls}
    for _ in range(args.rounds):
        for name, fn in impls.items():
            per_round[name].append(b / time_call(fn, args.iters, device))

    def median_ratio(num: str, den: str) -> float:
        return statistics.median(x / y for x, y in zip(per_round[num], per_round[den]))

    result = {
        "benchmark": "learner",
        "experiment": args.experiment or "default",
        "overrides": list(args.overrides),
        "batch_size": b,
        "img_shape": list(img_shape),
        "float_dim": float_dim,
        "mini_race": bool(run.settings.mini_race_actions),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "parameters": count_parameters(run.online),
        "channels_last": bool(cfg.performance.channels_last),
        "compile": args.compile,
        "loop_samples_per_s": statistics.median(per_round["loop"]),
        "samples_per_s": statistics.median(per_round["step"]),
        "samples_per_s_rounds": per_round["step"],
        "loop_vs_step": median_ratio("loop", "step"),
    }
    if "baseline" in impls:
        result["baseline"] = baseline_cfg.run_name
        result["baseline_samples_per_s"] = statistics.median(per_round["baseline"])
        result["cost_per_sample_vs_baseline"] = median_ratio("baseline", "step")
    if "naive" in impls:
        result["naive_samples_per_s"] = statistics.median(per_round["naive"])
        result["naive_samples_per_s_rounds"] = per_round["naive"]
        result["speedup_vs_naive"] = median_ratio("step", "naive")
    return result


if __name__ == "__main__":
    sys.exit(main())
