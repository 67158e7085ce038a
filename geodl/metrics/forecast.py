"""Forecast scores: RMSE against lead time, and where a rollout diverged.

Conventions: :func:`forecast_rmse` pools the squared error over every dim but lead (axis 1 of
arrays, ``lead_dim`` of DataArrays), NaN ignored. A rollout has diverged at its first step that is
non-finite or beyond a bound in absolute value (:func:`geodl.integrate.first_exit`, the one
copy): :func:`first_bad_step` for ``(N, T, ...)`` ensembles of fields, :func:`leave_step` for one
``(T, D)`` trajectory.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from geodl.errors import DataError, UserInputError
from geodl.integrate import first_exit
from geodl.metrics._inputs import ArrayLike, _numpy

__all__ = ["first_bad_step", "forecast_rmse", "leave_step"]


def forecast_rmse(
    forecast: ArrayLike, truth: ArrayLike, *, mask: ArrayLike | None = None, lead_dim: str = "lead"
) -> xr.DataArray | np.ndarray:
    """RMSE as a function of lead time.

    DataArrays: RMSE over every dim except ``lead_dim`` (a DataArray indexed by lead). Arrays and
    tensors: lead is axis 1, ``(batch, lead, ...)`` -> ``(lead,)``. NaN entries are ignored.

    Examples
    --------
    >>> import numpy as np
    >>> forecast_rmse(np.arange(3.0)[None, :, None] * np.ones((2, 3, 4)), np.zeros((2, 3, 4)))
    array([0., 1., 2.])
    """
    if isinstance(truth, xr.DataArray):
        if lead_dim not in truth.dims:
            raise DataError(
                f"forecast_rmse: no {lead_dim!r} dim in truth dims {list(truth.dims)}; pass lead_dim="
            )
        err2 = (forecast - truth) ** 2
        if mask is not None:
            err2 = err2.where(mask)
        others = [d for d in err2.dims if d != lead_dim]
        return np.sqrt(err2.mean(dim=others, skipna=True)).rename("rmse")
    f, t = _numpy(forecast).astype(np.float64), _numpy(truth).astype(np.float64)
    if f.shape != t.shape or f.ndim < 2:
        raise UserInputError(
            f"forecast_rmse: forecast {f.shape} and truth {t.shape} must have the same shape "
            "(batch, lead, ...)"
        )
    err2 = (f - t) ** 2
    valid = np.isfinite(err2)
    if mask is not None:
        valid &= np.broadcast_to(_numpy(mask).astype(bool), err2.shape)
    err2 = np.where(valid, err2, 0.0)
    axes = tuple(a for a in range(err2.ndim) if a != 1)
    with np.errstate(invalid="ignore"):
        return np.sqrt(err2.sum(axis=axes) / valid.sum(axis=axes))


def first_bad_step(x: np.ndarray, bound: float) -> int | None:
    """First index along axis 1 of ``x`` ``(N, T, ...)`` where any member is non-finite or beyond
    ``bound`` in absolute value; None if there is none.

    Examples
    --------
    >>> first_bad_step(np.array([[[0.0], [1.0], [20.0], [np.nan]]]), 10.0)
    2
    """
    return first_exit(torch.from_numpy(np.ascontiguousarray(x)), bound, dim=1)


def leave_step(traj: np.ndarray, bound: float) -> int | None:
    """First step of ``traj`` ``(T, D)`` (normalised) that is non-finite or has a component beyond
    ``bound`` in absolute value; None if it never leaves.

    Examples
    --------
    >>> leave_step(np.array([[0.0], [1.0], [9.0], [np.nan]]), 5.0)
    2
    """
    return first_exit(torch.from_numpy(np.ascontiguousarray(traj)), bound, dim=0)
