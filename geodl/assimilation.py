"""Data assimilation from Python: observations in (xarray), the reconstructed trajectory out.

Examples
--------
Assimilate noisy, sparse observations of Lorenz-63 with the ETKF and score it::

    import geodl.assimilation as da

    out = da.assimilate(obs, model="lorenz63", method="enkf", obs_std=2**0.5, inflation=1.1)
    da.score(out["analysis"], truth, obs=obs, burn_in=500)   # {"rmse": ..., "rmse_analysis": ...}

``obs`` is a DataArray ``(time, component)`` or ``(trajectory, time, component)``, NaN where
unobserved, on the model's time grid (step in ``attrs["dt"]``, a numeric ``time`` coordinate, or
``dt=``). ``model`` is the true model of a twin experiment (``"lorenz63"``, ``"lorenz96"``), a
learned :class:`geodl.dynamics.DynamicsModel` or any differentiable one-step function ``(N, D) ->
(N, D)`` (torch, float64). Methods: ``enkf`` (ETKF), ``enkf_n`` (EnKF-N: adaptive inflation), ``enks`` (its smoother of lag ``lag`` steps:
0 is the filter, a lag covering the record the full smoother, DAPPER's convention),
``threedvar`` (cycled 3D-Var, static background covariance), ``fourdvar`` (weak-constraint 4D-Var by
autograd), ``fourdvarnet`` (a learned 4DVarNet trained by the ``assimilation`` task: ``model`` is
its file, ``runs/NAME/model/fourdvarnet.pt``) and ``linear`` (interpolation of the observations,
the floor every method must beat). The numerics are those of :mod:`geodl.methods.assimilation`,
the ones the ``assimilation`` task calls: ``enkf``, ``enks`` and ``linear`` with the same defaults,
the same 4DVarNet model files and the same scores.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from geodl.config import validate
from geodl.dynamics import DynamicsModel, trajectory_array
from geodl.errors import DataError, UserInputError
from geodl.methods.assimilation import (
    ENSEMBLE_METHODS,
    EnKFSection,
    FourDVarSection,
    apply_fourdvarnet,
    ensemble,
    fourdvarnet_info,
    linear,
    observed_background_cov,
    true_step,
    twin_scores,
)
from geodl.metrics import dapper_scores

__all__ = ["METHODS", "assimilate", "score"]

METHODS = ("enkf", "enkf_n", "enks", "threedvar", "fourdvar", "fourdvarnet", "linear")
SYSTEMS = ("lorenz63", "lorenz96")
Step = Callable[[torch.Tensor], torch.Tensor]


def _step(model: str | DynamicsModel | Step, dt: float, forcing: float) -> Step:
    if isinstance(model, DynamicsModel):
        if not np.isclose(model.dt, dt, rtol=1e-6):
            raise DataError(
                f"the learned model steps dt={model.dt:g}, the observations dt={dt:g}; "
                "observe on the model's time grid"
            )
        return model.step
    if isinstance(model, str):
        if model not in SYSTEMS:
            raise UserInputError(
                f"model={model!r}: expected one of {list(SYSTEMS)}, a geodl.dynamics."
                "DynamicsModel or a one-step function"
            )
        return true_step(model, forcing, dt)
    if callable(model):
        return model
    raise UserInputError(
        f"model must be a system name, a DynamicsModel or a function, got {model!r}"
    )


def _given(**options: Any) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _fourdvarnet(model: Any, values: np.ndarray, dt: float, obs_std: float) -> np.ndarray:
    """Apply a 4DVarNet trained by the assimilation task (its model file) to ``values``."""
    if not isinstance(model, str | Path) or not Path(model).is_file():
        raise UserInputError(
            f"method='fourdvarnet' needs model= the file of a trained 4DVarNet (e.g. "
            f"runs/l63_assimilation/model/fourdvarnet.pt), got {model!r}"
        )
    info = fourdvarnet_info(model)
    window, dim, trained_dt, trained_std = info["window"], info["dim"], info["dt"], info["obs_std"]
    if values.shape[-1] != dim or not np.isclose(trained_dt, dt, rtol=1e-6):
        raise DataError(
            f"{model} was trained on {dim} components at dt={trained_dt:g}; the observations "
            f"have {values.shape[-1]} at dt={dt:g}"
        )
    if values.shape[1] < window:
        raise DataError(
            f"the observations span {values.shape[1]} steps, fewer than the 4DVarNet's window "
            f"of {window}; give a longer trajectory"
        )
    if not np.isclose(trained_std, obs_std, rtol=0.05):
        raise DataError(
            f"{model} was trained for observation noise std {trained_std:g}, not {obs_std:g}; "
            "a learned solver is only valid for the noise it was trained on"
        )
    return apply_fourdvarnet(Path(model), values, window)


def assimilate(
    obs: xr.DataArray,
    *,
    obs_std: float,
    model: str | DynamicsModel | Step = "lorenz63",
    method: str = "enkf",
    dt: float | None = None,
    forcing: float = 8.0,
    n_members: int | None = None,
    inflation: float = 1.05,
    lag: int | None = None,
    init_std: float | None = None,
    background_cov: np.ndarray | None = None,
    background_scale: float = 0.1,
    model_std: float | None = None,
    window: int | None = None,
    n_iter: int | None = None,
    n_outer: int | None = None,
    seed: int | None = None,
) -> xr.Dataset:
    """Reconstruct the state trajectory from ``obs`` (see the module docstring).

    Returns a Dataset with ``analysis`` (the dims of ``obs``: the filter analysis at observed
    times and the forecast between them for ``enkf`` and ``threedvar``, the smoothed trajectory
    for ``enks``, the 4D-Var estimate for ``fourdvar``) and, for the ensemble methods, ``spread``
    (of the filter ensemble). Options apply to the methods that use them: ``n_members``,
    ``inflation``, ``init_std`` (ensembles), ``lag`` (``enks``: smoother lag in steps; 0 gives the
    ``enkf`` filter, a lag of at least the number of time steps the full smoother; the default is
    the task's ``evaluate.enkf.lag``), ``background_cov`` / ``background_scale`` (3D-Var; default:
    the scaled covariance of the observations), ``model_std``, ``window``, ``n_iter``,
    ``n_outer`` (4D-Var). A component never observed in a trajectory is, for ``linear``, the
    mean of that trajectory's observations.

    Options left at None take the defaults of the task's sections (stated once, there):
    :class:`~geodl.methods.assimilation.EnKFSection` for ``n_members``, ``lag``, ``init_std``
    and ``seed``; :class:`~geodl.methods.assimilation.FourDVarSection` for ``model_std``,
    ``window``, ``n_iter`` and ``n_outer``. ``inflation`` is one value here, where the task
    tunes it over a grid against the truth.
    """
    from geodl.baselines import cycled_3dvar, weak_4dvar

    ens = validate(
        _given(n_members=n_members, lag=lag, init_std=init_std, seed=seed),
        EnKFSection,
        "assimilate",
    )
    var4 = validate(
        _given(model_std=model_std, window=window, n_iter=n_iter, n_outer=n_outer),
        FourDVarSection,
        "assimilate",
    )
    if method not in METHODS:
        raise UserInputError(f"method={method!r}: expected one of {list(METHODS)}")
    if not obs_std > 0:
        raise UserInputError(f"obs_std={obs_std!r}: expected a positive number")
    values, dt = trajectory_array(obs, dt, allow_nan=True)
    if not np.isfinite(values).any():
        raise DataError("obs: every value is NaN; nothing to assimilate")
    y = torch.as_tensor(values)
    spread = None
    if method == "fourdvarnet":
        est = torch.as_tensor(_fourdvarnet(model, values, dt, obs_std))
    elif method == "linear":
        est = linear(y)
    elif method in ENSEMBLE_METHODS:
        est, spread = ensemble(
            method,
            _step(model, dt, forcing),
            y,
            obs_std=obs_std,
            n_members=ens.n_members,
            inflation=inflation,
            lag=ens.lag,
            init_std=ens.init_std,
            seed=ens.seed,
        )
    elif method == "threedvar":
        if background_cov is None:
            cov = observed_background_cov(y, obs_std, background_scale)
        else:
            cov = torch.as_tensor(np.asarray(background_cov, dtype=np.float64))
            if cov.shape != (values.shape[-1],) * 2:
                raise DataError(
                    f"background_cov has shape {tuple(cov.shape)}; expected "
                    f"({values.shape[-1]}, {values.shape[-1]})"
                )
        est = cycled_3dvar(_step(model, dt, forcing), y, obs_std=obs_std, background_cov=cov)
    else:
        est = weak_4dvar(
            _step(model, dt, forcing),
            y,
            obs_std=obs_std,
            model_std=var4.model_std,
            window=min(var4.window, values.shape[1]),
            n_iter=var4.n_iter,
            n_outer=var4.n_outer,
        )
    analysis = est.detach().numpy()
    if not np.isfinite(analysis).all():
        raise DataError(
            f"{method}: the analysis diverged (non-finite values); check obs_std, the model and "
            "its time step, or tune inflation / background_scale"
        )
    squeeze = obs.ndim == 2
    out = {"analysis": analysis[0] if squeeze else analysis}
    if spread is not None:
        members = spread.detach().numpy()
        out["spread"] = members[0] if squeeze else members
    ds = xr.Dataset(
        {k: (obs.dims, v) for k, v in out.items()},
        coords={k: v for k, v in obs.coords.items()},
        attrs={"method": method, "dt": dt, "obs_std": obs_std},
    )
    return ds


def score(
    estimate: xr.DataArray,
    truth: xr.DataArray,
    *,
    obs: xr.DataArray | None = None,
    burn_in: int = 0,
    kind: str | None = None,
) -> dict[str, Any]:
    """RMSE of ``estimate`` against ``truth`` (same dims), after ``burn_in`` steps.

    ``rmse`` over every time, and with ``obs``: ``rmse_analysis`` at the observed times and
    ``rmse_analysis_dapper`` (the time mean of the instantaneous RMSE over components, DAPPER's
    ``rmse.a``). ``*_std``: the spread over trajectories. With ``obs`` and ``kind`` (``"a"`` for
    a filter's analysis, ``"s"`` for a smoother's estimate) also the task's
    :func:`~geodl.metrics.dapper_scores`: ``rmse_a`` or ``rmse_s`` (and ``rmse_u``).
    """
    est, _ = trajectory_array(estimate, 1.0, allow_nan=False)
    tru, _ = trajectory_array(truth, 1.0, allow_nan=False)
    if est.shape != tru.shape:
        raise DataError(f"estimate {dict(estimate.sizes)} and truth {dict(truth.sizes)} differ")
    if burn_in >= tru.shape[1]:
        raise DataError(f"burn_in={burn_in} leaves no time step of {tru.shape[1]}")
    if obs is None:
        times = np.ones(tru.shape[1], dtype=bool)
    else:
        o, _ = trajectory_array(obs, 1.0, allow_nan=True)
        if o.shape != tru.shape:
            raise DataError(
                f"obs {dict(obs.sizes)} is not on the grid of truth {dict(truth.sizes)}"
            )
        times = np.isfinite(o).any(axis=(0, 2))
    scores = twin_scores(est, tru, times, burn_in)
    if kind is not None:
        if obs is None:
            raise UserInputError(f"score: kind={kind!r} needs obs= (the analysis times)")
        scores.update(dapper_scores(est, tru, times, burn_in, kind))
    if obs is None:
        scores = {k: v for k, v in scores.items() if not k.startswith("rmse_analysis")}
    return scores
