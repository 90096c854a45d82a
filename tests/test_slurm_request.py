"""A SLURM sweep that can never start says so: its request checked against the partition before submission, and the
queue watched while its jobs wait. The parsing is tested here without SLURM; the tests marked ``slurm`` run on the
single-node SLURM that .ci/slurm/setup.sh starts (2 CPUs or so, no GPU)."""

from __future__ import annotations

import io
import re
import subprocess
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from sweep_harness import (
    REAL_APP,
    REPO,
    SLURM_TEST_RESOURCES,
    TOY_APP,
    app_env,
    requires_slurm,
    run_sweep,
    sweep_command,
)

from tmexp.launch import slurm
from tmexp.validation import ConfigError

PRESET = {
    "_target_": "hydra_plugins.tmexp.SlurmLauncher",
    "partition": None,
    "cpus_per_task": 10,
    "tasks_per_node": 1,
    "gpus_per_node": 1,
    "mem_gb": 32,
    "nodes": 1,
    "timeout_min": 1440,
}
NODES = [
    slurm.Node("a1", "gpu", 32, 256_000, 4, "idle", 2880.0),
    slurm.Node("a2", "gpu", 32, 256_000, 4, "mixed", 2880.0),
    slurm.Node("c1", "cpu", 2, 21_694, 0, "idle", None),
]


def launcher(**changes):
    return OmegaConf.create({**PRESET, **changes})


def test_parsing_sinfo_fields():
    assert slurm.parse_gpus("(null)") == 0
    assert slurm.parse_gpus("gpu:a100:4(S:0-1),shard:8") == 4
    assert slurm.parse_gpus("gpu:2,gpu:t4:1") == 3
    assert slurm.parse_time_limit("infinite") is None
    assert slurm.parse_time_limit("30") == 30
    assert slurm.parse_time_limit("1:30:00") == 90
    assert slurm.parse_time_limit("2-00:00:00") == 2880
    assert slurm.parse_time_limit("1-12") == 36 * 60


def test_a_request_the_partition_can_meet_passes():
    slurm.check_request(launcher(partition="gpu"), (NODES, "cpu"))
    slurm.check_request(launcher(partition="gpu", nodes=2, gpus_per_node=4), (NODES, "cpu"))
    slurm.check_request(launcher(cpus_per_task=2, gpus_per_node=None, mem_gb=4), (NODES, "cpu"))  # the default one


@pytest.mark.parametrize(
    "changes, words",
    [
        (
            {},
            [
                "hydra.launcher.cpus_per_task=10 asks for 10 CPUs per node",
                "partition cpu offers 1 node of 2 CPUs, 21 GB, no GPU",
            ],
        ),
        ({"cpus_per_task": 2}, ["hydra.launcher.mem_gb=32", "partition cpu offers"]),
        ({"cpus_per_task": 2, "mem_gb": 4}, ["hydra.launcher.gpus_per_node=1", "set it to null"]),
        (
            {"partition": "gpu", "tasks_per_node": 4},
            ["hydra.launcher.tasks_per_node=4: srun would start 4 copies", "set hydra.launcher.tasks_per_node=1"],
        ),
        ({"partition": "gpu", "gpus_per_node": 8}, ["hydra.launcher.gpus_per_node=8", "lower it to 4"]),
        ({"partition": "gpu", "nodes": 3}, ["asks for 3 node(s)", "only 2 node(s) of partition gpu"]),
        ({"partition": "gpu", "timeout_min": 4320}, ["hydra.launcher.timeout_min=4320", "time limit (2880 min)"]),
        ({"partition": "big"}, ["hydra.launcher.partition=big: no such partition", "cpu, gpu"]),
    ],
)
def test_a_request_no_node_can_meet_is_one_line_naming_the_key(changes, words):
    with pytest.raises(ConfigError) as info:
        slurm.check_request(launcher(**changes), (NODES, "cpu"))
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_pending_reasons_that_never_clear():
    assert all(
        slurm.never_clears(r)
        for r in (
            "PartitionConfig",
            "PartitionTimeLimit",
            "QOSMaxCpuPerJobLimit",
            "AssocMaxWallDurationPerJobLimit",
            "InvalidAccount",
        )
    )
    assert not any(
        slurm.never_clears(r)
        for r in (
            "Resources",
            "Priority",
            "BeginTime",
            "QOSGrpCpuLimit",
            "AssocGrpGRES",
            "ReqNodeNotAvail",
            "JobHeldUser",
        )
    )


