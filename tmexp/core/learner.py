"""The learner loop: rollouts in -> replay -> sample -> loss -> step -> target update -> metrics, weights out.

``run_training`` is the whole shared training core that every run of every sweep executes. One iteration of its
loop reads like this:

1. take finished races from the collectors (or play one, in serial mode), turn them into n-step transitions;
2. while the replay ratio allows (samples used <= ratio x transitions added), train one batch; soft-update the
   target network every ``number_memories_trained_on_between_target_network_updates`` samples; publish weights;
3. every few seconds: TensorBoard scalars, a console line, the status file; every few minutes: a checkpoint.

It stops at ``training.max_frames`` / ``training.max_minutes``, or when asked to (preemption), always after
writing a checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.multiprocessing as mp

from tmexp import rundir
from tmexp.core import metrics
from tmexp.core.checkpoint import has_checkpoint, load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from tmexp.core.collectors import Collector, CollectorPool, CollectorSettings, WeightsSource
from tmexp.core.networks import build_network
from tmexp.core.optimization import SelfLossState, make_grad_scaler, make_optimizer, pick_device, soft_update, train_step
from tmexp.core.replay import ReplayBuffer, mini_race_batch, nstep_transitions
from tmexp.core.schedules import build_schedules

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """Everything that counts up over a run; saved in checkpoints so a resumed run continues them."""

    frames: int = 0
    batches: int = 0
    samples_used: int = 0
    transitions_added: int = 0
    races: int = 0
    eval_races: int = 0
    training_seconds: float = 0.0  # wall time spent inside this run, across resumes
    samples_since_target_update: int = 0
    alltime_min_ms: dict[str, int] = field(default_factory=dict)
    eval_time_ema_s: float | None = None  # rolling mean of finished eval race times (robust time)


def write_status(run_dir: Path, status: str, counters: Counters, map_name: str, error: str | None = None,
                 extra: dict[str, Any] | None = None) -> None:
    """Write ``status.json``: the job's own account of how it is doing."""
    rundir.write_status(run_dir, status, error=error, frames=counters.frames, batches=counters.batches,
                        races=counters.races, training_hours=counters.training_seconds / 3600,
                        wall_minutes=counters.training_seconds / 60,
                        best_ms={map_name: counters.alltime_min_ms.get(map_name)}, **(extra or {}))


def observation_shapes(env) -> tuple[tuple[int, int, int], int]:
    space = env.observation_space
    return tuple(space["img"].shape), int(space["floats"].shape[0])


class ResumeMismatch(ValueError):
    """A run directory holds a checkpoint of a run whose network or task differs from the config given."""


# Keys that must match to resume: the network's shape and the task. Everything else (budgets, schedules,
# collectors) may change between a run and its resumption.
_RESUME_KEYS = ("nn", "btr", "map.short_name", "env.w_downsized", "env.h_downsized", "env.backend",
                "training.temporal_mini_race_duration_ms")


def resume_structure(cfg) -> dict[str, Any]:
    """The resume-relevant keys of a config (a ``Config`` or its plain-dict form)."""
    from dataclasses import asdict, is_dataclass

    full = asdict(cfg) if is_dataclass(cfg) else cfg
    out = {}
    for key in _RESUME_KEYS:
        node = full
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def check_resumable(saved: dict[str, Any], current: dict[str, Any], run_dir: Path) -> None:
    for key in _RESUME_KEYS:
        if key in saved and saved[key] != current[key]:
            raise ResumeMismatch(
                f"{run_dir} holds a run with a different {key} than this command: resume it with the overrides it "
                "was started with (see its .hydra/overrides.yaml), or choose a new hydra.run.dir."
            )


