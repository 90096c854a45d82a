"""``TmiEnv``: the real game behind the same contract as the simulator (``tmexp/envs/base.py``).

Per action the game runs ``tm_engine_step_per_action`` engine steps at ``running_speed``, then stops at a
RUN_STEP_SYNC whose race time is a multiple of the action period. There the env reads the save state, rewinds to
it (Linesight's ``rewind_to_current_state``: frame, state and inputs on one engine step), pauses the game (speed
0), asks for a frame and releases the step; the plugin sends the frame at the next render and the game waits in
that REQUESTED_FRAME_SYNC while the agent picks the next action. ``step`` sets the inputs, restores the speed and
releases the frame. Races start from a save state taken at race time 0 (a rewind is much faster than restarting
the map). Every synchronous message is handled wherever it arrives: a checkpoint between an action's run step and
its frame counts like one before the run step (the game's order of the two is not documented).

Any lost, silent, garbled or stalled connection during a race raises ``GameConnectionLost`` (or a subclass) from
``step``: the collector discards the rollout and calls ``reset``, which reconnects (or restarts the game) and
starts over. Whenever tmexp leaves a game it can still reach, it sets the game's speed back to 1.

``float_stats`` measures the float statistics on the game itself: the reference driver (``tmexp.envs.driver``)
steers the game's car along the reference line through this env, as the simulator measures its own.
"""

from __future__ import annotations

import atexit
import logging
import time
import weakref
from dataclasses import fields
from pathlib import Path

import gymnasium as gym
import numpy as np

from tmexp.envs import float_stats
from tmexp.envs.base import ACTIONS, EnvSpec, RewardSpec, action_space
from tmexp.envs.driver import CarView, ReferenceDriver
from tmexp.envs.observation import n_game_floats
from tmexp.envs.tmi import commands
from tmexp.envs.tmi.client import TmiClient
from tmexp.envs.tmi.errors import GameConnectionLost, GameStalled, GameTimeout, GameUnavailable, TmiProtocolError
from tmexp.envs.tmi.instances import GameInstance
from tmexp.envs.tmi.params import TmiParams
from tmexp.envs.tmi.protocol import MessageType
from tmexp.envs.tmi.race import Race, game_observation_space, load_checkpoint_gates
from tmexp.envs.tmi.state import CarState, car_state
from tmexp.envs.track import TrackGeometry, extended_line

log = logging.getLogger(__name__)

# Envs with a game connection: an interpreter that exits without closing them still leaves each game at speed 1
# (a game left paused in its frame sync stays frozen; Linesight issue 14).
_OPEN_ENVS: weakref.WeakSet[TmiEnv] = weakref.WeakSet()


@atexit.register
def _leave_all_games() -> None:
    for env in list(_OPEN_ENVS):
        try:
            env._leave()
        except Exception:  # best effort at exit
            pass


def _plain(obj, cls):
    """A ``cls`` holding ``obj``'s values for ``cls``'s fields (``obj`` may be a subclass or a config node)."""
    return cls(**{f.name: getattr(obj, f.name) for f in fields(cls)})


