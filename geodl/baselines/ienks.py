r"""Iterative ensemble Kalman smoother (iEnKS, Gauss-Newton, square-root form).

The iEnKS of Bocquet & Sakov (2014) looks for the initial state of a data assimilation window
(DAW) of ``lag`` analysis cycles as :math:`x_0 = \bar x_0 + A_0^T w` (rows of :math:`A_0` are the
inflated prior anomalies) and minimises in ensemble space

.. math::

    J(w) = \tfrac12 (N - 1) w^T w
    + \tfrac12 \sum_k \| R^{-1/2} (y_k - H \mathcal M_{0 \to k}(\bar x_0 + A_0^T w)) \|^2

over the ``shift`` newest observation times :math:`k` of the window (older ones are already in
the prior: single data assimilation). Each Gauss-Newton iteration runs the ensemble through the
window and linearises the model around the current iterate, either with a "bundle" of
perturbations :math:`\varepsilon A_0` (finite differences, ``epsilon``) or with the current
posterior ensemble itself (the "transform" variant, ``epsilon=None``), whose obs-space anomalies are
de-conditioned by :math:`T^{-1}`. With :math:`Y` the sensitivity of the scaled observations to
:math:`w`,

.. math::

    H_w = (N - 1) I + Y Y^T,\quad
    \delta w = H_w^{-1}\left[Y R^{-1/2}(y - \bar y) - (N - 1) w\right],\quad
    T = \left[(N - 1) H_w^{-1}\right]^{1/2}.

The posterior ensemble at the window start is :math:`\bar x_0 + (w 1^T + T) A_0`, optionally
rotated by a random orthogonal matrix that fixes the ones vector (it keeps the mean and the
covariance); it is propagated by ``shift`` cycles to start the next window. With a linear model,
one iteration and ``lag = shift = 1``, the scheme is the ETKF/ETKS of :mod:`geodl.baselines.enkf`.

References
----------
Bocquet, M., Sakov, P. (2014). An iterative ensemble Kalman smoother. Q. J. R. Meteorol. Soc. 140,
1521-1535.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from geodl.baselines.enkf import EnsembleResult, random_rotation
from geodl.errors import UserInputError

__all__ = ["ienks"]

Step = Callable[[Tensor], Tensor]


def _trajectory(step: Step, ens: Tensor, t0: int, t1: int) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(t, ensemble)`` for ``t = t0..t1``, the model run of ``ens`` ``(B, N, D)`` from t0."""
    b, n, d = ens.shape
    yield t0, ens
    for t in range(t0 + 1, t1 + 1):
        ens = step(ens.reshape(b * n, d)).reshape(b, n, d)
        yield t, ens


def _sym_power(evecs: Tensor, evals: Tensor, power: float) -> Tensor:
    """``V diag(evals**power) V^T`` for a batch of symmetric eigendecompositions."""
    return evecs @ torch.diag_embed(evals**power) @ evecs.transpose(1, 2)


