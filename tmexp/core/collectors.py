"""Rollout sources: collectors play races and hand whole rollouts to the learner; the learner hands back weights.

The boundary is narrow (Acme-style): rollouts go out through ``get``, weights come in through a ``WeightsSource``
(shared-memory tensors plus a version number) that each collector pulls from every ``update_every_n_actions``
actions. Two sources share the ``RolloutSource`` interface, so the learner's loop is the same for both:

- ``CollectorPool``: N collector processes feeding one bounded queue; dead collectors are restarted and counted;
- ``SerialSource`` (``performance.serial``): one ``Collector`` in the learner's process, which plays a race when
  the learner would otherwise wait, because debugging an asynchronous system is hard.
"""

from __future__ import annotations

import logging
import os
import queue as queue_module
import signal
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from tmexp.core.agent import MapCycle, exploration_rates, select_action
from tmexp.core.networks import build_network
from tmexp.core.schedules import make_schedule
from tmexp.envs.factory import make_env

log = logging.getLogger(__name__)

Rollout = dict[str, Any]


@dataclass
class CollectorSettings:
    """Everything a collector needs (picklable: sent to each collector process)."""

    env: Any  # EnvConfig
    map: Any  # MapConfig
    rewards: Any  # RewardsConfig
    nn: Any  # NNConfig
    btr: Any  # BTRConfig
    exploration: Any  # ExplorationConfig
    global_schedule_speed: float
    img_shape: tuple[int, int, int]
    float_dim: int  # the network's float input: the env's floats, plus the mini-race time first when ``mini_race``
    n_actions: int
    device: str
    seed: int
    torch_threads: int
    update_every_n_actions: int
    nice: int = 0
    mini_race: bool = False
    ignore_signals: tuple[int, ...] = ()  # collector processes leave these to the learner (e.g. preemption's)


class RolloutSource(Protocol):
    """Where the learner's races come from."""

    restarts: int  # collector processes restarted so far

    def start(self) -> None: ...

    def get(self, timeout: float) -> Rollout | None:
        """A finished race, waiting up to ``timeout`` seconds for one; None when none came."""

    def check_alive(self) -> None:
        """Restart dead collectors; raise when one cannot be kept alive."""

    def stop(self) -> None: ...

    def close(self) -> None: ...


class WeightsSource:
    """Shared-memory copy of the online network's weights with a version number."""

    def __init__(self, model: torch.nn.Module, ctx):
        self.tensors = {k: v.detach().to("cpu", copy=True).share_memory_() for k, v in model.state_dict().items()}
        self.version = ctx.Value("q", 0)
        self.lock = ctx.Lock()

    def publish(self, model: torch.nn.Module) -> None:
        with self.lock:
            for k, v in model.state_dict().items():
                self.tensors[k].copy_(v.detach())
            self.version.value += 1

    def pull_into(self, model: torch.nn.Module, known_version: int) -> int:
        """Copy the weights into ``model`` if they are newer than ``known_version``; return the version held."""
        if self.version.value == known_version:
            return known_version
        # A learner killed while publishing leaves the lock held forever: keep the old weights rather than hang.
        if not self.lock.acquire(timeout=1.0):
            return known_version
        try:
            model.load_state_dict(self.tensors)
            return self.version.value
        finally:
            self.lock.release()


