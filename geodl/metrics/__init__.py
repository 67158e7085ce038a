"""Model-agnostic skill scores for xarray objects, NumPy arrays and torch tensors.

One package, a module per family of scores; every public name is importable from here
(``from geodl.metrics import score``):

- :mod:`~geodl.metrics.mapping`: :func:`rmse`, :func:`nrmse`, :func:`mu`, :func:`score`,
  :func:`score_units`, :func:`relative_to`;
- :mod:`~geodl.metrics.spectral`: :func:`psd_score`, :func:`effective_resolution`
  (:class:`ResolutionBoundWarning`), :func:`ke_spectrum`, :func:`spectrum_log10_error`;
- :mod:`~geodl.metrics.calibration`: :func:`calibration` (coverage, z-scores, CRPS);
- :mod:`~geodl.metrics.forecast`: :func:`forecast_rmse` against lead time, and where a rollout
  diverged (:func:`first_bad_step`, :func:`leave_step`);
- :mod:`~geodl.metrics.assimilation`: :func:`twin_scores` (DAPPER's convention),
  :func:`denoise_scores`;
- :mod:`~geodl.metrics.distributions`: :func:`histogram_distance`, :func:`near_fraction`;
- :mod:`~geodl.metrics.ensemble`: :func:`ensemble_scores` (ensemble CRPS, coverage,
  spread-skill), :func:`energy_score`, :func:`variogram_score`.

The field scores (mapping, spectral, calibration) take ``prediction`` and ``truth`` (and
optionally ``std`` and ``mask``) as :class:`xarray.DataArray` with ``time``/``y``/``x`` dims (also
``lat``/``lon`` and other common names; extra dims such as ``member`` are averaged over), or as
arrays/tensors shaped ``(time, y, x)`` or ``(batch, time, channel, y, x)``. NaN marks missing
values, as in files: an entry counts where ``prediction`` and ``truth`` (and ``std``) are finite
and ``mask`` is true. Spatial and temporal scales are returned in the grid's own units (km or
degrees; days for datetime coordinates); arrays and tensors without coordinates use ``dx``/``dt``
(default 1: grid points and time steps). :func:`geodl.sim.lyapunov_exponents` is the one Lyapunov
estimator: it is not here because metrics and sim are independent layers (``[tool.importlinter]``
in ``pyproject.toml``).

:func:`score` returns the same dictionary for any method, so that every tool's reconstruction is
scored the same way.
"""

from geodl.metrics.assimilation import dapper_scores, denoise_scores, twin_scores
from geodl.metrics.calibration import calibration
from geodl.metrics.distributions import histogram_distance, near_fraction
from geodl.metrics.ensemble import energy_score, ensemble_scores, variogram_score
from geodl.metrics.forecast import first_bad_step, forecast_rmse, leave_step
from geodl.metrics.mapping import (
    ScoreAccumulator,
    mu,
    nrmse,
    relative_to,
    rmse,
    score,
    score_units,
)
from geodl.metrics.spectral import (
    ResolutionBoundWarning,
    effective_resolution,
    ke_spectrum,
    psd_score,
    spectrum_log10_error,
)

__all__ = [
    "ResolutionBoundWarning",
    "calibration",
    "denoise_scores",
    "effective_resolution",
    "energy_score",
    "ensemble_scores",
    "first_bad_step",
    "forecast_rmse",
    "histogram_distance",
    "ke_spectrum",
    "leave_step",
    "mu",
    "near_fraction",
    "nrmse",
    "psd_score",
    "relative_to",
    "rmse",
    "ScoreAccumulator",
    "score",
    "score_units",
    "spectrum_log10_error",
    "twin_scores",
    "dapper_scores",
    "variogram_score",
]