def _window_update(
    step: Step,
    ens0: Tensor,
    t0: int,
    t1: int,
    obs_times: list[int],
    y: Tensor,
    rsd: Tensor,
    *,
    inflation: float,
    n_iter: int,
    tol: float,
    epsilon: float | None,
    record: Callable[[int, Tensor], None] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One DAW: Gauss-Newton in ensemble space from the prior ``ens0`` ``(B, N, D)`` at ``t0``.

    ``y`` ``(B, P)`` stacks the observations of ``obs_times`` (zero where unobserved) and ``rsd``
    ``(B, P)`` their inverse standard deviations (zero where unobserved). ``record(t, ens)`` sees the
    forecast ensemble of the first iteration. Returns the mean ``w`` ``(B, N)``, the square root
    ``T`` ``(B, N, N)`` and the analysis ensemble at ``t1`` ``(B, N, D)`` (the model linearised
    around the last iterate, so that one iteration of a linear model is exactly the ETKF).
    """
    b, n, d = ens0.shape
    dtype = ens0.dtype
    bundle = epsilon is not None
    eps = epsilon if bundle else 1.0
    x0 = ens0.mean(1, keepdim=True)  # (B, 1, D)
    anom = inflation * (ens0 - x0)  # (B, N, D): inflated prior anomalies
    eye = torch.eye(n, dtype=dtype).expand(b, n, n)
    w = torch.zeros((b, n), dtype=dtype)
    dw = torch.zeros_like(w)
    sqrt, sqrt_inv = eye.clone(), eye.clone()  # T and T^-1 (B, N, N)
    sens = torch.zeros_like(anom)  # (B, N, D): d(state at t1)/dw at the last iterate
    mean_end = torch.zeros_like(x0)
    active = torch.ones(b, dtype=torch.bool)  # trajectories still iterating
    for it in range(n_iter):
        a = active.nonzero()[:, 0]
        pert = eps * (eye[a] if bundle else sqrt[a])
        ens = x0[a] + (w[a, None, :] + pert) @ anom[a]
        states = []
        for t, e in _trajectory(step, ens, t0, t1):
            if t in obs_times:
                states.append(e)
            if record is not None and it == 0:
                record(t, e)
        obs_ens = torch.cat(states, -1)  # (B', N, P), H = identity on the observed entries
        y_mean = obs_ens.mean(1)
        y_anom = (obs_ens - y_mean[:, None]) * (rsd[a, None, :] / eps)  # R^-1/2-scaled
        end_mean = e.mean(1, keepdim=True)
        end_anom = (e - end_mean) / eps
        if not bundle:  # the transform ensemble responds to T: undo it
            y_anom = sqrt_inv[a] @ y_anom
            end_anom = sqrt_inv[a] @ end_anom
        innov = (y[a] - y_mean) * rsd[a]  # (B', P)
        hess = (n - 1) * eye[a] + y_anom @ y_anom.transpose(1, 2)  # (B', N, N)
        evals, evecs = torch.linalg.eigh(hess)
        grad = (y_anom @ innov[:, :, None])[:, :, 0] - (n - 1) * w[a]
        step_w = (_sym_power(evecs, evals, -1.0) @ grad[:, :, None])[:, :, 0]
        w[a] = w[a] + step_w
        dw[a], sens[a], mean_end[a] = step_w, end_anom, end_mean
        sqrt[a] = (n - 1) ** 0.5 * _sym_power(evecs, evals, -0.5)
        sqrt_inv[a] = _sym_power(evecs, evals, 0.5) / (n - 1) ** 0.5
        active[a] = step_w.pow(2).mean(1).sqrt() >= tol
        if not active.any():
            break
    # Newest state: last forecast plus the linearised effect of the last step and the new T.
    filt = mean_end + (dw[:, None, :] + sqrt) @ sens
    return w, sqrt, filt


def ienks(
    step: Step,
    obs: Tensor,
    *,
    obs_std: float,
    n_members: int = 10,
    lag: int = 1,
    shift: int = 1,
    inflation: float = 1.0,
    n_iter: int = 10,
    tol: float = 1e-3,
    epsilon: float | None = 1e-4,
    init_mean: Tensor | None = None,
    init_std: float | Tensor = 1.0,
    rotation: bool = True,
    seed: int = 0,
) -> EnsembleResult:
    """Run the iterative ensemble Kalman smoother over observations ``obs`` ``(B, T, D)``.

    Parameters
    ----------
    step : one model time step ``(M, D) -> (M, D)`` (the true model for a twin experiment).
    obs : observations ``(B, T, D)``, NaN where unobserved; every time with a finite value is an
        analysis time (they need not be evenly spaced); a cycle runs from one to the next.
    obs_std : observation error standard deviation (every component).
    n_members : ensemble size N.
    lag : length L of the DAW in analysis cycles (>= 1).
    shift : cycles S the DAW moves after each analysis, ``1 <= S <= L``; the S newest observation
        times of each window are assimilated.
    inflation : multiplicative inflation (>= 1) of the prior anomalies at the start of each DAW.
    n_iter : maximum Gauss-Newton iterations per DAW (1: the EnKF/EnKS update).
    tol : stop iterating once the root-mean-square of the step in ``w`` is below ``tol``.
    epsilon : bundle scaling of the finite-difference perturbations (None: transform variant).
    init_mean : mean ``(B, D)`` of the initial ensemble (default: the time mean of the observations
        of each component), drawn as in :func:`geodl.baselines.enkf.ensemble_smoother`.
    init_std : spread of the initial ensemble (scalar or ``(B, D)``).
    rotation : rotate the posterior square root by a seeded Haar-random mean-preserving rotation.
    seed : seed of the initial ensemble and of the rotations.

    Returns
    -------
    EnsembleResult
        ``filter_mean``: analysis of the newest state of each DAW at its analysis time, forecast
        elsewhere (with ``shift > 1`` the older new observation times keep the forecast);
        ``smoother_mean``: each time's estimate when it leaves the DAW (the model run of the
        smoothed initial ensemble; the last window keeps its latest estimate); ``spread``: filter
        ensemble standard deviation. Each ``(B, T, D)``.

    Examples
    --------
    >>> from geodl.sim import lorenz_vector_field, rk4_step, simulate_lorenz
    >>> f = lorenz_vector_field("lorenz63")
    >>> truth = simulate_lorenz("lorenz63", n_steps=100)
    >>> obs = torch.full_like(truth, float("nan"))
    >>> obs[:, ::10] = truth[:, ::10] + torch.randn_like(truth[:, ::10])
    >>> res = ienks(lambda x: rk4_step(f, x, 0.01), obs, obs_std=1.0, lag=2)
    >>> res.filter_mean.shape, res.smoother_mean.shape
    (torch.Size([1, 101, 3]), torch.Size([1, 101, 3]))
    """
    if obs.ndim != 3:
        raise UserInputError(
            f"ienks: obs has shape {tuple(obs.shape)}, expected (batch, time, component)"
        )
    checks = [
        (n_members >= 2, f"n_members must be >= 2, got {n_members}"),
        (lag >= 1, f"lag must be >= 1 (analysis cycles per window), got {lag}"),
        (1 <= shift <= lag, f"shift must be in 1..lag={lag}, got {shift}"),
        (inflation >= 1.0, f"inflation must be >= 1, got {inflation}"),
        (obs_std > 0, f"obs_std must be > 0, got {obs_std}"),
        (n_iter >= 1, f"n_iter must be >= 1, got {n_iter}"),
        (tol >= 0, f"tol must be >= 0, got {tol}"),
        (epsilon is None or epsilon > 0, f"epsilon must be > 0 or None, got {epsilon}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserInputError(f"ienks: {msg}")
    finite = torch.isfinite(obs)
    times = finite.any(dim=(0, 2)).nonzero()[:, 0].tolist()  # analysis time indices
    if not times:
        raise UserInputError("ienks: obs has no finite value, so there is nothing to assimilate")
    b, n_t, d = obs.shape
    dtype, n = obs.dtype, n_members
    gen = torch.Generator().manual_seed(seed)
    if init_mean is None:
        init_mean = torch.where(finite, obs, 0.0).sum(1) / finite.sum(1).clamp(min=1)
    if tuple(init_mean.shape) != (b, d):
        raise UserInputError(f"ienks: init_mean has shape {tuple(init_mean.shape)}, need {(b, d)}")
    noise = torch.randn((b, n, d), generator=gen, dtype=dtype)  # same draw as ensemble_smoother
    std = torch.as_tensor(init_std, dtype=dtype)
    std = std[:, None, :] if std.ndim == 2 else std
    ens = init_mean[:, None, :].to(dtype) + std * noise  # (B, N, D) at time 0
    y_all = torch.where(finite, obs, 0.0)
    rsd_all = finite.to(dtype) / obs_std  # R^-1/2, zero where unobserved
    filt = torch.empty((b, n_t, d), dtype=dtype)
    spread = torch.empty_like(filt)
    smooth = torch.empty_like(filt)
    filt[:, 0], spread[:, 0] = ens.mean(1), ens.std(1)

    def clock(k: int) -> int:  # time of cycle boundary k (-1: the initial time)
        return 0 if k < 0 else times[k]

    opts = {"inflation": inflation, "n_iter": n_iter, "tol": tol, "epsilon": epsilon}
    n_cycles = len(times)
    end = -1  # newest observation index already assimilated
    while end < n_cycles - 1:
        prev, end = end, min(end + shift, n_cycles - 1)
        start = max(-1, end - lag)
        t0, t1 = clock(start), clock(end)
        new = [times[k] for k in range(prev + 1, end + 1)]
        y = torch.cat([y_all[:, t] for t in new], -1)  # (B, S*D)
        rsd = torch.cat([rsd_all[:, t] for t in new], -1)

        def record(t: int, e: Tensor, lo: int = clock(prev), hi: int = t1) -> None:
            if lo < t < hi:  # forecast from the previous analysis (bundle anomalies rescaled)
                filt[:, t] = e.mean(1)
                spread[:, t] = e.std(1) / (1.0 if epsilon is None else epsilon)

        w, sqrt, analysis = _window_update(step, ens, t0, t1, new, y, rsd, record=record, **opts)
        filt[:, t1], spread[:, t1] = analysis.mean(1), analysis.std(1)
        if rotation:
            sqrt = random_rotation(b, n, gen, dtype) @ sqrt
        x0 = ens.mean(1, keepdim=True)
        ens = x0 + (w[:, None, :] + sqrt) @ (inflation * (ens - x0))  # smoothed, at t0
        last = end == n_cycles - 1
        stop = n_t - 1 if last else clock(max(-1, min(end + shift, n_cycles - 1) - lag))
        for t, e in _trajectory(step, ens, t0, stop):
            if t < stop or last:  # estimates leaving the window
                smooth[:, t] = e.mean(1)
            if last and t > t1:  # after the last analysis: forecast
                filt[:, t], spread[:, t] = e.mean(1), e.std(1)
        ens = e
    return EnsembleResult(filter_mean=filt, smoother_mean=smooth, spread=spread)
