"""The configuration schema: one dataclass per config node, the single source of every default.

The YAML files under ``conf/`` only choose options and set values; Hydra validates them against these
dataclasses (registered in Hydra's ConfigStore by ``tmexp.compose.register_configs``). Library code under
``tmexp/core`` and ``tmexp/envs`` receives these typed sub-configs, never the whole tree.

Closed sets are ``Choice`` Enums: OmegaConf rejects any other value when it composes, and the core's comparisons
with plain strings (``cnn.type == "impala"``) keep working. Composing the tree is ``tmexp.compose``'s job, so that
the core can import this schema without importing Hydra.

Schedules are lists of ``[frame, value]`` points over frames played (actions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from tmexp.envs.base import EnvSpec, RewardSpec
from tmexp.envs.sim.params import SimParams
from tmexp.envs.tmi.params import TmiParams


class Choice(str, Enum):
    """A value from a closed set: a ``str`` equal to its value, printed as its value (YAML uses the member name,
    which is the value)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Backend(Choice):
    sim = "sim"
    tmi = "tmi"


class CnnType(Choice):
    linesight = "linesight"
    impala = "impala"


class Optimizer(Choice):
    radam = "radam"
    adam = "adam"


class CutoffValue(Choice):
    """What a race cut off for making no progress is worth after its end (``training.no_progress_cutoff_value``)."""

    bootstrap = "bootstrap"  # a truncation: the value of the last observation, as any state
    stuck = "stuck"  # terminal, with the return of staying stuck: the time penalty until the race timeout
    zero = "zero"  # terminal, value 0


class NoisyFan(Choice):
    """What NoisyLinear's initial bias sigma divides sigma0 by (``btr.noisy_bias_sigma_fan``): sqrt of the inputs
    (the NoisyNet paper's, tmexp's default) or of the outputs (BTR's code)."""

    fan_in = "fan_in"
    fan_out = "fan_out"


class CheckpointErrorPolicy(Choice):
    """What a checkpoint that cannot be written (a full disk) does to the run (``training.on_checkpoint_error``)."""

    retry = "retry"  # said at once in one line, its files removed; the next checkpoint tries again
    stop = "stop"  # the run stops, its last complete checkpoint kept


class Device(Choice):
    """``auto``: CUDA when torch sees it, else the CPU. One GPU of several: choose it with CUDA_VISIBLE_DEVICES."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Objective(Choice):
    """What a search (``hydra/sweeper=optuna``) optimises, read from the run's logs at its end
    (``tmexp/launch/objective.py``): race times are minimised, distances maximised."""

    best_time = "best_time"
    best_eval_time = "best_eval_time"
    robust_eval_time = "robust_eval_time"
    furthest_eval = "furthest_eval"
    furthest_race = "furthest_race"


class ConsoleMode(Choice):
    """``auto``: a progress bar when stdout is a terminal, plain lines otherwise (logs, pipes, SLURM)."""

    auto = "auto"
    bar = "bar"
    lines = "lines"


class WandbMode(Choice):
    online = "online"
    offline = "offline"


@dataclass
class EnvConfig(EnvSpec):
    """``env``: the backend and the settings every backend shares (see ``tmexp/envs/base.py``)."""

    backend: Backend = Backend.sim
    sim: SimParams = field(default_factory=SimParams)
    tmi: TmiParams = field(default_factory=TmiParams)


@dataclass
class MapEntry:
    """One map of a map cycle (``map.cycle``), as in Linesight's ``map_cycle``: its track, its game map and its
    races per cycle. A race count left null takes the ``map`` node's own (``map.explo_races_per_cycle=32`` sets
    every map's)."""

    short_name: str = ""  # names the map's tags (``alltime_min_ms_<short_name>``) and its best_runs files
    map_path: str = ""  # the game's .Challenge.Gbx (env=tmi only)
    reference_line_path: str | None = None  # null: the built-in track of that name
    explo_races_per_cycle: int | None = None
    eval_races_per_cycle: int | None = None


@dataclass
class MapConfig:
    """``map``: which track, or which tracks in turn. ``reference_line_path`` (a Linesight (N, 3) .npy) overrides
    the built-in track.

    One map: ``short_name`` and the fields below. A map cycle (``cycle``, several maps): each entry is a map of its
    own, played in Linesight's order (the first map's exploration races, then its eval races, then the next map's,
    round and round; ``tmexp/envs/maps.py``); ``short_name`` then names the cycle, ``map_path`` and
    ``reference_line_path`` stay unset, and the race counts are the entries' defaults.
    """

    short_name: str = "A01"
    map_path: str = ""  # the game's .Challenge.Gbx (env=tmi only)
    reference_line_path: str | None = None
    explo_races_per_cycle: int = 64
    eval_races_per_cycle: int = 1
    cycle: list[MapEntry] = field(default_factory=list)