def bgra_to_gray(frame: np.ndarray) -> np.ndarray:
    """(H, W, 4) BGRA uint8 -> (H, W) uint8 luma (ITU-R 601 weights, rounded; grey stays exactly grey)."""
    b = frame[..., 0].astype(np.uint32)
    g = frame[..., 1].astype(np.uint32)
    r = frame[..., 2].astype(np.uint32)
    return ((299 * r + 587 * g + 114 * b + 500) // 1000).astype(np.uint8)


class TmiEnv(gym.Env):
    """One collector's car in one game instance (port ``base_tmi_port + collector_index``).

    Observations ``{"img": uint8 (1, H, W), "floats": float32 (F,)}`` and ``info`` as the simulator's
    (``tmexp.envs.base``); actions Discrete(12). ``seed`` is accepted for the common contract only: the game
    is deterministic and every race starts from the same save state.
    """

    def __init__(
        self,
        track,
        spec: EnvSpec,
        rewards: RewardSpec,
        params: TmiParams,
        collector_index: int = 0,
        seed: int | None = None,
        maps: list | None = None,
    ):
        # Plain dataclasses: every step reads these, and Hydra's config nodes are slow to read.
        spec, rewards, params = _plain(spec, EnvSpec), _plain(rewards, RewardSpec), _plain(params, TmiParams)
        self.track = track
        # Not self.spec: gym.Env.spec is the Gymnasium registration spec.
        self.env_spec = spec
        self.rewards = rewards
        self.params = params
        self.observation_space = game_observation_space(spec)
        self.action_space = action_space()
        self.period_ms = spec.tm_engine_step_per_action * spec.ms_per_tm_engine_step
        self.line = extended_line(track, spec)
        self.geometry = TrackGeometry(self.line)
        self.instance = GameInstance(params, params.base_tmi_port + collector_index)
        self.instance.check_configured()  # fail fast, before any collector starts playing
        self.gates = load_checkpoint_gates(params, self.line)
        self.client: TmiClient | None = None
        self._pending: MessageType | None = None  # the synchronous message the game is waiting on
        self._start_state: bytes | None = None  # save state at race time 0 of the current game process
        self._start_state_pid: int | None = None
        self._race: Race | None = None
        self._last_car: CarState | None = None
        self.races_discarded = 0
        self._restart_before_next_race = False
        # A map cycle: (track, game map path) per map; reset(options={"map_index": i}) races on map i from then on.
        self.maps = maps or [(track, params.map_path)]
        self.map_index = 0
        self.params.map_path = self.maps[0][1]
        self._race_setup_due = True  # camera and race display, at the first run step after a connect or map load
        self._map_loaded_in: tuple[int | None] | None = None  # (pid,) of the game process the map was loaded in

    @property
    def _connected_client(self) -> TmiClient:
        """The connection the protocol flow talks through (set by ``_connect``, dropped by ``_drop_connection``)."""
        if self.client is None:
            raise RuntimeError(f"port {self.port}: the protocol flow ran with no connection to the game (a bug)")
        return self.client

    @property
    def port(self) -> int:
        """The port of this collector's game (a launched game gets the first free one from its base port on)."""
        return self.instance.port

    # ---- Gymnasium-style API ------------------------------------------------------------------------------

    def reset(self, seed: int | None = None, options=None):
        """Start a race from the saved start state; reconnect or restart the game as needed."""
        self._race = None
        if options and options.get("map_index") is not None:
            self._switch_map(int(np.asarray(options["map_index"]).reshape(-1)[0]))
        restarts, retried_stale = 0, False
        while True:
            # A connection kept from the previous race may have been dropped by the plugin meanwhile (it gives
            # up on a client that stays silent for timeout_during_run_ms, e.g. while the collector waits on a
            # full rollout queue): one plain reconnect, no restart, covers that.
            stale = self.client is not None and self.client.connected
            try:
                if self.instance.needs_reboot() or (self._restart_before_next_race and self.instance.can_launch):
                    log.info(
                        "port %d: %s",
                        self.port,
                        "restarting the game after a timeout"
                        if self._restart_before_next_race
                        else "scheduled reboot of the game",
                    )
                    self._drop_connection()
                    self.instance.restart()
                self._restart_before_next_race = False
                if self.client is None or not self.client.connected:
                    self._connect()
                car, frame = self._start_race()
                self.instance.game_ready()  # focused once; the next game on this machine may start
                break
            except GameConnectionLost as error:
                self._leave()
                if stale and not retried_stale and not self.instance.process_exited():
                    retried_stale = True
                    log.info("port %d: reconnecting (%s)", self.port, error)
                    continue
                if restarts >= self.params.max_restarts_per_reset:
                    self.instance.stop()
                    raise GameUnavailable(
                        f"the game on port {self.port} could not be reached after {restarts} restarts (last "
                        f"error: {error}); check env.tmi.launch_command, that the plugin listens on {{port}} and "
                        f"that a race starts (env.tmi.map_path, or a launch command that loads the map)."
                    ) from None
                restarts += 1
                log.warning("port %d: could not start a race (%s)", self.port, error)
                self.instance.restart()  # relaunches a game we manage; a game started by hand is reconnected to
        self._race = Race(
            self.track,
            self.line,
            self.geometry,
            self.env_spec,
            self.rewards,
            car,
            gates=self.gates,
            gate_radius_m=self.params.real_checkpoint_radius_m,
        )
        self._last_car = car
        return self._race.observation(bgra_to_gray(frame), car), self._race.info()

    def step(self, action: int):
        if self._race is None:
            raise RuntimeError("TmiEnv.step called before reset() or after the race ended; call reset() first.")
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in Discrete(12)")
        accelerate, brake, left, right = ACTIONS[int(action)]
        try:
            client = self._connected_client
            client.set_input_state(bool(left), bool(right), bool(accelerate), bool(brake))
            client.set_speed(self.params.running_speed)
            self._release()
            target_time = self._race.car.race_time_ms + self.period_ms
            self._wait_run_step(min_time_ms=target_time)
            car, frame = self._observe()
        except GameConnectionLost as error:
            self.races_discarded += 1
            self._race = None
            self._leave()
            # A game silent for timeout_during_run_ms mid-race is likely hung: start the next race on a fresh one.
            self._restart_before_next_race = isinstance(error, GameTimeout)
            raise
        self._last_car = car
        reward, terminated, truncated = self._race.advance(int(action), car)
        obs = self._race.observation(bgra_to_gray(frame), car)
        info = self._race.info()
        if terminated or truncated:
            self._race = None  # the game stays paused in its frame sync until the next reset rewinds it
        return obs, reward, terminated, truncated, info

    def _switch_map(self, index: int) -> None:
        """Race on the cycle's map ``index`` from the next race: reconnect, and ``_connect`` loads it."""
        if index == self.map_index:
            return
        self.map_index = index
        self.track, self.params.map_path = self.maps[index]
        self.line = extended_line(self.track, self.env_spec)
        self.geometry = TrackGeometry(self.line)
        self._start_state = None
        self._map_loaded_in = None  # the game holds another map now: load this one at the next connect
        if self.client is not None:
            self._drop_connection()

    @property
    def car(self) -> CarState | None:
        """The game state read at the last action boundary (the last observation's state)."""
        return self._last_car

    def float_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-float mean and std on the game (``tmexp.envs.float_stats``).

        Read from ``env.tmi.float_stats_path`` when that file exists; else measured by the reference driver
        driving the game's car through this env (three races, then the env is between races as after any race)
        and written to that path when it is set.
        """
        path = self.params.float_stats_path
        if path and Path(path).is_file():
            stats = float_stats.load(
                path, self.track, self.env_spec, setting="env.tmi.float_stats_path", n=n_game_floats(self.env_spec)
            )
            log.info("float statistics from %s", path)
            return stats.mean, stats.std
        log.info(
            "port %d: measuring the float statistics on the game (the reference driver drives %d races)",
            self.port,
            len(float_stats.RANDOM_FRACTIONS),
        )
        stats = float_stats.measure(self, self._car_view, ReferenceDriver(self.track), self.env_spec)
        if stats.furthest_m < self.track.length - 1.0:
            log.warning(
                "the reference driver got %.0f m along the %.0f m track at best: the float statistics "
                "describe the part of the track it reached",
                stats.furthest_m,
                self.track.length,
            )
        if path:
            float_stats.save(path, stats, self.track, self.env_spec, backend="tmi")
            log.info("float statistics written to %s (env.tmi.float_stats_path: later runs on this map read it)", path)
        return stats.mean, stats.std

    def _car_view(self) -> CarView:
        """The game's car as the reference driver sees it (ground plane; rotation columns right, up, forward)."""
        car = self._last_car
        assert car is not None, "the reference driver reads the car only after reset()"
        forward = car.rotation[:, 2]
        norm = float(np.hypot(forward[0], forward[2])) or 1.0
        speed = float(np.hypot(car.velocity[0], car.velocity[2]))
        return CarView(
            float(car.position[0]),
            float(car.position[2]),
            float(forward[0]) / norm,
            float(forward[2]) / norm,
            speed,
            float(car.steer),
        )

    def close(self) -> None:
        self._leave()
        self.instance.stop()

    # ---- protocol flow ------------------------------------------------------------------------------------
    #
    # Every synchronous message may arrive while tmexp waits for another (``_answer``): a checkpoint between an
    # action's run step and its frame counts as one before the run step (Linesight notes that the game may send the
    # run step first), a lap count is answered, a second greeting mid-race is an error.

    def _connect(self) -> None:
        client = self.instance.connect()  # ON_CONNECT_SYNC pending
        self.client = client
        _OPEN_ENVS.add(self)
        self._pending = MessageType.ON_CONNECT_SYNC
        client.set_timeout(self.params.timeout_during_run_ms)
        client.set_on_step_period(self.period_ms)
        for command in commands.on_connect(self.params, relaunched=self.instance.fresh_launch):
            client.execute_command(command)
        self.instance.fresh_launch = False
        self._race_setup_due = True
        pid = self.instance.pid
        if self._start_state is not None and self._start_state_pid != pid:
            self._start_state = None  # a new game process: its start state must be taken again
        if self._start_state is None and self.params.map_path and self._map_loaded_in != (pid,):
            self._load_map(self.params.map_path)
        client.set_speed(self.params.running_speed)

    def _load_map(self, map_path: str) -> None:
        """The ``map`` command (the personal-best ghost moved aside first); the race display is hidden again."""
        if self.params.hide_personal_best_ghost:
            commands.hide_personal_best_ghost(self.params, map_path)
        self._connected_client.execute_command(f'map "{map_path}"')
        self._map_loaded_in = (self.instance.pid,)
        self._race_setup_due = True

    def _leave(self) -> None:
        """Drop the connection; a game still listening is set back to speed 1 first (never left paused)."""
        client = self.client
        if client is not None and client.connected:
            try:
                client.set_speed(1.0)
                client.shutdown()
            except GameConnectionLost:
                pass
        self._drop_connection()

    def _drop_connection(self) -> None:
        self._pending = None
        self.client = None
        self.instance.disconnect()

    def _release(self) -> None:
        """Echo the pending synchronous message: the game goes on."""
        if self._pending is not None:
            self._connected_client.respond(self._pending)
            self._pending = None

    def _answer(self, message) -> None:
        """Handle a synchronous message nobody waits for, then echo it (the game goes on)."""
        client = self._connected_client
        if message.type == MessageType.CHECKPOINT_COUNT_CHANGED_SYNC and self._race is not None:
            is_finish = message.current == message.target
            self._race.checkpoint(client.get_simulation_state().race_time, is_finish)
            if is_finish:
                # Keep the race going past the line: the action's last engine steps still run (as in the
                # simulator) and the next reset can rewind instead of reloading the map.
                client.prevent_simulation_finish()
        elif message.type == MessageType.ON_CONNECT_SYNC:
            client.close()
            raise TmiProtocolError(f"the plugin on port {self.port} greeted us again in the middle of a race")
        client.respond(message.type)

    def _race_setup(self) -> None:
        """At a run step after a connect or a map load: the camera, and the race display hidden (Linesight)."""
        self._race_setup_due = False
        for command in commands.on_first_run_step(self.params):
            self._connected_client.execute_command(command)
        if self.params.hide_interface:
            self._connected_client.toggle_interface(False)

    def _wait_run_step(self, min_time_ms: int) -> int:
        """Answer synchronous messages until a RUN_STEP_SYNC at ``min_time_ms`` or later, left pending.

        Raises GameStalled after ``max_frozen_run_steps`` run steps in a row at one race time.
        """
        client = self._connected_client
        last_time, frozen = None, 0
        while True:
            message = client.read_message()
            if message.type != MessageType.RUN_STEP_SYNC:
                self._answer(message)
                continue
            if self._race_setup_due:
                self._race_setup()
            frozen = frozen + 1 if message.race_time_ms == last_time else 0
            last_time = message.race_time_ms
            # A finish the game did not let us prevent stops the clock: the action ends there, with the finish.
            stopped_at_finish = frozen > 0 and self._race is not None and self._race.finish_reported
            if message.race_time_ms >= min_time_ms or stopped_at_finish:
                self._pending = message.type
                return message.race_time_ms
            if frozen >= self.params.max_frozen_run_steps:
                raise GameStalled(
                    f"the race on port {self.port} stopped at race time {last_time} ms for {frozen} run steps; the "
                    f"race is discarded (env.tmi.max_frozen_run_steps)."
                )
            client.respond(message.type)

    def _start_race(self) -> tuple[CarState, np.ndarray]:
        """Rewind to the start state (taking it first on a fresh game) and observe race time 0."""
        client = self._connected_client
        if self._start_state is None:
            self._release()
            # A fresh game may still be loading the map: allow the protection timeout for the first step.
            client.response_timeout_s = self.params.tmi_protection_timeout_s
            deadline = time.monotonic() + self.params.tmi_protection_timeout_s
            try:
                race_time = self._wait_run_step(min_time_ms=0)
                while race_time != 0:
                    if time.monotonic() > deadline:
                        raise GameConnectionLost(
                            f"the game on port {self.port} never stopped at race time 0 within "
                            f"{self.params.tmi_protection_timeout_s:.0f} s (last run step at {race_time} ms)."
                        )
                    if race_time > 0:  # joined a race already under way: restart it to catch race time 0
                        client.give_up()
                    self._release()
                    race_time = self._wait_run_step(min_time_ms=-(10**9))
            finally:
                if client.connected:
                    client.response_timeout_s = self.params.timeout_during_run_ms / 1000
            self._start_state = client.get_simulation_state_bytes()
            self._start_state_pid = self.instance.pid
        else:
            if self._pending != MessageType.RUN_STEP_SYNC:
                # Rewinds happen inside a run step: let the game (paused in its frame sync) reach the next one.
                client.set_speed(self.params.running_speed)
                self._release()
                self._wait_run_step(min_time_ms=-(10**9))
            client.rewind_to_state(self._start_state)
        client.set_input_state(False, False, False, False)
        return self._observe()

    def _observe(self) -> tuple[CarState, np.ndarray]:
        """At a pending RUN_STEP_SYNC: read the state, pause, and wait for the frame (left pending)."""
        client = self._connected_client
        car = car_state(client.get_simulation_state())
        if self.params.rewind_each_action:
            client.rewind_to_current_state()  # frame, state and inputs on one engine step (Linesight)
        client.set_speed(0.0)
        client.request_frame(self.env_spec.w_downsized, self.env_spec.h_downsized)
        self._release()
        while True:
            message = client.read_message()
            if message.type == MessageType.REQUESTED_FRAME_SYNC:
                assert message.frame is not None  # read_message fills in the frame of a REQUESTED_FRAME_SYNC
                self._pending = message.type
                return car, message.frame
            self._answer(message)
