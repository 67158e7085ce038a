"""Embedded simulators: the default data of every experiment (no download needed)."""

from geodl.sim.lorenz import integrate, lorenz63_rhs, lorenz96_rhs, rk4_step, simulate_lorenz

__all__ = ["integrate", "lorenz63_rhs", "lorenz96_rhs", "rk4_step", "simulate_lorenz"]