class Collector:
    """One car: an env, an inference copy of the network, and the map cycle of exploration and eval races."""

    def __init__(self, settings: CollectorSettings, index: int, weights: WeightsSource, frames_played, env=None):
        self.s = settings
        self.index = index
        self.weights = weights
        self.frames_played = frames_played  # shared counter written by the learner (schedules follow it)
        self.device = torch.device(settings.device)
        self.env = env if env is not None else make_env(settings.env, settings.map, settings.rewards,
                                                        seed=settings.seed, collector_index=index)
        self.net = build_network(settings.nn, settings.btr, settings.img_shape, settings.float_dim, settings.n_actions)
        self.net.to(self.device)
        self.version = -1
        self.rng = np.random.default_rng(settings.seed)
        self.race_index = 0
        self.cycle = MapCycle(settings.map.explo_races_per_cycle, settings.map.eval_races_per_cycle)
        gss = settings.global_schedule_speed
        self.epsilon = make_schedule(settings.exploration.epsilon_schedule, "exponential", "epsilon", gss)
        self.epsilon_boltzmann = make_schedule(
            settings.exploration.epsilon_boltzmann_schedule, "exponential", "epsilon_boltzmann", gss
        )

    def q_values(self, obs: dict[str, np.ndarray], is_eval: bool) -> np.ndarray:
        """Mean over iqn_k quantiles of each action's value: (n_actions,)."""
        img = torch.from_numpy(obs["img"]).unsqueeze(0).to(self.device)  # (1, 1, H, W) uint8
        floats = torch.from_numpy(obs["floats"]).unsqueeze(0).to(self.device)  # (1, F)
        if self.s.mini_race:  # act at the start of a mini-race: the value of its whole horizon
            floats = torch.cat((floats.new_zeros(1, 1), floats), dim=1)
        self.net.train(not is_eval)  # eval races use NoisyNet mean weights
        if not is_eval:
            self.net.reset_noise()
        with torch.inference_mode():
            quantiles, _ = self.net(img, floats, self.s.nn.iqn_k)
        return quantiles.mean(dim=1)[0].float().cpu().numpy()

    def play_race(self) -> Rollout:
        """Play one race to its end (finish or cutoff) and return it as arrays."""
        is_eval = self.cycle.is_eval(self.race_index)
        self.race_index += 1
        frames = float(self.frames_played.value)
        epsilon, epsilon_boltzmann = exploration_rates(
            self.epsilon(frames), self.epsilon_boltzmann(frames), self.s.btr.use_noisy_linear, self.s.btr.noisy_keep_epsilon
        )
        if is_eval:
            epsilon = epsilon_boltzmann = 0.0
        obs, info = self.env.reset(seed=int(self.rng.integers(2**31)))
        imgs, floats, actions, rewards, greedy, q_taken = [obs["img"]], [obs["floats"]], [], [], [], []
        terminated = truncated = False
        step = 0
        while not (terminated or truncated):
            if step % self.s.update_every_n_actions == 0:
                self.version = self.weights.pull_into(self.net, self.version)
            q = self.q_values(obs, is_eval)
            action, is_greedy = select_action(
                q, self.rng, epsilon, epsilon_boltzmann, self.s.exploration.tau_epsilon_boltzmann
            )
            obs, reward, terminated, truncated, info = self.env.step(action)
            imgs.append(obs["img"])
            floats.append(obs["floats"])
            actions.append(action)
            rewards.append(reward)
            greedy.append(is_greedy)
            q_taken.append(q[action])
            step += 1
        return {
            "img": np.stack(imgs),  # uint8 (T + 1, 1, H, W)
            "floats": np.stack(floats).astype(np.float32),  # (T + 1, F)
            "actions": np.asarray(actions, dtype=np.int64),
            "rewards": np.asarray(rewards, dtype=np.float32),
            "greedy": np.asarray(greedy, dtype=bool),
            "q_taken": np.asarray(q_taken, dtype=np.float32),
            "terminated": bool(terminated),
            "finished": bool(info.get("finished", terminated)),
            "race_time_ms": int(info["race_time_ms"]),
            "progress_m": float(info.get("progress_m", 0.0)),
            "cp_times": list(info.get("cp_times", [])),
            "cutoff": info.get("cutoff"),
            "is_eval": is_eval,
            "collector": self.index,
            "weights_version": self.version,
        }

    def close(self) -> None:
        close = getattr(self.env, "close", None)
        if close is not None:
            close()


