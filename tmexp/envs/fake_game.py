"""A fake game: Trackmania running Linesight's plugin, played by the simulator, on loopback.

It speaks the plugin's protocol (``tmexp.envs.tmi.protocol``) as the game running Linesight's ``Python_Link.as``
does: it greets each client with ON_CONNECT_SYNC, runs 10 ms engine ticks while the speed is above zero, sends
RUN_STEP_SYNC when the race time is a multiple of the on-step period, CHECKPOINT_COUNT_CHANGED_SYNC when the car
passes a checkpoint or the finish, and the requested frame (BGRA, grey levels from the simulator's camera) at the
next "render". The simulator's physics and track stand in for the game's, so a race here is the simulator's race
bit for bit. It lives beside both backends because it uses the simulator to play the game's part.

The game's states, all of which accept every command: the menus (before any map: the race commands do nothing,
frames are black), a race (a countdown of negative race times, then racing) and a finished race (the finish not
prevented: run steps keep coming with the finishing race time). A client that breaks the protocol (a type the fake
does not know, an impossible length or frame size, a save state that does not parse, silence past the timeout)
loses its connection, and the fake listens again: only ``stop()`` ends it.

Where it differs from the game, on purpose: it ticks as fast as it can whatever the speed, and stands still
between clients; its save states carry a handle to the simulator's exact state, so a rewind restores the race
bit for bit (a state it did not issue is restored from its fields); a type it does not know costs the client its
connection at once (the plugin logs it and reads on, which garbles the stream); the console command
``map <name>`` loads a built-in track or a reference line ``.npy``, and any other map (a ``.Challenge.Gbx``) the
track the fake was started with. Other console commands are accepted and ignored.

Behaviours of the game it can imitate, each an option: ``steps_first`` sends a tick's RUN_STEP_SYNC before its
CHECKPOINT_COUNT_CHANGED_SYNC (the default sends the checkpoint first; Linesight notes the game may do either);
``login_screen`` keeps a game whose settings lack ``autologin`` at its login screen, where the plugin never greets
(``settings_path`` keeps the ``set`` variables across launches, as TMInterface does); ``unfocused`` renders frames
slowly until ``set unfocused_fps_limit false``. It records every command it receives (``received``, and the
console commands in ``console``) and starts with its console open (``toggle_console`` closes it).

Faults for tests (each fires once per process, counted in RUN_STEP_SYNC messages of races):
``drop_after`` closes the connection, ``stall_after`` goes silent, ``garbage_after`` sends an unknown message
type, ``exit_after`` kills the process (a crashed game), ``freeze_after`` stops the race time while run steps keep
coming; ``unpreventable_finish`` ignores PREVENT_SIMULATION_FINISH (the finished race's time stops likewise).

Start one with ``python -m tmexp.sim fake-game --port 8478`` (``--help`` for the options).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tminterface.structs import SimStateData

from tmexp.envs.base import EnvSpec
from tmexp.envs.observation import Camera, ImageRenderer, planar_rotation
from tmexp.envs.sim.core import track_world
from tmexp.envs.sim.params import SimParams
from tmexp.envs.sim.physics import SimCars, advance
from tmexp.envs.tmi import protocol
from tmexp.envs.tmi.protocol import MessageType
from tmexp.envs.tmi.state import CarState, build_sim_state_bytes, car_state, extra_bytes, parse_sim_state
from tmexp.envs.track import SPACING_M, Track, TrackError, builtin_track_names, load_map, load_track, locate

log = logging.getLogger("tmexp.envs.fake_game")

GARBAGE_MESSAGE_TYPE = 999
DEFAULT_TIMEOUT_MS = 2000  # the plugin's wait for an echo until SET_TIMEOUT
MAX_FRAME_SIDE = 4096
ASPHALT = 16  # the game's contact material id the fake's wheels always touch
UNFOCUSED_FRAME_DELAY_S = 0.03  # an unfocused game's frame rate cap, imitated
_RECEIVED_KEPT = 100_000


def name_process(name: str) -> None:
    """Name this process ``name`` in the process list (Linux), as the game's executable is named."""
    if sys.platform.startswith("linux") and name:
        try:
            Path("/proc/self/comm").write_text(name[:15])
        except OSError:
            pass


