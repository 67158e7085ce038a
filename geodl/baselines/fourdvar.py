r"""Weak-constraint 4D-Var by automatic differentiation through the true model.

The control variable is the whole state trajectory :math:`x_{0:T}` of a window; the cost is

.. math::

    J(x) = \frac{1}{2\sigma_o^2} \sum_{t, i \in \mathrm{obs}} (x_{t,i} - y_{t,i})^2
         + \frac{1}{2\sigma_q^2} \sum_{t=1}^{T} \lVert x_t - M(x_{t-1}) \rVert^2,

with :math:`M` one model step and :math:`\sigma_q` the model-error standard deviation per step
(Trémolet 2006). It is minimised with L-BFGS (strong Wolfe line search), every window and
trajectory at once (their costs are independent, so one optimiser over the sum is exact).

Why weak constraint and state control: over windows of a few Lyapunov times the strong-constraint
cost (control = initial state only) has many local minima; the model-error term keeps the problem
close to convex, and a continuation from a large :math:`\sigma_q` down to the target (``n_outer``
stages) avoids the remaining traps. The first guess is the time interpolation of the observations.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from geodl.errors import UserInputError

__all__ = ["interpolate_obs", "weak_4dvar"]

Step = Callable[[Tensor], Tensor]


def interpolate_obs(obs: Tensor) -> Tensor:
    """Linear interpolation in time of ``obs`` ``(B, T, D)`` (NaN where unobserved).

    Components never observed in a sample get the mean of its observations; constant extrapolation
    before the first and after the last observation.

    Examples
    --------
    >>> y = torch.tensor([[[0.0], [float("nan")], [2.0]]])
    >>> interpolate_obs(y)[0, :, 0].tolist()
    [0.0, 1.0, 2.0]
    """
    b, t, d = obs.shape
    out = torch.empty_like(obs)
    steps = torch.arange(t, dtype=obs.dtype)
    fallback = torch.nanmean(obs.reshape(b, -1), dim=1)
    for i in range(b):
        for j in range(d):
            series = obs[i, :, j]
            ok = torch.isfinite(series)
            if not ok.any():
                out[i, :, j] = fallback[i]
                continue
            xs, ys = steps[ok], series[ok]
            idx = torch.searchsorted(xs, steps).clamp(1, max(1, len(xs) - 1))
            if len(xs) == 1:
                out[i, :, j] = ys[0]
                continue
            x0, x1, y0, y1 = xs[idx - 1], xs[idx], ys[idx - 1], ys[idx]
            w = ((steps - x0) / (x1 - x0)).clamp(0.0, 1.0)
            out[i, :, j] = y0 + w * (y1 - y0)
    return out


def weak_4dvar(
    step: Step,
    obs: Tensor,
    *,
    obs_std: float,
    model_std: float,
    window: int | None = None,
    n_iter: int = 100,
    n_outer: int = 3,
    init: Tensor | None = None,
) -> Tensor:
    """Weak-constraint 4D-Var estimate ``(B, T, D)`` of the state from ``obs`` ``(B, T, D)``.

    Parameters
    ----------
    step : one model time step ``(M, D) -> (M, D)``.
    obs : observations ``(B, T, D)``, NaN where unobserved.
    obs_std : observation error standard deviation :math:`\\sigma_o`.
    model_std : model error standard deviation per step :math:`\\sigma_q` (the final stage).
    window : length in steps of the assimilation windows the trajectory is cut into (None: one
        window); each window is solved alone, the last one may be shorter.
    n_iter : L-BFGS iterations per continuation stage.
    n_outer : continuation stages: :math:`\\sigma_q` decreases geometrically from
        ``10**(n_outer - 1) * model_std`` to ``model_std``.
    init : first guess ``(B, T, D)`` (default: :func:`interpolate_obs`).

    Examples
    --------
    >>> from geodl.sim import lorenz_vector_field, rk4_step, simulate_lorenz
    >>> f = lorenz_vector_field("lorenz63")
    >>> truth = simulate_lorenz("lorenz63", n_steps=40)
    >>> obs = torch.full_like(truth, float("nan"))
    >>> obs[:, ::8] = truth[:, ::8]
    >>> est = weak_4dvar(lambda x: rk4_step(f, x, 0.01), obs, obs_std=1.0, model_std=0.01)
    >>> bool((est - truth).abs().max() < 0.5)
    True
    """
    if obs.ndim != 3:
        raise UserInputError(
            f"weak_4dvar: obs has shape {tuple(obs.shape)}, expected (batch, time, component)"
        )
    if not (obs_std > 0 and model_std > 0):
        raise UserInputError(
            f"weak_4dvar: obs_std and model_std must be > 0, got {obs_std} and {model_std}"
        )
    if n_iter < 1 or n_outer < 1:
        raise UserInputError(
            f"weak_4dvar: n_iter and n_outer must be >= 1, got {n_iter}, {n_outer}"
        )
    b, t, d = obs.shape
    window = t if window is None else window
    if window < 2:
        raise UserInputError(f"weak_4dvar: window must be >= 2 steps, got {window}")
    x = (interpolate_obs(obs) if init is None else init.clone()).detach()
    out = torch.empty_like(x)
    for lo in range(0, t, window):
        hi = min(t, lo + window)
        if hi - lo < 2:  # a single trailing step: keep the first guess of that step
            out[:, lo:hi] = x[:, lo:hi]
            continue
        out[:, lo:hi] = _solve(
            step, obs[:, lo:hi], x[:, lo:hi], obs_std, model_std, n_iter, n_outer
        )
    return out


def _solve(
    step: Step,
    obs: Tensor,
    x0: Tensor,
    obs_std: float,
    model_std: float,
    n_iter: int,
    n_outer: int,
) -> Tensor:
    b, t, d = obs.shape
    mask = torch.isfinite(obs)
    y = torch.where(mask, obs, torch.zeros_like(obs))
    x = x0.clone().requires_grad_(True)
    for k in range(n_outer):
        q = model_std * 10.0 ** (n_outer - 1 - k)
        opt = torch.optim.LBFGS(
            [x], lr=1.0, max_iter=n_iter, history_size=20, line_search_fn="strong_wolfe"
        )

        def closure(q: float = q, opt: torch.optim.LBFGS = opt) -> Tensor:
            opt.zero_grad()
            pred = step(x[:, :-1].reshape(-1, d)).reshape(b, t - 1, d)
            j_obs = (mask * (x - y) ** 2).sum() / (2 * obs_std**2)
            j_mod = ((x[:, 1:] - pred) ** 2).sum() / (2 * q**2)
            # Scaled by the number of terms: L-BFGS tolerances then do not depend on the size.
            cost = (j_obs + j_mod) / x.numel()
            cost.backward()
            return cost

        opt.step(closure)
    return x.detach()
