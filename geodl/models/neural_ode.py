"""Neural ODE: integrate any autonomous vector field with fixed-step RK4 or a torchdiffeq solver."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from geodl.errors import UserInputError
from geodl.integrate import rk4_step

__all__ = ["METHODS", "KnownPlusLearned", "NeuralODE", "rk4_odeint"]

#: "rk4" is geodl's own fixed-step RK4; every other name is a torchdiffeq solver.
# torchdiffeq 0.2 solver names, listed here rather than read from its private _impl.
TORCHDIFFEQ = (
    "adaptive_heun", "bosh3", "dopri5", "dopri8", "euler", "explicit_adams", "fehlberg2",
    "fixed_adams", "heun2", "heun3", "implicit_adams", "midpoint", "scipy_solver",
)  # fmt: skip
METHODS = ("rk4", *TORCHDIFFEQ)
ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


def rk4_odeint(
    f: Callable[[Tensor], Tensor], x0: Tensor, t: Tensor, step_size: float | None = None
) -> Tensor:
    """Fixed-step classical RK4 from ``x0`` ``(B, ...)`` over times ``t`` ``(T,)``: ``(B, T, ...)``.

    Each interval ``t[i] -> t[i+1]`` is split into ``ceil(dt / step_size)`` equal sub-steps (one
    sub-step when ``step_size`` is None), so outputs land exactly on ``t``.

    Examples
    --------
    >>> import torch
    >>> x = rk4_odeint(lambda x: -x, torch.ones(1, 1), torch.tensor([0.0, 1.0]), 0.1)
    >>> round(float(x[0, 1, 0]), 5)  # exp(-1) = 0.367879...
    0.36788
    """
    times = t.tolist()
    out = [x0]
    x = x0
    for t0, t1 in zip(times[:-1], times[1:], strict=True):
        # Relative slack: float32 times (0.05 read back as 0.0500000007) must not add a sub-step.
        n_sub = 1 if step_size is None else max(1, math.ceil(abs(t1 - t0) / step_size * (1 - 1e-6)))
        h = (t1 - t0) / n_sub
        for _ in range(n_sub):
            x = rk4_step(f, x, h)
        out.append(x)
    return torch.stack(out, dim=1)


class _TimeFree(nn.Module):
    """Adapts an autonomous field ``f(x)`` to torchdiffeq's ``f(t, x)``; a Module so that
    ``odeint_adjoint`` finds the parameters. ``n_evals`` counts calls (for benchmarks)."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field
        self.n_evals = 0

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        self.n_evals += 1
        return self.field(x)


