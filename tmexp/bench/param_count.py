"""``python -m tmexp.bench params``: parameter counts of the four published experiments' networks.

    python -m tmexp.bench params [--float-dim 184] [--img-size 64] [--json]

Each experiment's ``nn`` / ``btr`` settings come from composing ``+experiment=NAME`` from the conf tree, so the counts
follow the experiment files. The float input defaults to Linesight's 184 features, the size the published runs (real
game) used.
"""

from __future__ import annotations

import argparse
import json
import sys

from torch import nn

from tmexp.compose import compose_config
from tmexp.config import BTRConfig, NNConfig, TrainingConfig
from tmexp.core.networks import build_network, count_parameters

EXPERIMENTS = ("A01_v2", "A01_v4_btr", "A01_v4.1_btr", "A01_v4.2_btr")
LINESIGHT_FLOAT_DIM = 184  # Linesight's float input size with its defaults


def experiment_configs(name: str | None) -> tuple[NNConfig, BTRConfig, TrainingConfig]:
    """(nn, btr, training) of ``+experiment=name`` (None: the default config)."""
    cfg = compose_config([f"+experiment={name}"] if name else [])
    return cfg.nn, cfg.btr, cfg.training


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


def parameter_counts(float_dim: int = LINESIGHT_FLOAT_DIM, img_size: int = 64) -> dict[str, dict]:
    """{experiment: {settings..., vision, floats, tau_embedding, heads, total}} for the four published runs."""
    out = {}
    for name in EXPERIMENTS:
        nn_cfg, btr_cfg, _ = experiment_configs(name)
        net = build_network(nn_cfg, btr_cfg, (1, img_size, img_size), float_dim)
        out[name] = {
            "cnn": nn_cfg.vis.cnn.type.value,
            "img_features": net.img_feature_dim,
            "dense": nn_cfg.dense_hidden_dimension,
            "embedding": nn_cfg.iqn_embedding_dimension,
            "noisy": btr_cfg.use_noisy_linear,
            "layer_norm": btr_cfg.use_layer_norm,
            **parts(net),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tmexp.bench params", description=__doc__.split("\n")[0])
    p.add_argument("--float-dim", type=int, default=LINESIGHT_FLOAT_DIM)
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    counts = parameter_counts(args.float_dim, args.img_size)
    if args.json:
        print(json.dumps(counts))
        return 0
    print(f"IQN network parameters (image 1x{args.img_size}x{args.img_size}, {args.float_dim} floats, 12 actions)")
    cols = ("cnn", "img_features", "dense", "embedding", "noisy", "layer_norm", "vision", "floats", "tau_embedding",
            "heads", "total")
    print(f"{'experiment':<14}" + "".join(f"{c:>14}" for c in cols))
    for name, row in counts.items():
        print(f"{name:<14}" + "".join(f"{row[c]!s:>14}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
