"""Every task's training stage under ``torchrun`` with two CPU processes (gloo), as the SLURM
chain launches it (``srun geodl stage NAME CONFIG``): all ranks train, rank 0 alone keeps the
outputs, and the next stage, run in one process, uses the model. Two ranks of batch ``b`` train
the model that one process trains with batch ``2 b``: the same batches, masked means over the
whole batch, the same noise and mask swaps (:mod:`geodl.ranks`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geodl.cli import main
from geodl.training import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
DDP = ["--set", "{t}.strategy=ddp", "--set", "{t}.devices=2"]

CASES = {
    "mapping": (
        "configs/ssh_mapping_quick.yaml",
        ["simulate", "prepare"],
        "train_unet",
        "unet.train",
        "models/unet.ckpt",
        [
            "simulate.days=140", "simulate.spinup_days=0", "simulate.members=1",
            "simulate.nx=32", "patch={time: 5, y: 32, x: 32}", "methods=[unet]",
            "split={train: [0, 79], val: [90, 109], test: [120, 139]}",
            "unet.model={depth: 1, width: 4}", "unet.loss={mse: 1.0, grad: 0.1}",
            "unet.mask_swap=1.0", "unet.calibrate=false",
            "unet.train={max_epochs: 1, progress_bar: false}", "report.days=[5]",
        ],
        4,
    ),
    "dynamics": (
        "configs/l63_dynamics_quick.yaml",
        ["simulate"],
        "train",
        "train",
        "model",
        ["simulate.n_steps=300", "model.lbfgs_iter=0", "train.max_epochs=1"],
        16,
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
            "cnn.n_layers=2", "cnn.train.max_epochs=1", "cnn.input_noise=0.05",
        ],
        4,
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
        8,
    ),
}  # fmt: skip


def _weights(path):
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    assert files, f"{path} not written"
    ckpts = [f for f in files if f.suffix in (".pt", ".ckpt")]
    assert ckpts and all("state_dict" in load_checkpoint(f) for f in ckpts)
    return [load_checkpoint(f)["state_dict"] for f in ckpts]


@pytest.mark.slow
@pytest.mark.parametrize("task", list(CASES))
def test_training_stage_under_torchrun_two_ranks(task, tmp_path, capsys):
    config, upstream, stage, train_key, output, sets, batch = CASES[task]
    cfg = str(REPO / config)
    flags = [x for s in sets for x in ("--set", s)]
    out, one = tmp_path / "run", tmp_path / "one"
    for name in upstream:
        assert main(["stage", name, cfg, "--out", str(out), *flags]) == 0
    shutil.copytree(out, one)
    torchrun = Path(sys.executable).with_name("torchrun")
    port = 29600 + list(CASES).index(task)
    ddp = [x.format(t=train_key) for x in DDP] + ["--set", f"{train_key}.batch_size={batch // 2}"]
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
    two_ranks = _weights(out / output)
    manifest = json.loads((out / "manifest.json").read_text())
    assert stage in json.dumps(manifest)
    # one process, batch 2 b, one thread as each rank: the same model (to float rounding: the
    # ranks' gradients are summed in another order; 2 threads against 1 alone differ by ~1e-4)
    single = ["--set", f"{train_key}.batch_size={batch}", "--set", "experiment.threads=1"]
    assert main(["stage", stage, cfg, "--out", str(one), *flags, *single]) == 0
    one_process = _weights(one / output)
    assert len(one_process) == len(two_ranks)
    for a, b in zip(one_process, two_ranks, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if torch.is_floating_point(a[key]):
                torch.testing.assert_close(
                    b[key], a[key], rtol=1e-4, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}"
                )
    # the next stages, in one process, read what the two ranks trained
    capsys.readouterr()
    assert main(["run", cfg, "--out", str(out), *flags, *ddp]) == 0
    assert (out / "metrics.json").is_file()
