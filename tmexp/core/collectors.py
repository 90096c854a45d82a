"""Rollout sources: collectors play races and hand whole rollouts to the learner; the learner hands back weights.

The boundary is narrow (Acme-style): rollouts go out through ``get``, weights come in through a ``WeightsSource``
(shared-memory tensors plus a version number) that each collector pulls from every ``update_every_n_actions``
actions. Two sources share the ``RolloutSource`` interface, so the learner's loop is the same for both:

- ``CollectorPool``: N collector processes, each sending its races through a pipe of its own; dead collectors are
  restarted and counted;
- ``SerialSource`` (``performance.serial``): one ``Collector`` in the learner's process, which plays when the
  learner would otherwise wait, because debugging an asynchronous system is hard.

With ``training.min_replay_ratio`` the learner paces the collectors: it sets a shared allowance of frames, and a
collector steps its cars only while the frames the learner has taken in do not exceed it (races in flight are
counted when they end, so the pace holds on average, not to the frame).

A collector drives K cars (``performance.cars_per_collector``; the simulator steps them as one batch) and chooses
their K actions with one batched forward pass: per action, a car costs a fraction of the network's and the
simulator's fixed per-call costs. Each car keeps its own races as a one-car collector would: its random stream
(start jitter, quantile fractions, exploration draws), its place in the map cycle, its race's arrays; a race that
ends goes to the learner as one rollout. NoisyNet noise is resampled at every batched forward pass, so the
exploring cars of one collector share each step's noise sample.
"""

from __future__ import annotations

import logging
import os
import queue as queue_module
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from typing import Any, Protocol, cast

import numpy as np
import torch

from tmexp.core.agent import exploration_rates, select_action
from tmexp.core.networks import build_network
from tmexp.core.schedules import make_schedule
from tmexp.envs.factory import make_vector_env
from tmexp.envs.maps import MapCycle

log = logging.getLogger(__name__)

Rollout = dict[str, Any]

PACING_WAIT_S = 0.002  # a paced collector looks at the learner's allowance this often


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
    cars: int = 1  # K, the cars this collector drives
    total_cars: int = 1  # the run's cars, over which the cars' map cycles are staggered
    # Car number -> the map-cycle position of its next race, for a resumed run (the learner's counters); a car
    # not in it starts at its staggered place.
    cycle_start: dict[int, int] = field(default_factory=dict)


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


@dataclass
class Car:
    """One car's races inside a collector: its random stream, its place in the map cycle (which map, explo or eval),
    the race being played."""

    rng: np.random.Generator
    race_index: int  # the map-cycle position of its next race
    racing: bool = False
    is_eval: bool = False
    map_index: int = 0  # the map of the cycle its race is on
    epsilon: float = 0.0
    epsilon_boltzmann: float = 0.0
    # The race so far: observations (T + 1 each), then per action (T each).
    imgs: list = field(default_factory=list)
    floats: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    greedy: list = field(default_factory=list)
    q_taken: list = field(default_factory=list)


