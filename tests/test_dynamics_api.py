"""geodl.dynamics: fit on trajectories, forecast, Lyapunov exponent, save/load, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import geodl.dynamics as gd
from geodl.errors import ConfigError, DataError, UserInputError
from geodl.tasks.simulate import lorenz_dataset


@pytest.fixture(scope="module")
def l63():
    return lorenz_dataset("lorenz63", n_trajectories=3, n_steps=600, dt=0.01, seed=3)["state"]


@pytest.fixture(scope="module")
def model(l63):
    return gd.fit(l63, model={"lbfgs_iter": 80, "stride": 2}, train={"max_epochs": 2})


def test_fit_learns_one_step_and_forecasts(model, l63):
    x = torch.as_tensor(l63.isel(trajectory=0).values)
    err = (model.step(x[:-1]) - x[1:]).abs().max().item()
    moved = (x[1:] - x[:-1]).abs().max().item()
    assert err < 0.05 * moved  # far better than persistence
    fc = model.forecast(l63.isel(trajectory=0, time=-1), n_steps=50)
    assert fc.dims == ("time", "component") and fc.shape == (51, 3)
    assert fc.attrs["left_attractor_at_step"] == -1 and fc["time"].values[1] == pytest.approx(0.01)
    ens = model.forecast(l63.isel(time=-1).values, n_steps=10)
    assert ens.dims == ("member", "time", "component") and ens.shape == (3, 11, 3)
    np.testing.assert_allclose(ens.values[0], fc.values[:11])
    assert np.isfinite(model.lyapunov(n_steps=300, n_transient=50))


def test_save_load_roundtrip(model, l63, tmp_path):
    path = model.save(tmp_path / "m.pt")
    again = gd.DynamicsModel.load(path)
    x0 = l63.isel(trajectory=1, time=0)
    xr.testing.assert_identical(again.forecast(x0, 30), model.forecast(x0, 30))
    with pytest.raises(DataError, match="not found"):
        gd.DynamicsModel.load(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not a geodl dynamics model"):
        gd.DynamicsModel.load(tmp_path / "other.pt")
    # the envelope as written before it recorded the geodl version: refused in one line
    ckpt = torch.load(path, weights_only=True)
    del ckpt["geodl"]["version"]
    torch.save(ckpt, tmp_path / "old.pt")
    with pytest.raises(DataError, match="no geodl version") as err:
        gd.DynamicsModel.load(tmp_path / "old.pt")
    assert "\n" not in str(err.value)


def test_float32_step_leaves_float64_network_untouched():
    from geodl.methods.dynamics import ModelSection, build_dynamics_model

    torch.manual_seed(0)
    net = build_dynamics_model(ModelSection(), 3).double().eval()
    with torch.no_grad():  # weights that float32 cannot hold (fresh ones are float32 values)
        for p in net.parameters():
            p.add_(1e-9 * torch.randn_like(p))
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    m = gd.DynamicsModel(
        net, np.array([0.5, -1.0, 20.0]), np.array([8.0, 9.0, 7.0]), 0.01, ModelSection()
    )
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 8
    before = m.step(x)
    single = m.step(x.float())
    assert single.dtype == torch.float32
    torch.testing.assert_close(single, before.float())  # computed in float64, rounded once
    after = m.step(x)
    assert after.dtype == torch.float64 and torch.equal(after, before)  # bit-identical
    assert all(p.dtype == torch.float64 for p in m.net.parameters())
    assert all(torch.equal(v, weights[k]) for k, v in m.net.state_dict().items())


def test_divergent_forecast_is_cut_and_reported(model, l63, tmp_path):
    broken = gd.DynamicsModel.load(model.save(tmp_path / "m.pt"))
    with torch.no_grad():
        broken.net.linear.bias += 1.0
    with pytest.warns(RuntimeWarning, match="left the attractor at step"):
        fc = broken.forecast(l63.isel(trajectory=0, time=0), n_steps=2000)
    left = fc.attrs["left_attractor_at_step"]
    assert 0 < left < 2000 and fc.sizes["time"] == left and np.isfinite(fc.values).all()


def test_noisy_trajectories_states_estimated(l63):
    rng = np.random.default_rng(0)
    noisy = l63 + 0.5 * rng.standard_normal(l63.shape)
    noisy.attrs["dt"] = 0.01
    m = gd.fit(
        noisy,
        model={"estimate_states": True, "lbfgs_iter": 60, "stride": 2},
        train={"max_epochs": 1},
    )
    assert m.states.dims == ("trajectory", "time", "component")
    clean = l63.values[:2]  # the last trajectory is the validation one
    before = np.sqrt(((noisy.values[:2] - clean) ** 2).mean())
    after = np.sqrt(((m.states.values - clean) ** 2).mean())
    assert after < 0.6 * before


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda a: a.rename(time="t"), DataError, "expected \\(time, component\\)"),
        (lambda a: a.isel(trajectory=0).values, UserInputError, "must be an xarray.DataArray"),
        (
            lambda a: a.drop_vars("time").assign_attrs(dt=None),
            DataError,
            "no time step",
        ),
        (lambda a: a.where(a.time > 0.1), DataError, "contain NaN"),
    ],
)
def test_bad_trajectories(l63, make, error, match):
    with pytest.raises(error, match=match):
        gd.fit(make(l63), train={"max_epochs": 1})


def test_bad_forecast_and_config(model, l63):
    with pytest.raises(DataError, match="expected \\(3,\\)"):
        model.forecast(np.zeros(4), 5)
    with pytest.raises(UserInputError, match="positive integer"):
        model.forecast(np.zeros(3), 0)
    with pytest.raises(ConfigError, match="rollout=900"):
        gd.fit(l63, model={"rollout": 900}, train={"max_epochs": 1})
    with pytest.raises(ValueError, match="model: .*kind"):
        gd.fit(l63, model={"kind": "transformer"})


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_neural_ode_geodl_rk4_or_torchdiffeq(l63, tmp_path, method):
    short = l63.isel(time=slice(0, 200))
    m = gd.fit(
        short,
        model={"kind": "neural_ode", "method": method, "hidden": [16], "stride": 4},
        train={"max_epochs": 1},
    )
    x0 = short.isel(trajectory=0, time=0)
    fc = m.forecast(x0, 20)
    assert fc.shape == (21, 3) and np.isfinite(fc.values).all()
    xr.testing.assert_allclose(
        gd.DynamicsModel.load(m.save(tmp_path / "n.pt")).forecast(x0, 20), fc
    )
    x = torch.as_tensor(short.isel(trajectory=0).values[:50])
    x.requires_grad_(True)
    m.step(x).sum().backward()  # differentiable in the state (4D-Var uses it)
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_forecast_from_a_state_off_the_attractor_is_refused(model):
    far = model.mean + 50 * model.std  # 50 standard deviations of the training data
    with pytest.raises(DataError, match="beyond 5.0 standard deviations"):
        model.forecast(far, 10)
    with pytest.raises(DataError, match="not finite"):
        model.forecast(np.full(3, np.nan), 10)
