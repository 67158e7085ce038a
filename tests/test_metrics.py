"""Metrics: known answers on synthetic fields, xarray and tensor inputs, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from geodl import metrics as M
from geodl.errors import DataError, UserInputError


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waiting on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


KEYS = ["lambda_t", "lambda_x", "mu", "mu_std", "rmse"]
STD_KEYS = sorted([*KEYS, "coverage_68", "coverage_95", "crps"])


def _lowpass(a: np.ndarray, axis: int, n_keep: int) -> np.ndarray:
    """Keep the first ``n_keep`` Fourier bins (wavenumbers below n_keep / L) along ``axis``."""
    spec = np.fft.rfft(a, axis=axis)
    index = [slice(None)] * a.ndim
    index[axis] = slice(n_keep + 1, None)
    spec[tuple(index)] = 0
    return np.fft.irfft(spec, n=a.shape[axis], axis=axis)


def _dataarray(values, *, x_units="km", dx=2.0, dy=2.0):
    t, y, x = values.shape
    return xr.DataArray(
        values,
        dims=("time", "y", "x"),
        coords={
            "time": pd.date_range("2020-01-01", periods=t, freq="D"),
            # a geographic grid's y is in degrees_north (the axes are read from CF units)
            "y": ("y", np.arange(y) * dy, {"units": x_units.replace("_east", "_north")}),
            "x": ("x", np.arange(x) * dx, {"units": x_units}),
        },
        attrs={"units": "m"},
    )


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_rmse_and_nrmse(rng):
    truth = rng.normal(size=(4, 5, 6))
    assert M.rmse(truth + 0.5, truth) == pytest.approx(0.5)
    assert M.nrmse(truth + 0.5, truth) == pytest.approx(0.5 / truth.std())


def test_white_noise_error_gives_mu_from_its_variance(rng):
    truth = 2.0 * rng.normal(size=(30, 20, 20))
    error = 0.5 * rng.normal(size=truth.shape)
    total, daily_std = M.mu(truth + error, truth)
    assert total == pytest.approx(1 - 0.5 / 2.0, abs=0.01)
    assert 0 < daily_std < 0.03  # 400 points a day: small sampling spread


@pytest.mark.filterwarnings("ignore::geodl.metrics.ResolutionBoundWarning")  # the other axis
def test_low_passed_field_gives_its_wavelength_in_km(rng):
    n_x, dx, n_keep = 128, 2.0, 10  # cutoff wavelength 128 * 2 / 10 = 25.6 km
    truth = rng.normal(size=(32, 8, n_x))
    pred = _lowpass(truth, 2, n_keep)
    bin_k = 1.0 / (n_x * dx)
    got = M.score(_dataarray(pred, dx=dx), _dataarray(truth, dx=dx))
    assert abs(1.0 / got["lambda_x"] - n_keep * bin_k) <= bin_k
    assert M.score_units(_dataarray(truth))["lambda_x"] == "km"


@pytest.mark.filterwarnings("ignore::geodl.metrics.ResolutionBoundWarning")  # the other axis
def test_low_passed_field_in_time_gives_its_period_in_days(rng):
    n_t, n_keep = 64, 8  # cutoff period 64 / 8 = 8 days
    truth = rng.normal(size=(n_t, 4, 16))
    pred = _lowpass(truth, 0, n_keep)
    got = M.score(_dataarray(pred), _dataarray(truth))
    assert abs(1.0 / got["lambda_t"] - n_keep / n_t) <= 1.0 / n_t
    assert M.score_units(_dataarray(truth))["lambda_t"] == "days"


@pytest.mark.filterwarnings("ignore::geodl.metrics.ResolutionBoundWarning")  # the other axis
def test_degrees_and_metres_coordinates(rng):
    truth = rng.normal(size=(16, 4, 64))
    pred = _lowpass(truth, 2, 8)
    deg = _dataarray(truth, x_units="degrees_east", dx=0.25, dy=0.25)
    got = M.score(_dataarray(pred, x_units="degrees_east", dx=0.25, dy=0.25), deg)
    assert abs(1 / got["lambda_x"] - 8 / 16.0) <= 1 / 16.0  # 64 * 0.25 = 16 degrees
    assert M.score_units(deg)["lambda_x"] == "degrees"
    metres = _dataarray(truth, x_units="m", dx=2000.0)
    assert M.score_units(metres)["lambda_x"] == "km"
    got_m = M.score(_dataarray(pred, x_units="m", dx=2000.0), metres)
    assert abs(1 / got_m["lambda_x"] - 8 / 128.0) <= 1 / 128.0


@pytest.mark.filterwarnings("ignore::geodl.metrics.ResolutionBoundWarning")  # the other axis
def test_lat_lon_names_are_found(rng):
    truth = _dataarray(rng.normal(size=(8, 4, 16))).rename({"y": "lat", "x": "lon"})
    assert sorted(M.score(truth * 0.5, truth)) == KEYS


def test_calibrated_gaussian_gives_68_and_95_percent(rng):
    truth = rng.normal(size=(40, 50, 50))
    sigma = rng.uniform(0.2, 2.0, size=truth.shape)
    pred = truth + sigma * rng.normal(size=truth.shape)
    cal = M.calibration(pred, truth, sigma)
    assert cal["coverage_68"] == pytest.approx(0.6827, abs=0.005)
    assert cal["coverage_95"] == pytest.approx(0.9545, abs=0.005)
    assert cal["mean_z2"] == pytest.approx(1.0, abs=0.02)
    assert cal["crps"] == pytest.approx(np.mean(sigma) / math.sqrt(math.pi), rel=0.02)
    over = M.calibration(pred, truth, 3 * sigma)  # over-dispersed: too many inside
    assert over["coverage_68"] > 0.95


def test_score_same_keys_for_dataarray_and_tensor(rng):
    values = rng.normal(size=(16, 8, 16))
    pred = values + 0.3 * rng.normal(size=values.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.ResolutionBoundWarning)
        a = M.score(_dataarray(pred), _dataarray(values), std=_dataarray(0.3 + 0 * values))
        t = torch.from_numpy(values)[None, :, None]  # (B, T, C, H, W)
        p = torch.from_numpy(pred)[None, :, None]
        b = M.score(p, t, std=torch.full_like(t, 0.3))
        c = M.score(pred, values)
    assert sorted(a) == sorted(b) == STD_KEYS
    assert sorted(c) == KEYS
    for key in a:  # spacing 1 day and 2 km vs 1 step and 1 point
        assert a[key] == pytest.approx(2 * b[key] if key == "lambda_x" else b[key])


def test_nan_and_mask_are_ignored(rng):
    truth = rng.normal(size=(8, 4, 16))
    pred = truth + 0.1
    truth_nan = truth.copy()
    truth_nan[:, 0, :3] = np.nan
    assert M.rmse(pred, truth_nan) == pytest.approx(0.1)
    mask = np.ones(truth.shape, dtype=bool)
    mask[:, 1] = False
    pred_bad = pred.copy()
    pred_bad[:, 1] = 1e6
    assert M.rmse(pred_bad, truth, mask=mask) == pytest.approx(0.1)


def test_resolution_bounds_warn():
    k = np.array([1.0, 2.0, 4.0])
    with pytest.warns(M.ResolutionBoundWarning, match="above 0.5"):
        assert M.effective_resolution(k, np.array([0.9, 0.8, 0.7])) == 0.25
    with pytest.warns(M.ResolutionBoundWarning, match="below 0.5"):
        assert M.effective_resolution(k, np.array([0.1, 0.2, 0.3])) == 1.0


def test_forecast_rmse_vs_lead(rng):
    truth = rng.normal(size=(5, 4, 3))
    growth = np.arange(4.0)[None, :, None]
    assert M.forecast_rmse(truth + growth, truth) == pytest.approx([0, 1, 2, 3])
    da = xr.DataArray(truth, dims=("init", "lead", "x"), coords={"lead": [1, 2, 3, 4]})
    out = M.forecast_rmse(da + growth, da)
    assert list(out.dims) == ["lead"] and out.values == pytest.approx([0, 1, 2, 3])
    with pytest.raises(DataError, match="no 'step' dim"):
        M.forecast_rmse(da, da, lead_dim="step")


def test_lyapunov_lives_in_sim_only():
    # One implementation (geodl.sim.lyapunov_exponents): metrics may not import sim (sibling layers).
    assert not hasattr(M, "lyapunov_exponents") and "lyapunov_exponents" not in M.__all__


def test_bad_inputs():
    with pytest.raises(
        UserInputError, match=r"expected \(time, y, x\) or \(batch, time, channel, y, x\)"
    ):
        M.rmse(np.zeros((3, 4)), np.zeros((3, 4)))
    with pytest.raises(UserInputError, match="shapes differ"):
        M.rmse(np.zeros((3, 4, 5)), np.zeros((3, 4, 6)))
    da = _dataarray(np.zeros((4, 4, 8)))
    with pytest.raises(UserInputError, match="truth is a DataArray but"):
        M.rmse(np.zeros((4, 4, 8)), da)
    with pytest.raises(DataError, match="coordinates differ"):
        M.rmse(da.assign_coords(x=da.x + 1.0), da)
    plain = da.rename(time="day").assign_coords(day=np.arange(da.sizes["time"]))
    with pytest.raises(DataError, match=r"no time dim .* pass time_dim="):
        M.score(plain, plain)  # neither a time name nor dates nor CF attributes
    dated = da.rename(time="day")  # dates under another name: found by their dtype (geodl.grid)
    assert M.score_units(dated)["lambda_t"] == "days"
    irregular = da.assign_coords(
        x=("x", np.r_[0.0, 1.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], {"units": "km"})
    )
    with pytest.raises(DataError, match="not regularly increasing"):
        M.score(irregular, irregular)
    with pytest.raises(DataError, match="no valid entries"):
        M.rmse(np.full((2, 2, 2), np.nan), np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match="std must be > 0"):
        M.calibration(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match="at least 4 time steps"):
        M.psd_score(np.zeros((2, 4, 8)), np.ones((2, 4, 8)))


def test_dapper_scores_on_a_hand_made_example():
    """Time mean of the instantaneous RMSE at analysis times after the burn-in, then mean and std
    over trajectories; rmse_u over every step; spread the same way (DAPPER's convention)."""
    from geodl.metrics import dapper_scores

    truth = np.zeros((2, 4, 2))
    est = np.zeros((2, 4, 2))
    est[0, 1] = [3.0, 4.0]  # instantaneous RMSE sqrt(12.5)
    est[0, 2] = [1.0, 1.0]  # 1
    est[1, 3] = [2.0, 0.0]  # sqrt(2): not an analysis time
    est[1, 0] = [9.0, 9.0]  # burnt in
    times = np.array([True, True, True, False])
    s = dapper_scores(est, truth, times, burn_in=1, kind="s", spread=np.ones((2, 4, 2)))
    per_traj = np.array([(12.5**0.5 + 1.0) / 2, 0.0])
    assert s["rmse_s"] == pytest.approx(per_traj.mean())
    assert s["rmse_s_std"] == pytest.approx(per_traj.std())
    assert s["rmse_u"] == pytest.approx((12.5**0.5 + 1.0 + 2**0.5) / 6)
    assert s["spread_s"] == pytest.approx(1.0)
    a = dapper_scores(est, truth, times, burn_in=1, kind="a")
    assert a["rmse_a"] == s["rmse_s"] and "rmse_u" not in a
    with pytest.raises(ValueError, match="kind"):
        dapper_scores(est, truth, times, 0, "f")
