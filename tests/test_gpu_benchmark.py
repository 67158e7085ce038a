"""benchmarks/gpu.py: the prepared GPU run works end to end in its CPU dry run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_measures_every_default_part(gpu, tmp_path):
    out = tmp_path / "dry.json"
    assert gpu.main(["--cpu", "--seconds", "0.1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["dry_run"] is True
    assert {r["model"] for r in res["train"]} == {"unet", "dincae", "fourdvarnet"}
    assert all(r["samples_per_s"] > 0 and r["steps"] >= 1 for r in res["train"])
    assert [r["workers"] for r in res["loader"]] == [0, 2]
    assert all(0 <= r["wait_fraction"] <= 1 and r["samples_per_s"] > 0 for r in res["loader"])
    assert all(r["member_steps_per_s"] > 0 for r in res["qg"])
    assert res["oi"][0]["seconds"] > 0


def test_the_full_settings_build_the_models_of_the_full_config(gpu):
    """The timed models are those of configs/ssh_mapping.yaml (depth, width, iterations)."""
    import yaml

    cfg = yaml.safe_load((SCRIPT.parents[1] / "configs" / "ssh_mapping.yaml").read_text())
    for name, kw in gpu.FULL_MODELS.items():
        assert kw == cfg[name]["model"]


def test_mapping_part_reports_a_run_stopped_at_its_timeout(gpu, tmp_path):
    out = tmp_path / "m.json"
    argv = [
        "--cpu",
        "--parts",
        "mapping",
        "--mapping-config",
        "configs/ssh_mapping_quick.yaml",
        "--mapping-timeout",
        "3",
        "--mapping-out",
        str(tmp_path / "run"),
        "--json",
        str(out),
    ]
    assert gpu.main(argv) == 0
    res = json.loads(out.read_text())["mapping"]
    assert res["finished"] is False and res["returncode"] is None
    assert res["wall_s"] >= 3


def test_without_cuda_and_without_dry_run_it_exits_2(gpu, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(["--parts", "oi"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert gpu.main(["--cpu", "--parts", "nope"]) == 2