class NeuralODE(nn.Module):
    """Integrate a learned autonomous vector field: ``forward(x0, t) -> trajectory``.

    ``x0`` is ``(B, ...)`` (``(B, D)`` for Lorenz states, ``(B, C, H, W)`` for gridded fields) and
    ``t`` the output times ``(T,)`` with ``t[0]`` the time of ``x0``; the result is ``(B, T, ...)``
    (for gridded fields ``(B, T, C, H, W)``).

    Parameters
    ----------
    vector_field : nn.Module
        ``f(x) -> dx/dt``, same shape in and out.
    method : str
        ``"rk4"`` (geodl's fixed-step RK4, fastest for smooth problems) or any torchdiffeq solver
        (``"dopri5"``, ``"euler"``, ...; see :data:`METHODS`).
    step_size : float or None
        Step of fixed-step methods (None: one step per output interval).
    rtol, atol : float
        Tolerances of adaptive methods.
    min_step : float
        Smallest step of adaptive methods: stops a badly trained field from stalling training by
        forcing ever smaller steps (torchdiffeq then accepts the step with a larger error).
    adjoint : bool
        Gradients by the adjoint method (memory O(1) in the number of steps) instead of
        back-propagation through the solver (torchdiffeq solvers only).

    Examples
    --------
    >>> import torch
    >>> from geodl.models.mlp import MLP
    >>> ode = NeuralODE(MLP(3, 3, hidden=(16,)), method="rk4", step_size=0.01)
    >>> ode(torch.zeros(4, 3), torch.linspace(0, 0.1, 5)).shape
    torch.Size([4, 5, 3])
    """

    def __init__(
        self,
        vector_field: nn.Module,
        *,
        method: str = "rk4",
        step_size: float | None = None,
        rtol: float = 1e-6,
        atol: float = 1e-8,
        min_step: float = 0.0,
        adjoint: bool = False,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise UserInputError(
                f"NeuralODE: unknown method {method!r}; expected one of {list(METHODS)}"
            )
        if adjoint and method == "rk4":
            raise UserInputError(
                "NeuralODE: adjoint=True needs a torchdiffeq solver; use method='dopri5' (or "
                "'euler', 'midpoint', ...) or adjoint=False"
            )
        if step_size is not None and not step_size > 0:
            raise UserInputError(f"NeuralODE: step_size must be > 0 or None, got {step_size!r}")
        if min_step < 0:
            raise UserInputError(f"NeuralODE: min_step must be >= 0, got {min_step!r}")
        self.func = _TimeFree(vector_field)
        self.method = method
        self.step_size = step_size
        self.rtol = rtol
        self.atol = atol
        self.min_step = min_step
        self.adjoint = adjoint

    @property
    def vector_field(self) -> nn.Module:
        return self.func.field

    def forward(self, x0: Tensor, t: Tensor) -> Tensor:
        if not isinstance(t, Tensor) or t.ndim != 1 or t.numel() < 1:
            raise UserInputError(
                f"NeuralODE.forward: t must be a 1-D tensor of output times (time,), got "
                f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}"
            )
        if t.numel() > 1 and not bool((torch.diff(t) > 0).all()):
            raise UserInputError(
                "NeuralODE.forward: t must be strictly increasing; sort the output times"
            )
        if x0.ndim < 2:
            raise UserInputError(
                f"NeuralODE.forward: x0 has shape {tuple(x0.shape)}, expected (batch, ...) e.g. "
                "(batch, component) or (batch, channel, y, x); add a batch axis with x0[None]"
            )
        t = t.to(x0)
        if self.method == "rk4":
            return rk4_odeint(lambda x: self.func(t, x), x0, t, self.step_size)  # counts evals
        options: dict[str, float] = {}
        if self.method in ADAPTIVE:
            options["min_step"] = self.min_step
        elif self.step_size is not None:
            options["step_size"] = self.step_size
        solve = odeint_adjoint if self.adjoint else odeint
        out = solve(
            self.func, x0, t, rtol=self.rtol, atol=self.atol, method=self.method, options=options
        )
        return out.movedim(0, 1)  # (T, B, ...) -> (B, T, ...)


class KnownPlusLearned(nn.Module):
    """Hybrid vector field ``f(x) = M x + c + g(x)``: a known affine part (fixed buffers ``M``
    ``(D, D)`` and ``c`` ``(D,)``, e.g. the linear terms of the true equations) plus a learned
    field ``g`` for the rest (the nonlinear terms). The buffers travel with the ``state_dict``;
    set them with :meth:`set_known`.

    Examples
    --------
    >>> import torch
    >>> f = KnownPlusLearned(nn.Linear(2, 2, bias=False), 2)
    >>> _ = torch.nn.init.zeros_(f.learned.weight)
    >>> f.set_known(-torch.eye(2), torch.ones(2))
    >>> f(torch.tensor([[3.0, 1.0]])).tolist()
    [[-2.0, 0.0]]
    """

    def __init__(self, learned: nn.Module, dim: int) -> None:
        super().__init__()
        self.learned = learned
        self.register_buffer("known_matrix", torch.zeros(dim, dim))
        self.register_buffer("known_offset", torch.zeros(dim))

    def set_known(self, matrix: Tensor, offset: Tensor) -> None:
        """Set ``M`` and ``c`` (no gradient flows into them)."""
        with torch.no_grad():
            self.known_matrix.copy_(torch.as_tensor(matrix))
            self.known_offset.copy_(torch.as_tensor(offset))

    def known(self, x: Tensor) -> Tensor:
        """The known part ``M x + c``."""
        return x @ self.known_matrix.T + self.known_offset

    def forward(self, x: Tensor) -> Tensor:
        return self.known(x) + self.learned(x)
