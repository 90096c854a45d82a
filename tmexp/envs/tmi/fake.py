"""A fake TMInterface plugin: the server side of ``protocol.py`` on loopback, driven by tmexp's simulator.

It behaves like the game running ``plugin/tmexp_link.as``: it greets each client with ON_CONNECT_SYNC, runs
10 ms engine ticks while the speed is above zero, sends RUN_STEP_SYNC when the race time is a multiple of the
on-step period, CHECKPOINT_COUNT_CHANGED_SYNC when the car passes a checkpoint or the finish, and the requested
frame (BGRA, grey levels from the simulator's camera) at the next "render". It answers every command of the
protocol. Unlike the game it ticks as fast as it can whatever the speed, and its save states carry a handle to
the simulator's exact state, so a rewind restores the race bit for bit.

Faults for tests (each fires once per process, counted in RUN_STEP_SYNC messages of races):
``--drop-after N`` closes the connection, ``--stall-after N`` goes silent, ``--garbage-after N`` sends an unknown
message type, ``--exit-after N`` kills the process (a crashed game).

    python -m tmexp.envs.tmi.fake --port 8478 [--map A01] [--reference-line path.npy]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import struct
import sys
from dataclasses import dataclass

import numpy as np

from tmexp.envs.base import EnvSpec
from tmexp.envs.observation import Camera, ImageRenderer, planar_rotation
from tmexp.envs.sim.core import track_world
from tmexp.envs.sim.params import SimParams
from tmexp.envs.sim.physics import CarState as SimCar
from tmexp.envs.sim.physics import advance, locate
from tmexp.envs.tmi import protocol
from tmexp.envs.tmi.protocol import MessageType
from tmexp.envs.tmi.state import CarState, build_sim_state_bytes, car_state, extra_bytes, parse_sim_state
from tmexp.envs.track import SPACING_M, TrackError, load_map, load_track

log = logging.getLogger("tmexp.envs.tmi.fake")

GARBAGE_MESSAGE_TYPE = 999


class ClientGone(Exception):
    """The client closed the connection, timed out, or broke the protocol: go back to listening."""


@dataclass
class Faults:
    drop_after: int = 0  # 0 = never
    stall_after: int = 0
    garbage_after: int = 0
    exit_after: int = 0


class FakePlugin:
    """Serves one client at a time on ``host:port`` until ``stop()`` (or forever)."""

    def __init__(self, race, port: int, host: str = "127.0.0.1", faults: Faults | None = None,
                 countdown_ms: int = 100):
        self.race = race  # a FakeRace (below): the simulator behind the protocol
        self.port = port
        self.host = host
        self.faults = faults or Faults()
        self.countdown_ms = countdown_ms
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._stopping = False
        self.run_steps_sent = 0
        self.connections = 0
        # Plugin settings (reset for every new client, like the real plugin).
        self.timeout_ms = 2000
        self.on_step_period_ms = 10
        self.speed = 1.0
        self.frame_size: tuple[int, int] | None = None
        self.finish_prevented = False

    # ---- sockets ------------------------------------------------------------------------------------------

    def listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(1)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]  # port 0 asks the OS for a free one

    def stop(self) -> None:
        self._stopping = True

    def serve_forever(self) -> None:
        if self._listener is None:
            self.listen()
        log.info("fake plugin listening on %s:%d", self.host, self.port)
        try:
            while not self._stopping:
                try:
                    client, _ = self._listener.accept()
                except socket.timeout:
                    continue
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._client = client
                self.connections += 1
                try:
                    self._session()
                except ClientGone as reason:
                    log.info("client dropped: %s", reason)
                finally:
                    client.close()
                    self._client = None
        finally:
            self._listener.close()

    def _send(self, data: bytes) -> None:
        try:
            self._client.sendall(data)
        except OSError as error:
            raise ClientGone(f"send failed ({error})") from None

    def _recv_exact(self, n: int, timeout_s: float) -> bytes:
        self._client.settimeout(timeout_s)
        data = bytearray()
        while len(data) < n:
            try:
                chunk = self._client.recv(n - len(data))
            except socket.timeout:
                raise ClientGone(f"no answer within {timeout_s * 1000:.0f} ms") from None
            except OSError as error:
                raise ClientGone(f"read failed ({error})") from None
            if not chunk:
                raise ClientGone("the client closed the connection")
            data += chunk
        return bytes(data)

    def _recv_int32(self) -> int:
        return protocol.INT32.unpack(self._recv_exact(4, self.timeout_ms / 1000))[0]

    # ---- the plugin's behaviour ---------------------------------------------------------------------------

    def _session(self) -> None:
        self.timeout_ms, self.on_step_period_ms, self.speed = 2000, 10, 1.0
        self.frame_size = None
        self._sync(MessageType.ON_CONNECT_SYNC)
        if not self.race.loaded:
            self.race.load(countdown_ms=self.countdown_ms)
        while True:
            if self.frame_size is not None:
                width, height = self.frame_size
                self.frame_size = None  # one frame per request, like the plugin
                self._sync(MessageType.REQUESTED_FRAME_SYNC, self.race.frame_bgra(width, height))
            elif self.speed > 0:
                self._tick()
            else:
                # Paused with nothing requested: a real game idles; notice a client that leaves meanwhile.
                self._client.settimeout(0.05)
                try:
                    if self._client.recv(1, socket.MSG_PEEK) == b"":
                        raise ClientGone("the client closed the connection")
                except socket.timeout:
                    pass
                except OSError as error:
                    raise ClientGone(f"read failed ({error})") from None

    def _tick(self) -> None:
        for current, target in self.race.tick():
            self._sync(MessageType.CHECKPOINT_COUNT_CHANGED_SYNC, protocol.TWO_INT32.pack(current, target))
            if current == target and not self.finish_prevented:
                self.race.end()  # the game would show the finish screen; run steps keep coming with a fixed time
        race_time = self.race.race_time_ms
        if race_time % self.on_step_period_ms == 0 or self.race.ended:
            self.run_steps_sent += 1
            self._maybe_fault()
            self._sync(MessageType.RUN_STEP_SYNC, protocol.pack_int32(race_time))

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
                self._client.settimeout(0.2)
                try:
                    if self._client.recv(4096) == b"":
                        break
                except socket.timeout:
                    continue
                except OSError:
                    break
            raise ClientGone("fault: stalled")
        if f.garbage_after and n == f.garbage_after:
            self._send(protocol.pack_int32(GARBAGE_MESSAGE_TYPE) + b"\x01\x02\x03")

    def _sync(self, message_type: MessageType, payload: bytes = b"") -> None:
        """Send a synchronous message and execute commands until the client echoes it."""
        self._send(protocol.pack_message(message_type, payload))
        while True:
            received = self._recv_int32()
            if received == message_type:
                return
            self._command(received)

    def _command(self, command: int) -> None:
        r = self._recv_exact
        timeout_s = self.timeout_ms / 1000
        if command == MessageType.SET_SPEED:
            self.speed = protocol.FLOAT32.unpack(r(4, timeout_s))[0]
        elif command == MessageType.REWIND_TO_STATE:
            length = self._recv_int32()
            if not 0 <= length <= protocol.MAX_PAYLOAD_BYTES:
                raise ClientGone(f"impossible state length {length}")
            self.race.rewind(r(length, timeout_s))
            self.finish_prevented = False
        elif command == MessageType.REWIND_TO_CURRENT_STATE:
            pass  # the fake's state is already exact
        elif command == MessageType.GET_SIMULATION_STATE:
            self._send(protocol.pack_blob(self.race.state_bytes()))
        elif command == MessageType.SET_INPUT_STATE:
            left, right, accelerate, brake = protocol.INPUTS.unpack(r(4, timeout_s))
            self.race.set_inputs(bool(left), bool(right), bool(accelerate), bool(brake))
        elif command == MessageType.GIVE_UP:
            self.race.restart()
            self.finish_prevented = False
        elif command == MessageType.PREVENT_SIMULATION_FINISH:
            self.finish_prevented = True
        elif command == MessageType.SHUTDOWN:
            raise ClientGone("the client said goodbye")
        elif command == MessageType.EXECUTE_COMMAND:
            length = self._recv_int32()
            if not 0 <= length <= protocol.MAX_PAYLOAD_BYTES:
                raise ClientGone(f"impossible command length {length}")
            self._execute(r(length, timeout_s).decode("utf-8", errors="replace"))
        elif command == MessageType.SET_TIMEOUT:
            self.timeout_ms = protocol.UINT32.unpack(r(4, timeout_s))[0]
        elif command == MessageType.RACE_FINISHED:
            self._send(protocol.pack_int32(int(self.race.ended or self.race.finished)))
        elif command == MessageType.REQUEST_FRAME:
            self.frame_size = protocol.TWO_INT32.unpack(r(8, timeout_s))
        elif command == MessageType.RESET_CAMERA:
            pass
        elif command == MessageType.SET_ON_STEP_PERIOD:
            period = protocol.INT32.unpack(r(4, timeout_s))[0]
            self.on_step_period_ms = period if period > 0 else 10
        elif command == MessageType.UNREQUEST_FRAME:
            self.frame_size = None
        elif command == MessageType.TOGGLE_INTERFACE:
            r(4, timeout_s)
        elif command == MessageType.IS_IN_MENUS:
            self._send(protocol.pack_int32(int(not self.race.loaded)))
        elif command == MessageType.GET_INPUTS:
            self._send(protocol.pack_blob(self.race.inputs_text().encode("utf-8")))
        else:
            # Unknown payload length: the stream cannot be resynchronised, exactly as in the real plugin.
            log.error("unknown message type %d from the client; dropping it", command)
            raise ClientGone(f"unknown message type {command}")

    def _execute(self, command: str) -> None:
        """The console commands tmexp sends: ``map <name or reference line .npy>``; others are ignored."""
        words = command.split(maxsplit=1)
        if len(words) == 2 and words[0] == "map":
            try:
                self.race.load_map(words[1].strip().strip('"'), countdown_ms=self.countdown_ms)
            except TrackError as error:  # e.g. a real .Challenge.Gbx: the fake keeps the track it has
                log.warning("map command ignored: %s", error)
                return
            self.finish_prevented = False


class FakeRace:
    """The simulator's physics and track behind the fake plugin: one car, stepped one 10 ms engine tick at a time.

    Race semantics are the simulator's (``tmexp/envs/sim/core.py``): the car starts at rest on the start line,
    a checkpoint every ``checkpoint_spacing_m``, the finish when the progress reaches the track's length. A
    countdown of ``countdown_ms`` (negative race times, car frozen) precedes race time 0, as in the game.
    """

    _HANDLE_MAGIC = b"tmexp-fake-state"
    _KEEP_SNAPSHOTS = 256  # exact states kept for rewinds (start states are always kept)

    def __init__(self, track, spec=None, params=None):
        self.spec = spec or EnvSpec()
        self.params = params or SimParams()
        self._set_track(track)
        self.loaded = False
        self.ended = False  # finished without PREVENT_SIMULATION_FINISH: the clock is frozen
        self.inputs = (0.0, 0.0, 0.0)  # accelerate, brake, steer command (-1 left .. +1 right)
        self._inputs_raw = (False, False, False, False)
        self._snapshots: dict[int, tuple] = {}
        self._next_handle = 1
        self._renderers: dict[tuple[int, int], object] = {}

    def _set_track(self, track) -> None:
        self.track = track
        self.world = track_world(track, self.spec, self.params)
        self._cp_pad = np.append(self.world.checkpoints, np.inf)
        self._renderers = {}

    # ---- race control -------------------------------------------------------------------------------------

    def load(self, countdown_ms: int = 0) -> None:
        """Put the car on the start line at rest, ``countdown_ms`` before the start."""
        line = self.world.line
        start = line.offset
        car = SimCar.zeros(1)
        car.x[:], car.z[:] = line.xz[start, 0], line.xz[start, 1]
        car.fx[:], car.fz[:] = line.tangent[start, 0], line.tangent[start, 1]
        car.idx[:] = start
        locate(car, self.world.geo)
        self.car = car
        # The clock always ticks into race time 0 (where the game reports its first run step), so at least 10 ms.
        self.race_time_ms = -max(10, abs(int(countdown_ms)) // 10 * 10)
        self.finished = False
        self.ended = False
        self.next_cp = 0
        self.cp_times: list[int] = []
        self.finish_time_ms: int | None = None
        self.loaded = True
        self._countdown_ms = countdown_ms

    def load_map(self, name: str, countdown_ms: int = 0) -> None:
        self._set_track(load_track(name) if name.endswith(".npy") else load_map(name))
        self.load(countdown_ms)

    def restart(self) -> None:
        self.load(self._countdown_ms)

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
        s = advance(self.car, np.array([accelerate]), np.array([brake]), np.array([steer]), self.params,
                    self.world.geo, dt_ms / 1000.0, 1)[0, 0]
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

    def car_state(self):
        """The car as ``tmexp.envs.tmi.state.CarState`` (what the game's save state holds)."""
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
            cp_passed=len(times),
            cp_target=self.n_checkpoints,
            cp_times_ms=times,
            finished=self.finished,
        )

    def state_bytes(self) -> bytes:
        handle = self._next_handle
        self._next_handle += 1
        self._snapshots[handle] = (self.car.copy(), self.race_time_ms, self.finished, self.ended, self.next_cp,
                                   list(self.cp_times), self.finish_time_ms)
        self._forget_old_snapshots()
        return build_sim_state_bytes(self.car_state(), extra=self._HANDLE_MAGIC + struct.pack("<q", handle))

    def _forget_old_snapshots(self) -> None:
        if len(self._snapshots) <= self._KEEP_SNAPSHOTS:
            return
        for handle in sorted(self._snapshots)[: len(self._snapshots) - self._KEEP_SNAPSHOTS]:
            if self._snapshots[handle][1] > 0:  # keep start states: they are rewound to at every race
                del self._snapshots[handle]

    def rewind(self, data: bytes) -> None:
        """Restore a save state: exactly when it is one of ours, else from its fields (position, speed...)."""
        parsed = parse_sim_state(data)
        extra = extra_bytes(parsed)
        n = len(self._HANDLE_MAGIC)
        handle = struct.unpack("<q", extra[n:n + 8])[0] if extra[:n] == self._HANDLE_MAGIC else None
        if handle in self._snapshots:
            car, self.race_time_ms, self.finished, self.ended, self.next_cp, cp_times, self.finish_time_ms = \
                self._snapshots[handle]
            self.car, self.cp_times = car.copy(), list(cp_times)
            return
        state = car_state(parsed)
        self.load(0)
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
        """The simulator's image of the road ahead at ``width`` x ``height``, as grey BGRA bytes (rows top first)."""
        renderer = self._renderers.get((width, height))
        if renderer is None:
            p = self.params
            camera = Camera(height, width, p.view_behind_m, p.view_ahead_m, p.view_row_power, p.view_half_width_m,
                            p.view_widening)
            if (height, width) == (self.world.camera.height, self.world.camera.width):
                renderer = self.world.renderer
            else:
                renderer = ImageRenderer(self.world.raster, camera, p.heading_bins)
            self._renderers[(width, height)] = renderer
        car = self.car
        gray = renderer.render(np.array([[car.x[0], car.z[0]]]), np.array([[car.fx[0], car.fz[0]]]))[0, 0]
        bgra = np.empty((height, width, 4), dtype=np.uint8)
        bgra[..., :3] = gray[..., None]
        bgra[..., 3] = 255
        return bgra.tobytes()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake TMInterface plugin driven by tmexp's simulator.")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on (127.0.0.1)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--map", default="A01", help="built-in track name (ignored with --reference-line)")
    parser.add_argument("--reference-line", default=None, help="a Linesight reference line .npy")
    parser.add_argument("--countdown-ms", type=int, default=100, help="negative race time before the start (>= 10)")
    parser.add_argument("--drop-after", type=int, default=0, help="close the connection after N run steps (once)")
    parser.add_argument("--stall-after", type=int, default=0, help="go silent after N run steps (once)")
    parser.add_argument("--garbage-after", type=int, default=0, help="send an unknown message after N run steps")
    parser.add_argument("--exit-after", type=int, default=0, help="exit (a crashed game) after N run steps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s fake-plugin[%(process)d] %(message)s",
                        stream=sys.stderr)

    race = FakeRace(load_map(args.map, args.reference_line))
    faults = Faults(args.drop_after, args.stall_after, args.garbage_after, args.exit_after)
    plugin = FakePlugin(race, args.port, args.host, faults, countdown_ms=args.countdown_ms)
    signal.signal(signal.SIGTERM, lambda *_: plugin.stop())
    plugin.serve_forever()


if __name__ == "__main__":
    main()