class Trainer:
    """Wires network pair, optimizer, replay, schedules, writer and collectors for one run."""

    def __init__(self, cfg, run_dir: Path, should_stop: Callable[[], bool] = lambda: False):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.should_stop = should_stop
        self.map_name = cfg.map.short_name
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        if cfg.performance.torch_threads_learner > 0:
            torch.set_num_threads(cfg.performance.torch_threads_learner)
        self.device = pick_device(cfg.performance.device)
        self.schedules = build_schedules(cfg.training, cfg.memory, cfg.exploration)

        from tmexp.envs.factory import make_env

        probe = make_env(cfg.env, cfg.map, cfg.rewards, seed=cfg.seed)
        self.img_shape, self.float_dim = observation_shapes(probe)
        self.n_actions = int(probe.action_space.n)
        # Mini-races: the network also sees the time within the mini-race, as its first float.
        ms_per_action = cfg.env.ms_per_tm_engine_step * cfg.env.tm_engine_step_per_action
        self.mini_race_actions = cfg.training.temporal_mini_race_duration_ms // ms_per_action
        net_float_dim = self.float_dim + (1 if self.mini_race_actions else 0)
        gamma_one_at = next((frame for frame, value in zip(self.schedules.gamma.frames, self.schedules.gamma.values)
                             if value >= 1), None)
        if not self.mini_race_actions and gamma_one_at is not None:
            log.warning("training.gamma_schedule reaches 1 at frame %d with mini-races off: from then on values have "
                        "no horizon; set training.temporal_mini_race_duration_ms=7000 (Linesight) for runs that long.",
                        gamma_one_at)

        float_mean = float_std = None
        if cfg.nn.normalize_floats and hasattr(probe, "float_stats"):
            float_mean, float_std = probe.float_stats()
            if self.mini_race_actions:  # the mini-race time, first, is already in [0, 1]
                float_mean, float_std = np.concatenate(([0.0], float_mean)), np.concatenate(([1.0], float_std))
        cl = cfg.performance.channels_last
        self.online = build_network(cfg.nn, cfg.btr, self.img_shape, net_float_dim, self.n_actions, channels_last=cl,
                                    float_mean=float_mean, float_std=float_std).to(self.device)
        self.target = build_network(cfg.nn, cfg.btr, self.img_shape, net_float_dim, self.n_actions, channels_last=cl,
                                    float_mean=float_mean, float_std=float_std).to(self.device)
        self.target.load_state_dict(self.online.state_dict())
        self.target.requires_grad_(False)
        self.optimizer = make_optimizer(self.online.parameters(), cfg.training)
        self.scaler = make_grad_scaler(self.device) if cfg.performance.use_amp else None
        self.self_loss = SelfLossState()

        max_capacity = max(int(p[1][0]) for p in cfg.memory.memory_size_schedule)
        self.replay = ReplayBuffer(max_capacity, self.img_shape, self.float_dim, seed=cfg.seed,
                                   n_steps=cfg.training.n_steps, prio_alpha=cfg.memory.prio_alpha,
                                   prio_beta=cfg.memory.prio_beta, prio_epsilon=cfg.memory.prio_epsilon)
        self.counters = Counters()
        self.resumed = has_checkpoint(self.run_dir)
        if self.resumed:
            self._load()

        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events logged after the checkpoint by a run that was killed, so steps stay monotonic.
        self.writer = SummaryWriter(str(rundir.RunDir(self.run_dir).tensorboard),
                                    purge_step=self.counters.frames if self.resumed else None)
        if not self.resumed:
            self._write_hparams()

        self.ctx = mp.get_context("spawn")
        self.weights = WeightsSource(self.online, self.ctx)
        self.frames_played = self.ctx.Value("q", self.counters.frames)
        settings = CollectorSettings(
            env=cfg.env, map=cfg.map, rewards=cfg.rewards, nn=cfg.nn, btr=cfg.btr, exploration=cfg.exploration,
            global_schedule_speed=cfg.training.global_schedule_speed, img_shape=self.img_shape,
            float_dim=net_float_dim, n_actions=self.n_actions, mini_race=bool(self.mini_race_actions),
            device="cpu" if self.device.type == "cpu" else str(self.device),
            seed=cfg.seed * 7919 + self.counters.races, torch_threads=cfg.performance.torch_threads_collector,
            update_every_n_actions=cfg.performance.update_inference_network_every_n_actions,
            nice=cfg.performance.collector_nice,
        )
        self.serial = cfg.performance.serial
        if self.serial:  # the probe env becomes the collector's: no second build of the track
            self.collector = Collector(settings, 0, self.weights, self.frames_played, env=probe)
            self.pool = None
        else:
            getattr(probe, "close", lambda: None)()
            self.collector = None
            self.pool = CollectorPool(settings, cfg.performance.gpu_collectors_count, self.weights,
                                      self.frames_played, self.ctx, cfg.performance.max_rollout_queue_size)
        self._interval_reset()
        self._last_logged_step = -1

    # ----- state -------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "self_loss": self.self_loss.state_dict(),
            "counters": self.counters.__dict__.copy(),
            "rng": rng_state(),
            "replay_rng": self.replay.rng.bit_generator.state,
            "config": resume_structure(self.cfg),
        }

    def _load(self) -> None:
        state = load_checkpoint(self.run_dir, map_location=self.device)
        check_resumable(state.get("config", {}), resume_structure(self.cfg), self.run_dir)
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.counters = Counters(**state["counters"])
        self.self_loss.load_state_dict(state["self_loss"])
        restore_rng_state(state["rng"])
        self.replay.rng.bit_generator.state = state["replay_rng"]
        log.info("resumed from checkpoint: %d frames, %d batches", self.counters.frames, self.counters.batches)

    def save(self) -> None:
        save_checkpoint(self.run_dir, self._state())

    def _write_hparams(self) -> None:
        from torch.utils.tensorboard.summary import hparams

        c = self.cfg
        params = {
            "run_name": c.run_name, "seed": c.seed, "cnn": c.nn.vis.cnn.type, "cnn_width_scale": c.nn.vis.cnn.width_scale,
            "adaptive_maxpool": c.nn.vis.cnn.adaptive_maxpool_size or 0, "spectral_norm": c.nn.vis.cnn.spectral_norm,
            "munchausen": c.btr.use_munchausen, "layer_norm": c.btr.use_layer_norm, "noisy": c.btr.use_noisy_linear,
            "dense": c.nn.dense_hidden_dimension, "iqn_embedding": c.nn.iqn_embedding_dimension, "ddqn": c.nn.use_ddqn,
            "clip_grad_norm": c.nn.clip_grad_norm, "weight_decay_lr_ratio": c.training.weight_decay_lr_ratio,
            "global_schedule_speed": c.training.global_schedule_speed, "batch_size": c.training.batch_size,
        }
        exp, ssi, sei = hparams(params, {metrics.alltime_min_ms(self.map_name): 0.0, metrics.LOSS: 0.0})
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)

    # ----- rollouts ----------------------------------------------------------------------------------------
    def ingest(self, rollout: dict[str, Any]) -> None:
        """Store a race in replay and log its results."""
        c = self.counters
        sched = self.schedules.at(c.frames)
        block = nstep_transitions(rollout["img"], rollout["floats"], rollout["actions"], rollout["rewards"],
                                  rollout["greedy"], rollout["terminated"], self.cfg.training.n_steps, sched["gamma"],
                                  self.cfg.training.discard_non_greedy_actions_in_nsteps)
        self.replay.set_capacity(sched["memory_capacity"])
        self.replay.add(block)
        n = len(block)
        c.frames += n
        c.transitions_added += n
        c.races += 1
        self.frames_played.value = c.frames
        self.interval["frames"] += n
        self._log_race(rollout)

    def _log_race(self, r: dict[str, Any]) -> None:
        c, m, step = self.counters, self.map_name, self.counters.frames
        finished = r["finished"]
        race_s = r["race_time_ms"] / 1000 if finished else metrics.RACE_CUTOFF_S
        progress_tag = metrics.eval_race_progress(m) if r["is_eval"] else metrics.explo_race_progress(m)
        if "progress_m" in r:
            self.writer.add_scalar(progress_tag, r["progress_m"], step)
        if r["is_eval"]:
            c.eval_races += 1
            self.writer.add_scalar(metrics.eval_race_time(m), race_s, step)
            self.writer.add_scalar(metrics.eval_race_finished(m), float(finished), step)
            if finished:
                ema = c.eval_time_ema_s if c.eval_time_ema_s is not None else race_s
                if race_s <= 1.02 * ema:
                    self.writer.add_scalar(metrics.eval_race_time_robust(m), race_s, step)
                c.eval_time_ema_s = 0.9 * ema + 0.1 * race_s
        else:
            self.writer.add_scalar(metrics.explo_race_time(m), race_s, step)
            self.writer.add_scalar(metrics.explo_race_finished(m), float(finished), step)
        if len(r["q_taken"]):
            self.writer.add_scalar(metrics.avg_q(m), float(np.mean(r["q_taken"])), step)
        if finished and r["race_time_ms"] < c.alltime_min_ms.get(m, math.inf):
            c.alltime_min_ms[m] = int(r["race_time_ms"])
            if c.frames >= self.cfg.performance.frames_before_save_best_runs:
                best = rundir.RunDir(self.run_dir).best_runs
                best.mkdir(exist_ok=True)
                np.save(best / f"{m}_{r['race_time_ms']}.npy", r["actions"])
            log.info("new best %s: %.2f s (%s race)", m, r["race_time_ms"] / 1000, "eval" if r["is_eval"] else "explo")
        best_ms = c.alltime_min_ms.get(m, int(metrics.RACE_CUTOFF_S * 1000))
        self.writer.add_scalar(metrics.alltime_min_ms(m), best_ms, step)

    # ----- training ----------------------------------------------------------------------------------------
    def can_train(self) -> bool:
        c = self.counters
        start_learn = self.schedules.at(c.frames)["memory_start_learn"]
        ratio = self.cfg.memory.number_times_single_memory_is_used_before_discard
        allowance = ratio * (c.transitions_added - start_learn)
        if len(self.replay) < start_learn:
            # No allowance builds up while the buffer fills (at the start, or after a resume emptied it).
            c.samples_used = max(c.samples_used, int(allowance))
            return False
        return c.samples_used + self.cfg.training.batch_size <= allowance

    def train_one_batch(self) -> None:
        c, cfg = self.counters, self.cfg
        sched = self.schedules.at(c.frames)
        batch_np, idx = self.replay.sample(cfg.training.batch_size)
        if self.mini_race_actions:
            batch_np = mini_race_batch(batch_np, self.replay.rng, self.mini_race_actions,
                                       cfg.training.oversample_long_term_steps, cfg.training.oversample_maximum_term_steps)
        t0 = time.perf_counter()
        batch = {k: torch.from_numpy(v).to(self.device, non_blocking=True) for k, v in batch_np.items()
                 if k not in ("reward_partial", "n_steps")}
        out = train_step(self.online, self.target, self.optimizer, self.scaler, batch, nn_cfg=cfg.nn, btr_cfg=cfg.btr,
                         lr=sched["lr"], gamma=sched["gamma"],
                         weight_decay_lr_ratio=cfg.training.weight_decay_lr_ratio, self_loss_state=self.self_loss)
        if "td_errors" in out:
            self.replay.update_priorities(idx, np.asarray(out["td_errors"]))
        c.batches += 1
        c.samples_used += cfg.training.batch_size
        c.samples_since_target_update += cfg.training.batch_size
        if c.samples_since_target_update >= cfg.nn.number_memories_trained_on_between_target_network_updates:
            soft_update(self.target, self.online, cfg.nn.soft_update_tau)
            c.samples_since_target_update = 0
        if c.batches % cfg.performance.send_shared_network_every_n_batches == 0:
            self.weights.publish(self.online)
        self.interval["train_s"] += time.perf_counter() - t0
        self.interval["batches"] += 1
        self.interval["loss"].append(float(out["loss"]))
        if "grad_norm" in out:
            self.interval["grad_norm"].append(float(out["grad_norm"]))

    # ----- reporting ---------------------------------------------------------------------------------------
    def _interval_reset(self) -> None:
        self.interval = {"start": time.time(), "frames": 0, "batches": 0, "train_s": 0.0, "loss": [], "grad_norm": []}

    def snapshot(self) -> dict[str, float]:
        """The scalars of the current logging interval (without starting a new interval)."""
        c, iv = self.counters, self.interval
        dt = max(1e-6, time.time() - iv["start"])
        sched = self.schedules.at(c.frames)
        values = {
            metrics.LEARNER_PERCENTAGE: 100.0 * iv["train_s"] / dt,
            metrics.TRANSITIONS_LEARNED_PER_S: iv["batches"] * self.cfg.training.batch_size / dt,
            metrics.FRAMES_PER_S: iv["frames"] / dt,
            metrics.LEARNING_RATE: sched["lr"],
            metrics.GAMMA: sched["gamma"],
            metrics.EPSILON: sched["epsilon"],
            metrics.EPSILON_BOLTZMANN: sched["epsilon_boltzmann"],
            metrics.MEMORY_SIZE: len(self.replay),
            metrics.COLLECTOR_RESTARTS: self.pool.restarts if self.pool else 0,
            metrics.CUMUL_FRAMES: c.frames,
            metrics.CUMUL_BATCHES: c.batches,
            metrics.CUMUL_TRAINING_HOURS: c.training_seconds / 3600,
        }
        if iv["loss"]:
            values[metrics.LOSS] = float(np.mean(iv["loss"]))
        if iv["grad_norm"]:
            values[metrics.GRAD_NORM] = float(np.mean(iv["grad_norm"]))
        return values

    def log_scalars(self) -> dict[str, float]:
        """Write the interval's scalars to TensorBoard at step = frames played, then start a new interval."""
        values = self.snapshot()
        if self.counters.frames == self._last_logged_step:  # one point per step: no frames since the last log
            return values
        self._last_logged_step = self.counters.frames
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, self.counters.frames)
        self.writer.flush()
        self._interval_reset()
        return values

    def console_line(self, values: dict[str, float]) -> str:
        c = self.counters
        best = c.alltime_min_ms.get(self.map_name)
        head = (f"[{int(c.training_seconds // 60):4d}m{int(c.training_seconds % 60):02d}s] frames {c.frames:,} "
                f"({values[metrics.FRAMES_PER_S]:.0f}/s) | races {c.races} | "
                f"best {self.map_name} {f'{best / 1000:.2f} s' if best is not None else '-'}")
        start_learn = self.schedules.at(c.frames)["memory_start_learn"]
        if len(self.replay) < start_learn:
            return f"{head} | filling replay {len(self.replay):,}/{start_learn:,}"
        loss = values.get(metrics.LOSS)
        return (f"{head} | batches {c.batches:,} | learner {values[metrics.LEARNER_PERCENTAGE]:.0f}% | "
                f"loss {f'{loss:.4g}' if loss is not None else '-'} | eps {values[metrics.EPSILON]:.3f} | "
                f"memory {len(self.replay):,}")

    # ----- the loop ----------------------------------------------------------------------------------------
    def done(self) -> str | None:
        t = self.cfg.training
        if t.max_frames and self.counters.frames >= t.max_frames:
            return "max_frames"
        if t.max_minutes and self.counters.training_seconds >= 60 * t.max_minutes:
            return "max_minutes"
        if self.should_stop():
            return "stop_requested"
        return None

    def run(self) -> str:
        """Train until a stop condition; return why it stopped.

        Returns "max_frames", "max_minutes", "stop_requested" (preemption) or "interrupted" (Ctrl-C).
        """
        cfg, c = self.cfg, self.counters
        write_status(self.run_dir, "running", c, self.map_name,
                     extra={} if self.resumed else {"first_step_at": time.time()})
        self.weights.publish(self.online)
        if self.pool is not None:
            self.pool.start()
        last_tick = time.time()
        last_log = last_console = last_ckpt = last_tick
        reason = None
        try:
            while reason is None:
                if self.serial:
                    try:
                        rollout = self.collector.play_race()
                    except ConnectionError as error:  # a game connection lost mid-race: drop the race whole
                        log.warning("discarded a rollout: %s", error)
                        continue
                    self.ingest(rollout)
                    while self.can_train() and self.done() is None:
                        self.train_one_batch()
                        now = time.time()
                        c.training_seconds += now - last_tick
                        last_tick = now
                else:
                    # Take every finished race, then train if the replay ratio allows; else wait for a race.
                    rollout = self.pool.get(timeout=0.0 if self.can_train() else 0.5)
                    while rollout is not None:
                        self.ingest(rollout)
                        rollout = self.pool.get(timeout=0.0)
                    if self.can_train():
                        self.train_one_batch()
                    self.pool.check_alive()
                now = time.time()
                c.training_seconds += now - last_tick
                last_tick = now
                if now - last_console >= cfg.training.console_every_seconds:
                    print(self.console_line(self.snapshot()), flush=True)
                    write_status(self.run_dir, "running", c, self.map_name)
                    last_console = now
                if now - last_log >= cfg.training.log_every_seconds:
                    self.log_scalars()
                    last_log = now
                if now - last_ckpt >= 60 * cfg.training.checkpoint_every_minutes:
                    self.save()
                    last_ckpt = now
                reason = self.done()
        except KeyboardInterrupt:
            reason = "interrupted"
            print("interrupted: saving a checkpoint (run again in the same directory to resume)", flush=True)
        finally:
            if self.pool is not None:
                self.pool.stop()
        values = self.log_scalars()
        print(self.console_line(values), flush=True)
        self.save()
        self.writer.close()
        return reason

    def close(self) -> None:
        if self.collector is not None:
            self.collector.close()
        self.writer.close()
