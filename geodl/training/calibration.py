"""Scale a trained model's predicted uncertainty on held-out data (temperature scaling).

A likelihood-trained head sizes its variance by the errors it met in training: those of a mean that
was still improving, on windows the model has fitted. The scales fitted here on the validation
period correct both, without touching the mean: ``diag`` multiplies the diagonal standard
deviation, ``factor`` the low-rank covariance factor, so that the calibrated covariance is
``diag**2 * D + factor**2 * F F^T``.

Without a factor, ``diag`` makes the mean squared z-score 1 (the maximum-likelihood scale). With
one, the two scales are fitted under that same marginal condition: among the covariances whose
marginal variances match the squared errors on average, the one of highest joint likelihood. The
joint likelihood alone cannot size the factor: it sees the factor through R log-determinant terms
per patch against N per-entry terms, so it prefers more total variance than the marginals hold
(measured on the quick twin: 68% coverage 0.76 at its optimum; the marginal condition gives 0.7).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from geodl import losses
from geodl.errors import DataError
from geodl.models.outputs import MappingOutput

__all__ = ["fit_std_scales"]

_WIDE = {"min_log_var": -60.0, "max_log_var": 60.0}  # the scales, not a clamp, must do the work
#: factor scales tried (besides 0, the diagonal model), refined by golden section around the best
_FACTOR_GRID = tuple(10.0 ** (k / 4) for k in range(-12, 5))  # 1e-3 .. 10


def fit_std_scales(
    outputs: Sequence[MappingOutput],
    targets: Sequence[Tensor],
    masks: Sequence[Tensor],
    *,
    refine: int = 12,
) -> dict[str, float]:
    """Scales ``{"diag": a, "factor": b}`` of predicted Gaussians, fitted on held-out data.

    Parameters
    ----------
    outputs
        Per batch, the model's :class:`~geodl.models.MappingOutput` (``mean``, ``log_var`` and, for
        a low-rank model, ``factor``), shapes ``(B, T, C, H, W)`` (factor ``(..., R)``).
    targets, masks
        Per batch, the truth ``(B, T, C, H, W)`` and where it is known.
    refine
        Golden-section steps on ``log b`` after the grid search (low-rank models only).

    Returns
    -------
    dict
        Without a factor: ``diag = sqrt(mean(r**2 / sigma**2))``, ``factor`` 1.0. With one: for
        each factor scale ``b`` (0 included, which switches the factor off), ``a`` solves
        ``mean(r**2 / (a**2 d + b**2 f)) = 1`` (``d``, ``f``: the diagonal and factor marginal
        variances), and ``b`` maximises the joint low-rank likelihood of those pairs.
    """
    if not outputs or any(o.log_var is None for o in outputs):
        raise DataError("fit_std_scales: every output must carry a log_var")
    n = sum(int(m.sum()) for m in masks)
    if n == 0:
        raise DataError("fit_std_scales: no entry with a known truth to calibrate on")
    r2 = torch.cat(
        [((o.mean - t).double() ** 2)[m] for o, t, m in zip(outputs, targets, masks, strict=True)]
    )
    d = torch.cat([torch.exp(o.log_var.double())[m] for o, m in zip(outputs, masks, strict=True)])  # type: ignore[union-attr]
    if outputs[0].factor is None:
        return {"diag": math.sqrt(float((r2 / d).mean())), "factor": 1.0}
    f = torch.cat(
        [(o.factor.double() ** 2).sum(-1)[m] for o, m in zip(outputs, masks, strict=True)]
    )  # type: ignore[union-attr]

    def diag_for(b: float) -> float | None:
        """``a`` with ``mean(r2 / (a^2 d + b^2 f)) = 1``; None where the factor alone is too
        wide (the mean z-score squared stays below 1 as ``a`` -> 0)."""
        if b > 0 and float((r2 / (b * b * f)).mean()) <= 1.0:
            return None
        lo, hi = -20.0, 20.0  # log a: z2 decreases as a grows
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            z2 = float((r2 / (math.exp(2 * mid) * d + b * b * f)).mean())
            lo, hi = (mid, hi) if z2 > 1.0 else (lo, mid)
        return math.exp(0.5 * (lo + hi))

    n_patches = sum(int(m.flatten(1).any(1).sum()) for m in masks)

    def nll(b: float) -> float:
        """Joint negative log-likelihood per patch at ``(diag_for(b), b)``; inf if infeasible."""
        a = diag_for(b)
        if a is None:
            return math.inf
        total = 0.0
        with torch.no_grad():
            for o, t, m in zip(outputs, targets, masks, strict=True):
                count = int(m.sum())
                if count == 0:
                    continue
                value = losses.lowrank_gaussian_nll(
                    o.mean.double().flatten(1),
                    t.double().flatten(1),
                    factor=o.factor.double().flatten(1, -2) * b,  # type: ignore[union-attr]
                    log_diag=o.log_var.double().flatten(1) + 2 * math.log(a),  # type: ignore[union-attr]
                    mask=m.flatten(1),
                    **_WIDE,
                )
                total += float(value) * count
        return total / n_patches

    scored = [(nll(b), b) for b in (0.0, *_FACTOR_GRID)]
    best_nll, best_b = min(scored)
    if best_b > 0:  # golden section on log b between the best grid point's neighbours
        k = _FACTOR_GRID.index(best_b)
        lo = math.log(_FACTOR_GRID[max(k - 1, 0)])
        hi = math.log(_FACTOR_GRID[min(k + 1, len(_FACTOR_GRID) - 1)])
        g = (math.sqrt(5) - 1) / 2
        x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
        f1, f2 = nll(math.exp(x1)), nll(math.exp(x2))
        for _ in range(refine):
            if f1 <= f2:
                hi, x2, f2 = x2, x1, f1
                x1 = hi - g * (hi - lo)
                f1 = nll(math.exp(x1))
            else:
                lo, x1, f1 = x1, x2, f2
                x2 = lo + g * (hi - lo)
                f2 = nll(math.exp(x2))
        for value, x in ((f1, x1), (f2, x2)):
            if value < best_nll:
                best_nll, best_b = value, math.exp(x)
    return {"diag": float(diag_for(best_b)), "factor": best_b}  # type: ignore[arg-type]
