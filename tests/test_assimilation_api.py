"""geodl.assimilation: classical DA on xarray observations, with the true or a learned model."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import geodl.assimilation as da
from geodl.errors import DataError, UserInputError
from geodl.tasks.simulate import lorenz_dataset

OBS_STD = 2**0.5


@pytest.fixture(scope="module")
def twin():
    truth = lorenz_dataset("lorenz63", n_trajectories=1, n_steps=800, dt=0.01, seed=5)["state"]
    truth = truth.isel(trajectory=0)
    rng = np.random.default_rng(1)
    noisy = truth + OBS_STD * rng.standard_normal(truth.shape)
    obs = noisy.where((np.arange(truth.sizes["time"]) % 8 == 0)[:, None])
    obs.attrs["dt"] = 0.01
    return truth, obs


@pytest.fixture(scope="module")
def scores(twin):
    truth, obs = twin
    out = {}
    for method, options in (
        ("linear", {}),
        ("enkf", {"inflation": 1.05}),
        ("enks", {"inflation": 1.05, "lag": 100}),
        ("threedvar", {"background_scale": 0.05}),
        ("fourdvar", {"window": 200, "n_iter": 30, "model_std": 0.01}),
    ):
        res = da.assimilate(obs, obs_std=OBS_STD, method=method, **options)
        assert res["analysis"].dims == ("time", "component")
        assert np.isfinite(res["analysis"].values).all()
        out[method] = da.score(res["analysis"], truth, obs=obs, burn_in=200)
        if method in ("enkf", "enks"):
            assert (res["spread"].values >= 0).all()
    return out


def test_every_method_beats_the_observations(scores):
    for method in ("enkf", "enks", "threedvar", "fourdvar"):
        assert scores[method]["rmse_analysis"] < 0.8 * OBS_STD, method
    assert scores["enks"]["rmse"] < scores["enkf"]["rmse"]  # the smoother uses later data
    assert scores["fourdvar"]["rmse"] < scores["linear"]["rmse"]
    assert set(scores["enkf"]) >= {"rmse", "rmse_analysis", "rmse_analysis_dapper"}


def test_score_in_dapper_convention_is_the_tasks(twin):
    truth, obs = twin
    res = da.assimilate(obs, obs_std=OBS_STD, method="enkf_n")
    s = da.score(res["analysis"], truth, obs=obs, burn_in=200, kind="a")
    assert s["rmse_a"] == pytest.approx(s["rmse_analysis_dapper"])  # one trajectory or more
    assert s["rmse_a"] < 0.8 * OBS_STD
    smooth = da.score(res["analysis"], truth, obs=obs, burn_in=200, kind="s")
    assert smooth["rmse_s"] == s["rmse_a"] and "rmse_u" in smooth
    with pytest.raises(UserInputError, match="needs obs="):
        da.score(res["analysis"], truth, kind="a")


def test_a_learned_or_custom_model_is_used(twin):
    """Any one-step function is the model: a wrong one (no dynamics) does worse than the true."""
    truth, obs = twin
    persist = da.assimilate(obs, obs_std=OBS_STD, method="enkf", model=lambda x: x.clone())
    true = da.assimilate(obs, obs_std=OBS_STD, method="enkf")
    s_p = da.score(persist["analysis"], truth, burn_in=200)["rmse"]
    s_t = da.score(true["analysis"], truth, burn_in=200)["rmse"]
    assert s_t < 0.5 * s_p


def test_score_without_obs_and_batched(twin):
    truth, obs = twin
    stacked = xr.concat([obs, obs], "trajectory")
    res = da.assimilate(stacked, obs_std=OBS_STD, method="linear")
    assert res["analysis"].dims == ("trajectory", "time", "component")
    s = da.score(res["analysis"], xr.concat([truth, truth], "trajectory"))
    assert "rmse_analysis" not in s and s["rmse_std"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"method": "optimal"}, UserInputError, "method='optimal'"),
        ({"obs_std": 0.0}, UserInputError, "obs_std=0.0"),
        ({"model": "lorenz05"}, UserInputError, "model='lorenz05'"),
        ({"method": "threedvar", "background_cov": np.eye(2)}, DataError, "background_cov"),
    ],
)
def test_bad_options(twin, change, error, match):
    _, obs = twin
    with pytest.raises(error, match=match):
        da.assimilate(obs, **{"obs_std": OBS_STD, **change})


def test_bad_observations(twin):
    truth, obs = twin
    with pytest.raises(DataError, match="every value is NaN"):
        da.assimilate(obs * np.nan, obs_std=1.0)
    with pytest.raises(DataError, match="expected \\(time, component\\)"):
        da.assimilate(obs.rename(component="var"), obs_std=1.0)
    no_dt = obs.drop_vars("time")
    no_dt.attrs = {}
    with pytest.raises(DataError, match="no time step"):
        da.assimilate(no_dt, obs_std=1.0)
    with pytest.raises(DataError, match="not on the grid of truth"):
        da.score(truth, truth, obs=obs.isel(time=slice(0, 100)))
    with pytest.raises(DataError, match="burn_in=900"):
        da.score(truth, truth, burn_in=900)


def test_learned_model_time_step_must_match(twin):
    from geodl.dynamics import DynamicsModel
    from geodl.methods.dynamics import ModelSection, build_dynamics_model

    net = build_dynamics_model(ModelSection(), 3).double()
    m = DynamicsModel(net, np.zeros(3), np.ones(3), dt=0.05, model=ModelSection())
    with pytest.raises(DataError, match="dt=0.05"):
        da.assimilate(twin[1], obs_std=OBS_STD, model=m)