class SerialSource:
    """One collector in the learner's process: no race is ever waiting, so asked to wait for one, it plays one."""

    restarts = 0

    def __init__(self, collector: Collector):
        self.collector = collector

    def start(self) -> None:
        pass

    def get(self, timeout: float) -> Rollout | None:
        if timeout <= 0:
            return None
        try:
            return self.collector.play_race()
        except ConnectionError as error:  # a game connection lost mid-race: drop the race whole
            log.warning("discarded a rollout: %s", error)
            return None

    def check_alive(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def close(self) -> None:
        self.collector.close()


def _collector_process(settings: CollectorSettings, index: int, rollouts, weights, frames_played, stop) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle: it stops the collectors
    for signum in settings.ignore_signals:  # so is preemption: the learner saves, then stops the collectors
        signal.signal(signum, signal.SIG_IGN)
    if settings.nice > 0:
        os.nice(settings.nice)
    torch.set_num_threads(settings.torch_threads)
    try:
        collector = Collector(settings, index, weights, frames_played)
    except Exception as error:  # report why (e.g. a game that cannot start) instead of dying silently
        rollouts.put({"error": f"collector {index} could not start: {error}", "collector": index})
        raise
    parent = os.getppid()
    # Exiting must never wait for the queue's feeder thread to hand over a race nobody will read (learner gone).
    rollouts.cancel_join_thread()

    def orphaned() -> bool:  # the learner was killed without a chance to stop us: stop too
        return os.getppid() != parent

    while not stop.is_set() and not orphaned():
        try:
            rollout = collector.play_race()
        except ConnectionError as error:  # a game connection lost mid-race: the rollout is discarded whole
            log.warning("collector %d discarded a rollout: %s", index, error)
            continue
        while not stop.is_set() and not orphaned():
            try:
                rollouts.put(rollout, timeout=0.5)
                break
            except queue_module.Full:
                continue
    collector.close()


class CollectorPool:
    """N collector processes feeding one bounded rollout queue; dead collectors are restarted and counted."""

    def __init__(self, settings: CollectorSettings, count: int, weights: WeightsSource, frames_played, ctx,
                 queue_size: int):
        self.settings = settings
        self.count = count
        self.weights = weights
        self.frames_played = frames_played
        self.ctx = ctx
        self.rollouts = ctx.Queue(maxsize=max(1, queue_size))
        self.stop_event = ctx.Event()
        self.processes: list[Any] = [None] * count
        self.restarts = 0
        self.failures_without_rollout = [0] * count
        self.last_error: str | None = None

    def _start(self, index: int) -> None:
        s = self.settings
        settings = CollectorSettings(**{**s.__dict__, "seed": s.seed * 1000 + index + 97 * self.restarts})
        p = self.ctx.Process(
            target=_collector_process,
            args=(settings, index, self.rollouts, self.weights, self.frames_played, self.stop_event),
            name=f"tmexp-collector-{index}",
            daemon=True,
        )
        p.start()
        self.processes[index] = p

    def start(self) -> None:
        for i in range(self.count):
            self._start(i)

    def get(self, timeout: float) -> Rollout | None:
        try:
            item = self.rollouts.get(timeout=timeout) if timeout > 0 else self.rollouts.get_nowait()
        except queue_module.Empty:
            return None
        if "error" in item:
            self.last_error = item["error"]
            return None
        self.failures_without_rollout[item["collector"]] = 0
        return item

    def check_alive(self) -> None:
        """Restart collectors that died; give up when one keeps dying before delivering any race."""
        for i, p in enumerate(self.processes):
            if p is not None and not p.is_alive() and not self.stop_event.is_set():
                self.failures_without_rollout[i] += 1
                if self.failures_without_rollout[i] > 3:
                    raise RuntimeError(
                        f"collector {i} died {self.failures_without_rollout[i]} times without finishing a race"
                        + (f"; last error: {self.last_error}" if self.last_error else "")
                    )
                log.warning("collector %d died (exit code %s); restarting it", i, p.exitcode)
                self.restarts += 1
                self._start(i)

    def stop(self) -> None:
        self.stop_event.set()
        deadline = time.time() + 5
        while time.time() < deadline and any(p is not None and p.is_alive() for p in self.processes):
            try:  # unblock collectors waiting on a full queue
                self.rollouts.get(timeout=0.1)
            except queue_module.Empty:
                pass
        for p in self.processes:
            if p is not None and p.is_alive():
                p.terminate()
            if p is not None:
                p.join(timeout=2)
        self.rollouts.cancel_join_thread()

    def close(self) -> None:
        self.stop()
