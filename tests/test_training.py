"""End-to-end runs of the shared training core on the simulator: smoke runs, resume, SIGKILL, experiments."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tmexp.core import metrics
from tmexp.core.checkpoint import has_checkpoint, load_checkpoint
from tmexp.train import compose_config, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["+experiment=smoke"]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """All scalar events of a run, by tag, as TensorBoard's own reader returns them (purged steps removed)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def test_smoke_run_serial(tmp_path):
    cfg = compose_config(TINY)
    reason = train(cfg, tmp_path)
    assert reason == "max_frames"
    st = status(tmp_path)
    assert st["status"] == "finished" and st["frames"] >= 400 and st["batches"] > 0
    tags = scalars(tmp_path)
    for tag in (
        metrics.alltime_min_ms("A01"),
        metrics.explo_race_time("A01"),
        metrics.LOSS,
        metrics.LEARNER_PERCENTAGE,
        metrics.CUMUL_FRAMES,
        metrics.CUMUL_BATCHES,
        metrics.avg_q("A01"),
        metrics.explo_race_progress("A01"),
    ):
        assert tag in tags, tag
    assert has_checkpoint(tmp_path)
    assert (tmp_path / "config_resolved.yaml").is_file() and (tmp_path / "run_meta.json").is_file()
    meta = json.loads((tmp_path / "run_meta.json").read_text())
    assert meta["torch"] == torch.__version__ and meta["cpu_count"] >= 1
    assert (meta["git_commit"] is None) == (meta["git_dirty"] is None)  # a commit comes with whether it was dirty


def test_every_race_records_the_runs_counters_at_its_end(tmp_path):
    train(compose_config(TINY), tmp_path)
    tags = scalars(tmp_path)
    races = [s for s, _ in tags[metrics.alltime_min_ms("A01")]]
    batches = tags[metrics.RACE_BATCHES]
    seconds = tags[metrics.RACE_TRAINING_S]
    assert [s for s, _ in batches] == races and [s for s, _ in seconds] == races  # one point per race, at its step
    assert all(b1 <= b2 for (_, b1), (_, b2) in zip(batches, batches[1:]))
    assert all(t1 <= t2 for (_, t1), (_, t2) in zip(seconds, seconds[1:]))
    assert batches[-1][1] > 0 and batches[0][1] == 0  # the first race ends before learning starts
    # The last race's counters are within the run's final totals, and the machine's state is logged too.
    assert batches[-1][1] <= status(tmp_path)["batches"]
    assert metrics.UPDATES_PER_S in tags and metrics.LOAD_AVERAGE in tags


def test_smoke_run_with_two_collector_processes(tmp_path):
    cfg = compose_config(TINY + ["performance.serial=false", "performance.gpu_collectors_count=2"])
    train(cfg, tmp_path)
    st = status(tmp_path)
    assert st["status"] == "finished" and st["frames"] >= 400 and st["batches"] > 0
    assert metrics.explo_race_time("A01") in scalars(tmp_path)


def test_checkpoint_round_trip_and_resume_continue_counters(tmp_path):
    cfg = compose_config(TINY)
    train(cfg, tmp_path)
    first = load_checkpoint(tmp_path)
    frames1, batches1 = first["counters"]["frames"], first["counters"]["batches"]
    cfg.training.max_frames = frames1 + 300
    train(cfg, tmp_path)
    second = load_checkpoint(tmp_path)
    assert second["counters"]["frames"] >= frames1 + 300
    assert second["counters"]["batches"] >= batches1
    assert second["counters"]["training_seconds"] > first["counters"]["training_seconds"]
    for key in ("online", "target"):  # weights were restored, then trained on
        assert set(second[key]) == set(first[key])
    steps = [s for s, _ in scalars(tmp_path)[metrics.CUMUL_FRAMES]]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)


def test_build_resumes_exact_state(tmp_path):
    from tmexp.core.build import build

    cfg = compose_config(TINY)
    train(cfg, tmp_path)
    saved = load_checkpoint(tmp_path)
    run = build(cfg, tmp_path)
    try:
        assert run.resumed
        for name, tensor in run.online.state_dict().items():
            assert torch.equal(tensor, saved["online"][name])
        for name, tensor in run.target.state_dict().items():
            assert torch.equal(tensor, saved["target"][name])
        assert run.counters.frames == saved["counters"]["frames"]
        assert run.optimizer.state_dict()["state"].keys() == saved["optimizer"]["state"].keys()
        assert len(run.replay) == min(run.replay.capacity, saved["counters"]["transitions_added"])  # saved too
    finally:
        run.close()


