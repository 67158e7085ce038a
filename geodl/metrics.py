"""Model-agnostic skill scores for xarray objects, NumPy arrays and torch tensors.

Every function takes ``prediction`` and ``truth`` (and optionally ``std`` and ``mask``) as
:class:`xarray.DataArray` with ``time``/``y``/``x`` dims (also ``lat``/``lon`` and other common names;
extra dims such as ``member`` are averaged over), or as arrays/tensors shaped ``(time, y, x)`` or
``(batch, time, channel, y, x)``. NaN marks missing values, as in files: an entry counts where
``prediction`` and ``truth`` (and ``std``) are finite and ``mask`` is true. Spatial and temporal
scales are returned in the grid's own units (km or degrees; days for datetime coordinates); arrays
and tensors without coordinates use ``dx``/``dt`` (default 1: grid points and time steps).
:func:`geodl.sim.lyapunov_exponents` is the one Lyapunov estimator: it is not here because metrics and
sim are independent layers (``[tool.importlinter]`` in ``pyproject.toml``).

:func:`score` returns the same dictionary for any method, so that every tool's reconstruction is
scored the same way.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from geodl.errors import DataError, UserInputError

__all__ = [
    "ResolutionBoundWarning",
    "calibration",
    "effective_resolution",
    "relative_to",
    "forecast_rmse",
    "mu",
    "nrmse",
    "psd_score",
    "rmse",
    "score",
    "score_units",
]

ArrayLike = xr.DataArray | np.ndarray | Tensor

_TIME_NAMES = ("time", "t", "time_counter")
_Y_NAMES = ("y", "lat", "latitude", "nav_lat", "yc", "rlat", "j")
_X_NAMES = ("x", "lon", "longitude", "nav_lon", "xc", "rlon", "i")
_DEGREES = (
    "degrees",
    "degree",
    "degrees_east",
    "degree_east",
    "degrees_north",
    "degree_north",
    "degE",
    "degN",
)
_METRES = ("m", "meter", "meters", "metre", "metres")
_LAYOUT = (
    "a DataArray with time, y, x dims, or an array (time, y, x) or (batch, time, channel, y, x)"
)


class ResolutionBoundWarning(UserWarning):
    """The PSD score never crosses 0.5: the returned resolution is a bound, not a crossing."""


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


def _find_dim(
    da: xr.DataArray, names: tuple[str, ...], axis: str, given: str | None, what: str
) -> str:
    if given is not None:
        if given not in da.dims:
            raise DataError(
                f"metrics: {what} dim {given!r} not in the DataArray dims {list(da.dims)}"
            )
        return given
    for dim in da.dims:
        coord = da.coords.get(dim)
        if coord is not None and coord.attrs.get("axis") == axis:
            return str(dim)
    for dim in da.dims:
        if str(dim).lower() in names:
            return str(dim)
    raise DataError(
        f"metrics: no {what} dim in DataArray dims {list(da.dims)}; expected one of {list(names)} "
        f"(or a coordinate with axis='{axis}'); rename it or pass {what}_dim="
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
        if units in _DEGREES:
            units = "degrees"
        elif units in _METRES:
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
            _find_dim(truth, _TIME_NAMES, "T", time_dim, "time"),
            _find_dim(truth, _Y_NAMES, "Y", y_dim, "y"),
            _find_dim(truth, _X_NAMES, "X", x_dim, "x"),
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


def rmse(prediction: ArrayLike, truth: ArrayLike, *, mask: ArrayLike | None = None) -> float:
    """Root mean square error over valid entries.

    Examples
    --------
    >>> import numpy as np
    >>> rmse(np.ones((2, 3, 3)), np.zeros((2, 3, 3)))
    1.0
    """
    p, t, _, valid = _prepare(prediction, truth, mask=mask)
    return float(np.sqrt(np.mean((p.values - t.values)[valid] ** 2)))


def nrmse(prediction: ArrayLike, truth: ArrayLike, *, mask: ArrayLike | None = None) -> float:
    """RMSE divided by the standard deviation of the truth over the same entries."""
    p, t, _, valid = _prepare(prediction, truth, mask=mask)
    return float(np.sqrt(np.mean((p.values - t.values)[valid] ** 2)) / np.std(t.values[valid]))


def _mu(p: _Grid, t: _Grid, valid: np.ndarray) -> tuple[float, float]:
    err2 = np.where(valid, (p.values - t.values) ** 2, 0.0)
    ref2 = np.where(valid, t.values**2, 0.0)
    total = 1.0 - math.sqrt(err2.sum() / ref2.sum())
    n = valid.sum(axis=(0, 2, 3))  # per time step
    has = n > 0
    daily = 1.0 - np.sqrt(err2.sum(axis=(0, 2, 3))[has] / ref2.sum(axis=(0, 2, 3))[has])
    return total, float(np.std(daily))


def mu(
    prediction: ArrayLike, truth: ArrayLike, *, mask: ArrayLike | None = None, **dims: str
) -> tuple[float, float]:
    """SSH-mapping challenge score ``mu = 1 - RMSE / RMS(truth)`` and the std of its daily values.

    .. math:: \\mu = 1 - \\frac{\\sqrt{\\overline{(\\hat y - y)^2}}}{\\sqrt{\\overline{y^2}}},\\qquad
              \\sigma_\\mu = \\mathrm{std}_t\\left(1 - \\frac{\\sqrt{\\overline{(\\hat y - y)^2}^{xy}}}
              {\\sqrt{\\overline{y^2}^{xy}}}\\right)

    ``dims`` may name ``time_dim``, ``y_dim``, ``x_dim`` of DataArrays.

    References
    ----------
    Le Guillou, F., et al. (2020). Ocean data challenge 2020a: SSH mapping OSSE (ocean-data-challenges
    on GitHub, ``leaderboard_nrmse`` and ``leaderboard_nrmse_std``).

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.full((4, 2, 2), 2.0)
    >>> mu(truth + 1.0, truth)
    (0.5, 0.0)
    """
    p, t, _, valid = _prepare(prediction, truth, mask=mask, **dims)
    return _mu(p, t, valid)


def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)  # periodic Hann


def _marginal_spectra(a: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marginals along x and along t of the Hann-windowed space-time power spectrum of ``a``.

    ``a`` is ``(N, T, Y, X)``; the spectrum of each (N, Y) slice over (t, x) is averaged. By Parseval,
    summing ``|FFT_tx|^2`` over frequencies equals ``sum_t |FFT_x|^2`` (and symmetrically), so the
    2-D transform is never formed.
    """
    a = np.where(valid, a, 0.0)
    # Remove each (t, x) slice's mean over its valid points (constant detrend), keep gaps at 0.
    count = np.maximum(valid.sum(axis=(1, 3), keepdims=True), 1)
    a = np.where(valid, a - a.sum(axis=(1, 3), keepdims=True) / count, 0.0)
    n_t, n_x = a.shape[1], a.shape[3]
    a = a * _hann(n_t)[None, :, None, None] * _hann(n_x)[None, None, None, :]
    along_x = (np.abs(np.fft.rfft(a, axis=3)) ** 2).sum(axis=1).mean(axis=(0, 1))  # (X//2+1,)
    along_t = (np.abs(np.fft.rfft(a, axis=1)) ** 2).sum(axis=3).mean(axis=(0, 2))  # (T//2+1,)
    return along_x, along_t