@dataclass
class CNNConfig:
    """``nn/vis/cnn``: the vision CNN."""

    type: CnnType = CnnType.linesight
    width_scale: int = 1  # IMPALA channels are (16, 32, 32) x width_scale
    adaptive_maxpool_size: int | None = None  # IMPALA: adaptive max-pool to (size, size); null = off
    # IMPALA: average-pool the image by this factor before the first stage (2: a 48x48 image is seen at 24x24), the
    # image size a CPU can afford (IMPALA's cost grows with the pixels; the Linesight CNN ignores this key).
    input_pool: int = 1
    spectral_norm: bool = False  # IMPALA: spectral normalisation on the residual blocks' convolutions
    layer_norm_in_stages: bool = False  # IMPALA: LayerNorm after each stage (option of btr.use_layer_norm)


@dataclass
class VisConfig:
    cnn: CNNConfig = field(default_factory=CNNConfig)


@dataclass
class NNConfig:
    """``nn``: the IQN network and its loss (Linesight defaults)."""

    float_hidden_dim: int = 256
    dense_hidden_dimension: int = 1024
    iqn_embedding_dimension: int = 128
    # Multiplies dense_hidden_dimension and iqn_embedding_dimension (rounded): the small_net ablation halves the
    # network whatever size was composed (1024 / 128 -> 512 / 64, 256 / 64 -> 128 / 32).
    size_scale: float = 1.0
    iqn_n: int = 8  # quantiles per sample for training (even: stratified, symmetric taus)
    iqn_k: int = 32  # quantiles for acting
    iqn_kappa: float = 5e-3
    use_ddqn: bool = True
    clip_grad_value: float = 1000.0
    clip_grad_norm: float = 30.0
    soft_update_tau: float = 0.02
    number_memories_trained_on_between_target_network_updates: int = 128
    target_self_loss_clamp_ratio: float = 4.0
    # Standardise each float input by the mean and std the backend measures with the reference driver (the
    # simulator on its track, the game through env.tmi.float_stats_path): the env's own scaling leaves some inputs
    # far below unit spread.
    normalize_floats: bool = True
    vis: VisConfig = field(default_factory=VisConfig)


@dataclass
class BTRConfig:
    """``btr``: the Beyond-The-Rainbow ingredients that are not the CNN (see ``nn/vis/cnn`` for IMPALA)."""

    use_munchausen: bool = False
    munchausen_alpha: float = 0.9
    munchausen_entropy_tau: float = 0.03
    munchausen_lo: float = -1.0
    use_layer_norm: bool = False
    use_noisy_linear: bool = False
    noisy_sigma0: float = 0.5
    noisy_bias_sigma_fan: NoisyFan = NoisyFan.fan_in  # BTR's code: fan_out (docs/configuration.md)
    # With NoisyNets on, keep epsilon-greedy / Boltzmann exploration too (BTR turns epsilon off; false = noise only).
    noisy_keep_epsilon: bool = False


@dataclass
class TrainingConfig:
    """``training``: optimisation, schedules and run length."""

    batch_size: int = 512  # Linesight uses 4096 on a GPU; the default run uses 64 (conf/training/cpu.yaml)
    optimizer: Optimizer = Optimizer.radam
    adam_epsilon: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay_lr_ratio: float = 0.1
    global_schedule_speed: float = 1.0
    lr_schedule: list[Any] = field(
        default_factory=lambda: [[0, 1e-3], [3_000_000, 5e-5], [12_000_000, 5e-5], [15_000_000, 1e-5]]
    )
    gamma_schedule: list[Any] = field(default_factory=lambda: [[0, 0.999], [1_500_000, 0.999], [2_500_000, 1.0]])
    n_steps: int = 3
    discard_non_greedy_actions_in_nsteps: bool = True
    # Linesight's mini-races (clipped horizon, see tmexp/core/replay.py; Linesight: 7000): values count the reward
    # of the next this-many ms of race time, so they stay bounded when gamma reaches 1. 0 = off, the default, since
    # short CPU runs learned slower with it (README, "Mini-races"); turn it on for runs past gamma's 1.
    temporal_mini_race_duration_ms: int = 0
    oversample_long_term_steps: int = 40
    oversample_maximum_term_steps: int = 5
    # The end of a race cut off for making no progress (tmexp/core/replay.py): "bootstrap" is Linesight's (a
    # truncation), kept for the published experiments; the default run values the stall as "stuck"
    # (conf/training/cpu.yaml), since a bootstrap from a stopped car's last observation, a state no race goes on
    # from, valued stalls above driving; "zero" would make stopping pay, every action costing time. README, "The
    # stall at the start".
    no_progress_cutoff_value: CutoffValue = CutoffValue.bootstrap
    # Collectors pause while the learner has trained on fewer than this many samples per transition played since
    # learning started (0 = never: Linesight's collectors play at the game's pace). On the simulator one collector
    # of 16 cars plays about 3,400 frames/s, several times what a CPU learner trains on, and every schedule counts
    # frames; the default run keeps 4 (conf/training/cpu.yaml). The learner's own bound is
    # memory.number_times_single_memory_is_used_before_discard.
    min_replay_ratio: float = 0.0
    max_frames: int = 0  # 0 = no limit
    max_minutes: float = 0.0  # 0 = no limit
    checkpoint_every_minutes: float = 5.0
    # Checkpoints hold the replay buffer too, so a resumed run trains on what it had (written incrementally, in
    # the background); false: smaller, faster checkpoints, and a resumed run refills replay before training.
    save_replay: bool = True
    on_checkpoint_error: CheckpointErrorPolicy = CheckpointErrorPolicy.retry
    # The final checkpoint after a stop signal (SIGTERM, submitit's checkpoint signal) is written within this many
    # seconds of the learner noticing it: networks, optimiser, counters and priorities always, then as many changed
    # replay chunks as fit (docs/run-directory.md). Below SLURM's KillWait (30 s by default), after which SIGKILL.
    preempt_save_deadline_s: float = 20.0
    # A saved replay that does not fit the resumed run's buffer (a smaller memory schedule) is refused unless this
    # is true; then the run resumes with an empty replay.
    resume_discards_replay: bool = False
    log_every_seconds: float = 30.0
    console_every_seconds: float = 5.0


