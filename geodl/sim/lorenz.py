"""Lorenz-63 and Lorenz-96 in torch, batched over initial conditions, integrated with RK4.

State tensors have shape ``(batch, component)``; trajectories ``(batch, time, component)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from geodl.errors import UserInputError

__all__ = ["integrate", "lorenz63_rhs", "lorenz96_rhs", "rk4_step", "simulate_lorenz"]

VectorField = Callable[[Tensor], Tensor]


def lorenz63_rhs(
    x: Tensor, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0
) -> Tensor:
    """Lorenz (1963) vector field for ``x`` of shape ``(..., 3)``."""
    x0, x1, x2 = x.unbind(-1)
    return torch.stack((sigma * (x1 - x0), x0 * (rho - x2) - x1, x0 * x1 - beta * x2), dim=-1)


def lorenz96_rhs(x: Tensor, forcing: float = 8.0) -> Tensor:
    """Lorenz (1996) vector field for ``x`` of shape ``(..., n)``, cyclic in the last axis."""
    return (torch.roll(x, -1, -1) - torch.roll(x, 2, -1)) * torch.roll(x, 1, -1) - x + forcing


def rk4_step(f: VectorField, x: Tensor, dt: float) -> Tensor:
    """One classical fourth-order Runge-Kutta step."""
    k1 = f(x)
    k2 = f(x + 0.5 * dt * k1)
    k3 = f(x + 0.5 * dt * k2)
    k4 = f(x + dt * k3)
    return x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def integrate(
    f: VectorField,
    x0: Tensor,
    dt: float,
    n_steps: int,
    *,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Trajectory ``(batch, n_steps + 1, component)`` from ``x0`` of shape ``(batch, component)``.

    ``noise_std`` adds Gaussian model noise of that standard deviation (per sqrt of time unit) after
    each step.
    """
    if n_steps < 0:
        raise UserInputError(f"n_steps must be >= 0, got {n_steps}")
    out = torch.empty((x0.shape[0], n_steps + 1, x0.shape[1]), dtype=x0.dtype, device=x0.device)
    out[:, 0] = x0
    x = x0
    for i in range(n_steps):
        x = rk4_step(f, x, dt)
        if noise_std > 0:
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = x + noise_std * dt**0.5 * noise
        out[:, i + 1] = x
    return out


def simulate_lorenz(
    system: str,
    *,
    n_trajectories: int = 1,
    n_steps: int = 1000,
    dt: float = 0.01,
    spinup_steps: int = 1000,
    n_components: int = 40,
    forcing: float = 8.0,
    noise_std: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Trajectories of ``system`` ("lorenz63" or "lorenz96") after a spin-up onto the attractor.

    Returns a tensor ``(n_trajectories, n_steps + 1, component)``.

    Examples
    --------
    >>> simulate_lorenz("lorenz63", n_steps=10, spinup_steps=10).shape
    torch.Size([1, 11, 3])
    """
    for name, value in (("dt", dt), ("n_trajectories", n_trajectories)):
        if value <= 0:
            raise UserInputError(f"{name} must be > 0, got {value}")
    gen = torch.Generator().manual_seed(seed)
    if system == "lorenz63":
        f: VectorField = lorenz63_rhs
        x0 = torch.tensor([1.0, 1.0, 1.0], dtype=dtype) + torch.randn(
            (n_trajectories, 3), generator=gen, dtype=dtype
        )
    elif system == "lorenz96":
        if n_components < 4:
            raise UserInputError(f"lorenz96 needs n_components >= 4, got {n_components}")

        def f(x: Tensor) -> Tensor:
            return lorenz96_rhs(x, forcing)

        x0 = forcing + 0.01 * torch.randn(
            (n_trajectories, n_components), generator=gen, dtype=dtype
        )
    else:
        raise UserInputError(f"unknown system '{system}'; choose lorenz63 or lorenz96")
    if spinup_steps > 0:
        x0 = integrate(f, x0, dt, spinup_steps)[:, -1]
    return integrate(f, x0, dt, n_steps, noise_std=noise_std, generator=gen)