class ClientGone(Exception):
    """The client closed the connection, timed out, or broke the protocol: go back to listening."""


@dataclass
class Faults:
    drop_after: int = 0  # 0 = never
    stall_after: int = 0
    garbage_after: int = 0
    exit_after: int = 0
    unpreventable_finish: bool = False
    freeze_after: int = 0  # the race time stops (run steps keep coming), no finish reported


class FakeGame:
    """Serves one client at a time on ``host:port`` until ``stop()``.

    ``load_on_connect``: the map loads once the first client is greeted, as when the launch command names it;
    False keeps the game in its menus until a client sends a ``map`` console command.
    """

    def __init__(
        self,
        race: FakeRace,
        port: int,
        host: str = "127.0.0.1",
        faults: Faults | None = None,
        load_on_connect: bool = True,
        steps_first: bool = False,
        login_screen: bool = False,
        unfocused: bool = False,
        settings_path: str | None = None,
    ):
        self.race = race
        self.port = port
        self.host = host
        self.faults = faults or Faults()
        self.load_on_connect = load_on_connect
        self.steps_first = steps_first
        self.unfocused = unfocused
        self.settings_path = Path(settings_path) if settings_path else None
        self.settings: dict[str, str] = self._read_settings()
        self.at_login_screen = login_screen and not self.settings.get("autologin")
        self.console_open = True
        self.received: collections.deque = collections.deque(maxlen=_RECEIVED_KEPT)  # (MessageType, value)
        self.console: list[str] = []
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._stopping = False
        self.run_steps_sent = 0
        self.connections = 0
        self.clients_dropped: list[str] = []  # why each client left, in order
        # The plugin's settings: a new client gets the default timeout and no frame request; the rest is the game's.
        self.timeout_ms = DEFAULT_TIMEOUT_MS
        self.on_step_period_ms = 10
        self.speed = 1.0
        self.frame_size: tuple[int, int] | None = None

    # ---- sockets ------------------------------------------------------------------------------------------

    def listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(1)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]  # port 0 asks the OS for a free one
        return listener

    def stop(self) -> None:
        self._stopping = True

    def serve_forever(self) -> None:
        listener = self._listener if self._listener is not None else self.listen()
        log.info("fake game listening on %s:%d", self.host, self.port)
        try:
            while not self._stopping:
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._client = client
                self.connections += 1
                try:
                    self._session()
                except ClientGone as reason:
                    log.info("client dropped: %s", reason)
                    self.clients_dropped.append(str(reason))
                except Exception as error:  # whatever a client sent, the game goes on for the next one
                    log.exception("client dropped: its messages broke the fake game")
                    self.clients_dropped.append(f"{type(error).__name__}: {error}")
                finally:
                    client.close()
                    self._client = None
        finally:
            listener.close()

    @property
    def _connection(self) -> socket.socket:
        """The socket of the client being served (only inside ``serve_forever``'s session)."""
        if self._client is None:
            raise RuntimeError("the fake game talked to a client outside a session (a bug)")
        return self._client

    def _send(self, data: bytes) -> None:
        try:
            protocol.Wire(self._connection).send(data)
        except protocol.WireError as error:
            raise ClientGone(str(error)) from None

    def _wire_read(self, read, *args):
        """``read(*args)`` of the wire; any failure costs the client its connection."""
        try:
            return read(protocol.Wire(self._connection), *args)
        except protocol.WireSilent:
            raise ClientGone(f"no answer within {self.timeout_ms} ms") from None
        except protocol.WireClosed as error:
            raise ClientGone("the client closed the connection" if error.by_peer else str(error)) from None
        except protocol.WireBadLength as error:
            raise ClientGone(str(error)) from None

    def _recv_exact(self, n: int, timeout_s: float) -> bytes:
        return self._wire_read(protocol.Wire.recv_exact, n, timeout_s)

    def _read(self, n: int) -> bytes:
        """A command's payload (the client writes it with the type: the timeout is only a guard)."""
        return self._recv_exact(n, self.timeout_ms / 1000)

    def _read_int32(self) -> int:
        return self._wire_read(protocol.Wire.recv_int32, self.timeout_ms / 1000)

    def _read_blob(self, what: str) -> bytes:
        return self._wire_read(protocol.Wire.recv_blob, what, self.timeout_ms / 1000)

    # ---- the game and its plugin ----------------------------------------------------------------------------

    def _read_settings(self) -> dict[str, str]:
        if self.settings_path is None or not self.settings_path.is_file():
            return {}
        return json.loads(self.settings_path.read_text())

    def _session(self) -> None:
        self.timeout_ms = DEFAULT_TIMEOUT_MS
        self.frame_size = None
        while self.at_login_screen and not self._stopping:
            # The plugin greets only past the start-up screens: the client waits, and nothing here logs in.
            self._connection.settimeout(0.05)
            try:
                if self._connection.recv(1, socket.MSG_PEEK) == b"":
                    raise ClientGone("the client closed the connection")
            except TimeoutError:
                pass
            except OSError as error:
                raise ClientGone(f"read failed ({error})") from None
        self._sync(MessageType.ON_CONNECT_SYNC)
        if not self.race.loaded and self.load_on_connect:
            self.race.load()
        while not self._stopping:
            if self.frame_size is not None:  # a render: in a race or in the menus
                width, height = self.frame_size
                self.frame_size = None  # one frame per request
                if self.unfocused and self.settings.get("unfocused_fps_limit", "true") != "false":
                    time.sleep(UNFOCUSED_FRAME_DELAY_S)
                self._sync(MessageType.REQUESTED_FRAME_SYNC, self.race.frame_bgra(width, height))
            elif self.race.loaded and self.speed > 0:
                self._tick()
            else:
                # Paused, or in the menus: a game idles (commands wait for the next synchronous message); notice
                # a client that leaves meanwhile.
                self._connection.settimeout(0.05)
                try:
                    if self._connection.recv(1, socket.MSG_PEEK) == b"":
                        raise ClientGone("the client closed the connection")
                    time.sleep(0.01)  # bytes waiting for the next synchronous message
                except TimeoutError:
                    pass
                except OSError as error:
                    raise ClientGone(f"read failed ({error})") from None
        raise ClientGone("the fake game stops")

    def _tick(self) -> None:
        events = self.race.tick()
        if not self.steps_first:
            self._checkpoints(events)
        race_time = self.race.race_time_ms
        if race_time % self.on_step_period_ms == 0 or self.race.ended:
            self.run_steps_sent += 1
            self._maybe_fault()
            self._sync(MessageType.RUN_STEP_SYNC, protocol.pack_int32(race_time))
        if self.steps_first:
            self._checkpoints(events)

    def _checkpoints(self, events: list[tuple[int, int]]) -> None:
        for current, target in events:
            self._sync(MessageType.CHECKPOINT_COUNT_CHANGED_SYNC, protocol.TWO_INT32.pack(current, target))
            if current == target and self.race.finished and not self.race.finish_prevented:
                self.race.end()  # the game shows the finish: run steps keep coming with the race time frozen

    def _maybe_fault(self) -> None:
        f, n = self.faults, self.run_steps_sent
        if f.exit_after and n == f.exit_after:
            log.warning("fault: exiting (a crashed game)")
            os._exit(3)
        if f.drop_after and n == f.drop_after:
            raise ClientGone("fault: dropping the connection")
        if f.stall_after and n == f.stall_after:
            log.warning("fault: going silent")
            while not self._stopping:  # never answer again; the client must time out and leave
                self._connection.settimeout(0.2)
                try:
                    if self._connection.recv(4096) == b"":
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
            raise ClientGone("fault: stalled")
        if f.freeze_after and n == f.freeze_after:
            log.warning("fault: the race time stops")
            self.race.end()
        if f.garbage_after and n == f.garbage_after:
            self._send(protocol.pack_int32(GARBAGE_MESSAGE_TYPE) + b"\x01\x02\x03")

    def _sync(self, message_type: MessageType, payload: bytes = b"") -> None:
        """Send a synchronous message and execute commands until the client echoes it.

        As in the plugin, the timeout counts from the start of the wait and only drops a client that has nothing
        waiting to be read; it is read afresh after every command, so SET_TIMEOUT applies to the wait under way.
        """
        self._send(protocol.pack_message(message_type, payload))
        wait_start = time.monotonic()
        while True:
            left_s = wait_start + self.timeout_ms / 1000 - time.monotonic()
            received = protocol.INT32.unpack(self._recv_exact(4, left_s))[0]
            if received == message_type:
                return
            self._command(received)

    def _command(self, command: int) -> None:
        race = self.race
        if command in protocol.MESSAGE_TYPES:
            self.received.append((MessageType(command), None))
        if command in protocol.SERVER_SYNC_MESSAGES:
            pass  # an echo of another synchronous message: the plugin reads on
        elif command == MessageType.SET_SPEED:
            self.speed = protocol.FLOAT32.unpack(self._read(4))[0]
            self.received[-1] = (MessageType.SET_SPEED, self.speed)
        elif command == MessageType.REWIND_TO_STATE:
            data = self._read_blob("save state")
            if race.loaded:
                race.rewind(data)
        elif command == MessageType.REWIND_TO_CURRENT_STATE:
            pass  # the fake's state is already exact
        elif command == MessageType.GET_SIMULATION_STATE:
            self._send(protocol.pack_blob(race.state_bytes()))
        elif command == MessageType.SET_INPUT_STATE:
            left, right, accelerate, brake = protocol.INPUTS.unpack(self._read(4))
            if race.loaded:
                race.set_inputs(bool(left), bool(right), bool(accelerate), bool(brake))
        elif command == MessageType.GIVE_UP:
            if race.loaded:
                race.load()
        elif command == MessageType.PREVENT_SIMULATION_FINISH:
            if race.loaded and not self.faults.unpreventable_finish:
                race.finish_prevented = True
        elif command == MessageType.SHUTDOWN:
            raise ClientGone("the client said goodbye")
        elif command == MessageType.EXECUTE_COMMAND:
            self._execute(self._read_blob("console command").decode("utf-8", errors="replace"))
        elif command == MessageType.SET_TIMEOUT:
            self.timeout_ms = protocol.UINT32.unpack(self._read(4))[0]
        elif command == MessageType.RACE_FINISHED:
            self._send(protocol.pack_int32(int(race.loaded and (race.ended or race.finished))))
        elif command == MessageType.REQUEST_FRAME:
            width, height = protocol.TWO_INT32.unpack(self._read(8))
            if height < 0:
                self.frame_size = None  # the plugin requests a frame only for a height >= 0
            elif 0 <= width <= MAX_FRAME_SIDE and height <= MAX_FRAME_SIDE:
                self.frame_size = (width, height)
            else:
                raise ClientGone(f"impossible frame size {width} x {height}")
        elif command == MessageType.RESET_CAMERA:
            pass
        elif command == MessageType.SET_ON_STEP_PERIOD:
            period = self._read_int32()
            self.on_step_period_ms = period if period > 0 else 10
        elif command == MessageType.UNREQUEST_FRAME:
            self.frame_size = None
        elif command == MessageType.TOGGLE_INTERFACE:
            self._read(4)
        elif command == MessageType.IS_IN_MENUS:
            self._send(protocol.pack_int32(int(not race.loaded)))
        elif command == MessageType.GET_INPUTS:
            self._send(protocol.pack_blob(race.inputs_text().encode("utf-8")))
        else:
            # Its payload length is unknown too: nothing after it can be trusted.
            raise ClientGone(f"unknown message type {command}")

    def _execute(self, text: str) -> None:
        """Console commands, ``;``-separated as in TMInterface's console: ``map`` loads a track, ``set`` stores a
        variable (kept in ``settings_path``), ``toggle_console`` opens or closes the console, ``set speed``
        sets the speed; others are ignored."""
        for command in text.split(";"):
            self.console.append(command.strip())
            words = command.strip().split(maxsplit=2)
            if len(words) >= 2 and words[0] == "map":
                try:
                    self.race.load_map(command.strip()[len("map") :].strip().strip('"'))
                except TrackError as error:  # the game would print the error in its console
                    log.warning("map command ignored: %s", error)
            elif len(words) == 3 and words[0] == "set":
                if words[1] == "speed":
                    self.speed = float(words[2])
                else:
                    self.settings[words[1]] = words[2]
                    if self.settings_path is not None:
                        self.settings_path.write_text(json.dumps(self.settings))
            elif words == ["toggle_console"]:
                self.console_open = not self.console_open
            elif words:
                log.debug("console command ignored: %s", command.strip())


