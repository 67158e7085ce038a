"""A run stopped by Ctrl-C or SIGTERM during training says so, exits 130 / 143, and its manifest
records where it stopped (before: Lightning's own shutdown ended the process with a silent 1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


TERMINATED = (
    "geodl: terminated (SIGTERM); resumable: the same command resumes training from its last "
    "checkpoint"
)


def _start(out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "geodl.cli", "run", "configs/l63_dynamics_quick.yaml",
           "--out", str(out), "--set", "train.max_epochs=100000", "--set", "model.lbfgs_iter=0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A runner started in the background by a non-interactive shell ignores SIGINT, and its
    # children inherit that (Python then installs no KeyboardInterrupt handler): start the run as
    # a terminal would, with SIGINT's default disposition.
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for(proc: subprocess.Popen, done) -> None:
    deadline = time.monotonic() + 120
    while not done():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.5)


@pytest.mark.parametrize(("sig", "code", "text", "reason"), [
    (signal.SIGINT, 130, "geodl: interrupted", "interrupted"),
    (signal.SIGTERM, 143, TERMINATED, "terminated (SIGTERM)"),
])  # fmt: skip
def test_a_signal_during_training_ends_the_run_with_its_code_and_record(
    tmp_path, sig, code, text, reason
):
    out = tmp_path / "run"
    proc = _start(out)
    try:
        log = out / "logs" / "dynamics" / "metrics.csv"
        # training has logged: it is running
        _wait_for(proc, lambda: log.exists() and log.stat().st_size > 0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert manifest["error"] == {"stage": "train", "reason": reason}


def test_after_sigterm_the_same_command_resumes_training(tmp_path):
    """How a requeued SLURM job continues: SIGTERM after a few epochs, then the same command."""
    out = tmp_path / "run"
    ckpt = out / "checkpoints" / "dynamics" / "last.ckpt"
    proc = _start(out)
    try:
        _wait_for(proc, lambda: ckpt.exists())  # an epoch has finished and was checkpointed
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143
    log = out / "logs" / "geodl.log"
    again = _start(out)
    try:
        _wait_for(again, lambda: "resuming from" in log.read_text())
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=60)
    finally:
        again.kill()
    assert again.returncode == 143
    assert f"resuming from {ckpt}" in log.read_text()


def test_a_failed_run_records_the_stage_and_the_reason(tmp_path, capsys):
    import numpy as np
    import xarray as xr

    from geodl.cli import main

    bad = np.zeros((1, 50, 3))
    bad[0, 10, 1] = np.nan
    path = tmp_path / "traj.nc"
    xr.Dataset({"state": (("trajectory", "time", "component"), bad)}, attrs={"dt": 0.01}).to_netcdf(
        path
    )
    out = tmp_path / "run"
    args = ["run", "configs/l63_dynamics_quick.yaml", "--out", str(out)]
    assert main([*args, "--set", f"data.path={path}"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["error"]["stage"] == "simulate"
    assert "NaN" in manifest["error"]["reason"] and "DataError" in manifest["error"]["reason"]
