"""``build(cfg, run_dir) -> Run``: everything one run needs, wired from the config.

This is the only core module that reads the whole config tree. It probes the env for its spaces, works out the
mini-race length and the float statistics, builds the network pair, optimiser, grad scaler, replay, schedules, the
TensorBoard writer and the rollout source, resumes them from the run's checkpoint when there is one, and hands the
learner a ``Run`` with the few plain settings its loop needs (``LearnerSettings``).

The order of construction is the order of random draws, so a seed gives the same run as before: keep it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp

from tmexp import rundir
from tmexp.core import checkpoint, metrics
from tmexp.core.checkpoint import Counters
from tmexp.core.collectors import (
    Collector,
    CollectorPool,
    CollectorSettings,
    RolloutSource,
    SerialSource,
    WeightsSource,
)
from tmexp.core.networks import IQNNetwork, build_network
from tmexp.core.optimization import SelfLossState, make_grad_scaler, make_optimizer, pick_device
from tmexp.core.replay import ReplayBuffer
from tmexp.core.schedules import Schedules, build_schedules
from tmexp.envs.maps import MapCycle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spaces:
    """What the env's probe says about its observations and actions."""

    img_shape: tuple[int, int, int]  # (1, H, W), uint8 frames
    float_dim: int  # the env's float vector (the network gets one more, first, when mini-races are on)
    n_actions: int


@dataclass(frozen=True)
class LearnerSettings:
    """The plain numbers the learner's loop reads."""

    map_name: str  # map.short_name: the run's map, or its map cycle's name
    map_names: tuple[str, ...]  # the maps of the run's cycle, in order (one for a one-map run): the tags' names
    batch_size: int
    n_steps: int
    discard_non_greedy_actions_in_nsteps: bool
    replay_ratio: float  # samples trained on per transition added (memory.number_times_single_memory_is_used...)
    min_replay_ratio: float  # collectors pause below this many samples per transition (0: never)
    mini_race_actions: int  # mini-race length in actions; 0 when mini-races are off
    oversample_long_term_steps: int
    oversample_maximum_term_steps: int
    no_progress_cutoff_value: str  # bootstrap | stuck | zero (tmexp.core.replay.rollout_end)
    stuck_reward_per_action: float  # the time penalty of one action: what a stuck car keeps paying
    race_timeout_ms: int
    ms_per_action: int
    target_update_every_samples: int
    soft_update_tau: float
    publish_every_n_batches: int
    weight_decay_lr_ratio: float
    frames_before_save_best_runs: int
    console_every_s: float
    log_every_s: float
    checkpoint_every_s: float
    max_frames: int  # 0: no limit
    max_minutes: float  # 0: no limit
    nn: Any  # NNConfig: the loss's settings (quantiles, kappa, DDQN, gradient clipping)
    btr: Any  # BTRConfig: Munchausen and NoisyNet switches of the loss
    preempt_save_deadline_s: float = 20.0  # the final checkpoint after a stop signal is written within this


@dataclass
class Run:
    """One run, built and (when its directory holds a checkpoint) resumed: what the learner needs."""

    run_dir: Path
    settings: LearnerSettings
    spaces: Spaces
    device: torch.device
    online: IQNNetwork
    target: IQNNetwork
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None  # None: full precision
    self_loss: SelfLossState
    replay: ReplayBuffer
    schedules: Schedules
    counters: Counters
    resumed: bool
    structure: dict[str, Any]  # the config's resume keys, stored in each checkpoint
    checkpointer: checkpoint.Checkpointer
    writer: Any  # SummaryWriter
    weights: WeightsSource
    frames_played: Any  # shared int the collectors' schedules follow
    frames_allowed: Any  # shared float: collectors pause while frames_played exceeds it (the learner paces them)
    source: RolloutSource

    def close(self) -> None:
        self.source.close()
        self.writer.close()
        self.checkpointer.close()


