"""Classical baselines computed in the same run as the learned methods."""

from geodl.baselines.oi import OIParams, optimal_interpolation, optimal_interpolation_dense

__all__ = ["OIParams", "optimal_interpolation", "optimal_interpolation_dense"]
