"""Calibration of a predicted Gaussian ``N(prediction, std**2)``: coverage, z-scores and CRPS.

Convention: an entry counts where prediction, truth and std are finite and the mask is true;
``std`` must be > 0 wherever it is scored (no silent clipping).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from geodl.errors import DataError
from geodl.metrics._inputs import ArrayLike, _Grid, _prepare

__all__ = ["calibration"]


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
