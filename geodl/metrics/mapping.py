"""Mapping scores: RMSE, normalised RMSE, the SSH-mapping challenge's ``mu``, and :func:`score`.

Convention: errors are pooled over every valid entry (prediction and truth finite, mask true) of
every dim; ``mu`` and ``mu_std`` are those of the ocean data challenges (``1 - RMSE / RMS(truth)``
and the std of its daily values). :func:`score` gives the same dictionary for any method
(``rmse``, ``mu``, ``mu_std``, ``lambda_x``, ``lambda_t``, and the calibration keys when a std is
given); :func:`score_units` their units, :func:`relative_to` ratios to a reference method.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import xarray as xr

from geodl.metrics._inputs import ArrayLike, _Grid, _prepare
from geodl.metrics.calibration import _calibration
from geodl.metrics.spectral import ResolutionBoundWarning, _psd_score, effective_resolution

__all__ = ["mu", "nrmse", "relative_to", "rmse", "score", "score_units"]


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
    """RMSE divided by the standard deviation of the truth over the same entries.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.array([1.0, -1.0, -1.0, 1.0]).reshape(2, 1, 2)  # std 1
    >>> nrmse(np.zeros_like(truth), truth)
    1.0
    """
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


def relative_to(results: dict[str, dict[str, Any]], reference: str) -> dict[str, dict[str, Any]]:
    """Every method's :func:`score` against ``reference``'s: ``rmse_ratio_<ref>``,
    ``lambda_x_ratio_<ref>`` (below 1: better) and ``mu_gain_<ref>`` (above 0: better).

    Examples
    --------
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
    """Units of the :func:`score` keys for this ``truth`` (``lambda_x``, ``lambda_t``, ``rmse``...).

    Examples
    --------
    >>> import numpy as np
    >>> u = score_units(np.zeros((4, 2, 4)))  # an array: no coordinates, no units
    >>> u["lambda_x"], u["lambda_t"], u["mu"]
    ('grid points', 'time steps', '1')
    """
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
    bounds: dict[str, str] | None = None,
) -> dict[str, float]:
    """Score a reconstruction the same way whatever produced it.

    Returns ``rmse``, ``mu``, ``mu_std`` (see :func:`mu`), ``lambda_x`` and ``lambda_t`` (effective
    resolutions where the PSD score crosses 0.5, see :func:`psd_score`, in the grid's units: see
    :func:`score_units`), and when ``std`` is given ``coverage_68``, ``coverage_95`` and ``crps``
    (see :func:`calibration`).

    Where the PSD score never crosses 0.5, ``lambda_x`` / ``lambda_t`` is a bound (the grid's
    Nyquist wavelength or the domain's size): given a dict ``bounds``, it receives
    ``{key: "<="}`` or ``{key: ">="}`` for each such key instead of a
    :class:`ResolutionBoundWarning`.

    Examples
    --------
    >>> import warnings, numpy as np, xarray as xr
    >>> from geodl.metrics import ResolutionBoundWarning
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
    }
    for key, k, ps in (
        ("lambda_x", "wavenumber_x", "score_x"),
        ("lambda_t", "frequency_t", "score_t"),
    ):
        if bounds is None:
            out[key] = effective_resolution(spectra[k], spectra[ps])
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResolutionBoundWarning)
            out[key] = effective_resolution(spectra[k], spectra[ps])
        for w in caught:
            if isinstance(w.message, ResolutionBoundWarning):
                bounds[key] = w.message.side
            else:  # not ours: shown as it would have been
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if s is not None:
        cal = _calibration(p, t, s, valid)
        out.update({k: cal[k] for k in ("coverage_68", "coverage_95", "crps")})
    return out
