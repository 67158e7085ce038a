"""Classical baselines computed in the same run as the learned methods."""

from geodl.baselines.enkf import EnsembleResult, ensemble_smoother, etkf_analysis
from geodl.baselines.fourdvar import interpolate_obs, weak_4dvar
from geodl.baselines.oi import OIParams, optimal_interpolation, optimal_interpolation_dense

__all__ = [
    "EnsembleResult",
    "OIParams",
    "ensemble_smoother",
    "etkf_analysis",
    "interpolate_obs",
    "optimal_interpolation",
    "optimal_interpolation_dense",
    "weak_4dvar",
]
