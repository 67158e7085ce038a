"""Lyapunov exponents of an ODE integrated with RK4: tangent-linear propagation and QR.

The tangent-linear RK4 step needs the Jacobian-vector product of the vector field: pass it as
``jvp`` (hand-written ones exist for the Lorenz systems, :func:`geodl.sim.lorenz_tangent_field`)
or leave it out to get it from :func:`torch.func.jvp` (any torch vector field, but ~50x slower on
CPU because of per-operation overhead). Tangents of all trajectories are folded into the batch axis.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geodl.errors import UserInputError
from geodl.sim.lorenz import TangentField, VectorField

__all__ = ["lyapunov_exponents", "tangent_rk4_step"]


def tangent_rk4_step(
    f: VectorField, jvp: TangentField | None, x: Tensor, v: Tensor, dt: float
) -> tuple[Tensor, Tensor]:
    """One RK4 step of ``x`` and its tangent-linear image of ``v``: ``(x_next, J_step(x) v)``."""
    if jvp is None:

        def jvp(y: Tensor, w: Tensor) -> Tensor:
            return torch.func.jvp(f, (y,), (w,))[1]

    k1, d1 = f(x), jvp(x, v)
    x2, v2 = x + 0.5 * dt * k1, v + 0.5 * dt * d1
    k2, d2 = f(x2), jvp(x2, v2)
    x3, v3 = x + 0.5 * dt * k2, v + 0.5 * dt * d2
    k3, d3 = f(x3), jvp(x3, v3)
    x4, v4 = x + dt * k3, v + dt * d3
    k4, d4 = f(x4), jvp(x4, v4)
    return (
        x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4),
        v + dt / 6.0 * (d1 + 2.0 * d2 + 2.0 * d3 + d4),
    )


def lyapunov_exponents(
    f: VectorField,
    x0: Tensor,
    dt: float,
    n_steps: int,
    *,
    jvp: TangentField | None = None,
    n_exponents: int = 1,
    renorm_every: int = 10,
    transient_steps: int = 0,
    seed: int = 0,
) -> Tensor:
    """Leading Lyapunov exponents ``(batch, n_exponents)`` along trajectories from ``x0``.

    Tangent vectors are propagated with the tangent-linear RK4 step and re-orthonormalised by QR
    every ``renorm_every`` steps (Benettin et al. 1980); the exponents are the time averages of
    ``log |R_ii|``. ``x0`` ``(batch, component)`` should already be on the attractor. The first
    ``transient_steps`` steps only align the (random) initial tangents with the leading directions
    and are not counted: without them the estimate is biased low by about ``1 / (n_steps dt)``.

    Examples
    --------
    >>> from geodl.sim import lorenz_tangent_field, lorenz_vector_field, simulate_lorenz
    >>> x0 = simulate_lorenz("lorenz63", n_steps=0)[:, -1]
    >>> f, jvp = lorenz_vector_field("lorenz63"), lorenz_tangent_field("lorenz63")
    >>> lyapunov_exponents(f, x0, 0.01, 100, jvp=jvp).shape
    torch.Size([1, 1])
    """
    batch, n = x0.shape
    if not 1 <= n_exponents <= n:
        raise UserInputError(f"n_exponents must be in 1..{n}, got {n_exponents}")
    if renorm_every < 1 or n_steps < renorm_every:
        raise UserInputError(
            f"need n_steps >= renorm_every >= 1, got n_steps={n_steps}, renorm_every={renorm_every}"
        )
    gen = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn((batch, n, n_exponents), generator=gen, dtype=x0.dtype))[0]
    # Fold tangents into the batch: x repeated per tangent, (batch * k, n).
    x = x0.repeat_interleave(n_exponents, 0)
    log_growth = torch.zeros((batch, n_exponents), dtype=x0.dtype)
    n_blocks = n_steps // renorm_every
    n_transient = -(-transient_steps // renorm_every)
    with torch.no_grad():
        for block in range(n_transient + n_blocks):
            v = q.transpose(1, 2).reshape(batch * n_exponents, n)
            for _ in range(renorm_every):
                x, v = tangent_rk4_step(f, jvp, x, v, dt)
            q, r = torch.linalg.qr(v.reshape(batch, n_exponents, n).transpose(1, 2))
            if block >= n_transient:
                log_growth += torch.log(torch.diagonal(r, dim1=1, dim2=2).abs())
    return log_growth / (n_blocks * renorm_every * dt)
