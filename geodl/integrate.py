"""Time stepping for every dynamics user: explicit steps, rollouts and where a rollout diverged.

The one copy in geodl (DESIGN.md, "one front door per numerical service"): the simulators, the
learned models (bilinear ResNet, state 4DVarNet, neural ODE, emulators), the physics loss and the
dynamics/emulation scorers all step through these functions, so a fix or a change of scheme lands
everywhere at once. Torch only, no files.

Shapes: a state is ``(batch, ...)`` (``(B, D)`` for Lorenz systems, ``(B, C, H, W)`` for gridded
fields); a trajectory inserts time at axis 1, ``(B, T, ...)`` (DESIGN.md's axis order).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from geodl.errors import UserInputError

__all__ = [
    "Step",
    "VectorField",
    "euler_step",
    "first_exit",
    "in_units",
    "rk4_step",
    "rollout",
    "rollout_until_exit",
    "trajectory_windows",
]

#: ``x -> dx/dt``, same shape in and out.
VectorField = Callable[[Tensor], Tensor]
#: A one-step map ``x_n -> x_{n+1}``, same shape in and out.
Step = Callable[[Tensor], Tensor]


def euler_step(f: VectorField, x: Tensor, dt: float) -> Tensor:
    """One explicit (forward) Euler step, ``x + dt * f(x)``.

    Examples
    --------
    >>> euler_step(lambda x: -x, torch.ones(1, 2, dtype=torch.float64), 0.1).tolist()
    [[0.9, 0.9]]
    """
    return x + dt * f(x)


def rk4_step(f: VectorField, x: Tensor, dt: float) -> Tensor:
    """One classical fourth-order Runge-Kutta step of ``dx/dt = f(x)``.

    .. math:: x_{n+1} = x_n + \\frac{\\Delta t}{6} (k_1 + 2 k_2 + 2 k_3 + k_4)

    The operation order is fixed (golden outputs and saved results depend on it bit for bit).

    Examples
    --------
    >>> y = rk4_step(lambda x: -x, torch.ones(1, 1, dtype=torch.float64), 0.1)
    >>> round(float(y), 8)  # exp(-0.1) = 0.904837418...
    0.9048375
    """
    k1 = f(x)
    k2 = f(x + 0.5 * dt * k1)
    k3 = f(x + 0.5 * dt * k2)
    k4 = f(x + dt * k3)
    return x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def rollout(step: Step, x0: Tensor, n_steps: int) -> Tensor:
    """Iterate a one-step map: ``x0`` ``(B, ...)`` -> trajectory ``(B, n_steps + 1, ...)``.

    ``out[:, 0]`` is ``x0``; gradients flow through the steps unless the caller disables them.

    Examples
    --------
    >>> rollout(lambda x: 2 * x, torch.ones(1, 1), 3)[0, :, 0].tolist()
    [1.0, 2.0, 4.0, 8.0]
    """
    if n_steps < 0:
        raise UserInputError(f"rollout: n_steps must be >= 0, got {n_steps}")
    out = [x0]
    for _ in range(n_steps):
        out.append(step(out[-1]))
    return torch.stack(out, dim=1)


def in_units(step: Step, mean: Tensor, std: Tensor) -> Step:
    """``step`` of normalised states as a step of states in the data's units:
    ``x -> step((x - mean) / std) * std + mean`` (differentiable; ``mean``, ``std`` broadcast over
    the trailing component axis).

    Examples
    --------
    >>> f = in_units(lambda z: 2 * z, torch.tensor([1.0]), torch.tensor([10.0]))
    >>> f(torch.tensor([[21.0]])).tolist()  # z = 2, 2z = 4, back: 41
    [[41.0]]
    """
    return lambda x: step((x - mean) / std) * std + mean


def first_exit(x: Tensor, bound: float, *, dim: int = 1) -> int | None:
    """First index along ``dim`` of ``x`` at which any entry is non-finite or beyond ``bound``.

    Every other axis is reduced (``any``): for a trajectory ``(B, T, ...)`` and ``dim=1`` it is the
    first time step at which some member left the box ``|x| <= bound``; None if none did. The
    comparison is done in ``x``'s dtype.

    Examples
    --------
    >>> first_exit(torch.tensor([[[0.0], [1.0], [20.0], [float("nan")]]]), 10.0)
    2
    >>> first_exit(torch.zeros(2, 5, 3), 1.0) is None
    True
    """
    if x.ndim == 0:
        raise UserInputError("first_exit: x is a scalar, expected a tensor with a time axis")
    # NaN compares False in both tests, and |inf| > bound for any finite bound.
    bad = ~torch.isfinite(x) | (x.abs() > bound)
    bad = bad.movedim(dim, 0).reshape(x.shape[dim], -1).any(dim=1)  # (T,)
    hits = torch.nonzero(bad)
    return int(hits[0, 0]) if hits.numel() else None


def rollout_until_exit(
    step: Step, x0: Tensor, n_steps: int, bound: float, *, check_every: int = 100
) -> tuple[Tensor, int | None]:
    """Rollout ``(B, S, ...)`` from ``x0`` ``(B, ...)`` cut before its :func:`first_exit`, and that
    step (None: all ``n_steps + 1`` states kept).

    The bound is checked every ``check_every`` steps, so a diverged rollout stops early instead of
    running on NaN for the remaining steps; the result does not depend on ``check_every``.

    Examples
    --------
    >>> traj, left = rollout_until_exit(lambda x: 2 * x, torch.ones(1, 1), 10, 5.0, check_every=2)
    >>> traj[0, :, 0].tolist(), left
    ([1.0, 2.0, 4.0], 3)
    """
    if n_steps < 0:
        raise UserInputError(f"rollout_until_exit: n_steps must be >= 0, got {n_steps}")
    if check_every < 1:
        raise UserInputError(f"rollout_until_exit: check_every must be >= 1, got {check_every}")
    chunks = [x0[:, None]]
    left = first_exit(chunks[0], bound)
    done = 0
    while left is None and done < n_steps:
        n = min(check_every, n_steps - done)
        chunk = rollout(step, chunks[-1][:, -1], n)[:, 1:]  # (B, n, ...)
        exit_at = first_exit(chunk, bound)
        chunks.append(chunk)
        left = None if exit_at is None else done + 1 + exit_at
        done += n
    traj = torch.cat(chunks, dim=1)
    return (traj if left is None else traj[:, :left]), left


def trajectory_windows(z: Tensor, rollout: int, stride: int) -> Tensor:
    """Every ``rollout + 1``-step window of trajectories ``z`` ``(B, T, ...)``, ``stride`` steps
    apart: ``(B * nW, rollout + 1, ...)``, trajectory after trajectory (the training samples of
    every rollout loss and of the learned DA windows).

    Examples
    --------
    >>> trajectory_windows(torch.zeros(2, 10, 3), rollout=4, stride=2).shape
    torch.Size([6, 5, 3])
    >>> trajectory_windows(torch.arange(6.0)[None, :, None], 2, 3)[:, :, 0].tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    if z.ndim < 3:
        raise UserInputError(
            f"trajectory_windows: expected (B, T, ...), got shape {tuple(z.shape)}"
        )
    w = z.unfold(1, rollout + 1, stride)  # (B, nW, ..., K+1)
    return w.movedim(-1, 2).reshape(-1, rollout + 1, *z.shape[2:])