class Collector:
    """K cars of one env, an inference copy of the network, and each car's map cycle of exploration and eval races.

    Car k of collector i is car number i * K + k of the run; it draws from ``np.random.default_rng(seed + k)``, so
    K cars play exactly the races of K one-car collectors seeded seed, seed + 1, ... with the same weights (the
    network's NoisyNet noise aside).
    """

    def __init__(self, settings: CollectorSettings, index: int, weights: WeightsSource, frames_played, env=None):
        self.s = settings
        self.index = index
        self.weights = weights
        self.frames_played = frames_played  # shared counter written by the learner (schedules follow it)
        self.device = torch.device(settings.device)
        k = settings.cars
        self.env = make_vector_env(
            settings.env, settings.map, settings.rewards, k, seed=settings.seed, collector_index=index, env=env
        )
        self.net = build_network(settings.nn, settings.btr, settings.img_shape, settings.float_dim, settings.n_actions)
        self.net.to(self.device)
        # Only NoisyNet noise and spectral norm's power iteration make train and eval mode differ: without them all
        # cars share one forward pass, exploring or not.
        self.modes_differ = settings.btr.use_noisy_linear or settings.nn.vis.cnn.spectral_norm
        self.net.train(False)
        self.version = -1
        self.steps_since_pull = 0
        self.cycle = MapCycle.of(settings.map)
        self.cars = []
        for c in range(k):
            number = index * k + c
            start = settings.cycle_start.get(number, self.cycle.first_race(number, settings.total_cars))
            self.cars.append(Car(np.random.default_rng(settings.seed + c), start))
        self.taus = np.empty((k, settings.nn.iqn_k), dtype=np.float32)  # each car's quantile fractions, per step
        self.obs: dict[str, np.ndarray] | None = None  # the cars' latest observations, (K, ...) each
        gss = settings.global_schedule_speed
        self.epsilon = make_schedule(settings.exploration.epsilon_schedule, "exponential", "epsilon", gss)
        self.epsilon_boltzmann = make_schedule(
            settings.exploration.epsilon_boltzmann_schedule, "exponential", "epsilon_boltzmann", gss
        )

    def play_races(self) -> list[Rollout]:
        """Step every car until at least one race ends; return the races that ended."""
        ended: list[Rollout] = []
        while not ended:
            ended = self.step()
        return ended

    def step(self) -> list[Rollout]:
        """One action for every car (a car whose race ended starts a new one first); return the races that ended."""
        starting = [c for c, car in enumerate(self.cars) if not car.racing]
        if starting:
            self._start_races(starting)
        if starting or self.steps_since_pull >= self.s.update_every_n_actions:
            self.version = self.weights.pull_into(self.net, self.version)
            self.steps_since_pull = 0
        self.steps_since_pull += 1
        assert self.obs is not None, "a collector steps after its first reset"
        q = self.q_values(self.obs, np.array([car.is_eval for car in self.cars]))
        actions = np.empty(len(self.cars), dtype=np.int64)
        for c, car in enumerate(self.cars):
            action, is_greedy = select_action(
                q[c], car.rng, car.epsilon, car.epsilon_boltzmann, self.s.exploration.tau_epsilon_boltzmann
            )
            actions[c] = action
            car.actions.append(action)
            car.greedy.append(is_greedy)
            car.q_taken.append(q[c, action])
        try:
            obs, rewards, terminated, truncated, infos = self.env.step(actions)
        except ConnectionError:  # a game connection lost mid-race: its race is dropped whole
            self.drop_races()
            raise
        self.obs = obs
        ended = []
        for c, car in enumerate(self.cars):
            car.imgs.append(obs["img"][c])
            car.floats.append(obs["floats"][c])
            car.rewards.append(rewards[c])
            if terminated[c] or truncated[c]:
                ended.append(self._rollout(c, bool(terminated[c]), infos))
                car.racing = False
        return ended

    def _start_races(self, which: list[int]) -> None:
        """Put the cars ``which`` on the start line, each with its next race of the map cycle."""
        frames = float(self.frames_played.value)
        epsilon, epsilon_boltzmann = exploration_rates(
            self.epsilon(frames),
            self.epsilon_boltzmann(frames),
            self.s.btr.use_noisy_linear,
            self.s.btr.noisy_keep_epsilon,
        )
        seeds: list[int | None] = [None] * len(self.cars)
        mask = np.zeros(len(self.cars), dtype=bool)
        for c in which:
            car = self.cars[c]
            car.map_index, car.is_eval = self.cycle.race(car.race_index)
            car.race_index += 1
            car.epsilon, car.epsilon_boltzmann = (0.0, 0.0) if car.is_eval else (epsilon, epsilon_boltzmann)
            seeds[c] = int(car.rng.integers(2**31))
            mask[c] = True
        map_index = np.array([car.map_index for car in self.cars], dtype=np.int64)
        # one seed per car: the vector env takes a list, which gymnasium's annotation does not say
        obs, _ = self.env.reset(seed=seeds, options={"reset_mask": mask, "map_index": map_index})  # type: ignore[arg-type]
        self.obs = obs
        for c in which:
            car = self.cars[c]
            car.imgs, car.floats = [obs["img"][c]], [obs["floats"][c]]
            car.actions, car.rewards, car.greedy, car.q_taken = [], [], [], []
            car.racing = True

    def drop_races(self) -> None:
        """Abandon every race in progress (each car starts a new one at the next step)."""
        for car in self.cars:
            car.racing = False

    def q_values(self, obs: dict[str, np.ndarray], is_eval: np.ndarray) -> np.ndarray:
        """Each car's mean over iqn_k quantiles of each action's value: (K, n_actions).

        Args:
            obs: {"img": uint8 (K, 1, H, W), "floats": float32 (K, F)}.
            is_eval: bool (K,): cars in an eval race, which use NoisyNet's mean weights.
        """
        for c, car in enumerate(self.cars):  # each car's own taus: its races do not depend on the others'
            car.rng.random(dtype=np.float32, out=self.taus[c])
        img = torch.from_numpy(obs["img"]).to(self.device)
        floats = torch.from_numpy(obs["floats"]).to(self.device)
        if self.s.mini_race:  # act at the start of a mini-race: the value of its whole horizon
            floats = torch.cat((floats.new_zeros(len(floats), 1), floats), dim=1)
        taus = torch.from_numpy(self.taus).to(self.device)
        if self.modes_differ:
            groups = [(np.flatnonzero(~is_eval), False), (np.flatnonzero(is_eval), True)]
        else:
            groups = [(np.arange(len(self.cars)), True)]
        q = np.empty((len(self.cars), self.s.n_actions), dtype=np.float32)
        for rows, eval_mode in groups:
            if len(rows) == 0:
                continue
            if self.net.training == eval_mode:  # train() walks every module: only when the mode changes
                self.net.train(not eval_mode)
            if not eval_mode and self.s.btr.use_noisy_linear:
                self.net.reset_noise()
            pick = slice(None) if len(rows) == len(self.cars) else torch.from_numpy(rows)
            with torch.inference_mode():
                quantiles, _ = self.net(img[pick], floats[pick], self.s.nn.iqn_k, taus=taus[pick])
            q[rows] = quantiles.mean(dim=1).float().cpu().numpy()
        return q

    def _rollout(self, c: int, terminated: bool, infos: dict[str, Any]) -> Rollout:
        """Car ``c``'s race that just ended, as arrays."""
        car = self.cars[c]

        def info(key: str, default: Any = None) -> Any:
            values = infos.get(key)
            return default if values is None else values[c]

        return {
            "img": np.stack(car.imgs),  # uint8 (T + 1, 1, H, W)
            "floats": np.stack(car.floats).astype(np.float32),  # (T + 1, F)
            "actions": np.asarray(car.actions, dtype=np.int64),
            "rewards": np.asarray(car.rewards, dtype=np.float32),
            "greedy": np.asarray(car.greedy, dtype=bool),
            "q_taken": np.asarray(car.q_taken, dtype=np.float32),
            "terminated": terminated,
            "finished": bool(info("finished", terminated)),
            "race_time_ms": int(info("race_time_ms")),
            "progress_m": float(info("progress_m", 0.0)),
            "cp_times": list(info("cp_times", [])),
            "cutoff": info("cutoff"),
            "is_eval": car.is_eval,
            "map": self.cycle.maps[car.map_index].short_name,
            "next_race_index": car.race_index,  # the car's place in the map cycle after this race
            "collector": self.index,
            "car": self.index * self.s.cars + c,
            "weights_version": self.version,
        }

    def close(self) -> None:
        self.env.close()