def build(cfg, run_dir: str | Path, ignore_signals: tuple[int, ...] = ()) -> Run:
    """Build (or resume) the run of ``cfg`` (a ``tmexp.config.Config``) in ``run_dir``.

    Args:
        ignore_signals: signals the collector processes ignore, leaving them to the learner's process
            (preemption's, under a launcher).
    Raises:
        checkpoint.ResumeMismatch: ``run_dir`` holds a checkpoint of a run with another network or task.
        checkpoint.CheckpointError: ``run_dir`` holds checkpoints, none of them readable.
    """
    run_dir = Path(run_dir)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.performance.torch_threads_learner > 0:
        torch.set_num_threads(cfg.performance.torch_threads_learner)
    device = pick_device(cfg.performance.device)
    schedules = build_schedules(cfg.training, cfg.memory, cfg.exploration)

    from tmexp.envs.factory import make_env

    probe = make_env(cfg.env, cfg.map, cfg.rewards, seed=cfg.seed)
    spaces = Spaces(
        tuple(probe.observation_space["img"].shape),
        int(probe.observation_space["floats"].shape[0]),
        int(probe.action_space.n),
    )
    mini_race_actions = _mini_race_actions(cfg, schedules)
    net_float_dim = spaces.float_dim + (1 if mini_race_actions else 0)  # the mini-race time comes first
    float_mean, float_std = _float_stats(cfg, probe, run_dir, mini_race_actions)

    def network() -> IQNNetwork:
        return build_network(
            cfg.nn,
            cfg.btr,
            spaces.img_shape,
            net_float_dim,
            spaces.n_actions,
            channels_last=cfg.performance.channels_last,
            float_mean=float_mean,
            float_std=float_std,
        ).to(device)

    online, target = network(), network()
    target.load_state_dict(online.state_dict())
    target.requires_grad_(False)
    optimizer = make_optimizer(online.parameters(), cfg.training)
    scaler = make_grad_scaler(device) if cfg.performance.use_amp else None
    self_loss = SelfLossState()
    max_capacity = max(int(point[1][0]) for point in cfg.memory.memory_size_schedule)
    replay = ReplayBuffer(
        max_capacity,
        spaces.img_shape,
        spaces.float_dim,
        seed=cfg.seed,
        n_steps=cfg.training.n_steps,
        prio_alpha=cfg.memory.prio_alpha,
        prio_beta=cfg.memory.prio_beta,
        prio_epsilon=cfg.memory.prio_epsilon,
    )

    structure = checkpoint.resume_structure(cfg)
    checkpointer = checkpoint.Checkpointer(
        run_dir,
        structure,
        save_replay=cfg.training.save_replay,
        on_write_error=str(cfg.training.on_checkpoint_error),
        discard_replay=cfg.training.resume_discards_replay,
    )
    resumed = checkpoint.has_checkpoint(run_dir)
    counters = Counters()
    if resumed:
        counters = checkpointer.resume(
            device, online=online, target=target, optimizer=optimizer, scaler=scaler, self_loss=self_loss, replay=replay
        )
    # Every start hides what an earlier process logged from the frame it resumes from on (0: all of it, when it was
    # killed before its first checkpoint), so each tag's steps stay monotonic.
    writer = metrics.make_writer(rundir.RunDir(run_dir).tensorboard, purge_step=counters.frames)
    if not resumed:
        metrics.write_hparams(writer, hparams(cfg), MapCycle.of(cfg.map).names)

    ctx = mp.get_context("spawn")
    weights = WeightsSource(online, ctx)
    frames_played = ctx.Value("q", counters.frames)
    frames_allowed = ctx.Value("d", math.inf)
    p = cfg.performance
    collector_settings = CollectorSettings(
        env=cfg.env,
        map=cfg.map,
        rewards=cfg.rewards,
        nn=cfg.nn,
        btr=cfg.btr,
        exploration=cfg.exploration,
        global_schedule_speed=cfg.training.global_schedule_speed,
        img_shape=spaces.img_shape,
        float_dim=net_float_dim,
        n_actions=spaces.n_actions,
        mini_race=bool(mini_race_actions),
        device="cpu" if device.type == "cpu" else str(device),
        seed=cfg.seed * 7919 + counters.races,
        torch_threads=p.torch_threads_collector,
        update_every_n_actions=p.update_inference_network_every_n_actions,
        nice=p.collector_nice,
        ignore_signals=tuple(ignore_signals),
        cars=p.cars_per_collector,
        total_cars=p.cars_per_collector * (1 if p.serial else p.gpu_collectors_count),
        cycle_start=dict(counters.cycle_position),
    )
    source: RolloutSource
    if p.serial:  # the probe env becomes the collector's: no second build of the track
        source = SerialSource(Collector(collector_settings, 0, weights, frames_played, env=probe))
    else:
        getattr(probe, "close", lambda: None)()
        source = CollectorPool(
            collector_settings,
            p.gpu_collectors_count,
            weights,
            frames_played,
            ctx,
            p.max_rollout_queue_size,
            frames_allowed=frames_allowed,
        )

    return Run(
        run_dir=run_dir,
        settings=learner_settings(cfg, mini_race_actions),
        spaces=spaces,
        device=device,
        online=online,
        target=target,
        optimizer=optimizer,
        scaler=scaler,
        self_loss=self_loss,
        replay=replay,
        schedules=schedules,
        counters=counters,
        resumed=resumed,
        structure=structure,
        checkpointer=checkpointer,
        writer=writer,
        weights=weights,
        frames_played=frames_played,
        frames_allowed=frames_allowed,
        source=source,
    )


