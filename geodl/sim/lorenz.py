"""Lorenz-63 and Lorenz-96 in torch, batched over initial conditions, integrated with RK4.

State tensors have shape ``(batch, component)``; trajectories ``(batch, time, component)``.
Standard parameters: Lorenz (1963) sigma = 10, rho = 28, beta = 8/3 (leading Lyapunov exponent
0.906); Lorenz (1996) with 40 variables and forcing F = 8.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from geodl.errors import UserInputError
from geodl.integrate import VectorField, rk4_step  # rk4_step: re-exported (geodl.sim.rk4_step)

__all__ = [
    "integrate",
    "lorenz63_jvp",
    "lorenz63_rhs",
    "lorenz96_jvp",
    "lorenz96_rhs",
    "lorenz_linear_terms",
    "lorenz_tangent_field",
    "lorenz_vector_field",
    "rk4_step",
    "simulate_lorenz",
]

TangentField = Callable[[Tensor, Tensor], Tensor]


def lorenz63_rhs(
    x: Tensor, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0
) -> Tensor:
    """Lorenz (1963) vector field for ``x`` of shape ``(..., 3)``."""
    x0, x1, x2 = x.unbind(-1)
    return torch.stack((sigma * (x1 - x0), x0 * (rho - x2) - x1, x0 * x1 - beta * x2), dim=-1)


def lorenz96_rhs(x: Tensor, forcing: float = 8.0) -> Tensor:
    """Lorenz (1996) vector field for ``x`` of shape ``(..., n)``, cyclic in the last axis."""
    return (torch.roll(x, -1, -1) - torch.roll(x, 2, -1)) * torch.roll(x, 1, -1) - x + forcing


def lorenz_linear_terms(
    system: str,
    dim: int,
    *,
    forcing: float = 8.0,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
) -> tuple[Tensor, Tensor]:
    """The affine part ``A x + b`` of a Lorenz vector field (``f = A x + b + quadratic``).

    Lorenz-63: ``A = [[-sigma, sigma, 0], [rho, -1, 0], [0, 0, -beta]]``, ``b = 0`` (the
    quadratic terms are ``-x z`` and ``x y``); Lorenz-96: ``A = -I``, ``b = F`` (the advection
    term is quadratic).

    Examples
    --------
    >>> A, b = lorenz_linear_terms("lorenz63", 3)
    >>> A.tolist()[0], b.tolist()
    ([-10.0, 10.0, 0.0], [0.0, 0.0, 0.0])
    """
    if system == "lorenz63":
        if dim != 3:
            raise UserInputError(f"lorenz63 has 3 components, got {dim}")
        a = [[-sigma, sigma, 0.0], [rho, -1.0, 0.0], [0.0, 0.0, -beta]]
        return torch.tensor(a, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    if system == "lorenz96":
        eye = torch.eye(dim, dtype=torch.float64)
        return -eye, torch.full((dim,), float(forcing), dtype=torch.float64)
    raise UserInputError(f"unknown system '{system}'; choose lorenz63 or lorenz96")


def lorenz63_jvp(
    x: Tensor, v: Tensor, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0
) -> Tensor:
    """Tangent-linear Lorenz-63: the Jacobian of :func:`lorenz63_rhs` at ``x`` applied to ``v``."""
    x0, x1, x2 = x.unbind(-1)
    v0, v1, v2 = v.unbind(-1)
    return torch.stack(
        (sigma * (v1 - v0), v0 * (rho - x2) - x0 * v2 - v1, v0 * x1 + x0 * v1 - beta * v2), dim=-1
    )


def lorenz96_jvp(x: Tensor, v: Tensor, forcing: float = 8.0) -> Tensor:
    """Tangent-linear Lorenz-96: the Jacobian of :func:`lorenz96_rhs` at ``x`` applied to ``v``."""
    del forcing  # the forcing is constant: it does not enter the Jacobian
    return (
        (torch.roll(v, -1, -1) - torch.roll(v, 2, -1)) * torch.roll(x, 1, -1)
        + (torch.roll(x, -1, -1) - torch.roll(x, 2, -1)) * torch.roll(v, 1, -1)
        - v
    )


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


def lorenz_vector_field(
    system: str,
    *,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    forcing: float = 8.0,
) -> VectorField:
    """The vector field ``x -> dx/dt`` of ``system`` ("lorenz63" or "lorenz96") with parameters.

    Examples
    --------
    >>> f = lorenz_vector_field("lorenz63")
    >>> f(torch.zeros(1, 3)).tolist()
    [[0.0, 0.0, 0.0]]
    """
    if system == "lorenz63":
        for name, value in (("sigma", sigma), ("rho", rho), ("beta", beta)):
            if not value > 0:
                raise UserInputError(
                    f"lorenz63 parameter {name} must be > 0, got {value} (standard: sigma=10, "
                    "rho=28, beta=8/3)"
                )
        return functools.partial(lorenz63_rhs, sigma=sigma, rho=rho, beta=beta)
    if system == "lorenz96":
        if not math.isfinite(forcing):
            raise UserInputError(f"lorenz96 forcing must be finite, got {forcing} (standard: 8)")
        return functools.partial(lorenz96_rhs, forcing=forcing)
    raise UserInputError(f"unknown system '{system}'; choose lorenz63 or lorenz96")


def lorenz_tangent_field(
    system: str,
    *,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    forcing: float = 8.0,
) -> TangentField:
    """The tangent-linear field ``(x, v) -> J(x) v`` matching :func:`lorenz_vector_field`."""
    lorenz_vector_field(system, sigma=sigma, rho=rho, beta=beta, forcing=forcing)  # validates
    if system == "lorenz63":
        return functools.partial(lorenz63_jvp, sigma=sigma, rho=rho, beta=beta)
    return functools.partial(lorenz96_jvp, forcing=forcing)


def simulate_lorenz(
    system: str,
    *,
    n_trajectories: int = 1,
    n_steps: int = 1000,
    dt: float = 0.01,
    spinup_steps: int = 1000,
    n_components: int = 40,
    forcing: float = 8.0,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    noise_std: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Trajectories of ``system`` ("lorenz63" or "lorenz96") after a spin-up onto the attractor.

    Each trajectory starts from a random perturbation (seeded) of a point near the attractor,
    integrated for ``spinup_steps`` RK4 steps of ``dt`` (discarded), then ``n_steps`` more.
    ``noise_std`` adds Gaussian model noise (per sqrt time unit) after each step of the kept part.
    ``sigma, rho, beta`` are used by lorenz63, ``n_components, forcing`` by lorenz96.

    Returns a tensor ``(n_trajectories, n_steps + 1, component)`` of ``dtype`` (float32 or float64).

    Examples
    --------
    >>> simulate_lorenz("lorenz63", n_steps=10, spinup_steps=10).shape
    torch.Size([1, 11, 3])
    >>> simulate_lorenz("lorenz96", n_steps=5, n_components=8, dtype=torch.float32).dtype
    torch.float32
    """
    for name, value in (("dt", dt), ("n_trajectories", n_trajectories)):
        if not value > 0:
            raise UserInputError(f"{name} must be > 0, got {value}")
    for name, value in (("n_steps", n_steps), ("spinup_steps", spinup_steps)):
        if value < 0:
            raise UserInputError(f"{name} must be >= 0, got {value}")
    if noise_std < 0:
        raise UserInputError(f"noise_std must be >= 0, got {noise_std}")
    if dtype not in (torch.float32, torch.float64):
        raise UserInputError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    gen = torch.Generator().manual_seed(seed)
    f = lorenz_vector_field(system, sigma=sigma, rho=rho, beta=beta, forcing=forcing)
    if system == "lorenz63":
        x0 = torch.tensor([1.0, 1.0, 1.0], dtype=dtype) + torch.randn(
            (n_trajectories, 3), generator=gen, dtype=dtype
        )
    else:
        if n_components < 4:
            raise UserInputError(f"lorenz96 needs n_components >= 4, got {n_components}")
        x0 = forcing + 0.01 * torch.randn(
            (n_trajectories, n_components), generator=gen, dtype=dtype
        )
    if spinup_steps > 0:
        x0 = integrate(f, x0, dt, spinup_steps)[:, -1]
    return integrate(f, x0, dt, n_steps, noise_std=noise_std, generator=gen)