# ----- on the CI's SLURM ------------------------------------------------------------------------------------------
@pytest.mark.slurm
@requires_slurm
def test_the_preset_request_on_a_small_node_fails_before_submission(tmp_path):
    """The issue's command: the preset asks 10 CPUs, 1 GPU and 32 GB of a 2-CPU node without a GPU."""
    sweep_dir = tmp_path / "sweep"
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    result = run_sweep(
        REAL_APP, sweep_dir, ["hydra/launcher=slurm", "+experiment=smoke", "btr.use_munchausen=true,false"], timeout=120
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tmexp.train: error: hydra.launcher.cpus_per_task=10")
    assert re.search(r"partition \S+ offers \d+ nodes? of \d+ CPUs", lines[0])
    assert not sweep_dir.exists()
    assert subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split() == before


def _partition() -> tuple[str, str]:
    """The default partition and its MaxTime as scontrol spells it."""
    name = next(
        p.rstrip("*")
        for p in subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()
        if p.endswith("*")
    )
    shown = subprocess.run(["scontrol", "show", "partition", name], capture_output=True, text=True).stdout
    return name, re.search(r"MaxTime=(\S+)", shown).group(1)


@pytest.mark.slurm
@requires_slurm
def test_waiting_jobs_are_reported_and_a_limit_they_can_never_meet_stops_the_sweep(tmp_path):
    """Jobs held by --begin wait (reason BeginTime): the sweep prints their state. Then the partition's time limit
    drops below the jobs' (reason PartitionTimeLimit): the sweep cancels them and exits 2 with one line."""
    sweep_dir, log_path = tmp_path / "sweep", tmp_path / "sweep.log"
    partition, max_time = _partition()
    overrides = [
        "hydra/launcher=slurm",
        *SLURM_TEST_RESOURCES,
        "seed=0,1",
        "+hydra.launcher.additional_parameters.begin='now+8'",
        "hydra.launcher.report_every_s=1",
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            sweep_command(TOY_APP, sweep_dir, overrides),
            cwd=REPO,
            env=app_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "PENDING (BeginTime)" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        subprocess.run(["scontrol", "update", f"partitionname={partition}", "maxtime=5"], check=True)
        assert proc.wait(timeout=90) == 2, log_path.read_text()[-3000:]
    finally:
        subprocess.run(["scontrol", "update", f"partitionname={partition}", f"maxtime={max_time}"], check=True)
        if proc.poll() is None:
            proc.kill()
    out = log_path.read_text()
    assert re.search(r"\[slurm\] \d\d:\d\d:\d\d waiting \d+ s: 2 PENDING \(BeginTime\)", out), out[-3000:]
    error = next(line for line in out.splitlines() if line.startswith("tmexp.train: error:"))
    assert "can never start: 2 PENDING (PartitionTimeLimit), the request breaks a limit" in error
    assert "cancelled job(s)" in error
    array_id = re.search(r"cancelled job\(s\) (\d+)", error).group(1)
    deadline = time.monotonic() + 30
    while subprocess.run(["squeue", "-h", "-j", array_id], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "the sweep's jobs are still queued"
        time.sleep(0.5)


# ----- the queue watcher and SLURM's outputs, from recorded outputs (tests/data/slurm/) -------------------------------
DATA = Path(__file__).resolve().parent / "data" / "slurm"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


def watcher_for(sinfo: str, **changes):
    """A watcher of a request on partition gpu (1 GPU, 10 CPUs, 32 GB, 1 day); what it cancels and prints."""
    cancelled, out = [], io.StringIO()
    watcher = slurm.QueueWatcher(
        launcher(partition="gpu", **changes),
        report_every_s=0,
        stream=out,
        on_never=lambda message, ids: cancelled.append((message, ids)),
        nodes=lambda: slurm.parse_sinfo(recorded(sinfo)),
    )
    return watcher, cancelled, out


@pytest.mark.parametrize(
    "squeue, sinfo",
    [
        ("squeue_req_node_not_avail.txt", "sinfo_gpu_big_nodes_drained.txt"),  # the fitting nodes drain: wait
        ("squeue_transient.txt", "sinfo_gpu_all_up.txt"),  # resources, priority, a reservation, held, group limits
        ("squeue_partition_time_limit.txt", "sinfo_gpu_all_up.txt"),  # the limit was raised back since: wait
    ],
)
def test_states_that_can_clear_are_reported_as_waiting_with_their_reason(squeue, sinfo):
    watcher, cancelled, out = watcher_for(sinfo)
    jobs = list(slurm.parse_squeue(recorded(squeue)).values())
    line = watcher.check(jobs)
    assert not cancelled
    for reason in {j.reason for j in jobs}:
        assert f"PENDING ({reason})" in line
    assert out.getvalue().strip() == line and line.startswith("[slurm] ") and "waiting" in line


def test_reports_come_at_most_every_report_every_s():
    watcher, _, out = watcher_for("sinfo_gpu_all_up.txt")
    watcher.report_every_s = 3600
    jobs = list(slurm.parse_squeue(recorded("squeue_transient.txt")).values())
    assert watcher.check(jobs) is not None and watcher.check(jobs) is None
    assert len(out.getvalue().splitlines()) == 1


@pytest.mark.parametrize(
    "squeue, sinfo, changes, words",
    [
        (
            "squeue_partition_time_limit.txt",
            "sinfo_gpu_time_limit_lowered.txt",
            {},
            "2 PENDING (PartitionTimeLimit), the request breaks a limit of the partition "
            "(hydra.launcher.timeout_min=1440",
        ),
        (
            "squeue_partition_config.txt",
            "sinfo_gpu_all_up.txt",
            {"gpus_per_node": 16},
            "the request breaks a limit of the partition (hydra.launcher.gpus_per_node=16",
        ),
        (
            "squeue_qos_max_cpu_per_job.txt",
            "sinfo_gpu_all_up.txt",
            {},
            "1 PENDING (QOSMaxCpuPerJobLimit), the request breaks a limit of the account or QOS",
        ),
    ],
)
def test_a_request_that_can_never_start_is_cancelled_before_any_job_started(squeue, sinfo, changes, words):
    watcher, cancelled, _ = watcher_for(sinfo, **changes)
    watcher.check(list(slurm.parse_squeue(recorded(squeue)).values()))
    assert len(cancelled) == 1 and cancelled[0][1] == ["4242"]
    assert words in cancelled[0][0] and "\n" not in cancelled[0][0]


def test_nothing_is_cancelled_once_a_job_of_the_sweep_started():
    watcher, cancelled, _ = watcher_for("sinfo_gpu_time_limit_lowered.txt")
    line = watcher.check(list(slurm.parse_squeue(recorded("squeue_partition_time_limit_one_running.txt")).values()))
    assert not cancelled and "1 RUNNING, 1 PENDING (PartitionTimeLimit)" in line
    # and a job that already ended counts as started: the same limit is then only reported
    watcher, cancelled, _ = watcher_for("sinfo_gpu_time_limit_lowered.txt")
    watcher.check(list(slurm.parse_squeue(recorded("squeue_partition_time_limit.txt")).values()), ended=True)
    assert not cancelled


def test_parsing_sacct_with_array_ranges_and_hard_deaths():
    jobs = slurm.parse_sacct(recorded("sacct_mixed.txt"))
    assert {j: jobs[j].state for j in ("4242_0", "4242_1", "4242_2", "4242_3", "4243")} == {
        "4242_0": "COMPLETED",
        "4242_1": "OUT_OF_MEMORY",
        "4242_2": "NODE_FAIL",
        "4242_3": "CANCELLED",
        "4243": "TIMEOUT",
    }
    assert [j for j in jobs if jobs[j].state == "PENDING"] == ["4242_5", "4242_6", "4242_7", "4242_9"]
    assert jobs["4242_4"].live and jobs["4242_5"].live and not jobs["4242_1"].live
    assert jobs["4242_1"].exit_code == "0:125"


def test_submission_limits_are_read_from_the_cluster(monkeypatch):
    answers = {
        "scontrol": recorded("scontrol_show_config.txt"),
        "qos": recorded("sacctmgr_qos.txt"),
        "assoc": recorded("sacctmgr_assoc.txt"),
    }

    def query(command):
        return answers["scontrol" if command[0] == "scontrol" else command[4]]

    monkeypatch.setattr(slurm.getpass, "getuser", lambda: "alice")
    limits = slurm.submit_limits(OmegaConf.create({"account": "rl_lab"}), query)
    assert (limits.max_array_size, limits.max_submit) == (501, 1200)  # QOS long (the default): 1200 < 3000
    assert "QOS long MaxSubmitPU" in limits.source
    limits = slurm.submit_limits(OmegaConf.create({"account": "other_lab"}), query)
    assert (limits.max_submit, limits.source) == (800, "association MaxSubmit")  # QOS normal: no limit
    limits = slurm.submit_limits(OmegaConf.create({"max_array_size": 10, "max_submit": 5}), query)
    assert (limits.max_array_size, limits.max_submit) == (10, 5)
    assert slurm.parse_max_array_size("") == 1001  # SLURM's default


def test_a_large_sweep_is_submitted_in_arrays_as_the_submission_limit_allows(tmp_path, monkeypatch, capsys):
    """MaxArraySize 3 (task indices 0..1) and MaxSubmit 5, with one job of the user's already queued: the driver
    submits 4 jobs as two arrays, nothing while the queue is full, then the rest; the ledger records every id."""
    from types import SimpleNamespace

    from tmexp.launch.slurm_launcher import Ledger, SweepDriver

    driver = SweepDriver.__new__(SweepDriver)
    driver.sweep_dir, driver.overrides = tmp_path, {n: [f"seed={n}"] for n in range(7)}
    driver.unsubmitted, driver.waiting, driver.code = list(range(7)), {}, None
    driver.ledger = Ledger(tmp_path)
    driver.limits = slurm.SubmitLimits(max_array_size=3, max_submit=5, source="QOS normal MaxSubmitPU")
    driver.launcher = SimpleNamespace(params={"array_parallelism": 4})
    calls = []

    def submit(nums, parallelism):
        calls.append((nums, parallelism))
        return {num: f"{100 + len(calls)}_{i}" for i, num in enumerate(nums)}

    driver._submit = submit
    queued = [1]
    monkeypatch.setattr(slurm, "queued_count", lambda: queued[0])

    driver._submit_what_fits()
    assert calls == [([0, 1], 2), ([2, 3], 2)]  # array_parallelism 4 split between the two arrays
    queued[0] = 5
    driver._submit_what_fits()
    assert len(calls) == 2 and "3 jobs wait to be submitted: 5 jobs of yours are queued" in capsys.readouterr().out
    queued[0] = 2
    driver._submit_what_fits()
    assert calls[2:] == [([4, 5], 2), ([6], 2)] and not driver.unsubmitted
    assert {n: Ledger(tmp_path).current(n) for n in range(7)} == {
        0: "101_0",
        1: "101_1",
        2: "102_0",
        3: "102_1",
        4: "103_0",
        5: "103_1",
        6: "104_0",
    }
    assert driver.waiting == {n: Ledger(tmp_path).current(n) for n in range(7)}


def test_jobs_that_left_the_queue_are_judged_by_accounting_and_never_on_no_answer(tmp_path, monkeypatch, capsys):
    """Three jobs leave the queue without a result file: sacct says OUT_OF_MEMORY for one (its failure, at once),
    still RUNNING for another (accounting lags) and nothing for the third; a poll where sacct does not answer decides
    nothing. Past the grace period, the last two are failures too (vanished)."""
    from types import SimpleNamespace

    from hydra.core.utils import JobStatus

    from tmexp.launch import slurm_launcher
    from tmexp.launch.slurm_launcher import Ledger, SweepDriver

    driver = SweepDriver.__new__(SweepDriver)
    driver.sweep_dir, driver.overrides = tmp_path, {n: [f"seed={n}"] for n in range(3)}
    driver.waiting, driver.results, driver._left_queue = {0: "5_0", 1: "5_1", 2: "5_2"}, {}, {}
    driver.ledger = Ledger(tmp_path)
    driver.launcher = SimpleNamespace(params={"submitit_folder": str(tmp_path / ".submitit" / "%j")})
    driver.watcher = slurm.QueueWatcher(launcher(), stream=io.StringIO(), on_never=lambda *a: None)
    answers = iter(
        [None, slurm.parse_sacct("5_0|OUT_OF_MEMORY|0:125\n5_1|RUNNING|0:0\n"), slurm.parse_sacct("5_1|RUNNING|0:0\n")]
    )
    monkeypatch.setattr(slurm, "squeue", lambda ids: {})
    monkeypatch.setattr(slurm, "sacct", lambda ids: next(answers))

    driver._poll()  # sacct does not answer: nothing decided
    assert driver.waiting == {0: "5_0", 1: "5_1", 2: "5_2"} and not driver.results
    driver._poll()
    assert set(driver.waiting) == {1, 2} and driver.results[0].status == JobStatus.FAILED
    assert "job #0 FAILED (OUT_OF_MEMORY): seed=0" in capsys.readouterr().out
    assert Ledger(tmp_path).jobs[0]["slurm_state"] == "OUT_OF_MEMORY"
    monkeypatch.setattr(slurm_launcher, "ACCOUNTING_GRACE_S", 0.0)
    driver._poll()
    assert not driver.waiting and {driver.results[n].status for n in (1, 2)} == {JobStatus.FAILED}
    assert "job #1 FAILED (VANISHED)" in capsys.readouterr().out


def test_drivers_in_several_threads_share_one_ledger(tmp_path):
    """A search launches each trial from its own thread: every driver's jobs end up in the ledger."""
    import threading

    from tmexp.launch.slurm_launcher import Ledger

    def submit(num: int) -> None:
        ledger = Ledger(tmp_path)  # each driver reads the ledger when it starts
        for attempt in range(20):
            ledger.record({num: f"{num}_{attempt}"}, {num: [f"seed={num}"]}, None)

    threads = [threading.Thread(target=submit, args=(num,)) for num in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ledger = Ledger(tmp_path)
    assert {num: ledger.current(num) for num in range(8)} == {num: f"{num}_19" for num in range(8)}
    assert all(len(ledger.jobs[num]["slurm_ids"]) == 20 for num in range(8))
