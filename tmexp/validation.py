"""Checks of a composed configuration that the schema's types cannot express.

Each failure is a ``ConfigError`` whose message is one sentence naming the key (or file) and the fix. They run
before any run directory is created or any process started.
"""

from __future__ import annotations

import os
import re
import tempfile
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

from tmexp.config import Backend, Choice, Config, Device
from tmexp.core.schedules import ScheduleError, build_schedules
from tmexp.envs.maps import cycle_maps


class ConfigError(ValueError):
    """A mistake in the configuration a user gave."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def choice_type(key: str) -> type[Choice] | None:
    """The closed set (a ``Choice`` Enum of the schema) of a dotted config key, or None when it is not one."""
    node: typing.Any = Config
    for part in key.split("."):
        if not (isinstance(node, type) and is_dataclass(node)):
            return None
        node = typing.get_type_hints(node).get(part)
    return node if isinstance(node, type) and issubclass(node, Choice) else None


def choice_message(key: str, value, kind: type[Choice]) -> str:
    """The one line for a value outside a closed set."""
    message = f"{key} is {str(value)!r}: choose one of {', '.join(c.value for c in kind)}."
    if kind is Device:
        message += " For one GPU of several, set CUDA_VISIBLE_DEVICES."
    return message


def _check_choices(node, prefix: str = "") -> None:
    """Every ``Choice`` field holds a member of its set (composition already ensures it; a Config built in code
    does not)."""
    hints = typing.get_type_hints(type(node))
    for f in fields(node):
        value, kind = getattr(node, f.name), hints.get(f.name)
        if is_dataclass(value):
            _check_choices(value, f"{prefix}{f.name}.")
        elif isinstance(kind, type) and issubclass(kind, Choice):
            _require(any(value == c.value for c in kind), choice_message(prefix + f.name, value, kind))


def check_config(cfg: Config) -> None:
    """Raise ConfigError for the first problem found in ``cfg``, section by section."""
    _check_choices(cfg)
    _check_nn(cfg.nn)
    _check_btr(cfg.btr)
    _check_training(cfg)
    _check_replay_and_exploration(cfg)
    _check_performance(cfg.performance)
    _check_env(cfg)
    _check_map(cfg)
    _check_logger(cfg.logger)


def config_warnings(cfg: Config) -> list[str]:
    """Settings that are valid but do not do what they seem to (each a one-line warning)."""
    out = []
    if cfg.btr.use_munchausen and not cfg.nn.use_ddqn:
        out.append(
            "nn.use_ddqn=false has no effect with btr.use_munchausen=true: the Munchausen target uses the "
            "target network's own softmax policy at s' (as BTR's code does), so DDQN's argmax is never taken."
        )
    return out


def _check_nn(nn) -> None:
    _require(
        nn.iqn_n > 0 and nn.iqn_n % 2 == 0,
        f"nn.iqn_n is {nn.iqn_n}: it must be a positive even number (training taus are symmetric pairs).",
    )
    _require(nn.iqn_k > 0, f"nn.iqn_k is {nn.iqn_k}: it must be positive.")
    _require(nn.iqn_kappa > 0, f"nn.iqn_kappa is {nn.iqn_kappa}: it must be > 0.")
    _require(
        nn.dense_hidden_dimension >= 2 and nn.dense_hidden_dimension % 2 == 0,
        f"nn.dense_hidden_dimension is {nn.dense_hidden_dimension}: it must be an even number >= 2.",
    )
    _require(
        nn.iqn_embedding_dimension > 0,
        f"nn.iqn_embedding_dimension is {nn.iqn_embedding_dimension}: it must be positive.",
    )
    _require(nn.float_hidden_dim > 0, f"nn.float_hidden_dim is {nn.float_hidden_dim}: it must be positive.")
    _require(0 < nn.soft_update_tau <= 1, f"nn.soft_update_tau is {nn.soft_update_tau}: it must be in (0, 1].")
    _require(nn.clip_grad_norm > 0, f"nn.clip_grad_norm is {nn.clip_grad_norm}: it must be > 0.")
    _require(nn.clip_grad_value > 0, f"nn.clip_grad_value is {nn.clip_grad_value}: it must be > 0.")
    _require(
        nn.number_memories_trained_on_between_target_network_updates > 0,
        "nn.number_memories_trained_on_between_target_network_updates must be positive.",
    )
    cnn = nn.vis.cnn
    _require(cnn.width_scale >= 1, f"nn.vis.cnn.width_scale is {cnn.width_scale}: it must be >= 1.")
    _require(cnn.input_pool >= 1, f"nn.vis.cnn.input_pool is {cnn.input_pool}: use 1 (off) or a pooling factor >= 2.")
    _require(
        nn.size_scale > 0 and round(nn.dense_hidden_dimension * nn.size_scale) >= 2,
        f"nn.size_scale is {nn.size_scale}: it must be > 0 and leave nn.dense_hidden_dimension "
        f"({nn.dense_hidden_dimension}) at least 2.",
    )
    _require(
        cnn.adaptive_maxpool_size is None or cnn.adaptive_maxpool_size >= 1,
        f"nn.vis.cnn.adaptive_maxpool_size is {cnn.adaptive_maxpool_size}: use a size >= 1 or null (off).",
    )


def _check_btr(b) -> None:
    _require(b.munchausen_entropy_tau > 0, f"btr.munchausen_entropy_tau is {b.munchausen_entropy_tau}: it must be > 0.")
    _require(0 <= b.munchausen_alpha <= 1, f"btr.munchausen_alpha is {b.munchausen_alpha}: it must be in [0, 1].")
    _require(b.munchausen_lo < 0, f"btr.munchausen_lo is {b.munchausen_lo}: it must be negative.")
    _require(b.noisy_sigma0 >= 0, f"btr.noisy_sigma0 is {b.noisy_sigma0}: it must be >= 0.")


def _check_training(cfg: Config) -> None:
    t, e = cfg.training, cfg.env
    _require(t.batch_size > 0, f"training.batch_size is {t.batch_size}: it must be a positive integer.")
    _require(t.n_steps >= 1, f"training.n_steps is {t.n_steps}: it must be >= 1.")
    ms_per_action = e.ms_per_tm_engine_step * e.tm_engine_step_per_action
    _require(
        t.temporal_mini_race_duration_ms == 0 or t.temporal_mini_race_duration_ms >= ms_per_action,
        f"training.temporal_mini_race_duration_ms is {t.temporal_mini_race_duration_ms}: use 0 (off) or at least "
        f"one action ({ms_per_action} ms).",
    )
    _require(
        t.oversample_long_term_steps >= 0 and t.oversample_maximum_term_steps >= 0,
        "training.oversample_long_term_steps and training.oversample_maximum_term_steps must be >= 0.",
    )
    _require(t.max_frames >= 0, f"training.max_frames is {t.max_frames}: use 0 (no limit) or a positive number.")
    _require(t.max_minutes >= 0, f"training.max_minutes is {t.max_minutes}: use 0 (no limit) or a positive number.")
    _require(
        t.checkpoint_every_minutes > 0,
        f"training.checkpoint_every_minutes is {t.checkpoint_every_minutes}: it must be > 0.",
    )
    # w *= 1 - ratio * lr: a ratio near 1 / lr would zero every weight at each step.
    _require(
        0 <= t.weight_decay_lr_ratio < 1000,
        f"training.weight_decay_lr_ratio is {t.weight_decay_lr_ratio}: use a value in [0, 1000) (Linesight: 0.1).",
    )


def _check_replay_and_exploration(cfg: Config) -> None:
    t, m = cfg.training, cfg.memory
    _require(
        m.number_times_single_memory_is_used_before_discard > 0,
        "memory.number_times_single_memory_is_used_before_discard must be > 0.",
    )
    _require(
        0 <= t.min_replay_ratio <= m.number_times_single_memory_is_used_before_discard,
        f"training.min_replay_ratio is {t.min_replay_ratio}: it must lie between 0 (collectors never "
        f"wait) and memory.number_times_single_memory_is_used_before_discard "
        f"({m.number_times_single_memory_is_used_before_discard}), or collectors and learner wait on each other.",
    )
    _require(m.prio_alpha >= 0, f"memory.prio_alpha is {m.prio_alpha}: it must be >= 0 (0 = uniform sampling).")
    _require(
        m.prio_epsilon > 0 or m.prio_alpha == 0, f"memory.prio_epsilon is {m.prio_epsilon}: it must be > 0 with PER on."
    )
    try:
        schedules = build_schedules(t, m, cfg.exploration)
    except ScheduleError as error:
        raise ConfigError(str(error)) from error
    _require(all(0 <= v <= 1 for v in schedules.gamma.values), "training.gamma_schedule has a value outside [0, 1].")
    for name, schedule in (
        ("exploration.epsilon_schedule", schedules.epsilon),
        ("exploration.epsilon_boltzmann_schedule", schedules.epsilon_boltzmann),
    ):
        _require(all(0 < v <= 1 for v in schedule.values), f"{name} has a value outside (0, 1].")
    first_capacity = m.memory_size_schedule[0][1][0]
    _require(
        t.batch_size <= first_capacity,
        f"training.batch_size ({t.batch_size}) is larger than the replay capacity ({first_capacity}) in "
        "memory.memory_size_schedule.",
    )


def _check_performance(p) -> None:
    _require(
        p.gpu_collectors_count >= 1, f"performance.gpu_collectors_count is {p.gpu_collectors_count}: it must be >= 1."
    )
    _require(
        p.cars_per_collector >= 1,
        f"performance.cars_per_collector is {p.cars_per_collector}: it must be >= 1 (the cars one collector "
        "process drives).",
    )
    _require(p.max_rollout_queue_size >= 1, "performance.max_rollout_queue_size must be >= 1.")
    _require(
        p.job_slots >= 0,
        f"performance.job_slots is {p.job_slots}: use 0 (no limit) or the number of jobs "
        "of a multirun that may train at once.",
    )
    _require(
        p.max_retries >= 0,
        f"performance.max_retries is {p.max_retries}: use 0 (a failed job stays failed) or "
        "the number of times a failed job is started again.",
    )
    _require(
        p.update_inference_network_every_n_actions >= 1,
        "performance.update_inference_network_every_n_actions must be >= 1.",
    )
    _require(
        p.send_shared_network_every_n_batches >= 1, "performance.send_shared_network_every_n_batches must be >= 1."
    )
    if p.device == Device.cuda:
        import torch

        _require(
            torch.cuda.is_available(),
            "performance.device is 'cuda' but no CUDA device is available: use performance.device=auto or cpu, "
            "or install a CUDA build of torch.",
        )


def _check_env(cfg: Config) -> None:
    e = cfg.env
    _require(e.w_downsized >= 16 and e.h_downsized >= 16, "env.w_downsized and env.h_downsized must be >= 16 pixels.")
    _require(e.tm_engine_step_per_action >= 1, "env.tm_engine_step_per_action must be >= 1.")
    _require(
        e.cutoff_rollout_if_race_not_finished_within_duration_ms > 0,
        "env.cutoff_rollout_if_race_not_finished_within_duration_ms must be > 0.",
    )
    if e.backend == Backend.tmi:
        _require(
            cfg.performance.cars_per_collector == 1,
            f"performance.cars_per_collector is {cfg.performance.cars_per_collector}: env=tmi drives one game "
            "per collector, so set it to 1 (and performance.gpu_collectors_count to the number of games).",
        )
        _check_game(cfg)


def _check_game(cfg: Config) -> None:
    """A launch command or a game already listening (started by hand); a float statistics file that fits the run."""
    from tmexp.envs.float_stats import FloatStatsError, load
    from tmexp.envs.tmi.errors import GameNotConfigured
    from tmexp.envs.tmi.instances import GameInstance
    from tmexp.envs.track import TrackError, load_map

    tmi = cfg.env.tmi
    try:
        GameInstance(tmi, tmi.base_tmi_port).check_configured()
    except GameNotConfigured as error:
        raise ConfigError(str(error)) from error
    maps = cycle_maps(cfg.map)
    if len(maps) > 1:
        for i, m in enumerate(maps):
            _require(
                bool(m.map_path),
                f"map.cycle[{i}].map_path is empty: on env=tmi each map of a cycle names the "
                "game's .Challenge.Gbx that TMInterface's map command loads.",
            )
    if tmi.float_stats_path and Path(tmi.float_stats_path).is_file():
        try:  # a cycle's statistics are its first map's (docs/maps.md)
            load(
                tmi.float_stats_path,
                load_map(maps[0].short_name, maps[0].reference_line_path),
                cfg.env,
                setting="env.tmi.float_stats_path",
            )
        except (FloatStatsError, TrackError) as error:
            raise ConfigError(str(error)) from error


_MAP_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


def _check_map(cfg) -> None:
    """The one map, or every map of ``map.cycle``: a usable name, race counts and a track."""
    from tmexp.envs.track import TrackError, load_map

    m = cfg.map
    if m.cycle:
        _require(
            not m.reference_line_path and not m.map_path,
            "map.reference_line_path and map.map_path are set beside map.cycle: give each map's own in its "
            "map.cycle entry instead.",
        )
    maps = cycle_maps(m)
    for i, entry in enumerate(maps):
        key = f"map.cycle[{i}]." if m.cycle else "map."
        _require(
            bool(_MAP_NAME.fullmatch(entry.short_name)),
            f"{key}short_name is {entry.short_name!r}: name the map with letters, digits and _ . + - only (it "
            "names the map's tags and best_runs files).",
        )
        _require(
            entry.explo_races >= 0 and entry.eval_races >= 0 and entry.explo_races + entry.eval_races > 0,
            f"{key}explo_races_per_cycle and {key}eval_races_per_cycle must be >= 0 with at least one race per cycle.",
        )
        path = entry.reference_line_path
        if path is not None and not Path(path).is_file():
            raise ConfigError(
                f"{key}reference_line_path {path!r} does not exist: give the path of a (N, 3) .npy reference line."
            )
        try:
            load_map(entry.short_name, path)
        except TrackError as error:
            raise ConfigError(str(error)) from error
    names = [entry.short_name for entry in maps]
    repeated = sorted({name for name in names if names.count(name) > 1})
    _require(
        not repeated,
        f"map.cycle names {', '.join(repeated)} more than once: give each map one entry (with "
        "its explo_races_per_cycle and eval_races_per_cycle).",
    )


def _check_logger(logger) -> None:
    import importlib.util

    _require(
        not logger.wandb or importlib.util.find_spec("wandb") is not None,
        "logger.wandb is true but the wandb package is not installed: pip install -e '.[wandb]' "
        "(or set logger.wandb=false).",
    )
    _require(bool(logger.wandb_project.strip()), "logger.wandb_project is empty: name the W&B project.")


def check_output_dir(path: str | os.PathLike) -> None:
    """Raise ConfigError unless ``path`` exists as a writable directory or can be created."""
    target = Path(path).absolute()
    probe = target
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"output directory {str(target)!r} cannot be created: {str(probe)!r} is a file. "
            "Set hydra.run.dir (or hydra.sweep.dir) to a writable directory."
        )
    try:  # try for real: permission bits do not stop root, read-only and virtual file systems do
        os.rmdir(tempfile.mkdtemp(prefix=".tmexp-write-check-", dir=probe))
    except OSError as error:
        raise ConfigError(
            f"output directory {str(target)!r} is not writable ({str(probe)!r} denies writing). "
            "Set hydra.run.dir (or hydra.sweep.dir) to a writable directory."
        ) from error
