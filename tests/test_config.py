"""Every experiment and ablation composes, and the composed values match DESIGN.md's table key by key."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tmexp.compose import compose_config
from tmexp.config import Backend, CnnType, Config, Device, Optimizer
from tmexp.core.networks import build_network
from tmexp.validation import config_warnings

ROOT = Path(__file__).resolve().parents[1]

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
ABLATIONS = sorted(p.stem for p in (CONF / "ablation").glob("*.yaml"))

# DESIGN.md, "The seed's runs, exactly".
SEED_TABLE = {
    "A01_v2": dict(
        run_name="A01_as20_long_v2",
        cnn="linesight",
        maxpool=None,
        sn=False,
        btr=False,
        dense=1024,
        emb=128,
        ddqn=True,
        clip=30,
        wd=0.1,
        gss=4,
    ),
    "A01_v4_btr": dict(
        run_name="A01_as20_long_v4_btr",
        cnn="impala",
        maxpool=6,
        sn=True,
        btr=True,
        dense=1024,
        emb=128,
        ddqn=True,
        clip=30,
        wd=0.1,
        gss=4,
    ),
    "A01_v4.1_btr": dict(
        run_name="A01_as20_long_v4.1_btr",
        cnn="impala",
        maxpool=6,
        sn=True,
        btr=True,
        dense=1024,
        emb=128,
        ddqn=True,
        clip=30,
        wd=0.1,
        gss=1,
    ),
    "A01_v4.2_btr": dict(
        run_name="A01_as20_long_v4.2_btr",
        cnn="impala",
        maxpool=6,
        sn=True,
        btr=True,
        dense=512,
        emb=64,
        ddqn=False,
        clip=10,
        wd=0.0,
        gss=1,
    ),
}


def flat(cfg: Config) -> dict:
    def walk(node, prefix=""):
        out = {}
        for k, v in node.items():
            if isinstance(v, dict):
                out.update(walk(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    return walk(OmegaConf.to_container(OmegaConf.structured(cfg)))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name):
    cfg = compose_config([f"+experiment={name}"])
    assert isinstance(cfg, Config)


@pytest.mark.parametrize("name", sorted(SEED_TABLE))
def test_seed_experiments_match_design_table(name):
    want = SEED_TABLE[name]
    cfg = compose_config([f"+experiment={name}"])
    cnn = cfg.nn.vis.cnn
    assert cfg.run_name == want["run_name"]
    assert cnn.type == want["cnn"]
    assert cnn.adaptive_maxpool_size == want["maxpool"]
    assert cnn.spectral_norm == want["sn"]
    if want["cnn"] == "impala":
        assert cnn.width_scale == 2
    assert cfg.btr.use_munchausen == cfg.btr.use_layer_norm == cfg.btr.use_noisy_linear == want["btr"]
    if want["btr"]:
        assert (cfg.btr.munchausen_alpha, cfg.btr.munchausen_entropy_tau, cfg.btr.munchausen_lo) == (0.9, 0.03, -1.0)
        assert cfg.btr.noisy_sigma0 == 0.5
    assert cfg.nn.dense_hidden_dimension == want["dense"]
    assert cfg.nn.iqn_embedding_dimension == want["emb"]
    assert cfg.nn.use_ddqn == want["ddqn"]
    assert cfg.nn.clip_grad_norm == want["clip"]
    assert cfg.training.weight_decay_lr_ratio == want["wd"]
    assert cfg.training.global_schedule_speed == want["gss"]
    assert cfg.performance.gpu_collectors_count == 8
    assert cfg.env.tmi.running_speed == 32
    # The published runs' batch and image, not the CPU-sized default's.
    assert cfg.training.batch_size == 512 and (cfg.env.w_downsized, cfg.env.h_downsized) == (64, 64)


def test_the_default_is_sized_for_a_cpu_and_the_game_keeps_linesights_image():
    cfg = compose_config([])
    assert (cfg.nn.dense_hidden_dimension, cfg.nn.iqn_embedding_dimension, cfg.nn.float_hidden_dim) == (256, 64, 128)
    assert cfg.training.batch_size == 64 and cfg.training.global_schedule_speed == 0.25
    assert (cfg.env.w_downsized, cfg.env.h_downsized) == (48, 48) and cfg.nn.normalize_floats
    tmi = compose_config(["env=tmi"])
    assert (tmi.env.w_downsized, tmi.env.h_downsized) == (64, 64)


def test_v4_variants_differ_from_v4_only_where_the_table_says():
    base = flat(compose_config(["+experiment=A01_v4_btr"]))
    v41 = flat(compose_config(["+experiment=A01_v4.1_btr"]))
    diff = {k for k in base if base[k] != v41[k]}
    assert diff == {"run_name", "training.global_schedule_speed"}


# The keys each ablation's ingredient owns. An ablation may change only those (several for IMPALA: the Linesight
# CNN has no width, pooling or spectral norm), whatever the bundle it is applied to.
INGREDIENT_KEYS = {
    "none": set(),
    "no_munchausen": {"btr.use_munchausen"},
    "no_spectral_norm": {"nn.vis.cnn.spectral_norm"},
    "no_noisy": {"btr.use_noisy_linear"},
    "no_layer_norm": {"btr.use_layer_norm"},
    "no_impala": {
        "nn.vis.cnn.type",
        "nn.vis.cnn.width_scale",
        "nn.vis.cnn.input_pool",
        "nn.vis.cnn.adaptive_maxpool_size",
        "nn.vis.cnn.spectral_norm",
        "nn.vis.cnn.layer_norm_in_stages",
    },
    "no_maxpool": {"nn.vis.cnn.adaptive_maxpool_size"},
    "small_net": {"nn.size_scale"},
    "schedule_speed_1": {"training.global_schedule_speed"},
}
INGREDIENT_KEYS["no_btr"] = INGREDIENT_KEYS["no_impala"] | {
    "btr.use_munchausen",
    "btr.use_noisy_linear",
    "btr.use_layer_norm",
    "btr.munchausen_alpha",
    "btr.munchausen_entropy_tau",
    "btr.munchausen_lo",
    "btr.noisy_sigma0",
}


@pytest.mark.parametrize("bundle", ["A01_v4_btr", "A01_cpu_btr"])
@pytest.mark.parametrize("name", ABLATIONS)
def test_each_ablation_changes_one_ingredient_at_either_scale(name, bundle):
    base = flat(compose_config([f"+experiment={bundle}"]))
    ablated = flat(compose_config([f"+experiment={bundle}", f"+ablation={name}"]))
    diff = {k for k in base if base[k] != ablated[k]}
    assert diff <= INGREDIENT_KEYS[name], f"{name} on {bundle} also changes {diff - INGREDIENT_KEYS[name]}"
    if name != "none":  # and it does change its ingredient (a max-pool already off, say, would make it a no-op)
        assert diff, f"{name} changes nothing on {bundle}"
    if name == "no_impala":
        assert ablated["nn.vis.cnn.type"] == "linesight"


@pytest.mark.parametrize("bundle, sweep", [("A01_v4_btr", "A01_btr_ablation"), ("A01_cpu_btr", "A01_cpu_btr_ablation")])
def test_a_sweep_job_composes_its_ablation_on_the_bundle_in_the_order_hydra_gives_it(bundle, sweep):
    """BasicSweeper puts the experiment's params (seed, ablation) before the command line's +experiment: the ablation
    must still win over the bundle (an ablation appended before the experiment lost to its defaults and values)."""
    for name in ABLATIONS:
        expected = flat(compose_config([f"+experiment={bundle}", f"+ablation={name}"]))
        job = flat(compose_config(["seed=0", f"ablation={name}", f"+experiment={sweep}"]))
        assert {k for k in expected if expected[k] != job[k]} <= {"run_name", "performance.job_slots"}, name


def test_the_experiment_is_composed_first_whatever_its_place_on_the_command_line():
    from tmexp.compose import experiment_first

    argv = ["--multirun", "+ablation=no_impala,none", "seed=0", "+experiment=A01_cpu_btr"]
    assert experiment_first(argv) == ["--multirun", "+experiment=A01_cpu_btr", "+ablation=no_impala,none", "seed=0"]
    assert experiment_first(["-m", "+experiment=x"]) == ["-m", "+experiment=x"]
    for name in ("no_impala", "no_btr", "schedule_speed_1"):
        for bundle in ("A01_cpu_btr", "A01_v4_btr"):
            assert flat(compose_config([f"+ablation={name}", f"+experiment={bundle}"])) == flat(
                compose_config([f"+experiment={bundle}", f"+ablation={name}"])
            ), (name, bundle)
    out = subprocess.run(
        [sys.executable, "-m", "tmexp.train", "--cfg", "job", "+ablation=no_impala", "+experiment=A01_cpu_btr"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"cnn:\n\s+type: linesight", out.stdout)


def test_small_net_halves_the_network_at_either_scale():
    for bundle, full in (("A01_v4_btr", (1024, 128)), ("A01_cpu_btr", (256, 64))):
        net = build_network(*_nn_btr([f"+experiment={bundle}", "+ablation=small_net"]), (1, 48, 48), 149, 12)
        assert (net.heads.a_hidden.in_features, net.iqn_embedding_dimension) == (
            net.dense_input_dimension,
            full[1] // 2,
        )
        assert net.heads.a_hidden.out_features == full[0] // 4  # each dueling head gets half of dense


def test_cpu_btr_differs_from_cpu_v2_only_in_the_bundle():
    base = flat(compose_config(["+experiment=A01_cpu_v2"]))
    btr = flat(compose_config(["+experiment=A01_cpu_btr"]))
    diff = {k for k in base if base[k] != btr[k]}
    assert diff - {"run_name"} <= INGREDIENT_KEYS["no_impala"] | {
        "btr.use_munchausen",
        "btr.use_noisy_linear",
        "btr.use_layer_norm",
    }
    assert {"nn.vis.cnn.type", "btr.use_munchausen", "btr.use_noisy_linear", "btr.use_layer_norm"} <= diff


def test_no_btr_on_the_cpu_bundle_is_the_cpu_baseline():
    """The study's baseline arm runs in the ablation sweep: A01_cpu_btr without every ingredient is A01_cpu_v2."""
    base = flat(compose_config(["+experiment=A01_cpu_v2"]))
    stripped = flat(compose_config(["+experiment=A01_cpu_btr_ablation", "ablation=no_btr"]))
    assert set(base) == set(stripped)
    assert {k for k in base if base[k] != stripped[k]} == {"run_name", "performance.job_slots"}  # the sweep's own


