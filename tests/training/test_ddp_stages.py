"""Every task's training stage under ``torchrun`` with two CPU processes (gloo), as the SLURM
chain launches it (``srun geodl stage NAME CONFIG``): all ranks train, rank 0 alone keeps the
outputs, and the next stage, run in one process, uses the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from geodl.cli import main
from geodl.training import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
DDP = ["--set", "{t}.strategy=ddp", "--set", "{t}.devices=2"]

CASES = {
    "mapping": (
        "configs/ssh_mapping_quick.yaml",
        ["simulate", "prepare"],
        "train_dincae",
        "dincae.train",
        "models/dincae.ckpt",
        [
            "simulate.days=140", "simulate.spinup_days=0", "simulate.members=1",
            "simulate.nx=32", "patch={time: 5, y: 32, x: 32}", "methods=[dincae]",
            "split={train: [0, 79], val: [90, 109], test: [120, 139]}",
            "dincae.model={depth: 1, width: 4}",
            "dincae.train={max_epochs: 1, batch_size: 4, progress_bar: false}", "report.days=[5]",
        ],
    ),
    "dynamics": (
        "configs/l63_dynamics_quick.yaml",
        ["simulate"],
        "train",
        "train",
        "model",
        ["simulate.n_steps=300", "model.lbfgs_iter=0", "train.max_epochs=1"],
    ),
    "emulation": (
        "configs/qg_emulation_quick.yaml",
        ["simulate"],
        "train_cnn",
        "cnn.train",
        "models/cnn.pt",
        [
            "simulate.spinup_days=20", "simulate.train_days=40", "simulate.val_days=15",
            "simulate.test_days=15", "simulate.nx=16", "methods=[cnn]", "cnn.width=8",
            "cnn.n_layers=2", "cnn.train.max_epochs=1",
        ],
    ),
    "assimilation": (
        "configs/l63_assimilation_quick.yaml",
        ["simulate", "observe"],
        "train",
        "train",
        "model",
        [
            "fourdvarnet.n_train_steps=400", "fourdvarnet.window=100",
            "fourdvarnet.prior_pretrain_iter=5", "train.max_epochs=1",
        ],
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("task", list(CASES))
def test_training_stage_under_torchrun_two_ranks(task, tmp_path, capsys):
    config, upstream, stage, train_key, output, sets = CASES[task]
    cfg = str(REPO / config)
    flags = [x for s in sets for x in ("--set", s)]
    out = tmp_path / "run"
    for name in upstream:
        assert main(["stage", name, cfg, "--out", str(out), *flags]) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    port = 29600 + list(CASES).index(task)
    ddp = [x.format(t=train_key) for x in DDP]
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", f"--master_port={port}", "-m", "geodl.cli"]
        + ["stage", stage, cfg, "--out", str(out), *flags, *ddp],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=400,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{stage}: rank 1 done; rank 0 keeps the outputs" in proc.stdout + proc.stderr
    path = out / output
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    assert files, f"{path} not written"
    ckpts = [f for f in files if f.suffix in (".pt", ".ckpt")]
    assert ckpts and all("state_dict" in load_checkpoint(f) for f in ckpts)
    manifest = json.loads((out / "manifest.json").read_text())
    assert stage in json.dumps(manifest)
    # the next stages, in one process, read what the two ranks trained
    capsys.readouterr()
    assert main(["run", cfg, "--out", str(out), *flags, *ddp]) == 0
    assert (out / "metrics.json").is_file()
