"""Bilinear residual network for the identification of ODE dynamics (Fablet et al. 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geodl.errors import UserInputError
from geodl.integrate import euler_step, rk4_step, rollout
from geodl.models.checks import check_positive, check_state

__all__ = ["BilinearResNet"]

SCHEMES = ("rk4", "euler")


class BilinearResNet(nn.Module):
    """One-step map ``x_{n+1} = x_n + dt * Phi(f, x_n)`` with a bilinear vector field ``f``.

    .. math:: f(x) = A x + c + M \\left[(B_1 x) \\odot (B_2 x)\\right]

    so that quadratic dynamics such as Lorenz-63/96 are exactly representable; ``Phi`` is the RK4
    (or Euler) increment, which is the residual block of the network. ``forward(x)`` maps
    ``(..., D) -> (..., D)``; :meth:`vector_field` exposes ``f`` (e.g. for
    :func:`geodl.sim.lyapunov_exponents` or :class:`~geodl.models.neural_ode.NeuralODE`).

    References
    ----------
    Fablet, R., Ouala, S., Herzet, C. (2018). Bilinear residual neural network for the
    identification and forecasting of geophysical dynamics. EUSIPCO 2018, 1477-1481.

    Examples
    --------
    >>> import torch
    >>> BilinearResNet(dim=3, dt=0.01)(torch.zeros(5, 3)).shape
    torch.Size([5, 3])
    """

    def __init__(
        self, dim: int = 3, *, n_bilinear: int = 3, dt: float = 0.01, scheme: str = "rk4"
    ) -> None:
        super().__init__()
        check_positive("BilinearResNet", dim=dim, n_bilinear=n_bilinear, dt=dt)
        if scheme not in SCHEMES:
            raise UserInputError(
                f"BilinearResNet: scheme={scheme!r}, expected one of {list(SCHEMES)}"
            )
        self.dim = dim
        self.dt = dt
        self.scheme = scheme
        self.linear = nn.Linear(dim, dim)
        self.left = nn.Linear(dim, n_bilinear, bias=False)
        self.right = nn.Linear(dim, n_bilinear, bias=False)
        self.mix = nn.Linear(n_bilinear, dim, bias=False)

    def vector_field(self, x: Tensor) -> Tensor:
        """``f(x)`` for ``x`` of shape ``(..., D)``."""
        return self.linear(x) + self.mix(self.left(x) * self.right(x))

    def forward(self, x: Tensor) -> Tensor:
        check_state(x, "x", "BilinearResNet.forward", features=self.dim)
        step = euler_step if self.scheme == "euler" else rk4_step
        return step(self.vector_field, x, self.dt)

    @torch.no_grad()
    def rollout(self, x0: Tensor, n_steps: int) -> Tensor:
        """Trajectory ``(B, n_steps + 1, D)`` from ``x0`` ``(B, D)`` (no gradient)."""
        return rollout(self, x0, n_steps)