def psd_score(
    prediction: ArrayLike,
    truth: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    dx: float | None = None,
    dt: float | None = None,
    **dims: str,
) -> dict[str, np.ndarray]:
    """PSD score ``1 - PSD(error) / PSD(truth)`` along x and along t.

    Spectra are the marginals of the space-time power spectrum over (t, x) with a Hann window in
    both, averaged over y (and extra dims); the mean is removed first and invalid points are set to
    0 (fine for small gaps; large gaps bias both spectra alike). Returns ``wavenumber_x`` (cycles per
    x unit), ``score_x``, ``frequency_t`` (cycles per time unit), ``score_t``, without the zero bin.

    References
    ----------
    Le Guillou, F., et al. (2020). Ocean data challenge 2020a (``psd_based_scores``), after
    Ballarotta, M., et al. (2019). On the resolutions of ocean altimetry maps. Ocean Sci. 15.
    """
    p, t, _, valid = _prepare(prediction, truth, mask=mask, dx=dx, dt=dt, **dims)
    return _psd_score(p, t, valid)


def _psd_score(p: _Grid, t: _Grid, valid: np.ndarray) -> dict[str, np.ndarray]:
    if t.values.shape[1] < 4 or t.values.shape[3] < 4:
        raise DataError(
            f"psd_score: need at least 4 time steps and 4 x points, got {t.values.shape[1]} and "
            f"{t.values.shape[3]}; score a longer period or a wider domain"
        )
    err_x, err_t = _marginal_spectra(p.values - t.values, valid)
    ref_x, ref_t = _marginal_spectra(t.values, valid)
    with np.errstate(divide="ignore", invalid="ignore"):
        score_x = 1.0 - err_x[1:] / ref_x[1:]
        score_t = 1.0 - err_t[1:] / ref_t[1:]
    return {
        "wavenumber_x": np.fft.rfftfreq(t.values.shape[3], t.dx)[1:],
        "score_x": score_x,
        "frequency_t": np.fft.rfftfreq(t.values.shape[1], t.dt)[1:],
        "score_t": score_t,
    }


