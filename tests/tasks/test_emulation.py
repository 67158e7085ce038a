"""Emulation task: end to end, persistence and coarse-simulator baselines, divergence, errors."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import xarray as xr

from geodl.cli import main
from geodl.errors import UserInputError
from geodl.methods.emulation import (
    coarse_forecast,
    first_bad_step,
    ke_spectrum,
    spectral_resample,
)
from geodl.metrics import forecast_rmse
from geodl.pipeline import run_experiment
from geodl.sim import QGModel
from geodl.tasks import load_config

QUICK = "configs/qg_emulation_quick.yaml"
TINY = [
    "simulate.spinup_days=200",
    "simulate.train_days=40",
    "simulate.val_days=8",
    "simulate.test_days=16",
    "simulate.gap_days=2",
    "cnn.width=8",
    "cnn.n_layers=2",
    "cnn.rollout=2",
    "cnn.train.max_epochs=2",
    "latent_ode.width=8",
    "latent_ode.latent_channels=4",
    "latent_ode.rollout=2",
    "latent_ode.train.max_epochs=1",
    "evaluate.lead_days=5",
    "evaluate.n_forecasts=4",
    "evaluate.long_days=20",
    "evaluate.timing_repeats=1",
    "evaluate.timing_forecasts=2",
]


def _sets(overrides: list[str]) -> list[str]:
    return sum((["--set", o] for o in overrides), [])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("emu") / "run"
    cfg, exp = load_config(QUICK, TINY)
    run_experiment(cfg, exp, out, echo=lambda s: None)
    return out


def test_tiny_run_metrics_files_and_report(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["task"] == "emulation" and metrics["lead_days"] == [0, 1, 2, 3, 4, 5]
    methods = metrics["methods"]
    assert set(methods) == {"persistence", "coarse_sim", "cnn", "latent_ode"}
    for name in ("cnn", "latent_ode", "coarse_sim"):
        m = methods[name]
        assert m["speedup_cpu"] > 0 and m["time_cpu_s"] > 0, name
        assert np.isfinite(m["rmse_day_5"]) and np.isfinite(m["spectrum_log10_error"]), name
        assert m["beats_persistence_all_leads"] in (0.0, 1.0)
    assert metrics["timing_s"]["cpu"]["simulator"] > 0
    curves = metrics["rmse_vs_lead"]
    assert curves["persistence"][0] == 0.0 and curves["cnn"][0] == 0.0  # both start from x0
    assert curves["latent_ode"][0] < 1e-6  # residual latent ODE: x0 + D(z_0) - D(z_0)
    assert curves["coarse_sim"][0] > 0.0  # the scales the coarse grid drops
    with xr.open_dataset(tiny_run / "forecast.nc") as f:
        assert f.sizes["lead_cnn"] == 6 and f.sizes["day_cnn"] == 21
        for v in f.data_vars:
            assert np.isfinite(f[v].values).all(), v
    page = (tiny_run / "report" / "index.html").read_text()
    for fig in ("rmse_vs_lead.png", "ke_spectrum.png", "snapshots.png"):
        assert fig in page and (tiny_run / "report" / fig).stat().st_size > 1000


def test_persistence_curve_matches_the_truth(tiny_run):
    """Persistence RMSE recomputed from the saved test trajectory, independently of the task."""
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    with xr.open_dataset(tiny_run / "trajectories.nc") as ds:
        x = ds["psi"].values.astype(np.float64)
        split = ds["split"].values
    train, test = x[split == 0], x[split == 2]
    mean = train.mean(axis=(0, 2, 3))[:, None, None]
    std = train.std(axis=(0, 2, 3))[:, None, None]
    z = (test - mean) / std
    starts = np.unique(np.linspace(0, len(z) - 1 - 5, 4).astype(int))
    expected = [
        math.sqrt(np.mean([np.mean((z[s + k] - z[s]) ** 2) for s in starts])) for k in range(6)
    ]
    np.testing.assert_allclose(metrics["rmse_vs_lead"]["persistence"], expected, rtol=1e-4)


def test_divergent_emulator_is_cut_and_reported(tiny_run):
    """A CNN whose last bias pushes every step by +4 (normalised) leaves the bound of 10 at step
    3: the step is reported, the rollout and the forecast curve stop there, nothing is NaN."""
    path = tiny_run / "models" / "cnn.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["net.4.conv.weight"].zero_()
    ckpt["state_dict"]["net.4.conv.bias"].fill_(4.0)
    torch.save(ckpt, path)
    assert main(["stage", "evaluate", QUICK, "--force", "--out", str(tiny_run), *_sets(TINY)]) == 0
    m = json.loads((tiny_run / "metrics.json").read_text())["methods"]["cnn"]
    # |z0| < 2 for most states, so +4 per step crosses 10 at step 3 (a state beyond 2 earlier).
    assert m["diverged"] == 1.0 and m["diverged_at_step"] in (2.0, 3.0)
    assert m["diverged_at_day"] == m["diverged_at_step"]  # daily steps
    assert m["forecast_diverged_at_day"] <= 3.0 and m["beats_persistence_all_leads"] == 0.0
    with xr.open_dataset(tiny_run / "forecast.nc") as f:
        assert f.attrs["diverged_at_day_cnn"] == m["diverged_at_day"]
        assert f.sizes["day_cnn"] == m["diverged_at_step"]
        assert f.sizes["lead_cnn"] == m["forecast_diverged_at_day"]
        for v in f.data_vars:
            assert np.isfinite(f[v].values).all(), v
    assert main(["stage", "report", QUICK, "--force", "--out", str(tiny_run), *_sets(TINY)]) == 0


def test_bad_data_and_checkpoint_are_one_line_exit_2(tiny_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    with xr.open_dataset(run / "trajectories.nc") as ds:
        bad = ds.load()
    bad["psi"][0, 0, 0, 0] = np.nan  # the first saved day is in the training split
    (run / "trajectories.nc").unlink()
    bad.to_netcdf(run / "trajectories.nc")
    assert main(["stage", "train_cnn", QUICK, "--force", "--out", str(run), *_sets(TINY)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite values in the training split" in err[0], err
    run = tmp_path / "copy2"
    shutil.copytree(tiny_run, run)
    (run / "models" / "latent_ode.pt").write_bytes(b"not a checkpoint")
    assert main(["stage", "evaluate", QUICK, "--force", "--out", str(run), *_sets(TINY)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "models/latent_ode.pt" in err[0], err


def test_spectral_resample_round_trip_and_truncation():
    n = 16
    y, x = torch.meshgrid(
        torch.arange(n, dtype=torch.float64) / n,
        torch.arange(n, dtype=torch.float64) / n,
        indexing="ij",
    )
    low = torch.cos(2 * torch.pi * (2 * x + 3 * y)) + 0.5 * torch.sin(2 * torch.pi * (-x + y))
    high = torch.cos(2 * torch.pi * 6 * x)  # |k| = 6 >= 8 / 2 - 1: dropped on an 8 x 8 grid
    down = spectral_resample((low + high).double(), 8)
    assert down.shape == (8, 8)
    np.testing.assert_allclose(spectral_resample(down, n), low.double(), atol=1e-12)
    # Point values of the coarse field are the band-limited field sampled on the coarse grid.
    np.testing.assert_allclose(down, low.double()[::2, ::2], atol=1e-12)


def test_coarse_simulator_reproduces_a_resolved_plane_wave():
    """One plane wave (same wavevector in both layers) is an exact solution of the nonlinear QG
    equations (zero Jacobian) and lies well inside the coarse grid: the coarse forecast, taken back
    to the fine grid, equals the fine model's forecast to round-off."""
    fine = QGModel("eddy", nx=32, L=5e5, dt=3600.0)
    coarse = QGModel("eddy", nx=16, L=5e5, dt=3600.0)
    y, x = torch.meshgrid(
        torch.arange(32.0).double() / 32, torch.arange(32.0).double() / 32, indexing="ij"
    )
    theta = 2 * torch.pi * (2 * x + y)
    q0 = torch.stack((1e-6 * torch.cos(theta), -3e-7 * torch.sin(theta)))[None].double()
    want = fine.run(q0, 48, 24)  # (1, 3, 2, 32, 32): days 0, 1, 2
    got = coarse_forecast(q0, coarse, 2, 24)
    assert got.shape == want.shape
    assert (want[:, 2] - want[:, 0]).abs().max() > 1e-7  # the wave did move
    np.testing.assert_allclose(got, want, atol=1e-18, rtol=0)
    # An unresolved wave (|k| = 12 > 16 / 2) is lost by the coarse model: a real baseline error.
    q_fine = torch.stack((1e-6 * torch.cos(2 * torch.pi * 12 * x),) * 2)[None].double()
    assert coarse_forecast(q_fine, coarse, 1, 24).abs().max() < 1e-20


