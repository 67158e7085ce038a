"""Pipeline scripts: the local chain runs for real; SLURM scripts are checked by syntax and dry run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "pipelines").rglob("*.s*"))
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_syntax(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_gpu_template_asks_one_task_per_gpu():
    text = (REPO / "pipelines/slurm/gpu.sbatch").read_text()
    gpus = re.search(r"#SBATCH --gpus-per-node=(\d+)", text).group(1)
    tasks = re.search(r"#SBATCH --ntasks-per-node=(\d+)", text).group(1)
    assert gpus == tasks
    assert "train.strategy=ddp" in text and "srun geodl stage" in text


def test_local_chain_runs_every_stage_then_skips(tmp_path):
    cmd = [
        "bash",
        str(REPO / "pipelines/local.sh"),
        "configs/l63_assimilation_quick.yaml",
        str(tmp_path / "run"),
        "--set",
        "simulate.n_steps=200",
    ]
    first = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("done in") == 5
    assert (tmp_path / "run" / "report" / "index.html").exists()
    second = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True)
    assert second.stdout.count("skipped (cache key") == 5


def test_slurm_submit_dry_run_chains_dependencies(tmp_path):
    env = {**ENV, "SBATCH": "echo 4242"}  # the fake sbatch "returns" job id 4242
    out = subprocess.run(
        [
            "bash",
            str(REPO / "pipelines/slurm/submit.sh"),
            "configs/l63_assimilation_quick.yaml",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "simulate",
        "observe",
        "train",
        "evaluate",
        "report",
    ]
    assert "--dependency" not in lines[0] and all("afterok:4242" in x for x in lines[1:])


@pytest.mark.parametrize(
    "config",
    ["configs/l63_dynamics_quick.yaml", "configs/qg_emulation_quick.yaml"],
)
def test_slurm_routes_training_stages_to_gpu(tmp_path, config):
    """Every task's chain: the train* stages go to the GPU template, every other to the CPU one."""
    env = {**ENV, "SBATCH": "echo 4242"}
    script = REPO / "pipelines/slurm/submit.sh"
    out = subprocess.run(
        ["bash", str(script), config, str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) >= 4
    for line in lines:
        stage = line.split(":")[0]
        template = "gpu.sbatch" if stage.startswith("train") else "cpu.sbatch"
        assert template in line, line


def test_slurm_submit_keeps_the_oi_search_on_cpu(tmp_path):
    env = {**ENV, "SBATCH": "echo 4242"}
    out = subprocess.run(
        ["bash", str(REPO / "pipelines/slurm/submit.sh"), "configs/ssh_mapping_quick.yaml", "r"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    lines = {line.split(":")[0]: line for line in out.stdout.splitlines()}
    assert "cpu.sbatch train_oi" in lines["train_oi"]
    assert "gpu.sbatch train_unet" in lines["train_unet"]
