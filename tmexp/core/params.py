"""``python -m tmexp.core.params``: parameter counts of the four published experiments' networks.

    python -m tmexp.core.params [--float-dim 184] [--img-size 64] [--json] [--builtin]

Each experiment's ``nn`` / ``btr`` settings come from composing ``+experiment=NAME`` (the conf tree), or with
``--builtin`` (or when the Hydra app is not importable) from the DESIGN table ("The seed's runs, exactly").
The float input defaults to Linesight's 184 features, the size the published runs (real game) used.
"""

from __future__ import annotations

import argparse
import json
import sys

from torch import nn

from tmexp.config import BTRConfig, CNNConfig, NNConfig, TrainingConfig, VisConfig
from tmexp.core.networks import build_network, count_parameters

EXPERIMENTS = ("A01_v2", "A01_v4_btr", "A01_v4.1_btr", "A01_v4.2_btr")
LINESIGHT_FLOAT_DIM = 184  # Linesight's float input size with its defaults


class UnknownExperimentError(ValueError):
    """An experiment name that is not one of the published runs."""


def builtin_experiment_configs(name: str | None) -> tuple[NNConfig, BTRConfig, TrainingConfig]:
    """(nn, btr, training) of a published run per the DESIGN table; None = the default config (= A01_v2's network)."""
    if name not in (None, *EXPERIMENTS):
        raise UnknownExperimentError(f"experiment {name!r} is unknown; choose one of {', '.join(EXPERIMENTS)}.")
    nn_cfg, btr_cfg, training = NNConfig(), BTRConfig(), TrainingConfig()
    if name in (None, "A01_v2"):
        return nn_cfg, btr_cfg, training
    nn_cfg.vis = VisConfig(CNNConfig(type="impala", width_scale=2, adaptive_maxpool_size=6, spectral_norm=True))
    btr_cfg = BTRConfig(use_munchausen=True, use_layer_norm=True, use_noisy_linear=True)
    if name == "A01_v4.2_btr":
        nn_cfg.dense_hidden_dimension, nn_cfg.iqn_embedding_dimension = 512, 64
        nn_cfg.use_ddqn, nn_cfg.clip_grad_norm = False, 10.0
        training.weight_decay_lr_ratio = 0.0
    return nn_cfg, btr_cfg, training


def experiment_configs(name: str | None, builtin: bool = False) -> tuple[NNConfig, BTRConfig, TrainingConfig]:
    """(nn, btr, training) of ``+experiment=name`` composed from the conf tree (None = the default config)."""
    if builtin:
        return builtin_experiment_configs(name)
    try:
        from tmexp.train import compose_config
    except ImportError:  # the Hydra app is not importable: fall back to the DESIGN table
        return builtin_experiment_configs(name)
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


def parameter_counts(float_dim: int = LINESIGHT_FLOAT_DIM, img_size: int = 64, builtin: bool = False) -> dict[str, dict]:
    """{experiment: {settings..., vision, floats, tau_embedding, heads, total}} for the four published runs."""
    out = {}
    for name in EXPERIMENTS:
        nn_cfg, btr_cfg, _ = experiment_configs(name, builtin)
        net = build_network(nn_cfg, btr_cfg, (1, img_size, img_size), float_dim)
        out[name] = {
            "cnn": nn_cfg.vis.cnn.type,
            "img_features": net.img_feature_dim,
            "dense": nn_cfg.dense_hidden_dimension,
            "embedding": nn_cfg.iqn_embedding_dimension,
            "noisy": btr_cfg.use_noisy_linear,
            "layer_norm": btr_cfg.use_layer_norm,
            **parts(net),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tmexp.core.params", description=__doc__.split("\n")[0])
    p.add_argument("--float-dim", type=int, default=LINESIGHT_FLOAT_DIM)
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--builtin", action="store_true", help="use the DESIGN table instead of composing the conf tree")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    counts = parameter_counts(args.float_dim, args.img_size, args.builtin)
    if args.json:
        print(json.dumps(counts))
        return 0
    print(f"IQN network parameters (image 1x{args.img_size}x{args.img_size}, {args.float_dim} floats, 12 actions)")
    cols = ("cnn", "img_features", "dense", "embedding", "noisy", "layer_norm", "vision", "floats", "tau_embedding", "heads", "total")
    print(f"{'experiment':<14}" + "".join(f"{c:>14}" for c in cols))
    for name, row in counts.items():
        print(f"{name:<14}" + "".join(f"{row[c]!s:>14}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