def test_ke_spectrum_total_and_peak():
    model = QGModel("eddy", nx=32, L=5e5)
    y, x = torch.meshgrid(
        torch.arange(32.0).double() / 32, torch.arange(32.0).double() / 32, indexing="ij"
    )
    q = torch.stack(
        (1e-6 * torch.cos(2 * torch.pi * 3 * x), 5e-7 * torch.cos(2 * torch.pi * 3 * y))
    )
    q = q[None].double()
    psi = model.psi(q).numpy()
    p = model.params
    w = (p.H1 / (p.H1 + p.H2), p.H2 / (p.H1 + p.H2))
    k, e = ke_spectrum(psi, p.L, w)
    dk = 2 * np.pi / p.L
    assert np.argmax(e) == 2  # the annulus |K| = 3 dk
    assert math.isclose(e.sum() * dk, float(model.kinetic_energy(q)[0]), rel_tol=1e-10)
    np.testing.assert_allclose(k[:3], dk * np.array([1, 2, 3]))


def test_persistence_rmse_and_first_bad_step():
    truth = np.arange(5.0)[None, :, None] * np.ones((3, 5, 4))  # x_k = k everywhere
    persistence = np.repeat(truth[:, :1], 5, axis=1)
    np.testing.assert_allclose(forecast_rmse(persistence, truth), [0, 1, 2, 3, 4])
    with pytest.raises(UserInputError, match="must have the same shape"):
        forecast_rmse(persistence[:, :2], truth)
    assert first_bad_step(truth, 10.0) is None
    assert first_bad_step(truth, 2.5) == 3
    z = np.zeros((2, 4, 1))
    z[1, 2, 0] = np.inf
    assert first_bad_step(z, 1.0) == 2


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("evaluate.lead_days=16", "evaluate.lead_days=16 is not shorter than the test period"),
        ("evaluate.lead_days=2.5", "evaluate.lead_days=2.5 is not a whole number of saved"),
        ("simulate.save_every_days=0.3", "is not a whole number of time steps"),
        ("evaluate.coarse_factor=3", "evaluate.coarse_factor=3: the coarse grid"),
        ("latent_ode.depth=6", "latent_ode.depth=6: simulate.nx=32 is not divisible"),
        ("cnn.rollout=8", "cnn.rollout=8 steps needs more than the 8 saved states of the val"),
        ("simulate.nx=31", "simulate.nx=31 must be even"),
        ("simulate.dt=-1", "key 'simulate.dt'"),
        ("methods=[cnn, unet]", "key 'methods.1'"),
        ("methods=[cnn, cnn]", "lists a method twice"),
        ("cnn.widht=8", "unknown key 'widht' in cnn"),
        (
            "cnn.adversarial={weight: 0.1, n_layers: 6}",
            "cnn.adversarial.n_layers=6: the discriminator halves the 32 x 32 fields 6 times",
        ),
        (
            "cnn.adversarial={weight: 0.1, on: spectra, spectrum_bins: 20}",
            "cnn.adversarial.spectrum_bins=20: 32 x 32 fields resolve at most 16 annuli",
        ),
    ],
)
def test_config_errors_are_one_line_exit_2(tmp_path, capsys, override, match):
    args = ["run", QUICK, "--out", str(tmp_path / "r"), *_sets([*TINY, override])]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "r" / "trajectories.nc").exists()  # refused before simulating


