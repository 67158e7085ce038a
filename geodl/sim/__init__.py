"""Embedded simulators: the default data of every experiment (no download needed)."""

from geodl.sim.lorenz import (
    integrate,
    lorenz63_jvp,
    lorenz63_rhs,
    lorenz96_jvp,
    lorenz96_rhs,
    lorenz_linear_terms,
    lorenz_tangent_field,
    lorenz_vector_field,
    rk4_step,
    simulate_lorenz,
)
from geodl.sim.lyapunov import lyapunov_exponents, tangent_rk4_step
from geodl.sim.qg import PRESETS, QGModel, QGParams, QGState

__all__ = [
    "PRESETS",
    "QGModel",
    "QGParams",
    "QGState",
    "integrate",
    "lorenz63_jvp",
    "lorenz63_rhs",
    "lorenz96_jvp",
    "lorenz96_rhs",
    "lorenz_linear_terms",
    "lorenz_tangent_field",
    "lorenz_vector_field",
    "lyapunov_exponents",
    "rk4_step",
    "simulate_lorenz",
    "tangent_rk4_step",
]
