"""geodl.methods.dynamics on its own: splits, windows, loss, checkpoint, scores (no pipeline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from geodl.errors import ConfigError, DataError
from geodl.methods.dynamics import (
    ModelSection,
    build_dynamics_model,
    denoise_scores,
    method_name,
    near_fraction,
    read_dynamics_checkpoint,
    read_trajectory_file,
    restore_dynamics_model,
    rollout_loss,
    save_dynamics_model,
    score_dynamics,
    simulate_trajectories,
    split_train_val_test,
    split_trajectories,
    step_function,
    trajectory_windows,
)

SIM = {
    "n_steps": 50,
    "dt": 0.01,
    "spinup_steps": 100,
    "n_components": 40,
    "forcing": 8.0,
    "seed": 3,
}


def test_simulated_splits_noise_and_seeds():
    counts = {"train": 2, "val": 1, "test": 1}
    clean = simulate_trajectories("lorenz63", counts, noise_std=0.0, **SIM)
    noisy = simulate_trajectories("lorenz63", counts, noise_std=0.5, **SIM)
    assert list(clean) == ["train", "val", "test"]
    assert list(noisy) == ["train_clean", "train", "val_clean", "val", "test"]
    assert noisy["train"].shape == (2, 51, 3) and noisy["test"].shape == (1, 51, 3)
    np.testing.assert_array_equal(noisy["train_clean"], clean["train"])
    np.testing.assert_array_equal(noisy["test"], clean["test"])  # the test data stay clean
    assert np.std(noisy["train"] - clean["train"]) == pytest.approx(0.5, rel=0.2)
    assert not np.allclose(clean["train"][0, 0], clean["val"][0, 0])  # one seed per split


def test_splits():
    many = np.arange(4 * 10 * 2.0).reshape(4, 10, 2)
    parts = split_train_val_test(many)
    assert [v.shape[0] for v in parts.values()] == [2, 1, 1]
    np.testing.assert_array_equal(parts["test"], many[-1:])
    one = split_train_val_test(many[:1])
    assert [v.shape[1] for v in one.values()] == [6, 2, 2]
    train, val = split_trajectories(many)
    assert train.shape == (3, 10, 2) and val.shape == (1, 10, 2)


def test_windows_and_rollout_loss():
    z = torch.arange(2 * 7 * 1.0).reshape(2, 7, 1)  # z[b, t] = 7 b + t
    w = trajectory_windows(z, rollout=2, stride=2)  # windows start at t = 0, 2, 4
    assert w.shape == (6, 3, 1)
    torch.testing.assert_close(w[4, :, 0], torch.tensor([9.0, 10.0, 11.0]))
    # Persistence on a ramp of slope 1: errors 1 and 2 at steps 1 and 2, mean of squares 2.5.
    assert rollout_loss(torch.nn.Identity(), w).item() == pytest.approx(2.5)


def test_checkpoint_round_trip(tmp_path):
    m = ModelSection(kind="neural_ode", hidden=[8])
    torch.manual_seed(0)
    net = build_dynamics_model(m, 3).double()
    meta = {"mean": [0.0] * 3, "std": [1.0] * 3, "dt": 0.01, "dim": 3, "config": {"model": {}}}
    path = save_dynamics_model(tmp_path / "m.pt", net, meta)
    assert set(torch.load(path, weights_only=True)) == {"state_dict", "geodl"}
    state_dict, again = read_dynamics_checkpoint(path)
    assert again.pop("version") and again == meta  # the envelope adds the geodl version
    back = restore_dynamics_model(m, 3, state_dict)
    assert not back.training and all(p.dtype == torch.float64 for p in back.parameters())
    x = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(step_function(back)(x), step_function(net)(x))


def test_score_dynamics_of_an_untrained_model():
    test = simulate_trajectories("lorenz63", {"test": 2}, noise_std=0.0, **SIM)["test"]
    mean, std = test.mean(axis=(0, 1)), test.std(axis=(0, 1))
    torch.manual_seed(0)
    net = build_dynamics_model(ModelSection(), 3).double().eval()
    kw = {
        "mean": mean,
        "std": std,
        "dt": 0.01,
        "system": "lorenz63",
        "n_components": 40,
        "forcing": 8.0,
        "n_forecasts": 3,
        "lyapunov_steps": 20,
        "lyapunov_transient": 0,
        "lyapunov_trajectories": 1,
        "long_steps": 100,
        "bins": 10,
        "bound": 5.0,
        "near": 0.25,
    }
    res = score_dynamics(net, test, lead_steps=10, **kw)
    assert res.lyapunov_reference == 0.906 and res.forecast_rmse.shape == (11,)
    assert res.forecast_rmse[0] == 0.0 and res.scores["rmse_step_1"] > 0
    assert 0.0 <= res.scores["on_attractor_fraction"] <= 1.0
    ds = res.forecast_dataset()
    assert ds.sizes["lead"] == 11 and ds.sizes["step"] == res.scores["rollout_steps"] + 1
    assert np.isfinite(ds["rollout"].values).all()
    with pytest.raises(ConfigError, match="evaluate.lead_steps=51 is longer"):
        score_dynamics(net, test, lead_steps=51, **kw)


def test_small_scores():
    assert method_name(ModelSection()) == "bilinear_resnet"
    assert near_fraction(np.zeros((0, 2)), np.zeros((3, 2)), 1.0) == 0.0
    assert near_fraction(np.array([[0.0, 0.5], [2.0, 0.0]]), np.zeros((1, 2)), 1.0) == 0.5
    clean = np.zeros((1, 4, 1))
    s = denoise_scores(clean + 2.0, clean + 1.0, clean)
    assert s == {"train_data_rmse": 2.0, "train_states_rmse": 1.0}


def test_read_trajectory_file(tmp_path):
    with pytest.raises(DataError, match="trajectory file '.*nowhere.nc' not found"):
        read_trajectory_file(tmp_path / "nowhere.nc", "state")
    da = xr.DataArray(np.zeros((6, 2)), dims=("time", "component"))
    xr.Dataset({"x": da}, attrs={"dt": 0.5}).to_netcdf(tmp_path / "t.nc")
    values, dt = read_trajectory_file(tmp_path / "t.nc", "x")  # dt from the file's attributes
    assert values.shape == (1, 6, 2) and dt == 0.5
    with pytest.raises(DataError, match="no variable 'state'"):
        read_trajectory_file(tmp_path / "t.nc", "state")