@pytest.mark.parametrize("on", ["fields", "spectra"])
def test_adversarial_cnn_emulator_trains_beside_a_discriminator(tmp_path, on):
    """With ``cnn.adversarial.weight > 0`` the CNN trains against a discriminator of its
    rolled-out states (a patch discriminator with time as channels, or one of their spectra):
    both losses are logged, the emulator differs from the one trained without, and its file
    loads as any emulator's."""
    import csv

    from geodl.methods.emulation import CNNSection, train_emulator

    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal((30, 2, 16, 16)), axis=0).astype(np.float32) * 0.1
    mean, std = x.mean(axis=(0, 2, 3), keepdims=True)[0], x.std(axis=(0, 2, 3), keepdims=True)[0]
    base = {"width": 8, "n_layers": 2, "rollout": 2, "train": {"max_epochs": 2, "batch_size": 4}}
    nets = {}
    for weight in (0.0, 0.5):
        section = CNNSection.model_validate(
            {
                **base,
                "adversarial": {
                    "weight": weight,
                    "on": on,
                    "width": 8,
                    "n_layers": 2,
                    "spectrum_bins": 4,
                    "r1_weight": 1,
                },
            }  # fmt: skip
        )
        nets[weight], summary = train_emulator(
            "cnn", section, x[:20], x[20:], mean, std, threads=1,
            ckpt_dir=tmp_path / f"c{weight}", log_dir=tmp_path / f"l{weight}", key="k",
        )  # fmt: skip
        assert summary["best_val_loss"] is not None and math.isfinite(summary["best_val_loss"])
    with open(tmp_path / "l0.5" / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert "train/adv_d_epoch" in header and "train/adv_g_epoch" in header
    a, b = (dict(n.state_dict()) for n in (nets[0.0], nets[0.5]))
    assert a.keys() == b.keys()  # the generator alone: no discriminator weights in the model
    assert any(not torch.equal(a[k], b[k]) for k in a)
