"""``python -m tmexp.bench params``: parameter counts of the experiments' networks, as their runs build them.

    python -m tmexp.bench params [--experiment NAME ...] [--env tmi] [--float-dim N] [--img-size N] [--json]

Each experiment is composed from the conf tree (``+experiment=NAME``) and its network built with the run's own
input: the image size of its ``env`` and the float count its environment produces (149 on the simulator, Linesight's
184 on the game with ``env=tmi``, plus one with mini-races), as ``tmexp.core.build`` does. ``--float-dim 184`` counts
Linesight's float input on any backend (the published runs' figures), ``--img-size`` another image.
"""

from __future__ import annotations

import argparse
import json
import sys

from torch import nn

from tmexp.compose import compose_config
from tmexp.core.networks import build_network, count_parameters, scaled_sizes
from tmexp.envs.base import N_ACTIONS
from tmexp.envs.observation import float_count

EXPERIMENTS = ("A01_v2", "A01_v4_btr", "A01_v4.1_btr", "A01_v4.2_btr", "A01_cpu_v2", "A01_cpu_btr")
LINESIGHT_FLOAT_DIM = 184  # Linesight's float input size with its defaults


def run_inputs(cfg) -> tuple[tuple[int, int, int], int]:
    """(image shape, float count) of the network a run of ``cfg`` builds (the mini-race time is one more float)."""
    mini_race = 1 if cfg.training.temporal_mini_race_duration_ms else 0
    return (1, cfg.env.h_downsized, cfg.env.w_downsized), float_count(cfg.env) + mini_race


def parts(net: nn.Module) -> dict[str, int]:
    """Parameter count per part of an IQNNetwork."""
    counts = {
        "vision": count_parameters(net.img_head),
        "floats": count_parameters(net.float_feature_extractor),
        "tau_embedding": count_parameters(net.iqn_fc),
        "heads": count_parameters(net.heads),
    }
    counts["total"] = count_parameters(net)
    return counts


def parameter_counts(
    experiments=EXPERIMENTS, float_dim: int | None = None, img_size: int | None = None, overrides: tuple[str, ...] = ()
) -> dict[str, dict]:
    """{experiment: {settings..., vision, floats, tau_embedding, heads, total}}; None: the run's own input;
    ``overrides`` go after ``+experiment=NAME`` (``env=tmi``: the game's inputs)."""
    out = {}
    for name in experiments:
        cfg = compose_config([f"+experiment={name}", *overrides])
        img_shape, floats = run_inputs(cfg)
        if img_size is not None:
            img_shape = (1, img_size, img_size)
        floats = floats if float_dim is None else float_dim
        net = build_network(cfg.nn, cfg.btr, img_shape, floats, N_ACTIONS)
        dense, embedding = scaled_sizes(cfg.nn)
        out[name] = {
            "img": f"{img_shape[1]}x{img_shape[2]}",
            "float_dim": floats,
            "cnn": cfg.nn.vis.cnn.type.value,
            "img_features": net.img_feature_dim,
            "dense": dense,
            "embedding": embedding,
            "noisy": cfg.btr.use_noisy_linear,
            "layer_norm": cfg.btr.use_layer_norm,
            **parts(net),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tmexp.bench params", description=__doc__.split("\n")[0])
    p.add_argument("--experiment", nargs="+", default=list(EXPERIMENTS), help="experiment names (conf/experiment)")
    p.add_argument(
        "--float-dim",
        type=int,
        default=None,
        help=f"float inputs (default: the run's own; {LINESIGHT_FLOAT_DIM} = Linesight's)",
    )
    p.add_argument("--img-size", type=int, default=None, help="square image side (default: the run's own)")
    p.add_argument("--env", default=None, help="the env config (tmi: the game's inputs)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    overrides = (f"env={args.env}",) if args.env else ()
    counts = parameter_counts(args.experiment, args.float_dim, args.img_size, overrides)
    if args.json:
        print(json.dumps(counts))
        return 0
    print(f"IQN network parameters ({N_ACTIONS} actions; each run's image and float input unless given)")
    cols = (
        "img",
        "float_dim",
        "cnn",
        "img_features",
        "dense",
        "embedding",
        "noisy",
        "layer_norm",
        "vision",
        "floats",
        "tau_embedding",
        "heads",
        "total",
    )
    print(f"{'experiment':<14}" + "".join(f"{c:>14}" for c in cols))
    for name, row in counts.items():
        print(f"{name:<14}" + "".join(f"{row[c]!s:>14}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
