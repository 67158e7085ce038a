"""geodl.methods.assimilation: the Python API and the assimilation task give the same estimates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import geodl.assimilation as da
from geodl.errors import DataError
from geodl.methods.assimilation import DEFAULT_LAG, linear
from geodl.methods.assimilation import METHODS as TWIN_METHODS
from geodl.methods.assimilation import OBS_ONLY as METHODS
from geodl.obs import observe_state
from geodl.sim import simulate_lorenz
from geodl.tasks.assimilation import AssimilationConfig, _twin

OBS_STD = 2**0.5
DT = 0.01
ENKF = {"n_members": 10, "init_std": 2.0, "seed": 3}


@pytest.fixture(scope="module")
def twin():
    truth = simulate_lorenz("lorenz63", n_trajectories=2, n_steps=240, dt=DT, seed=7).numpy()
    obs = observe_state(truth, every=8, noise_std=OBS_STD, seed=1)
    return truth, obs


def task_estimate(twin, name, **enkf):
    """The estimate of the task's ``enkf``/``enks`` for one inflation (1.05)."""
    truth, obs = twin
    cfg = AssimilationConfig.model_validate(
        {
            "experiment": {"name": "t", "task": "assimilation"},
            "observe": {"noise_std": OBS_STD},
            "evaluate": {"enkf": {"inflation": [1.05], **ENKF, **enkf}},
        }
    )
    twin = _twin(cfg, truth, torch.as_tensor(obs), DT, None)  # as the evaluate stage runs it
    est = TWIN_METHODS[name].run(cfg.evaluate.enkf, twin)[0]
    return est.get("s", est["a"])  # the smoother's estimate where it has one


def api_estimate(twin, method, **options):
    obs = xr.DataArray(twin[1], dims=("trajectory", "time", "component"), attrs={"dt": DT})
    res = da.assimilate(obs, obs_std=OBS_STD, method=method, inflation=1.05, **ENKF, **options)
    return res["analysis"].values


@pytest.mark.parametrize("lag", [0, 30, 10_000])
def test_enks_lag_means_the_same_in_the_api_and_the_task(twin, lag):
    api = api_estimate(twin, "enks", lag=lag)
    np.testing.assert_array_equal(api, task_estimate(twin, "enks", lag=lag))
    filt = api_estimate(twin, "enkf")
    np.testing.assert_array_equal(filt, task_estimate(twin, "enkf", lag=lag))
    if lag == 0:  # DAPPER's convention: an EnKS of lag 0 is the filter
        np.testing.assert_array_equal(api, filt)
    else:
        assert not np.allclose(api, filt)


def test_enks_default_lag_is_the_tasks(twin):
    assert AssimilationConfig.model_fields["evaluate"].default.enkf.lag == DEFAULT_LAG > 0
    api = api_estimate(twin, "enks")  # no lag given: the default
    np.testing.assert_array_equal(api, task_estimate(twin, "enks"))
    np.testing.assert_array_equal(api, api_estimate(twin, "enks", lag=DEFAULT_LAG))


def gappy_obs():
    """Two trajectories, 6 steps, 3 components: leading and trailing gaps; component 2 is never
    observed in trajectory 0 (observed in trajectory 1)."""
    nan = np.nan
    obs = np.full((2, 6, 3), nan)
    obs[0, [2, 4], 0] = [1.0, 3.0]  # gaps before the first and after the last observation
    obs[0, [1], 1] = [5.0]  # one observation: constant
    obs[1, [0, 5], 0] = [0.0, 10.0]
    obs[1, [3], 1] = [-1.0]
    obs[1, [1, 2], 2] = [20.0, 22.0]
    return obs


def test_linear_is_the_same_in_the_api_and_the_task():
    obs = gappy_obs()
    api = da.assimilate(
        xr.DataArray(obs, dims=("trajectory", "time", "component"), attrs={"dt": DT}),
        obs_std=OBS_STD,
        method="linear",
    )["analysis"].values
    np.testing.assert_array_equal(api, METHODS["linear"](obs))
    np.testing.assert_allclose(api[0, :, 0], [1.0, 1.0, 1.0, 2.0, 3.0, 3.0])
    np.testing.assert_allclose(api[0, :, 1], 5.0)
    # never observed in trajectory 0: the mean of that trajectory's observations only
    np.testing.assert_allclose(api[0, :, 2], (1.0 + 3.0 + 5.0) / 3)
    np.testing.assert_allclose(api[1, :, 2], [20.0, 20.0, 22.0, 22.0, 22.0, 22.0])
    # so an estimate does not depend on the other trajectories of the batch
    alone = da.assimilate(
        xr.DataArray(obs[0], dims=("time", "component"), attrs={"dt": DT}),
        obs_std=OBS_STD,
        method="linear",
    )["analysis"].values
    np.testing.assert_array_equal(alone, api[0])


def test_linear_needs_an_observation_in_every_trajectory():
    obs = gappy_obs()
    obs[1] = np.nan
    with pytest.raises(DataError, match=r"trajectories \[1\] have no observation"):
        linear(torch.as_tensor(obs))
    with pytest.raises(DataError, match="have no observation"):
        METHODS["linear"](obs)


def _task_run(twin, name, settings):
    """What the task's evaluate stage runs for ``name`` (the registry entry, a twin experiment)."""
    from geodl.methods.assimilation import METHODS as TASK_METHODS
    from geodl.methods.assimilation import TwinExperiment

    truth, obs = twin
    exp = TwinExperiment(
        truth=truth,
        obs=torch.as_tensor(obs),
        times=np.isfinite(obs).any(axis=(0, 2)),
        dt=DT,
        system="lorenz63",
        forcing=8.0,
        spinup_steps=1000,
        obs_std=OBS_STD,
    )
    est = TASK_METHODS[name].run(settings, exp)[0]
    return est.get("s", est.get("a"))


def test_fourdvar_defaults_are_the_tasks_and_give_the_tasks_estimate(twin):
    """The API's 4D-Var options default to the task's section (stated once, there)."""
    from geodl.methods.assimilation import FourDVarSection

    section = FourDVarSection(window=120, n_iter=5, n_outer=1)
    task = _task_run(twin, "fourdvar", section)
    api = api_estimate(twin, "fourdvar", window=120, n_iter=5, n_outer=1)
    np.testing.assert_allclose(api, task, rtol=0, atol=1e-12)
    default = FourDVarSection()
    section_default = _task_run(twin, "fourdvar", default.model_copy(update={"n_iter": 3}))
    np.testing.assert_allclose(
        api_estimate(twin, "fourdvar", n_iter=3), section_default, rtol=0, atol=1e-12
    )


def test_threedvar_with_the_tasks_background_gives_the_tasks_estimate(twin):
    """The task's cycled 3D-Var (B = scale x a climatology of a separate run) and the API's with
    that B are one computation."""
    from geodl.methods.assimilation import ThreeDVarSection, climatology_cov

    section = ThreeDVarSection(scale=[0.05], clim_steps=2000)
    task = _task_run(twin, "threedvar", section)
    cov = climatology_cov(
        "lorenz63", n_steps=2000, dt=DT, spinup_steps=1000, dim=3, forcing=8.0, seed=12345
    )
    api = api_estimate(twin, "threedvar", background_cov=0.05 * cov.numpy())
    np.testing.assert_allclose(api, task, rtol=0, atol=1e-12)
