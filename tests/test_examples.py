import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mapping_api_example_runs():
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "mapping_api.py"), "--epochs", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if "rmse" in line]
    assert [line.split()[0] for line in lines] == ["oi", "dincae"]
    oi_mu = float(lines[0].split("mu")[1].split()[0])
    assert oi_mu > 0.5  # OI on a smooth field observed at 15% must explain most of it


def test_dynamics_api_example_runs():
    """Noisy trajectories -> learned model -> ETKF with it: near the ETKF with the true model."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "dynamics_api.py"), "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = {line.split()[0]: line.split() for line in proc.stdout.splitlines()}
    assert float(out["states"][5]) < 0.5 * float(out["states"][3])  # noise removed
    true, learned = float(out["enkf-true"][2]), float(out["enkf-learned"][2])
    assert learned < 1.5 * true and learned < 1.0
