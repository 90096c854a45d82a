"""The learner loop: rollouts in -> replay -> sample -> loss -> step -> target update -> metrics, weights out.

``Learner(run).train()`` is the shared training core every run of every sweep executes, on a ``Run`` that
``tmexp.core.build.build`` wired from the config. One iteration of its loop:

1. take every finished race from the rollout source (the serial source plays one when the learner would otherwise
   wait) and turn each into n-step transitions in replay;
2. if the replay ratio allows (samples used <= ratio x transitions added), train one batch; soft-update the
   target network every ``target_update_every_samples`` samples; publish weights every few batches; with
   ``min_replay_ratio``, tell the collectors how many frames they may have played;
3. every few seconds: a console line and the status file, TensorBoard scalars; every few minutes: a checkpoint.

It stops at ``training.max_frames`` / ``training.max_minutes``, or when asked to (preemption), always after
writing a checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tmexp import rundir
from tmexp.core import metrics
from tmexp.core.build import Run
from tmexp.core.optimization import soft_update, train_step
from tmexp.core.replay import mini_race_batch, nstep_transitions, rollout_end

log = logging.getLogger(__name__)


def _load_average() -> float:
    """The machine's 1-minute load average (NaN where the OS has none): how crowded the run's cores were."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return math.nan


class Learner:
    """Trains a ``Run``: the loop, its stop conditions and what it reports."""

    def __init__(self, run: Run, should_stop: Callable[[], bool] = lambda: False, observers: tuple = ()):
        self.run = run
        self.should_stop = should_stop
        # Take the console line instead of stdout: update(values, counters, line), and close(...) once at the end.
        self.observers = list(observers)
        self._interval_reset()
        self._last_logged_step = -1
        self._pace_base: tuple[int, int] | None = None  # (frames, samples used) when learning last began
        c = run.counters
        if c.eval_time_ema_s is not None and not c.eval_time_ema_by_map:  # a checkpoint from before map cycles
            c.eval_time_ema_by_map[run.settings.map_names[0]] = c.eval_time_ema_s
        c.eval_time_ema_s = None

    def train(self) -> str:
        """Train until a stop condition; return why it stopped.

        Returns "max_frames", "max_minutes", "stop_requested" (preemption) or "interrupted" (Ctrl-C).
        """
        run, s, c = self.run, self.run.settings, self.run.counters
        self.write_status("running", None, **({} if run.resumed else {"first_step_at": time.time()}))
        run.weights.publish(run.online)
        run.source.start()
        last_tick = last_console = last_log = last_checkpoint = time.time()
        reason = None
        try:
            while reason is None:
                # Take every finished race, then train if the replay ratio allows; else wait for a race.
                rollout = run.source.get(timeout=0.0 if self.can_train() else 0.5)
                while rollout is not None:
                    self.ingest(rollout)
                    rollout = run.source.get(timeout=0.0)
                if self.can_train() and self.done() is None:  # the last race may have reached max_frames
                    self.train_one_batch()
                self.pace_collectors()
                run.source.check_alive()
                now = time.time()
                c.training_seconds += now - last_tick
                last_tick = now
                if now - last_console >= s.console_every_s:
                    self.report(self.snapshot())
                    self.write_status("running")
                    last_console = now
                if now - last_log >= s.log_every_s:
                    self.log_scalars()
                    last_log = now
                if now - last_checkpoint >= s.checkpoint_every_s:
                    self.save()
                    last_checkpoint = now
                reason = self.done()
        except KeyboardInterrupt:
            reason = "interrupted"
            # a log record, not a print: it gets a line of its own, above the progress bar too
            log.warning("interrupted: saving a checkpoint (run again in the same directory to resume)")
        finally:
            # a stop signal: the final checkpoint must be on disk before the scheduler's SIGKILL
            deadline = time.monotonic() + s.preempt_save_deadline_s if reason == "stop_requested" else None
            run.source.stop()
        self.report(self.log_scalars(), end=True)
        self.save(wait=True, deadline=deadline)
        run.writer.close()
        return reason

    def done(self) -> str | None:
        s, c = self.run.settings, self.run.counters
        if s.max_frames and c.frames >= s.max_frames:
            return "max_frames"
        if s.max_minutes and c.training_seconds >= 60 * s.max_minutes:
            return "max_minutes"
        if self.should_stop():
            return "stop_requested"
        return None

    # ----- rollouts ----------------------------------------------------------------------------------------------
    def ingest(self, rollout: dict[str, Any]) -> None:
        """Store a race in replay and log its results under its map's tags."""
        run, s, c = self.run, self.run.settings, self.run.counters
        sched = run.schedules.at(c.frames)
        terminal, stuck_actions = rollout_end(
            rollout["terminated"],
            rollout.get("cutoff"),
            rollout["race_time_ms"],
            s.no_progress_cutoff_value,
            s.race_timeout_ms,
            s.ms_per_action,
        )
        block = nstep_transitions(
            rollout["img"],
            rollout["floats"],
            rollout["actions"],
            rollout["rewards"],
            rollout["greedy"],
            terminal,
            s.n_steps,
            sched["gamma"],
            s.discard_non_greedy_actions_in_nsteps,
            stuck_actions=stuck_actions,
            stuck_reward_per_action=s.stuck_reward_per_action,
        )
        run.replay.set_capacity(sched["memory_capacity"])
        run.replay.add(block)
        n = len(block)
        c.frames += n
        c.transitions_added += n
        c.races += 1
        run.frames_played.value = c.frames
        self.interval["frames"] += n
        c.eval_races += int(rollout["is_eval"])
        if "next_race_index" in rollout:  # the car's place in the map cycle, kept across a resume
            c.cycle_position[int(rollout["car"])] = int(rollout["next_race_index"])
        m = self.race_map(rollout)
        self._keep_if_best(rollout)
        ema = metrics.log_race(
            run.writer,
            rollout,
            c.frames,
            m,
            c.eval_time_ema_by_map.get(m),
            c.alltime_min_ms.get(m),
            batches=c.batches,
            training_seconds=c.training_seconds,
        )
        if ema is not None:
            c.eval_time_ema_by_map[m] = ema

    def race_map(self, rollout: dict[str, Any]) -> str:
        """The short name of the map the race was on (a one-map run's races may not say)."""
        return rollout.get("map") or self.run.settings.map_names[0]

    def _keep_if_best(self, rollout: dict[str, Any]) -> None:
        """A finished race faster than any before on its map: record its time and save its actions
        (``best_runs/<map>_<ms>.npy``)."""
        s, c, m, ms = self.run.settings, self.run.counters, self.race_map(rollout), rollout["race_time_ms"]
        if not rollout["finished"] or ms >= c.alltime_min_ms.get(m, math.inf):
            return
        c.alltime_min_ms[m] = int(ms)
        if c.frames >= s.frames_before_save_best_runs:
            best = rundir.RunDir(self.run.run_dir).best_runs
            best.mkdir(exist_ok=True)
            np.save(best / f"{m}_{ms}.npy", rollout["actions"])
        log.info("new best %s: %.2f s (%s race)", m, ms / 1000, "eval" if rollout["is_eval"] else "explo")

    # ----- training ----------------------------------------------------------------------------------------------
    def can_train(self) -> bool:
        run, c = self.run, self.run.counters
        start_learn = run.schedules.at(c.frames)["memory_start_learn"]
        allowance = run.settings.replay_ratio * (c.transitions_added - start_learn)
        if len(run.replay) < start_learn:
            # No allowance builds up while the buffer fills (at the start, or after a resume emptied it).
            c.samples_used = max(c.samples_used, int(allowance))
            return False
        return c.samples_used + run.settings.batch_size <= allowance

    def pace_collectors(self) -> None:
        """Let the collectors play ``min_replay_ratio`` frames' worth of the samples trained since learning began.

        While replay fills (at the start, or after a resume that emptied it) they play freely. One batch of slack
        keeps collectors and learner from waiting on each other when the minimum ratio equals the maximum.
        """
        run, c, ratio = self.run, self.run.counters, self.run.settings.min_replay_ratio
        if ratio <= 0:
            return
        if len(run.replay) < run.schedules.at(c.frames)["memory_start_learn"]:
            self._pace_base = None
            run.frames_allowed.value = math.inf
            return
        if self._pace_base is None:
            self._pace_base = (c.frames, c.samples_used)
        frames, samples = self._pace_base
        run.frames_allowed.value = frames + (c.samples_used - samples + run.settings.batch_size) / ratio

    def train_one_batch(self) -> None:
        run, s, c = self.run, self.run.settings, self.run.counters
        sched = run.schedules.at(c.frames)
        batch_np, idx = run.replay.sample(s.batch_size)
        if s.mini_race_actions:
            batch_np = mini_race_batch(
                batch_np,
                run.replay.rng,
                s.mini_race_actions,
                s.oversample_long_term_steps,
                s.oversample_maximum_term_steps,
                s.stuck_reward_per_action,
            )
        t0 = time.perf_counter()
        batch = {
            k: torch.from_numpy(v).to(run.device, non_blocking=True)
            for k, v in batch_np.items()
            if k not in ("reward_partial", "n_steps", "stuck_actions")
        }
        out = train_step(
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
        if "td_errors" in out:
            run.replay.update_priorities(idx, np.asarray(out["td_errors"]))
        c.batches += 1
        c.samples_used += s.batch_size
        c.samples_since_target_update += s.batch_size
        if c.samples_since_target_update >= s.target_update_every_samples:
            soft_update(run.target, run.online, s.soft_update_tau)
            c.samples_since_target_update = 0
        if c.batches % s.publish_every_n_batches == 0:
            run.weights.publish(run.online)
        self.interval["train_s"] += time.perf_counter() - t0
        self.interval["batches"] += 1
        self.interval["loss"].append(float(out["loss"]))
        if "grad_norm" in out:
            self.interval["grad_norm"].append(float(out["grad_norm"]))

    def save(self, wait: bool = False, deadline: float | None = None) -> None:
        """Checkpoint the run; it is written in the background unless ``wait`` (the end of a run), by ``deadline``
        (``time.monotonic()``) when one is given."""
        run = self.run
        blocked = run.checkpointer.save(
            online=run.online,
            target=run.target,
            optimizer=run.optimizer,
            scaler=run.scaler,
            self_loss=run.self_loss,
            replay=run.replay,
            counters=run.counters,
            wait=wait,
            deadline=deadline,
        )
        log.debug("checkpoint at frame %d: the learner waited %.3f s", run.counters.frames, blocked)

    # ----- reporting ---------------------------------------------------------------------------------------------
    def write_status(self, status: str, error: str | None = None, **extra: Any) -> None:
        s, c = self.run.settings, self.run.counters
        counters = c.status(s.map_names[0])
        counters["best_ms"] = {m: c.alltime_min_ms.get(m) for m in s.map_names}  # every map of the cycle
        rundir.write_status(self.run.run_dir, status, error=error, **counters, **extra)

    def _interval_reset(self) -> None:
        self.interval: dict[str, Any] = {
            "start": time.time(),
            "frames": 0,
            "batches": 0,
            "train_s": 0.0,
            "loss": [],
            "grad_norm": [],
        }

    def snapshot(self) -> dict[str, float]:
        """The scalars of the current logging interval (without starting a new interval)."""
        run, c, iv = self.run, self.run.counters, self.interval
        dt = max(1e-6, time.time() - iv["start"])
        sched = run.schedules.at(c.frames)
        values = {
            metrics.LEARNER_PERCENTAGE: 100.0 * iv["train_s"] / dt,
            metrics.TRANSITIONS_LEARNED_PER_S: iv["batches"] * run.settings.batch_size / dt,
            metrics.FRAMES_PER_S: iv["frames"] / dt,
            metrics.UPDATES_PER_S: iv["batches"] / dt,
            metrics.LOAD_AVERAGE: _load_average(),
            metrics.LEARNING_RATE: sched["lr"],
            metrics.GAMMA: sched["gamma"],
            metrics.EPSILON: sched["epsilon"],
            metrics.EPSILON_BOLTZMANN: sched["epsilon_boltzmann"],
            metrics.MEMORY_SIZE: len(run.replay),
            metrics.COLLECTOR_RESTARTS: run.source.restarts,
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
        frames = self.run.counters.frames
        if frames == self._last_logged_step:  # one point per step: no frames since the last log
            return values
        self._last_logged_step = frames
        for tag, value in values.items():
            self.run.writer.add_scalar(tag, value, frames)
        self.run.writer.flush()
        self._interval_reset()
        return values

    def report(self, values: dict[str, float], end: bool = False) -> None:
        line = self.console_line(values)
        if not self.observers:
            print(line, flush=True)
        for observer in self.observers:
            (observer.close if end else observer.update)(values, self.run.counters, line)

    def console_line(self, values: dict[str, float]) -> str:
        run, c, names = self.run, self.run.counters, self.run.settings.map_names
        return metrics.console_line(
            values,
            map_name=names[0],
            training_seconds=c.training_seconds,
            frames=c.frames,
            races=c.races,
            batches=c.batches,
            best_ms=c.alltime_min_ms.get(names[0]),
            best_by_map={m: c.alltime_min_ms.get(m) for m in names} if len(names) > 1 else None,
            memory_size=len(run.replay),
            start_learn=run.schedules.at(c.frames)["memory_start_learn"],
        )
