"""geodl.methods.emulation on its own: checks, emulators, loss, checkpoint, data (no pipeline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from geodl.errors import ConfigError, DataError, UserInputError
from geodl.methods.emulation import (
    CNNSection,
    LatentODESection,
    build_emulator,
    check_emulator,
    check_grids,
    forecast_fn,
    load_emulator,
    n_saved,
    read_trajectories,
    rollout_loss,
    save_emulator,
    steps_per_save,
)

CNN = CNNSection(width=4, n_layers=2)
LODE = LatentODESection(width=4, latent_channels=2, depth=1)


def test_time_and_grid_checks():
    assert steps_per_save(1.0, 3600.0) == 24 and n_saved(10.0, 0.5, "evaluate.lead_days") == 20
    with pytest.raises(ConfigError, match="not a whole number of time steps"):
        steps_per_save(0.3, 3600.0)
    with pytest.raises(ConfigError, match="evaluate.lead_days=2.5 is not a whole number"):
        n_saved(2.5, 1.0, "evaluate.lead_days")
    check_grids(32, 2)
    with pytest.raises(ConfigError, match="simulate.nx=31 must be even"):
        check_grids(31, 2)
    with pytest.raises(ConfigError, match="evaluate.coarse_factor=3: the coarse grid"):
        check_grids(32, 3)


def test_check_emulator_rollout_and_depth():
    check_emulator("cnn", CNN, nx=32, n_train=8, n_val=8)
    with pytest.raises(ConfigError, match="cnn.rollout=4 steps needs more than the 4 saved"):
        check_emulator("cnn", CNN, nx=32, n_train=8, n_val=4)
    with pytest.raises(ConfigError, match="latent_ode.depth=6: simulate.nx=32"):
        check_emulator(
            "latent_ode", LODE.model_copy(update={"depth": 6}), nx=32, n_train=8, n_val=8
        )


@pytest.mark.parametrize(("method", "section"), [("cnn", CNN), ("latent_ode", LODE)])
def test_emulators_forecast_shape_and_loss(method, section):
    torch.manual_seed(0)
    net = build_emulator(method, section, 2, 16).eval()
    x = torch.randn(3, 4, 2, 16, 16)  # (B, K+1, C, H, W)
    residual = method == "latent_ode"
    with torch.no_grad():
        pred = forecast_fn(net, method, residual)(x[:, 0], 3)
        loss = rollout_loss(net, method, x, residual)
    assert pred.shape == x.shape
    torch.testing.assert_close(pred[:, 0], x[:, 0])  # lead 0 is x0 itself
    np.testing.assert_allclose(float(loss), float((pred[:, 1:] - x[:, 1:]).pow(2).mean()))


def test_build_emulator_rejects_a_foreign_section():
    with pytest.raises(ConfigError, match="unknown emulator 'unet'"):
        build_emulator("unet", CNN, 2, 16)


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    net = build_emulator("cnn", CNN, 2, 16)
    stats = np.ones((2, 1, 1), np.float32)
    path = save_emulator(
        tmp_path / "cnn.pt",
        net,
        method="cnn",
        variable="psi",
        mean=stats,
        std=stats,
        epochs=1,
        best_val_loss=0.5,
        config={"cnn": CNN.model_dump(mode="json")},
    )
    back = load_emulator(path, "cnn", CNN, 2, 16)
    assert not back.training
    for k, v in net.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    meta = torch.load(path, weights_only=True)["geodl"]
    assert meta["method"] == "cnn" and meta["mean"] == [1.0, 1.0] and meta["version"]
    with pytest.raises(UserInputError, match="does not fit the config"):
        load_emulator(path, "cnn", CNN.model_copy(update={"width": 8}), 2, 16)


def test_read_trajectories_splits_stats_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    split = np.array([0, 0, 0, -1, 1, 1, -1, 2, 2, 2], np.int8)
    x = rng.normal(size=(10, 2, 8, 8)).astype(np.float32)
    ds = xr.Dataset(
        {
            "psi": (("time", "layer", "y", "x"), x),
            "q": (("time", "layer", "y", "x"), 2 * x),
            "split": (("time",), split),
        }
    )
    ds.to_netcdf(tmp_path / "trajectories.nc")
    out = read_trajectories(tmp_path / "trajectories.nc", "psi")
    assert [len(out[k]) for k in ("train", "val", "test")] == [3, 2, 3]
    np.testing.assert_allclose(out["q_test"], 2 * x[7:])
    np.testing.assert_allclose(out["mean"][:, 0, 0], x[:3].mean(axis=(0, 2, 3)), rtol=1e-6)
    ds["split"][4] = -1  # one val state left: too few
    ds.to_netcdf(tmp_path / "short.nc")
    with pytest.raises(DataError, match="short.nc: the val split has 1 saved states"):
        read_trajectories(tmp_path / "short.nc", "psi")