class FakeRace:
    """The simulator's physics and track behind the fake game: one car, stepped one 10 ms engine tick at a time.

    Race semantics are the simulator's (``tmexp/envs/sim/core.py``): the car starts at rest on the start line,
    a checkpoint every ``checkpoint_spacing_m``, the finish when the progress reaches the track's length. A
    countdown of ``countdown_ms`` (negative race times, car frozen) precedes race time 0, as in the game. Until
    ``load`` the game is in its menus.
    """

    _HANDLE_MAGIC = b"tmexp-fake-state"
    _KEEP_SNAPSHOTS = 256  # exact states kept for rewinds (start states are always kept)

    def __init__(
        self, track: Track, spec: EnvSpec | None = None, params: SimParams | None = None, countdown_ms: int = 100
    ):
        self.spec = spec or EnvSpec()
        self.params = params or SimParams()
        self.home_track = track  # what a map the fake cannot read (a .Challenge.Gbx) loads
        self.countdown_ms = countdown_ms
        self._set_track(track)
        self.loaded = False
        self.finished = False
        self.ended = False  # finished without PREVENT_SIMULATION_FINISH: the clock is frozen
        self.finish_prevented = False
        self.race_time_ms = 0
        self.inputs = (0.0, 0.0, 0.0)  # accelerate, brake, steer command (-1 left .. +1 right)
        self._inputs_raw = (False, False, False, False)
        self._snapshots: dict[int, tuple] = {}
        self._next_handle = 1

    def _set_track(self, track: Track) -> None:
        self.track = track
        self.world = track_world(track, self.spec, self.params)
        self._cp_pad = np.append(self.world.checkpoints, np.inf)
        self._renderers: dict[tuple[int, int], ImageRenderer] = {}

    # ---- race control -------------------------------------------------------------------------------------

    def load(self) -> None:
        """Start the race: the car on the start line at rest, ``countdown_ms`` before the start."""
        line = self.world.line
        start = line.offset
        car = SimCars.zeros(1)
        car.x[:], car.z[:] = line.xz[start, 0], line.xz[start, 1]
        car.fx[:], car.fz[:] = line.tangent[start, 0], line.tangent[start, 1]
        car.idx[:] = start
        locate(car, self.world.geo)
        self.car = car
        # The clock always ticks into race time 0 (where the game reports its first run step), so at least 10 ms.
        self.race_time_ms = -max(10, abs(int(self.countdown_ms)) // 10 * 10)
        self.finished = False
        self.ended = False
        self.finish_prevented = False
        self.next_cp = 0
        self.cp_times: list[int] = []
        self.finish_time_ms: int | None = None
        self.loaded = True

    def load_map(self, name: str) -> None:
        """The ``map`` console command: a reference line ``.npy``, a built-in track, or else the home track."""
        if name.endswith(".npy"):
            track = load_track(name)
        elif name in builtin_track_names():
            track = load_map(name)
        else:
            track = self.home_track
        self._set_track(track)
        self.load()

    def end(self) -> None:
        self.ended = True

    def set_inputs(self, left: bool, right: bool, accelerate: bool, brake: bool) -> None:
        self._inputs_raw = (left, right, accelerate, brake)
        self.inputs = (float(accelerate), float(brake), float(right) - float(left))

    def inputs_text(self) -> str:
        left, right, accelerate, brake = self._inputs_raw
        return f"{self.race_time_ms} press " + ",".join(
            name for name, on in (("left", left), ("right", right), ("up", accelerate), ("down", brake)) if on
        )

    @property
    def n_checkpoints(self) -> int:
        """Checkpoint passes needed to finish, the finish included (the game's ``target``)."""
        return len(self.world.checkpoints) + 1

    def progress(self) -> float:
        s = self.world.line.s[self.car.idx[0]] + self.car.along[0]
        return float(np.clip(s, 0.0, self.track.length))

    def tick(self) -> list[tuple[int, int]]:
        """One 10 ms engine step; returns the checkpoint passes (current, target) it made."""
        if self.ended:
            return []
        dt_ms = self.spec.ms_per_tm_engine_step
        if self.race_time_ms < 0:  # countdown: the car waits on the line
            self.race_time_ms += dt_ms
            return []
        accelerate, brake, steer = self.inputs
        # One engine step at a time: bit for bit the simulator's trajectory, which runs the same steps in a row.
        s = advance(
            self.car,
            np.array([accelerate]),
            np.array([brake]),
            np.array([steer]),
            self.params,
            self.world.geo,
            dt_ms / 1000.0,
            1,
        )[0, 0]
        self.race_time_ms += dt_ms
        if self.finished:
            return []
        events = []
        while s >= self._cp_pad[self.next_cp]:
            self.cp_times.append(self.race_time_ms)
            self.next_cp += 1
            events.append((self.next_cp, self.n_checkpoints))
        if s >= self.track.length:
            self.finished = True
            self.finish_time_ms = self.race_time_ms
            events.append((self.n_checkpoints, self.n_checkpoints))
        return events

    # ---- save states --------------------------------------------------------------------------------------

    def car_state(self) -> CarState:
        """The car as ``tmexp.envs.tmi.state.CarState`` (what the game's save state holds)."""
        if not self.loaded:  # the menus: no car
            return CarState(
                race_time_ms=0,
                position=np.zeros(3),
                velocity=np.zeros(3),
                angular_velocity=np.zeros(3),
                rotation=np.eye(3),
            )
        car, line = self.car, self.world.line
        times = self.cp_times + ([self.finish_time_ms] if self.finish_time_ms is not None else [])
        return CarState(
            race_time_ms=int(self.race_time_ms),
            position=np.array([car.x[0], line.points[car.idx[0], 1], car.z[0]]),
            velocity=np.array([car.vx[0], 0.0, car.vz[0]]),
            angular_velocity=np.array([0.0, -car.yaw_rate[0], 0.0]),  # turning right is negative about +y
            rotation=planar_rotation(np.array([[car.fx[0], car.fz[0]]]))[0],
            wheel_contact=np.ones(4, dtype=bool),
            wall_contact=bool(car.wall[0]),
            steer=float(car.steer[0]),
            gear=1,
            wheel_material=np.full(4, ASPHALT, dtype=np.int64),
            wheel_damper=np.full(4, 0.01),
            cp_passed=len(times),
            cp_target=self.n_checkpoints,
            cp_times_ms=times,
            finished=self.finished,
        )

    def state_bytes(self) -> bytes:
        if not self.loaded:
            return build_sim_state_bytes(self.car_state())
        handle = self._next_handle
        self._next_handle += 1
        self._snapshots[handle] = (
            self.car.copy(),
            self.race_time_ms,
            self.finished,
            self.ended,
            self.next_cp,
            list(self.cp_times),
            self.finish_time_ms,
        )
        self._forget_old_snapshots()
        return build_sim_state_bytes(self.car_state(), extra=self._HANDLE_MAGIC + struct.pack("<q", handle))

    def _forget_old_snapshots(self) -> None:
        if len(self._snapshots) <= self._KEEP_SNAPSHOTS:
            return
        for handle in sorted(self._snapshots)[: len(self._snapshots) - self._KEEP_SNAPSHOTS]:
            if self._snapshots[handle][1] > 0:  # keep start states: they are rewound to at every race
                del self._snapshots[handle]

    def rewind(self, data: bytes) -> None:
        """Restore a save state: exactly when it is one of ours, else from its fields (position, speed...).

        A state whose finish time was cleared (-1, Linesight's way to keep a finished race going) rewinds to
        the race with its finish prevented.
        """
        if len(data) < SimStateData.min_size:
            raise ClientGone(f"a {len(data)}-byte save state (at least {SimStateData.min_size} expected)")
        try:
            parsed = parse_sim_state(data)
            state = car_state(parsed)
        except ValueError as error:
            raise ClientGone(f"a save state that does not parse ({error})") from None
        extra = extra_bytes(parsed)
        n = len(self._HANDLE_MAGIC)
        handle = struct.unpack("<q", extra[n : n + 8])[0] if extra[:n] == self._HANDLE_MAGIC else None
        if handle in self._snapshots:
            car, self.race_time_ms, self.finished, self.ended, self.next_cp, cp_times, self.finish_time_ms = (
                self._snapshots[handle]
            )
            self.car, self.cp_times = car.copy(), list(cp_times)
            self.finish_prevented = self.finished and len(state.cp_times_ms) < len(cp_times) + 1
            return
        self.load()
        forward = state.rotation[:, 2]
        norm = float(np.hypot(forward[0], forward[2])) or 1.0
        car = self.car
        car.x[:], car.z[:] = state.position[0], state.position[2]
        car.fx[:], car.fz[:] = forward[0] / norm, forward[2] / norm
        car.vx[:], car.vz[:] = state.velocity[0], state.velocity[2]
        car.yaw_rate[:] = -state.angular_velocity[1]
        car.steer[:] = state.steer
        progress, _ = self.track.project(np.array([[car.x[0], car.z[0]]]))
        car.idx[:] = self.world.line.offset + int(round(progress[0] / SPACING_M))
        locate(car, self.world.geo, iterations=8)
        self.race_time_ms = state.race_time_ms
        self.cp_times = [t for t in state.cp_times_ms[: self.n_checkpoints - 1]]
        self.next_cp = len(self.cp_times)

    # ---- frames -------------------------------------------------------------------------------------------

    def frame_bgra(self, width: int, height: int) -> bytes:
        """The simulator's image of the road ahead at ``width`` x ``height`` as grey BGRA bytes (rows top first);
        black in the menus."""
        bgra = np.zeros((height, width, 4), dtype=np.uint8)
        bgra[..., 3] = 255
        if not self.loaded or width == 0 or height == 0:
            return bgra.tobytes()
        renderer = self._renderers.get((width, height))
        if renderer is None:
            p = self.params
            if (height, width) == (self.world.camera.height, self.world.camera.width):
                renderer = self.world.renderer
            else:
                camera = Camera(
                    height,
                    width,
                    p.view_behind_m,
                    p.view_ahead_m,
                    p.view_row_power,
                    p.view_half_width_m,
                    p.view_widening,
                )
                renderer = ImageRenderer(self.world.raster, camera, p.heading_bins)
            self._renderers[(width, height)] = renderer
        car = self.car
        gray = renderer.render(np.array([[car.x[0], car.z[0]]]), np.array([[car.fx[0], car.fz[0]]]))[0, 0]
        bgra[..., :3] = gray[..., None]
        return bgra.tobytes()


def serve(
    track: Track,
    port: int,
    host: str = "127.0.0.1",
    countdown_ms: int = 100,
    menus: bool = False,
    faults: Faults | None = None,
    **behaviours,
) -> FakeGame:
    """A fake game listening on ``host:port`` (bound before this returns); call ``serve_forever`` on it.

    ``behaviours``: ``steps_first``, ``login_screen``, ``unfocused``, ``settings_path`` (``FakeGame``)."""
    game = FakeGame(
        FakeRace(track, countdown_ms=countdown_ms), port, host, faults, load_on_connect=not menus, **behaviours
    )
    game.listen()
    return game
