import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

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


def test_twin_file_example_converts_and_scores_another_tools_arrays(tmp_path):
    """(xx, yy) arrays of another DA tool -> a twin file -> the task's DAPPER-convention scores."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "twin_file.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = {line.split()[0]: line.split() for line in proc.stdout.splitlines()}
    assert set(out) == {"linear", "threedvar", "enkf_n", "enks"}
    enkf_n, linear = float(out["enkf_n"][2]), float(out["linear"][2])
    assert enkf_n < 0.8 < 1.0 < linear  # the filter beats interpolating the observations
    assert float(out["enks"][4]) < float(out["enks"][2])  # the smoother beats its own filter
    with xr.open_dataset(tmp_path / "twin.nc") as ds:
        assert int(np.isfinite(ds["obs"]).any("component").sum()) == 80  # 2000 / 25 obs times


def test_alongtrack_l3_example_maps_daily_files_of_two_missions(tmp_path):
    """Daily L3 files (0..360 longitudes, scaled integers) of two missions -> OI in one command."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "alongtrack_l3.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted((tmp_path / "l3").glob("*.nc"))
    assert {f.name.split("_")[0] for f in files} == {"j3", "s3a"}
    with xr.open_dataset(files[0]) as ds:
        assert ds.attrs["platform"] == "Jason-3"
    lon = np.concatenate([xr.load_dataset(f)["longitude"].values for f in files])
    assert lon.min() >= 0 and lon.max() > 354  # 0..360 on a grid of -5.5 .. 5.4 degrees east
    out = {line.split()[0]: line.split() for line in proc.stdout.splitlines()}
    assert float(out["oi"][4]) > 0.5  # mu: OI explains most of the twin (measured 0.69)
    assert (tmp_path / "run" / "metrics.json").exists()