def test_ablation_sweep_runs_every_arm_of_a_seed_before_the_next_seed():
    cfg = compose_config(["+experiment=A01_cpu_btr_ablation"], return_hydra_config=True)
    assert list(cfg.hydra.sweeper.params) == ["seed", "ablation"]  # BasicSweeper: the first key is the outer loop


def test_munchausen_without_ddqn_warns_that_ddqn_does_nothing():
    assert any(
        "nn.use_ddqn=false has no effect" in w for w in config_warnings(compose_config(["+experiment=A01_v4.2_btr"]))
    )
    assert not config_warnings(compose_config(["+experiment=A01_v4_btr"]))
    assert not config_warnings(compose_config(["nn.use_ddqn=false"]))  # without Munchausen it does what it says


def _nn_btr(overrides):
    cfg = compose_config(overrides)
    return cfg.nn, cfg.btr


@pytest.mark.parametrize("sweep", ["A01_btr_ablation", "A01_cpu_btr_ablation"])
def test_ablation_sweep_lists_every_ablation_and_seeds(sweep):
    cfg = compose_config([f"+experiment={sweep}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert set(params["ablation"].split(",")) == set(ABLATIONS)
    assert params["seed"] == "0,1,2"
    assert cfg.run_name == sweep and cfg.nn.vis.cnn.type == "impala"


def test_any_leaf_can_be_overridden():
    cfg = compose_config(
        [
            "training.batch_size=64",
            "env.sim.road_width_m=9",
            "btr.use_munchausen=true",
            "nn/vis/cnn=impala",
            "nn.vis.cnn.width_scale=3",
        ]
    )
    assert cfg.training.batch_size == 64 and cfg.btr.use_munchausen and cfg.nn.vis.cnn.width_scale == 3


def test_closed_sets_are_enums_that_compare_and_print_as_their_values():
    cfg = compose_config(["nn.vis.cnn.type=impala", "training.optimizer=adam", "performance.device=cpu", "env=tmi"])
    assert isinstance(cfg.nn.vis.cnn.type, CnnType) and cfg.nn.vis.cnn.type is CnnType.impala
    assert cfg.nn.vis.cnn.type == "impala" and f"{cfg.nn.vis.cnn.type}" == str(cfg.nn.vis.cnn.type) == "impala"
    assert (cfg.training.optimizer, cfg.performance.device, cfg.env.backend) == (
        Optimizer.adam,
        Device.cpu,
        Backend.tmi,
    )
    saved = OmegaConf.to_yaml(OmegaConf.structured(cfg))  # what config_resolved.yaml holds
    assert "type: impala" in saved and "backend: tmi" in saved
    assert OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(saved))) == cfg