def effective_resolution(wavenumber: np.ndarray, score: np.ndarray, level: float = 0.5) -> float:
    """Wavelength ``1 / k`` at which ``score(k)`` crosses ``level``, linearly interpolated in k.

    The crossing at the largest wavenumber is used (the shortest resolved wavelength, as the
    challenge's minimum over the 0.5 contour). If the score never crosses: all above ``level`` gives
    the Nyquist wavelength ``1 / k_max`` (every resolvable scale is resolved), all below gives the
    domain wavelength ``1 / k_min``; both with a :class:`ResolutionBoundWarning`.

    Examples
    --------
    >>> import numpy as np
    >>> effective_resolution(np.array([1.0, 2.0, 3.0]), np.array([0.9, 0.7, 0.3]))
    0.4
    """
    k = np.asarray(wavenumber, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    ok = np.isfinite(s)
    k, s = k[ok], s[ok]
    if k.size == 0:
        raise DataError("effective_resolution: the score is NaN everywhere (truth has no variance)")
    above = s >= level
    crossings = np.flatnonzero(above[:-1] != above[1:])
    if crossings.size == 0:
        bound = 1.0 / (k[-1] if above.all() else k[0])
        side = "above" if above.all() else "below"
        warnings.warn(
            f"PSD score is {side} {level} at every wavenumber; returning the bound {bound:g}",
            ResolutionBoundWarning,
            stacklevel=2,
        )
        return float(bound)
    i = crossings[-1]
    k_star = k[i] + (level - s[i]) * (k[i + 1] - k[i]) / (s[i + 1] - s[i])
    return float(1.0 / k_star)


def calibration(
    prediction: ArrayLike,
    truth: ArrayLike,
    std: ArrayLike,
    *,
    mask: ArrayLike | None = None,
) -> dict[str, float]:
    """Calibration of a predicted Gaussian ``N(prediction, std**2)``.

    Returns ``coverage_68`` and ``coverage_95`` (fractions of errors within 1 and 2 std; 0.683 and
    0.954 when calibrated), ``mean_z2`` (mean squared z-score, 1 when calibrated) and ``crps``
    (mean Gaussian CRPS, in the field's units; lower is better):

    .. math:: \\mathrm{CRPS} = \\sigma\\left[z(2\\Phi(z) - 1) + 2\\varphi(z) - \\pi^{-1/2}\\right],
              \\quad z = (y - \\mu)/\\sigma

    References
    ----------
    Gneiting, T., Raftery, A. E., Westveld, A. H., Goldman, T. (2005). Calibrated probabilistic
    forecasting using ensemble model output statistics and minimum CRPS estimation. Mon. Wea. Rev.
    133, 1098-1118.

    Examples
    --------
    >>> import numpy as np
    >>> r = calibration(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), np.ones((1, 2, 2)))
    >>> r["coverage_68"], r["mean_z2"]
    (1.0, 0.0)
    """
    p, t, s, valid = _prepare(prediction, truth, std=std, mask=mask)
    return _calibration(p, t, s, valid)


def _calibration(p: _Grid, t: _Grid, s: _Grid, valid: np.ndarray) -> dict[str, float]:
    sigma = s.values[valid]
    if not (sigma > 0).all():
        raise DataError(
            f"calibration: std must be > 0 wherever it is scored, got min {sigma.min():g}; clip it, or "
            "mask those points"
        )
    z = (t.values[valid] - p.values[valid]) / sigma
    zt = torch.from_numpy(z)
    cdf = torch.special.ndtr(zt).numpy()
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
    crps = sigma * (z * (2.0 * cdf - 1.0) + 2.0 * pdf - 1.0 / math.sqrt(math.pi))
    return {
        "coverage_68": float(np.mean(np.abs(z) <= 1.0)),
        "coverage_95": float(np.mean(np.abs(z) <= 2.0)),
        "mean_z2": float(np.mean(z**2)),
        "crps": float(np.mean(crps)),
    }


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


def relative_to(results: dict[str, dict[str, Any]], reference: str) -> dict[str, dict[str, Any]]:
    """Every method's :func:`score` against ``reference``'s: ``rmse_ratio_<ref>``,
    ``lambda_x_ratio_<ref>`` (below 1: better) and ``mu_gain_<ref>`` (above 0: better).

    >>> out = relative_to({"oi": {"rmse": 2.0, "lambda_x": 100.0, "mu": 0.8},
    ...                    "unet": {"rmse": 1.0, "lambda_x": 50.0, "mu": 0.9}}, "oi")
    >>> out["unet"]["rmse_ratio_oi"], out["unet"]["lambda_x_ratio_oi"], out["oi"] == {
    ...     "rmse": 2.0, "lambda_x": 100.0, "mu": 0.8}
    (0.5, 0.5, True)
    """
    ref = results[reference]
    out = {}
    for method, r in results.items():
        out[method] = dict(r)
        if method != reference:
            out[method][f"rmse_ratio_{reference}"] = r["rmse"] / ref["rmse"]
            out[method][f"lambda_x_ratio_{reference}"] = r["lambda_x"] / ref["lambda_x"]
            out[method][f"mu_gain_{reference}"] = r["mu"] - ref["mu"]
    return out


def score_units(
    truth: ArrayLike, *, dx: float | None = None, dt: float | None = None, **dims: str
) -> dict[str, str]:
    """Units of the :func:`score` keys for this ``truth`` (``lambda_x``, ``lambda_t``, ``rmse``...)."""
    g = _prepare(truth, truth, dx=dx, dt=dt, **dims)[1]
    field = str(truth.attrs.get("units", "")) if isinstance(truth, xr.DataArray) else ""
    units = {"rmse": field, "mu": "1", "mu_std": "1", "lambda_x": g.x_units, "lambda_t": g.t_units}
    units.update({"coverage_68": "1", "coverage_95": "1", "crps": field})
    return units


def score(
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
) -> dict[str, float]:
    """Score a reconstruction the same way whatever produced it.

    Returns ``rmse``, ``mu``, ``mu_std`` (see :func:`mu`), ``lambda_x`` and ``lambda_t`` (effective
    resolutions where the PSD score crosses 0.5, see :func:`psd_score`, in the grid's units: see
    :func:`score_units`), and when ``std`` is given ``coverage_68``, ``coverage_95`` and ``crps``
    (see :func:`calibration`).

    Examples
    --------
    >>> import warnings, numpy as np, xarray as xr
    >>> rng = np.random.default_rng(0)
    >>> truth = xr.DataArray(rng.normal(size=(16, 8, 16)), dims=("time", "y", "x"))
    >>> pred = truth + 0.1 * rng.normal(size=truth.shape)
    >>> with warnings.catch_warnings():  # white noise: every scale resolved, lambda is a bound
    ...     warnings.simplefilter("ignore", ResolutionBoundWarning)
    ...     s = score(pred, truth, std=0.1 + 0 * truth)
    >>> sorted(s)
    ['coverage_68', 'coverage_95', 'crps', 'lambda_t', 'lambda_x', 'mu', 'mu_std', 'rmse']
    """
    dims = {"time_dim": time_dim, "y_dim": y_dim, "x_dim": x_dim}
    p, t, s, valid = _prepare(prediction, truth, std=std, mask=mask, dx=dx, dt=dt, **dims)
    total_mu, mu_std = _mu(p, t, valid)
    spectra = _psd_score(p, t, valid)
    out = {
        "rmse": float(np.sqrt(np.mean((p.values - t.values)[valid] ** 2))),
        "mu": total_mu,
        "mu_std": mu_std,
        "lambda_x": effective_resolution(spectra["wavenumber_x"], spectra["score_x"]),
        "lambda_t": effective_resolution(spectra["frequency_t"], spectra["score_t"]),
    }
    if s is not None:
        cal = _calibration(p, t, s, valid)
        out.update({k: cal[k] for k in ("coverage_68", "coverage_95", "crps")})
    return out
