"""The game's simulation state: bytes <-> ``tminterface.structs.SimStateData`` <-> the few numbers tmexp uses.

TMInterface 2's ``SimulationManager.SaveState().ToArray()`` has the layout of TMInterface 1.x's save states,
which the ``tminterface`` package describes (``SimStateData``: 8344 fixed bytes, then the checkpoint data whose
two arrays have variable length). Only the package's structures are used here: its client needs Windows-only
shared memory.

Frames: world positions are (x, height, z) in metres; ``rotation`` maps car-frame vectors to world vectors and
is passed on as is to the float vector, which reads its columns as the car's right, up and forward axes
(``tmexp/envs/observation.py``). The game's own column order is used unchanged: should its first column point
to the car's left, the sideways components of the car-frame inputs flip sign, which is consistent within the
backend (a network trained on the game sees one convention) but differs from the simulator's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
from tminterface import constants
from tminterface.structs import CheckpointData, SimStateData

_FIXED_BYTES = SimStateData.min_size - CheckpointData.min_size  # everything before the checkpoint data
_ALL_FLAGS = (
    constants.SIM_HAS_TIMERS
    | constants.SIM_HAS_DYNA
    | constants.SIM_HAS_SCENE_MOBIL
    | constants.SIM_HAS_SIMULATION_WHEELS
    | constants.SIM_HAS_PLUG_SOLID
    | constants.SIM_HAS_CMD_BUFFER_CORE
    | constants.SIM_HAS_INPUT_STATE
    | constants.SIM_HAS_PLAYER_INFO
)


@dataclass
class CarState:
    """What tmexp reads from one save state (world frame, SI units, race time in ms)."""

    race_time_ms: int
    position: np.ndarray  # (3,) x, y (up), z in metres
    velocity: np.ndarray  # (3,) m/s, world frame
    angular_velocity: np.ndarray  # (3,) rad/s, world frame
    rotation: np.ndarray  # (3, 3) car frame -> world frame
    wheel_contact: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=bool))  # (4,) ground contact
    wall_contact: bool = False  # any lateral contact (the game's has_any_lateral_contact)
    steer: float = 0.0  # steering state, -1 full left .. +1 full right
    gear: int = 1
    # The rest of what Linesight's float inputs read (``tmexp/envs/observation.py``, ``build_game_floats``).
    wheel_sliding: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=bool))  # (4,)
    wheel_damper: np.ndarray = field(default_factory=lambda: np.zeros(4))  # (4,) damper absorb, about 0.005 .. 0.15
    wheel_material: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.int64))  # (4,) contact material
    gearbox_state: int = 0  # non-zero while changing gears (2 at start-up)
    rpm: float = 0.0  # engine rpm, about 0 .. 10000
    freewheeling: bool = False
    cp_passed: int = 0  # checkpoint passes so far (finish included)
    cp_target: int = 0  # passes needed to finish
    cp_times_ms: list[int] = field(default_factory=list)  # race time of each pass so far
    finished: bool = False

    @property
    def speed_kmh(self) -> float:
        return float(np.linalg.norm(self.velocity) * 3.6)


def parse_sim_state(data: bytes) -> SimStateData:
    """A ``SimStateData`` from the plugin's bytes, with its checkpoint arrays sized from their length fields.

    Raises ValueError when the bytes cannot be a save state (too short, checkpoint arrays that do not fit).
    """
    if len(data) < SimStateData.min_size:
        raise ValueError(f"a {len(data)}-byte save state is shorter than the {SimStateData.min_size} bytes of one")
    n_states = struct.unpack_from("<i", data, _FIXED_BYTES + 4)[0]
    n_times_at = _FIXED_BYTES + 8 + 4 * max(n_states, 0)
    n_times = struct.unpack_from("<i", data, n_times_at)[0] if 0 <= n_states and n_times_at + 4 <= len(data) else -1
    if n_states < 0 or n_times < 0 or n_times_at + 4 + 8 * n_times > len(data):
        raise ValueError(
            f"a save state whose checkpoint arrays ({n_states} states, {n_times} times) do not fit "
            f"its {len(data)} bytes"
        )
    state = SimStateData(bytearray(data))
    # The checkpoint arrays are variable length: size the first before the second's length field can be read.
    state.cp_data.resize(CheckpointData.cp_states_field, state.cp_data.cp_states_length)
    state.cp_data.resize(CheckpointData.cp_times_field, state.cp_data.cp_times_length)
    return state


def car_state(state: SimStateData) -> CarState:
    """The numbers tmexp needs from a parsed save state."""
    dyna = state.dyna.current_state
    cp_times = [int(t.time) for t in state.cp_data.cp_times]
    passed = [t for t in cp_times if t >= 0]
    wheels = state.simulation_wheels
    return CarState(
        race_time_ms=int(state.player_info.race_time),
        position=np.asarray(dyna.position, dtype=np.float64),
        velocity=np.asarray(dyna.linear_speed, dtype=np.float64),
        angular_velocity=np.asarray(dyna.angular_speed, dtype=np.float64),
        rotation=np.asarray(dyna.rotation.to_numpy(), dtype=np.float64).reshape(3, 3),
        wheel_contact=np.array([bool(wheels[i].real_time_state.has_ground_contact) for i in range(4)]),
        wall_contact=bool(state.scene_mobil.has_any_lateral_contact),
        steer=float(state.scene_mobil.input_steer),
        gear=int(state.scene_mobil.engine.gear),
        wheel_sliding=np.array([bool(wheels[i].real_time_state.is_sliding) for i in range(4)]),
        wheel_damper=np.array([float(wheels[i].real_time_state.damper_absorb) for i in range(4)]),
        wheel_material=np.array([int(wheels[i].real_time_state.contact_material_id) & 0xFFFF for i in range(4)]),
        gearbox_state=int(state.scene_mobil.gearbox_state),
        rpm=float(state.scene_mobil.engine.actual_rpm),
        freewheeling=bool(state.scene_mobil.is_freewheeling),
        cp_passed=len(passed),
        cp_target=len(cp_times),
        cp_times_ms=passed,
        finished=bool(state.player_info.race_finished),
    )


def build_sim_state_bytes(car: CarState, extra: bytes = b"") -> bytes:
    """The bytes the plugin would send for ``car`` (used by the fake plugin server).

    ``extra`` (at most 264 bytes) goes into the command-buffer region, which the game treats as instance data;
    the fake server keeps a handle to its exact simulator state there.
    """
    state = SimStateData()
    state.version = 1
    state.context_mode = constants.MODE_RUN
    state.flags = _ALL_FLAGS
    state.timers[1] = car.race_time_ms
    dyna = state.dyna.current_state
    dyna.position = [float(v) for v in car.position]
    dyna.linear_speed = [float(v) for v in car.velocity]
    dyna.angular_speed = [float(v) for v in car.angular_velocity]
    dyna.rotation = np.asarray(car.rotation, dtype=np.float64).tolist()
    for i in range(4):
        wheel = state.simulation_wheels[i].real_time_state
        wheel.has_ground_contact = bool(car.wheel_contact[i])
        wheel.is_sliding = bool(car.wheel_sliding[i])
        wheel.damper_absorb = float(car.wheel_damper[i])
        wheel.contact_material_id = int(car.wheel_material[i])
    mobil = state.scene_mobil
    mobil.has_any_lateral_contact = bool(car.wall_contact)
    mobil.input_steer = float(car.steer)
    mobil.engine.gear = int(car.gear)
    mobil.engine.actual_rpm = float(car.rpm)
    mobil.gearbox_state = int(car.gearbox_state)
    mobil.is_freewheeling = bool(car.freewheeling)
    info = state.player_info
    info.race_time = int(car.race_time_ms)
    info.cur_checkpoint = int(car.cp_passed)
    info.race_finished = bool(car.finished)
    info.display_speed = int(round(car.speed_kmh))
    if len(extra) > 264:
        raise ValueError(f"extra is {len(extra)} bytes; the command-buffer region holds 264.")
    state.cmd_buffer_core = bytes(extra).ljust(264, b"\0")
    fixed = bytes(state.data[:_FIXED_BYTES])

    # Checkpoint data: reserved, n states (int32 bools), their values, n times, (time, stunts) pairs.
    n = int(car.cp_target)
    times = list(car.cp_times_ms[:n]) + [-1] * (n - len(car.cp_times_ms[:n]))
    checkpoints = struct.pack("<ii", 0, n) + struct.pack(f"<{n}i", *[int(t >= 0) for t in times])
    checkpoints += struct.pack("<i", n) + b"".join(struct.pack("<ii", t, 0) for t in times)
    return fixed + checkpoints


def extra_bytes(state: SimStateData) -> bytes:
    """The ``extra`` bytes written by ``build_sim_state_bytes``."""
    return bytes(state.cmd_buffer_core)