# ----- the schema and the YAML files agree ---------------------------------------------------------------------
# Every default lives once, in tmexp/config.py. A YAML file may repeat a default only when a comment containing
# "pinned" says why: on the value's line, or a "# Pinned" line above the file's first key (for the whole file).
# Files that pin on purpose: the published experiments and the ablations (their values are the seed's, whatever the
# schema's defaults become) and the options named for their values (btr/off, btr/full, nn/big, cnn/linesight...).
SCHEMA_FILES = sorted(p for p in CONF.rglob("*.yaml") if p.relative_to(CONF).parts[0] not in ("hydra", "local"))


def _package(path: Path) -> list[str]:
    """Where a file's keys land in the tree: its group's path, or the root for ``# @package _global_``."""
    rel = path.relative_to(CONF)
    if "# @package _global_" in path.read_text() or len(rel.parts) == 1:
        return []
    return list(rel.parts[:-1])


def _leaves(node, prefix=()):
    for key, value in node.items():
        if key in ("defaults", "hydra") and not prefix:
            continue
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _pinned_lines(text: str) -> tuple[bool, set[str]]:
    """(the whole file is pinned, the keys whose own line says "pinned")."""
    whole_file, seen_a_key, keys = False, False, set()
    for line in text.splitlines():
        content, _, comment = line.partition("#")
        if not content.strip():
            whole_file |= not seen_a_key and comment.strip().lower().startswith("pinned")
        elif ":" in content:
            seen_a_key = True
            if "pinned" in comment.lower():
                keys.add(content.split(":", 1)[0].strip())
    return whole_file, keys


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_each_yaml_key_is_in_the_schema_and_repeats_no_default_without_saying_why(path):
    import yaml

    text = path.read_text()
    values = yaml.safe_load(text) or {}
    whole_file, pinned_keys = _pinned_lines(text)
    default = Config()
    for name in _package(path):
        default = getattr(default, name)
    for keys, value in _leaves(values):
        node = default
        for key in keys:
            assert hasattr(node, key), (
                f"{path.relative_to(CONF)}: {'.'.join(keys)} is not in the schema (tmexp/config.py)"
            )
            node = getattr(node, key)
        if value == node:
            assert whole_file or keys[-1] in pinned_keys, (
                f"{path.relative_to(CONF)}: {'.'.join(keys)}: {value!r} repeats the schema's default; delete it, or "
                "say why it is pinned in a comment"
            )


def test_pinned_comments_are_read_per_line_or_for_the_whole_file():
    assert _pinned_lines("# Pinned: the seed's values.\na: 1\n") == (True, set())
    assert _pinned_lines("# The option.\na: 1  # pinned: the name says so\nb: 2\n") == (False, {"a"})
    assert _pinned_lines("a: 1\n# Pinned too late\nb: 2\n") == (False, set())