@dataclass
class MemoryConfig:
    """``memory``: replay capacity schedule ([frame, [capacity, size to start learning]]) and PER."""

    memory_size_schedule: list[Any] = field(
        default_factory=lambda: [[0, [50_000, 20_000]], [5_000_000, [100_000, 75_000]], [7_000_000, [200_000, 150_000]]]
    )
    prio_alpha: float = 0.0  # 0 = uniform sampling
    prio_epsilon: float = 2e-3
    prio_beta: float = 1.0
    number_times_single_memory_is_used_before_discard: float = 32.0


@dataclass
class ExplorationConfig:
    """``exploration``: epsilon-greedy and Boltzmann-perturbed action selection."""

    epsilon_schedule: list[Any] = field(
        default_factory=lambda: [[0, 1.0], [50_000, 1.0], [300_000, 0.1], [3_000_000, 0.03]]
    )
    epsilon_boltzmann_schedule: list[Any] = field(default_factory=lambda: [[0, 0.15], [10_000_000, 0.03]])
    tau_epsilon_boltzmann: float = 0.01


@dataclass
class RewardsConfig(RewardSpec):
    """``rewards``: see ``tmexp/envs/base.py``."""


@dataclass
class PerformanceConfig:
    """``performance``: collectors and weight sharing."""

    # One collector process driving 16 cars (batched: a car costs a fraction of what a process of its own costs)
    # leaves the learner the rest of the machine; the README's benchmark notes say why 16.
    gpu_collectors_count: int = 1
    # K: cars one collector drives on the simulator, choosing their K actions with one batched forward pass
    # (env=tmi chooses 1: one game per collector).
    cars_per_collector: int = 16
    serial: bool = False  # one collector inside the learner's process (debugging, fast tests)
    max_rollout_queue_size: int = 4
    update_inference_network_every_n_actions: int = 128
    send_shared_network_every_n_batches: int = 16
    torch_threads_learner: int = 1  # 0: torch's default (one per core)
    torch_threads_collector: int = 1
    # Collectors run this much "nicer" than the learner (os.nice): on a machine with few cores the learner keeps
    # its core and the collectors use what is left.
    collector_nice: int = 10
    device: Device = Device.auto
    use_amp: bool = True  # on CUDA only
    channels_last: bool = True
    frames_before_save_best_runs: int = 0
    # In a --multirun, at most this many jobs train at once; the others wait for a slot (tmexp/launch/job_slots.py).
    # 0: no limit. For hydra/launcher=local, which starts every job at once.
    job_slots: int = 0
    # A job that fails (an exception, not a stop for time) is started again up to this many times, resuming from
    # its checkpoint; the end-of-sweep summary counts the retries.
    max_retries: int = 0


@dataclass
class LoggerConfig:
    """``logger``: how a run reports besides TensorBoard (always on): the console and, optionally, W&B."""

    console: ConsoleMode = ConsoleMode.auto
    # Mirror the TensorBoard scalars, the resolved config and run_meta.json to Weights & Biases
    # (pip install -e '.[wandb]'). Offline runs are kept in <run_dir>/wandb/ for a later `wandb sync`.
    wandb: bool = False
    wandb_project: str = "tmexp"
    wandb_entity: str | None = None  # None: the account's default entity
    wandb_mode: WandbMode = WandbMode.online


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    map: MapConfig = field(default_factory=MapConfig)
    nn: NNConfig = field(default_factory=NNConfig)
    btr: BTRConfig = field(default_factory=BTRConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    objective: Objective = Objective.best_time  # the run's result, returned to a search (hydra/sweeper=optuna)
    seed: int = 0
    run_name: str = "default"