def test_the_same_seed_gives_the_same_run(tmp_path):
    cfg = compose_config(TINY + ["training.max_frames=300"])
    for name in ("a", "b"):
        train(cfg, tmp_path / name)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a["counters"]["frames"] == b["counters"]["frames"] and a["counters"]["batches"] == b["counters"]["batches"]
    assert a["counters"]["batches"] > 0
    for name, tensor in a["online"].items():
        assert torch.equal(tensor, b["online"][name]), name


def test_sigkill_mid_run_then_resume(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "tmexp.train",
        "+experiment=smoke",
        "training.max_frames=1000000",
        "training.checkpoint_every_minutes=0.02",
        "performance.serial=false",
        "performance.gpu_collectors_count=1",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if has_checkpoint(run_dir) and load_checkpoint(run_dir)["counters"]["batches"] > 20:
                break
            time.sleep(1)
        else:
            pytest.fail("no checkpoint with training progress appeared")
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert children, "the collector process is missing"
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the learner only: its collector must notice and stop by itself
        proc.wait()

    def running(pid: str) -> bool:  # an exited child nobody reaps stays a zombie ("Z") in /proc
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.time() + 60
    while time.time() < deadline and any(running(pid) for pid in children):
        time.sleep(0.5)
    alive = [pid for pid in children if running(pid)]
    for pid in alive:
        os.kill(int(pid), signal.SIGKILL)
    assert not alive, "collector processes outlived their killed learner"
    killed_at = load_checkpoint(run_dir)["counters"]
    assert status(run_dir)["status"] == "running"  # it never got to say goodbye
    resume = cmd[:4] + [f"training.max_frames={killed_at['frames'] + 300}"] + cmd[6:]
    subprocess.run(resume, cwd=ROOT, check=True, capture_output=True, timeout=300)
    after = load_checkpoint(run_dir)["counters"]
    assert after["frames"] >= killed_at["frames"] + 300
    assert after["batches"] >= killed_at["batches"]
    assert status(run_dir)["status"] == "finished"


@pytest.mark.parametrize("experiment", ["A01_v2", "A01_v4_btr", "A01_v4.1_btr", "A01_v4.2_btr"])
def test_each_published_experiment_runs_a_few_hundred_frames(experiment, tmp_path):
    # Races cut at 10 s (200 actions), so that training starts before max_frames however well the first race goes;
    # replay ratio 1: a few batches each (the BTR networks take about a second per batch here).
    cfg = compose_config(
        [
            f"+experiment={experiment}",
            "performance.serial=true",
            "training.max_frames=300",
            "training.batch_size=32",
            "memory.memory_size_schedule=[[0,[4000,100]]]",
            "env.cutoff_rollout_if_race_not_finished_within_duration_ms=10000",
            "memory.number_times_single_memory_is_used_before_discard=1",
        ]
    )  # a few batches each
    train(cfg, tmp_path)
    st = status(tmp_path)
    assert st["status"] == "finished" and st["frames"] >= 300 and st["batches"] > 0


def test_multirun_yields_runs_differing_only_in_the_swept_key(tmp_path):
    sweep = tmp_path / "sweep"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tmexp.train",
            "--multirun",
            "+experiment=smoke",
            "training.max_frames=150",
            "btr.use_munchausen=true,false",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    configs = [OmegaConf.to_container(OmegaConf.load(sweep / str(i) / "config_resolved.yaml")) for i in (0, 1)]

    def flat(node, prefix=""):
        out = {}
        for k, v in node.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = (flat(c) for c in configs)
    assert {k for k in a if a[k] != b[k]} == {"btr.use_munchausen"}
    assert {a["btr.use_munchausen"], b["btr.use_munchausen"]} == {True, False}
    for i in (0, 1):
        assert status(sweep / str(i))["status"] == "finished"


def test_new_best_race_saves_its_actions(tmp_path):
    from tmexp.core.build import build
    from tmexp.core.learner import Learner

    cfg = compose_config(TINY)
    run = build(cfg, tmp_path)
    learner = Learner(run)
    try:
        T = 5
        rollout = {
            "img": np.zeros((T + 1, *run.spaces.img_shape), np.uint8),
            "floats": np.zeros((T + 1, run.spaces.float_dim), np.float32),
            "actions": np.arange(T, dtype=np.int64),
            "rewards": np.zeros(T, np.float32),
            "greedy": np.ones(T, bool),
            "q_taken": np.zeros(T, np.float32),
            "terminated": True,
            "finished": True,
            "race_time_ms": 250,
            "progress_m": 1073.0,
            "cp_times": [],
            "cutoff": None,
            "is_eval": True,
            "collector": 0,
            "weights_version": 0,
        }
        learner.ingest(rollout)
        assert run.counters.alltime_min_ms["A01"] == 250 and run.counters.eval_races == 1
        saved = np.load(tmp_path / "best_runs" / "A01_250.npy")
        assert saved.tolist() == list(range(T))
        slower = dict(rollout, race_time_ms=300)
        learner.ingest(slower)
        assert run.counters.alltime_min_ms["A01"] == 250
    finally:
        run.close()


def test_hparams_are_written_for_tensorboards_hparams_view(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    train(compose_config(TINY + ["training.max_frames=100"]), tmp_path)
    found = {}
    for path in (tmp_path / "tensorboard").glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        found = dict(data.session_start_info.hparams)
    assert found, "no hparams session in the run's TensorBoard file"
    assert found["run_name"].string_value == "smoke" and found["cnn"].string_value == "linesight"
    assert found["munchausen"].bool_value is False


@pytest.mark.parametrize("duration_ms", [7000, 0])
def test_mini_races_add_the_time_float_to_the_network_and_train(duration_ms, tmp_path):
    from tmexp.core.build import build
    from tmexp.core.learner import Learner

    # One car: races arrive one by one, so that 200 frames hold a few batches (tests/test_collectors.py: K cars).
    cfg = compose_config(
        TINY
        + [
            f"training.temporal_mini_race_duration_ms={duration_ms}",
            "training.max_frames=200",
            "training.gamma_schedule=[[0,0.99]]",
            "performance.cars_per_collector=1",
        ]
    )
    run = build(cfg, tmp_path)
    try:
        width = run.online.float_feature_extractor[0].in_features
        assert width == run.spaces.float_dim + (duration_ms > 0)
        assert run.source.collector.s.mini_race == (duration_ms > 0)
        assert Learner(run).train() == "max_frames" and run.counters.batches > 0
    finally:
        run.close()


@pytest.mark.parametrize("normalize, duration_ms", [(True, 0), (True, 7000), (False, 0)])
def test_float_inputs_are_standardised_with_the_backends_statistics(normalize, duration_ms, tmp_path):
    from tmexp import rundir
    from tmexp.core.build import build
    from tmexp.envs.factory import make_env

    cfg = compose_config(
        TINY
        + [f"nn.normalize_floats={str(normalize).lower()}", f"training.temporal_mini_race_duration_ms={duration_ms}"]
    )
    run = build(cfg, tmp_path)
    try:
        mean, std = make_env(cfg.env, cfg.map, cfg.rewards).float_stats()
        # the run directory records the env's statistics, which a resumed run reads instead of measuring again
        assert (rundir.read_float_stats(tmp_path) is not None) == normalize
        if normalize:
            np.testing.assert_allclose(rundir.read_float_stats(tmp_path)[1], std, rtol=1e-6)
        if duration_ms:  # the mini-race time comes first and is left as it is
            mean, std = np.concatenate(([0.0], mean)), np.concatenate(([1.0], std))
        for net in (run.online, run.target):
            if normalize:
                np.testing.assert_allclose(net.float_mean.numpy(), mean, rtol=1e-6)
                np.testing.assert_allclose(net.float_std.numpy(), std, rtol=1e-6)
            else:
                assert torch.all(net.float_mean == 0) and torch.all(net.float_std == 1)
        # The statistics are buffers: checkpoints keep them and collectors receive them with the weights.
        assert "float_std" in run.online.state_dict() and "float_std" in run.weights.tensors
    finally:
        run.close()


def test_the_serial_source_plays_a_race_only_when_the_learner_would_wait(tmp_path):
    from tmexp.core.build import build

    run = build(compose_config(TINY), tmp_path)
    try:
        assert run.source.get(timeout=0.0) is None  # nothing is ever waiting in serial mode
        race = run.source.get(timeout=0.5)
        assert race is not None and len(race["actions"]) > 0 and run.source.restarts == 0
    finally:
        run.close()


def test_collectors_get_the_signals_to_ignore_from_their_settings(tmp_path):
    from tmexp.core.build import build

    cfg = compose_config(TINY + ["performance.serial=false", "performance.gpu_collectors_count=1"])
    run = build(cfg, tmp_path, ignore_signals=(signal.SIGUSR1,))
    try:
        assert run.source.settings.ignore_signals == (signal.SIGUSR1,)
        run.source.start()
        deadline = time.time() + 60
        while run.source.get(timeout=1.0) is None and time.time() < deadline:
            pass  # the collector is up and playing
        process = run.source.processes[0]
        os.kill(process.pid, signal.SIGUSR1)  # its default action would end the process
        process.join(timeout=2.0)  # returns at once if it died
        assert process.is_alive() and process.exitcode is None
    finally:
        run.close()


def test_the_core_imports_neither_hydra_nor_submitit():
    code = (
        "import sys, tmexp.core.build, tmexp.core.learner; sys.exit(any(m.split('.')[0] in ('hydra', 'submitit') "
        "or m.startswith('tmexp.launch') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
