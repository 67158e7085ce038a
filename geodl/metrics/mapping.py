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

from geodl.errors import DataError
from geodl.metrics._inputs import ArrayLike, _Grid, _prepare
from geodl.metrics.calibration import _calibration
from geodl.metrics.spectral import (
    ResolutionBoundWarning,
    _check_psd_shape,
    _psd_from_spectra,
    _spectra_sums,
    effective_resolution,
)

__all__ = ["ScoreAccumulator", "mu", "nrmse", "relative_to", "rmse", "score", "score_units"]


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
    acc = ScoreAccumulator()
    acc.add(
        prediction,
        truth,
        std=std,
        mask=mask,
        dx=dx,
        dt=dt,
        time_dim=time_dim,
        y_dim=y_dim,
        x_dim=x_dim,
    )
    return acc.result(bounds=bounds)


class ScoreAccumulator:
    """:func:`score` over a field given band by band: bands of rows (y) with every time step and
    every x, added one after the other with :meth:`add`; :meth:`result` gives the scores.

    Why bands of rows: every score is a sum over entries, except the PSD score, whose spectra
    are sums over independent (t, x) slices, one per row (the mean is removed per row). So a
    field far larger than memory is scored exactly, one band in memory at a time; one band (what
    :func:`score` adds) gives the in-memory arithmetic bit for bit, several agree with it to the
    rounding of the sums' order.

    Examples
    --------
    >>> import warnings, numpy as np, xarray as xr
    >>> rng = np.random.default_rng(0)
    >>> truth = xr.DataArray(rng.normal(size=(16, 8, 16)), dims=("time", "y", "x"))
    >>> pred = truth + 0.1 * rng.normal(size=truth.shape)
    >>> acc = ScoreAccumulator()
    >>> for rows in (slice(0, 3), slice(3, 8)):
    ...     acc.add(pred.isel(y=rows), truth.isel(y=rows))
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", ResolutionBoundWarning)
    ...     a, b = acc.result(), score(pred, truth)
    >>> all(abs(a[k] - b[k]) < 1e-12 for k in a)
    True
    """

    def __init__(self) -> None:
        self._n = 0
        self._sq = 0.0
        self._err2 = self._ref2 = 0.0
        self._err2_t: Any = 0.0
        self._ref2_t: Any = 0.0
        self._n_t: Any = 0
        self._spectra: list[Any] = []
        self._rows = 0
        self._cal: list[tuple[int, dict[str, float]]] = []
        self._grid: _Grid | None = None

    def add(
        self,
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
    ) -> None:
        """Add one band (the arguments of :func:`score`); bands without a valid entry add
        nothing."""
        dims = {"time_dim": time_dim, "y_dim": y_dim, "x_dim": x_dim}
        if self._grid is not None and not _has_valid(prediction, truth):
            return  # e.g. a band of land, once another band had data
        p, t, s, valid = _prepare(prediction, truth, std=std, mask=mask, dx=dx, dt=dt, **dims)
        _check_psd_shape(t)
        self._grid = t
        err = p.values - t.values
        self._n += int(valid.sum())
        self._sq += float(np.sum(err[valid] ** 2))
        err2 = np.where(valid, err**2, 0.0)
        ref2 = np.where(valid, t.values**2, 0.0)
        self._err2 += err2.sum()
        self._ref2 += ref2.sum()
        self._err2_t = self._err2_t + err2.sum(axis=(0, 2, 3))
        self._ref2_t = self._ref2_t + ref2.sum(axis=(0, 2, 3))
        self._n_t = self._n_t + valid.sum(axis=(0, 2, 3))
        ex, et, rows = _spectra_sums(err, valid)
        rx, rt, _ = _spectra_sums(t.values, valid)
        self._spectra.append((ex, et, rx, rt))
        self._rows += rows
        if s is not None:
            self._cal.append((int(valid.sum()), _calibration(p, t, s, valid)))

    def result(self, bounds: dict[str, str] | None = None) -> dict[str, float]:
        """The :func:`score` dictionary of every band added (``bounds`` as in :func:`score`)."""
        if self._grid is None:
            raise DataError(
                "metrics: no valid entries (prediction and truth finite and mask true); check the "
                "mask, the NaN in the inputs and the alignment of their coordinates"
            )
        total_mu = 1.0 - math.sqrt(self._err2 / self._ref2)
        has = self._n_t > 0
        daily = 1.0 - np.sqrt(self._err2_t[has] / self._ref2_t[has])
        sums = [sum(parts[k] for parts in self._spectra) for k in range(4)]
        ex, et, rx, rt = (v / self._rows for v in sums)
        spectra = _psd_from_spectra(ex, et, rx, rt, self._grid)
        out = {
            "rmse": float(np.sqrt(self._sq / self._n)),
            "mu": total_mu,
            "mu_std": float(np.std(daily)),
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
        keys = ("coverage_68", "coverage_95", "crps")
        if len(self._cal) == 1:
            out.update({k: self._cal[0][1][k] for k in keys})
        elif self._cal:  # means over bands, weighted by their entries
            n = sum(c[0] for c in self._cal)
            out.update({k: sum(c[0] * c[1][k] for c in self._cal) / n for k in keys})
        return out


def _has_valid(prediction: ArrayLike, truth: ArrayLike) -> bool:
    p, t = (np.asarray(a.values if isinstance(a, xr.DataArray) else a) for a in (prediction, truth))
    return bool((np.isfinite(p) & np.isfinite(t)).any())