def learner_settings(cfg, mini_race_actions: int) -> LearnerSettings:
    t, m, p = cfg.training, cfg.memory, cfg.performance
    ms_per_action = cfg.env.ms_per_tm_engine_step * cfg.env.tm_engine_step_per_action
    return LearnerSettings(
        map_name=cfg.map.short_name,
        map_names=tuple(MapCycle.of(cfg.map).names),
        batch_size=t.batch_size,
        n_steps=t.n_steps,
        discard_non_greedy_actions_in_nsteps=t.discard_non_greedy_actions_in_nsteps,
        replay_ratio=m.number_times_single_memory_is_used_before_discard,
        min_replay_ratio=t.min_replay_ratio,
        mini_race_actions=mini_race_actions,
        oversample_long_term_steps=t.oversample_long_term_steps,
        oversample_maximum_term_steps=t.oversample_maximum_term_steps,
        no_progress_cutoff_value=str(t.no_progress_cutoff_value),
        stuck_reward_per_action=cfg.rewards.constant_reward_per_ms * ms_per_action,
        race_timeout_ms=cfg.env.cutoff_rollout_if_race_not_finished_within_duration_ms,
        ms_per_action=ms_per_action,
        target_update_every_samples=cfg.nn.number_memories_trained_on_between_target_network_updates,
        soft_update_tau=cfg.nn.soft_update_tau,
        publish_every_n_batches=p.send_shared_network_every_n_batches,
        weight_decay_lr_ratio=t.weight_decay_lr_ratio,
        frames_before_save_best_runs=p.frames_before_save_best_runs,
        console_every_s=t.console_every_seconds,
        log_every_s=t.log_every_seconds,
        checkpoint_every_s=60 * t.checkpoint_every_minutes,
        max_frames=t.max_frames,
        max_minutes=t.max_minutes,
        preempt_save_deadline_s=t.preempt_save_deadline_s,
        nn=cfg.nn,
        btr=cfg.btr,
    )


def hparams(cfg) -> dict[str, Any]:
    """The hyperparameters TensorBoard's HParams view shows for a run."""
    c, cnn = cfg, cfg.nn.vis.cnn
    return {
        "run_name": c.run_name,
        "seed": c.seed,
        "cnn": str(cnn.type),
        "cnn_width_scale": cnn.width_scale,
        "adaptive_maxpool": cnn.adaptive_maxpool_size or 0,
        "spectral_norm": cnn.spectral_norm,
        "munchausen": c.btr.use_munchausen,
        "layer_norm": c.btr.use_layer_norm,
        "noisy": c.btr.use_noisy_linear,
        "dense": c.nn.dense_hidden_dimension,
        "iqn_embedding": c.nn.iqn_embedding_dimension,
        "ddqn": c.nn.use_ddqn,
        "clip_grad_norm": c.nn.clip_grad_norm,
        "weight_decay_lr_ratio": c.training.weight_decay_lr_ratio,
        "global_schedule_speed": c.training.global_schedule_speed,
        "batch_size": c.training.batch_size,
    }


def _mini_race_actions(cfg, schedules: Schedules) -> int:
    """Linesight's mini-races, in actions (0: off); warns when gamma reaches 1 without them."""
    ms_per_action = cfg.env.ms_per_tm_engine_step * cfg.env.tm_engine_step_per_action
    actions = cfg.training.temporal_mini_race_duration_ms // ms_per_action
    gamma = schedules.gamma
    gamma_one_at = next((frame for frame, value in zip(gamma.frames, gamma.values) if value >= 1), None)
    if not actions and gamma_one_at is not None:
        log.warning(
            "training.gamma_schedule reaches 1 at frame %d with mini-races off: from then on values have "
            "no horizon; set training.temporal_mini_race_duration_ms=7000 (Linesight) for runs that long.",
            gamma_one_at,
        )
    return actions


def _float_stats(cfg, probe, run_dir: Path, mini_race_actions: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The (mean, std) the network standardises its float input with, or (None, None) when it does not.

    The env's statistics are measured once per run and recorded in the run directory, so a resumed run (and anyone
    reading the run) uses the same ones, a game run's included.
    """
    if not cfg.nn.normalize_floats:
        return None, None
    recorded = rundir.read_float_stats(run_dir)
    if recorded is not None:
        mean, std = (np.asarray(v, dtype=np.float32) for v in recorded)
    else:
        stats = probe.float_stats()  # the env contract (tmexp.envs.base): None when the backend has none
        if stats is None:
            return None, None
        mean, std = (np.asarray(v, dtype=np.float32) for v in stats)
        rundir.write_float_stats(run_dir, mean, std)
    if mini_race_actions:  # the mini-race time, first, is already in [0, 1]
        mean, std = np.concatenate(([0.0], mean)), np.concatenate(([1.0], std))
    return mean, std
