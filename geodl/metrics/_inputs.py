"""Conversion and alignment of the inputs every field score takes (private to :mod:`geodl.metrics`).

Any accepted input (a DataArray with time/y/x dims, an array or tensor ``(time, y, x)`` or
``(batch, time, channel, y, x)``) becomes ``(N, T, Y, X)`` float64 values with its time and x
spacing and their units (:class:`_Grid`); :func:`_prepare` aligns prediction, truth, std and mask
and returns where an entry counts (all finite and the mask true).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from geodl.errors import DataError, UserInputError
from geodl.grid import AXIS_NAMES, DEGREES, METRES, find_axes

ArrayLike = xr.DataArray | np.ndarray | Tensor

_LAYOUT = (
    "a DataArray with time, y, x dims, or an array (time, y, x) or (batch, time, channel, y, x)"
)


@dataclass(frozen=True)
class _Grid:
    values: np.ndarray  # (N, T, Y, X) float64
    dt: float
    dx: float
    t_units: str
    x_units: str


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().to(torch.float64 if x.is_floating_point() else x.dtype).numpy()
    return np.asarray(x)


def _find_dim(da: xr.DataArray, role: str, given: str | None, what: str) -> str:
    """The ``role`` ("time", "y", "x") dim of ``da``: ``given``, else :func:`geodl.grid.find_axes`."""
    if given is not None:
        if given not in da.dims:
            raise DataError(
                f"metrics: {what} dim {given!r} not in the DataArray dims {list(da.dims)}"
            )
        return given
    found = getattr(find_axes(da), role)
    if found is not None:
        return found
    raise DataError(
        f"metrics: no {what} dim in DataArray dims {list(da.dims)}; expected one named like "
        f"{list(AXIS_NAMES[role][:3])} or a coordinate with CF axis/standard_name/units; rename "
        f"it or pass {what}_dim="
    )


def _spacing(coord: xr.DataArray | None, given: float | None, what: str) -> tuple[float, str]:
    """Spacing of a 1-D coordinate and its units (datetimes in days, metres in km)."""
    if given is not None:
        if not given > 0:
            raise UserInputError(f"metrics: d{what} must be > 0, got {given!r}")
        return float(given), "given units"
    if coord is None or coord.size < 2:
        return 1.0, "grid points" if what != "t" else "time steps"
    values = coord.values
    units = str(coord.attrs.get("units", ""))
    if np.issubdtype(values.dtype, np.datetime64) or np.issubdtype(values.dtype, np.timedelta64):
        steps = np.diff(values).astype("timedelta64[ns]").astype(np.float64) / 86400e9
        units = "days"
    else:
        steps = np.diff(values.astype(np.float64))
        if units in DEGREES:
            units = "degrees"
        elif units in METRES:
            steps, units = steps / 1000.0, "km"
        elif " since " in units:
            units = units.split(" since ")[0]
    step = float(np.mean(steps))
    if not step > 0 or np.max(np.abs(steps - step)) > 1e-3 * abs(step):
        raise DataError(
            f"metrics: coordinate {coord.name!r} is not regularly increasing (steps from "
            f"{np.min(steps):g} to {np.max(steps):g} {units}); spectra need a regular grid: regrid, or "
            f"pass d{what}= with arrays"
        )
    return step, units or ("grid points" if what != "t" else "time steps")


def _as_grid(
    x: ArrayLike,
    name: str,
    *,
    dims: tuple[str, str, str] | None = None,
    dx: float | None = None,
    dt: float | None = None,
) -> _Grid:
    """Any accepted input -> ``(N, T, Y, X)`` float64 values plus time and x spacing."""
    if isinstance(x, xr.DataArray):
        t_dim, y_dim, x_dim = dims
        da = x.transpose(..., t_dim, y_dim, x_dim)
        values = np.asarray(da.values, dtype=np.float64).reshape(-1, *da.shape[-3:])
        step_t, t_units = _spacing(da.coords.get(t_dim), dt, "t")
        step_x, x_units = _spacing(da.coords.get(x_dim), dx, "x")
        return _Grid(values, step_t, step_x, t_units, x_units)
    if not isinstance(x, (np.ndarray, Tensor)):
        raise UserInputError(f"metrics: {name} is a {type(x).__name__}; expected {_LAYOUT}")
    values = _numpy(x).astype(np.float64)
    if values.ndim == 3:
        values = values[None]  # (1, T, Y, X)
    elif values.ndim == 5:
        values = values.transpose(0, 2, 1, 3, 4).reshape(-1, values.shape[1], *values.shape[3:])
    else:
        raise UserInputError(
            f"metrics: {name} has shape {values.shape}; expected (time, y, x) or "
            "(batch, time, channel, y, x)"
        )
    step_t, t_units = _spacing(None, dt, "t")
    step_x, x_units = _spacing(None, dx, "x")
    return _Grid(values, step_t, step_x, t_units, x_units)


def _prepare(
    prediction: ArrayLike,
    truth: ArrayLike,
    *,
    std: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    dx: float | None = None,
    dt: float | None = None,
    time_dim: str | None = None,
    y_dim: str | None = None,
    x_dim: str | None = None,
) -> tuple[_Grid, _Grid, _Grid | None, np.ndarray]:
    """Convert and align the inputs; return prediction, truth, std grids and the valid mask."""
    dims = None
    if isinstance(truth, xr.DataArray):
        others = [a for a in (prediction, std, mask) if a is not None]
        if not all(isinstance(a, xr.DataArray) for a in others):
            raise UserInputError(
                "metrics: truth is a DataArray but prediction/std/mask are not; pass all as DataArrays "
                "(or all as arrays/tensors of the same shape)"
            )
        try:
            aligned = xr.align(truth, *others, join="exact")
        except ValueError as err:
            raise DataError(
                f"metrics: prediction and truth coordinates differ ({err}); interpolate the prediction "
                "onto the truth grid first, e.g. prediction.interp_like(truth)"
            ) from None
        truth, *rest = aligned
        rest = [r.broadcast_like(truth) for r in rest]
        prediction = rest.pop(0)
        std = rest.pop(0) if std is not None else None
        mask = rest.pop(0) if mask is not None else None
        dims = (
            _find_dim(truth, "time", time_dim, "time"),
            _find_dim(truth, "y", y_dim, "y"),
            _find_dim(truth, "x", x_dim, "x"),
        )
    elif isinstance(prediction, xr.DataArray):
        raise UserInputError(
            "metrics: prediction is a DataArray but truth is not; pass both as DataArrays"
        )
    else:
        shapes = {
            n: tuple(a.shape)
            for n, a in (("prediction", prediction), ("truth", truth), ("std", std), ("mask", mask))
            if a is not None
        }
        if len(set(shapes.values())) > 1:
            raise UserInputError(
                f"metrics: shapes differ {shapes}; all inputs need the shape of truth"
            )
    g_pred = _as_grid(prediction, "prediction", dims=dims, dx=dx, dt=dt)
    g_truth = _as_grid(truth, "truth", dims=dims, dx=dx, dt=dt)
    g_std = None if std is None else _as_grid(std, "std", dims=dims, dx=dx, dt=dt)
    valid = np.isfinite(g_pred.values) & np.isfinite(g_truth.values)
    if g_std is not None:
        valid &= np.isfinite(g_std.values)
    if mask is not None:
        valid &= _as_grid(mask, "mask", dims=dims).values.astype(bool)
    if not valid.any():
        raise DataError(
            "metrics: no valid entries (prediction and truth finite and mask true); check the mask, "
            "the NaN in the inputs and the alignment of their coordinates"
        )
    return g_pred, g_truth, g_std, valid
