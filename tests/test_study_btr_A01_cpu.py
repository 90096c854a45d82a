"""The CPU-scale BTR study (experiments/btr_A01_cpu) regenerates from what the repository keeps: runs.yaml, the
export of its runs' scalars and each job's status.json, with no run directory's logs."""

import pytest
from study_harness import EXPERIMENTS, check_report_regenerates, check_runs_finished_and_exported, exported_runs

STUDY = EXPERIMENTS / "btr_A01_cpu"


def test_every_run_the_report_names_is_exported_and_its_sweep_job_finished():
    check_runs_finished_and_exported(STUDY, minutes=15)


@pytest.mark.parametrize("arm", ["no_btr", "none"])
def test_the_baseline_and_the_bundle_ran_the_configs_their_experiments_compose(arm):
    from omegaconf import OmegaConf

    from tmexp.compose import compose_config

    experiment = {"no_btr": "A01_cpu_v2", "none": "A01_cpu_btr"}[arm]
    expected = OmegaConf.to_container(OmegaConf.structured(compose_config([f"+experiment={experiment}"])))
    for path, run in exported_runs(STUDY).items():
        if path.split("/")[1] != arm:
            continue
        for group in ("nn", "btr", "training", "memory", "exploration", "rewards"):
            # a key the schema gained after the run (e.g. btr.noisy_bias_sigma_fan) is not a difference: its
            # default keeps what the run did; every key the run recorded must match
            common = set(expected[group]) & set(run["config"][group]) - {"max_minutes"}
            want = {k: expected[group][k] for k in common}
            got = {k: run["config"][group][k] for k in common}
            assert len(common) >= 3 and got == want, (path, group)


def test_the_report_regenerates_from_a_fresh_clone(tmp_path, monkeypatch, capsys):
    # the learner benchmark's costs per update travel with it (the projected axis)
    check_report_regenerates(STUDY, tmp_path, monkeypatch, capsys, extra_dirs=["bench"])
