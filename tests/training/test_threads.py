"""CPU threads: the cores a process may use (affinity, cgroup quota, SLURM), and the run's choice."""

from __future__ import annotations

import json
import os

import pytest
import torch

from geodl.training.threads import (
    available_cpus,
    cgroup_cpu_limit,
    choose_threads,
    restore_threads,
    set_threads,
)


def _cgroup(tmp_path, own="0::/job", **files):
    root = tmp_path / "cg"
    for rel, text in files.items():
        path = root / rel.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = tmp_path / "proc_cgroup"
    proc.parent.mkdir(parents=True, exist_ok=True)
    proc.write_text(own + "\n")
    return root, proc


def test_cgroup_v2_quota_of_the_process_own_group_wins(tmp_path):
    root, proc = _cgroup(tmp_path, **{"cpu.max": "max 100000", "job__cpu.max": "150000 100000"})
    assert cgroup_cpu_limit(root, proc) == 1.5


def test_cgroup_without_limit_and_v1_quota(tmp_path):
    root, proc = _cgroup(tmp_path, **{"cpu.max": "max 100000"})
    assert cgroup_cpu_limit(root, proc) is None
    root, proc = _cgroup(
        tmp_path / "v1",
        own="4:cpu,cpuacct:/",
        **{"cpu__cpu.cfs_quota_us": "300000", "cpu__cpu.cfs_period_us": "100000"},
    )
    assert cgroup_cpu_limit(root, proc) == 3.0
    root, proc = _cgroup(
        tmp_path / "v1n",
        **{"cpu__cpu.cfs_quota_us": "-1", "cpu__cpu.cfs_period_us": "100000"},
    )
    assert cgroup_cpu_limit(root, proc) is None


def test_available_cpus_is_the_smallest_limit(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    none, proc = _cgroup(tmp_path / "a")
    assert available_cpus({}, root=none, proc=proc) == affinity
    # a fractional quota rounds up; SLURM's count applies when smaller
    root, proc = _cgroup(tmp_path / "b", **{"cpu.max": "50000 100000"})
    assert available_cpus({}, root=root, proc=proc) == 1
    assert available_cpus({"SLURM_CPUS_PER_TASK": "1"}, root=none, proc=proc) == 1
    assert available_cpus({"SLURM_CPUS_PER_TASK": "999"}, root=none, proc=proc) == affinity
    assert available_cpus({"SLURM_CPUS_PER_TASK": "x"}, root=none, proc=proc) == affinity


def test_choose_threads_order(tmp_path):
    none, proc = _cgroup(tmp_path)
    assert choose_threads(3, {"OMP_NUM_THREADS": "1"}) == (3, "experiment.threads")
    assert choose_threads(None, {"OMP_NUM_THREADS": "1"}) == (None, "OMP_NUM_THREADS")
    n, why = choose_threads(None, {"SLURM_CPUS_PER_TASK": "1"}, root=none, proc=proc)
    assert (n, why) == (1, "available cores")


def test_set_and_restore(monkeypatch):
    before = torch.get_num_threads()
    record = set_threads(1)
    try:
        assert torch.get_num_threads() == 1
        assert record["torch_threads"] == 1 and record["threads_from"] == "experiment.threads"
    finally:
        restore_threads(record)
    assert torch.get_num_threads() == before


def test_run_records_threads_and_leaves_torch_as_it_was(tmp_path):
    from geodl.pipeline import run_experiment
    from geodl.tasks import load_config

    before = torch.get_num_threads()
    cfg, exp = load_config(
        "configs/l63_dynamics_quick.yaml",
        ["experiment.threads=1"],
    )
    stage = exp.resolve(cfg).stages[0].name
    run_experiment(cfg, exp, tmp_path / "run", only=stage, echo=lambda _: None)
    env = json.loads((tmp_path / "run" / "manifest.json").read_text())["environment"]
    assert env["torch_threads"] == 1 and env["threads_from"] == "experiment.threads"
    assert env["cpus_available"] >= 1
    assert torch.get_num_threads() == before


def test_threads_must_be_positive():
    from geodl.errors import ConfigError
    from geodl.tasks import load_config

    with pytest.raises(ConfigError, match="experiment.threads"):
        load_config("configs/l63_dynamics_quick.yaml", ["experiment.threads=0"])


def test_threads_enter_no_stage_key(tmp_path):
    from geodl.pipeline import stage_key
    from geodl.tasks import load_config

    keys = []
    for n in ("1", "2"):
        cfg, exp = load_config("configs/l63_dynamics_quick.yaml", [f"experiment.threads={n}"])
        stages = exp.resolve(cfg).stages
        keys.append([stage_key(s, cfg, tmp_path, {k.name: "t" for k in stages}) for s in stages])
    assert keys[0] == keys[1]
