"""Assimilation methods whose meaning the task and the Python API must share.

The assimilation task (:mod:`geodl.tasks.assimilation`) and the Python API
(:mod:`geodl.assimilation`) both call these functions, so that a method name and its options give
the same estimate in either. So far this holds the ensemble methods (``enkf``, ``enks``) and
``linear``; the other methods still call :mod:`geodl.baselines` directly.

Conventions (DAPPER's):

- ``enks`` with ``lag=0`` is the filter (its estimate is the ``enkf`` filter mean); with a lag of
  ``L > 0`` steps each analysis also updates the ``L`` previous steps, and a lag covering the
  record is the full (fixed-interval) smoother. The default lag, :data:`DEFAULT_LAG`, is the one
  of the task's ``evaluate.enkf.lag``.
- ``linear`` interpolates each component's observations in time, holds the first and last
  observed values constant before and after them, and gives a component never observed in a
  trajectory the mean of all that trajectory's observations. Why per trajectory: an estimate
  depends on its own trajectory's observations only, so assimilating a batch gives the same as
  assimilating each trajectory alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from geodl.errors import DataError, UserInputError

__all__ = ["DEFAULT_LAG", "ENSEMBLE_METHODS", "ensemble", "linear"]

ENSEMBLE_METHODS = ("enkf", "enks")
DEFAULT_LAG = 100
Step = Callable[[Tensor], Tensor]


def ensemble(
    method: str,
    step: Step,
    obs: Tensor,
    *,
    obs_std: float,
    n_members: int,
    inflation: float,
    lag: int,
    init_std: float,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """Estimate ``(B, T, D)`` and ensemble spread ``(B, T, D)`` of ``enkf`` or ``enks``.

    Parameters
    ----------
    method : ``"enkf"`` (the ETKF: analysis at observed times, forecast between them) or
        ``"enks"`` (the ETKS of the same run: its smoother mean with ``lag > 0``, the filter mean
        with ``lag == 0``).
    step : one model time step ``(M, D) -> (M, D)``.
    obs : observations ``(B, T, D)``, NaN where unobserved.
    lag : smoother lag in steps (``enks`` only; ``enkf`` ignores it). ``0``: the filter;
        ``>= T``: the full smoother over the record.
    obs_std, n_members, inflation, init_std, seed : as in
        :func:`geodl.baselines.ensemble_smoother`.

    Returns
    -------
    (estimate, spread)
        The spread is that of the filter ensemble.

    Examples
    --------
    >>> from geodl.sim import lorenz_vector_field, rk4_step, simulate_lorenz
    >>> f = lorenz_vector_field("lorenz63")
    >>> truth = simulate_lorenz("lorenz63", n_steps=50)
    >>> obs = torch.full_like(truth, float("nan"))
    >>> obs[:, ::5] = truth[:, ::5]
    >>> kw = dict(obs_std=1.0, n_members=5, inflation=1.0, init_std=1.0, seed=0)
    >>> filt, _ = ensemble("enkf", lambda x: rk4_step(f, x, 0.01), obs, lag=0, **kw)
    >>> lag0, _ = ensemble("enks", lambda x: rk4_step(f, x, 0.01), obs, lag=0, **kw)
    >>> torch.equal(filt, lag0)  # an EnKS of lag 0 is the filter
    True
    """
    from geodl.baselines import ensemble_smoother

    if method not in ENSEMBLE_METHODS:
        raise UserInputError(f"method={method!r}: expected one of {list(ENSEMBLE_METHODS)}")
    lag = lag if method == "enks" else 0
    res = ensemble_smoother(
        step,
        obs,
        obs_std=obs_std,
        n_members=n_members,
        inflation=inflation,
        lag=lag,
        init_std=init_std,
        seed=seed,
    )
    est = res.smoother_mean if res.smoother_mean is not None else res.filter_mean
    return est, res.spread


def linear(obs: Tensor) -> Tensor:
    """Linear interpolation in time of ``obs`` ``(B, T, D)`` (NaN where unobserved).

    Constant before the first and after the last observation of a component; a component never
    observed in a trajectory gets the mean of that trajectory's observations (see the module
    docstring). A trajectory without any observation is an error.

    Examples
    --------
    >>> nan = float("nan")
    >>> linear(torch.tensor([[[nan, 1.0], [0.0, nan], [nan, nan], [2.0, nan]]]))[0].tolist()
    [[0.0, 1.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]
    """
    from geodl.baselines import interpolate_obs

    if obs.ndim != 3:
        raise UserInputError(
            f"linear: obs has shape {tuple(obs.shape)}, expected (trajectory, time, component)"
        )
    empty = (~torch.isfinite(obs).any(dim=(1, 2))).nonzero()[:, 0].tolist()
    if empty:
        raise DataError(
            f"linear: trajectories {empty} have no observation; nothing to interpolate "
            "(drop them or add observations)"
        )
    return interpolate_obs(obs)
