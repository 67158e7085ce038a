"""Classical baselines computed in the same run as the learned methods."""

from geodl.baselines.enkf import (
    EnsembleResult,
    ensemble_smoother,
    etkf_analysis,
    random_rotation,
)
from geodl.baselines.fourdvar import cycled_4dvar, interpolate_obs, weak_4dvar
from geodl.baselines.ienks import ienks
from geodl.baselines.oi import (
    OIParams,
    OITuning,
    estimate_scales,
    optimal_interpolation,
    optimal_interpolation_dense,
    tune_oi,
)
from geodl.baselines.threedvar import cycled_3dvar, threedvar_analysis

__all__ = [
    "EnsembleResult",
    "OIParams",
    "OITuning",
    "cycled_3dvar",
    "cycled_4dvar",
    "ensemble_smoother",
    "estimate_scales",
    "etkf_analysis",
    "ienks",
    "interpolate_obs",
    "optimal_interpolation",
    "optimal_interpolation_dense",
    "random_rotation",
    "threedvar_analysis",
    "tune_oi",
    "weak_4dvar",
]