class SerialSource:
    """One collector in the learner's process: asked to wait for a race, it plays until one ends (its cars' races
    that end together wait for the next calls)."""

    restarts = 0

    def __init__(self, collector: Collector):
        self.collector = collector
        self.ended: deque[Rollout] = deque()

    def start(self) -> None:
        pass

    def get(self, timeout: float) -> Rollout | None:
        if not self.ended and timeout > 0:
            try:
                self.ended.extend(self.collector.play_races())
            except ConnectionError as error:  # a game connection lost mid-race: drop the race whole
                log.warning("discarded a rollout: %s", error)
        return self.ended.popleft() if self.ended else None

    def check_alive(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def close(self) -> None:
        self.collector.close()


def _collector_process(
    settings: CollectorSettings, index: int, conn, queue_size: int, weights, frames_played, stop, frames_allowed=None
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the learner's to handle: it stops the collectors
    for signum in settings.ignore_signals:  # so is preemption: the learner saves, then stops the collectors
        signal.signal(signum, signal.SIG_IGN)
    if settings.nice > 0:
        os.nice(settings.nice)
    torch.set_num_threads(settings.torch_threads)
    try:
        collector = Collector(settings, index, weights, frames_played)
    except Exception as error:  # report why (e.g. a game that cannot start) instead of dying silently
        conn.send({"error": f"collector {index} could not start: {error}", "collector": index})
        raise
    parent = os.getppid()
    # Races wait in a bounded outbox while a thread sends them, so the cars play on while the learner trains. The
    # thread is a daemon: exiting never waits for it to hand over a race nobody will read (learner gone).
    outbox: queue_module.Queue = queue_module.Queue(maxsize=max(1, queue_size))

    def send_races() -> None:
        while True:
            try:
                conn.send(outbox.get())
            except OSError:  # the learner closed its end
                return

    threading.Thread(target=send_races, name="tmexp-rollout-sender", daemon=True).start()

    def orphaned() -> bool:  # the learner was killed without a chance to stop us: stop too
        return os.getppid() != parent

    while not stop.is_set() and not orphaned():
        if frames_allowed is not None and frames_played.value > frames_allowed.value:
            time.sleep(PACING_WAIT_S)  # the learner is behind its minimum replay ratio: let it train
            continue
        try:
            ended = collector.step()
        except ConnectionError as error:  # a game connection lost mid-race: the rollout is discarded whole
            log.warning("collector %d discarded a rollout: %s", index, error)
            continue
        for rollout in ended:
            while not stop.is_set() and not orphaned():
                try:
                    outbox.put(rollout, timeout=0.5)
                    break
                except queue_module.Full:
                    continue
    collector.close()


class CollectorPool:
    """N collector processes (K cars each), each sending its races through a pipe of its own; dead collectors are
    restarted and counted.

    A pipe per collector, whose writing end only its collector holds: a collector that dies while sending a race
    leaves a broken pipe that reads as closed (never a half-read race that blocks the learner, or a lock held by the
    dead that blocks the others, as one shared queue would); its replacement gets a new pipe.
    """

    def __init__(
        self,
        settings: CollectorSettings,
        count: int,
        weights: WeightsSource,
        frames_played,
        ctx,
        queue_size: int,
        frames_allowed=None,
    ):
        self.settings = settings
        # Shared float set by the learner (training.min_replay_ratio): a collector steps its cars only while the
        # frames the learner has taken in do not exceed it. None: collectors never wait.
        self.frames_allowed = frames_allowed
        self.count = count
        self.weights = weights
        self.frames_played = frames_played
        self.ctx = ctx
        self.queue_size = queue_size  # races a collector may hold waiting for the learner
        self.stop_event = ctx.Event()
        self.processes: list[Any] = [None] * count
        self.pipes: list[Any] = [None] * count  # the reading end of each collector's pipe; None once it closed
        self.restarts = 0
        self.failures_without_rollout = [0] * count
        self.last_error: str | None = None

    def _start(self, index: int) -> None:
        s = self.settings
        # Car k of collector i draws from seed + i * K + k: one-car collectors keep their seeds of before.
        settings = CollectorSettings(**{**s.__dict__, "seed": s.seed * 1000 + index * s.cars + 97 * self.restarts})
        reader, writer = self.ctx.Pipe(duplex=False)
        p = self.ctx.Process(
            target=_collector_process,
            args=(
                settings,
                index,
                writer,
                self.queue_size,
                self.weights,
                self.frames_played,
                self.stop_event,
                self.frames_allowed,
            ),
            name=f"tmexp-collector-{index}",
            daemon=True,
        )
        p.start()
        writer.close()  # the collector holds the only writing end now
        if self.pipes[index] is not None:
            self.pipes[index].close()
        self.processes[index], self.pipes[index] = p, reader

    def start(self) -> None:
        for i in range(self.count):
            self._start(i)

    def get(self, timeout: float) -> Rollout | None:
        open_pipes = [pipe for pipe in self.pipes if pipe is not None]
        ready = mp_connection.wait(open_pipes, timeout=max(0.0, timeout)) if open_pipes else []
        for pipe in cast("list[mp_connection.Connection]", ready):
            index = self.pipes.index(pipe)
            try:
                item = pipe.recv()
            except (EOFError, OSError):  # its collector died (mid-race or mid-send): check_alive restarts it
                pipe.close()
                self.pipes[index] = None
                continue
            if "error" in item:
                self.last_error = item["error"]
                continue
            self.failures_without_rollout[index] = 0
            return item
        if not open_pipes and timeout > 0:
            time.sleep(min(timeout, 0.1))  # every collector is down: wait for check_alive to restart them
        return None

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
        # Collectors see the event between races (an outbox put gives up within 0.5 s); their pipes are not read.
        deadline = time.time() + 5
        for p in self.processes:
            if p is not None:
                p.join(timeout=max(0.0, deadline - time.time()))
        for p in self.processes:
            if p is not None and p.is_alive():
                p.terminate()
            if p is not None:
                p.join(timeout=2)
        for i, pipe in enumerate(self.pipes):
            if pipe is not None:
                pipe.close()
                self.pipes[i] = None

    def close(self) -> None:
        self.stop()
