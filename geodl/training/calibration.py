"""Scale a trained model's predicted uncertainty on held-out data (temperature scaling).

A likelihood-trained head sizes its variance by the errors it met in training: those of a mean that
was still improving, on windows the model has fitted. The scales fitted here on the validation
period correct both, without touching the mean: ``diag`` multiplies the diagonal standard
deviation, ``factor`` the low-rank covariance factor, so that the calibrated covariance is
``diag**2 * D + factor**2 * F F^T``. They maximise the validation likelihood, the joint one where
there is a factor (a proper score: the scales fit the spread and its structure together).
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
_FACTOR_GRID = (1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # starting points of the search


def fit_std_scales(
    outputs: Sequence[MappingOutput],
    targets: Sequence[Tensor],
    masks: Sequence[Tensor],
    *,
    max_iter: int = 50,
) -> dict[str, float]:
    """Maximum-likelihood scales ``{"diag": a, "factor": b}`` of predicted Gaussians.

    Parameters
    ----------
    outputs
        Per batch, the model's :class:`~geodl.models.MappingOutput` (``mean``, ``log_var`` and, for
        a low-rank model, ``factor``), shapes ``(B, T, C, H, W)`` (factor ``(..., R)``).
    targets, masks
        Per batch, the truth ``(B, T, C, H, W)`` and where it is known.

    Returns
    -------
    dict
        ``diag`` (closed form ``sqrt(mean(r**2 / sigma**2))`` without a factor) and ``factor``
        (1.0 without a factor), fitted jointly by L-BFGS on the low-rank likelihood otherwise.
    """
    if not outputs or any(o.log_var is None for o in outputs):
        raise DataError("fit_std_scales: every output must carry a log_var")
    n = sum(int(m.sum()) for m in masks)
    if n == 0:
        raise DataError("fit_std_scales: no entry with a known truth to calibrate on")
    if outputs[0].factor is None:
        z2 = sum(
            (((o.mean - t) ** 2) * torch.exp(-o.log_var.double()))[m].sum()  # type: ignore[union-attr]
            for o, t, m in zip(outputs, targets, masks, strict=True)
        )
        return {"diag": math.sqrt(float(z2) / n), "factor": 1.0}

    # The joint likelihood depends on the factor's scale through R log-determinant terms per
    # patch against N per-entry terms: averaged per entry, its slope in the factor's scale is
    # O(R / N) and L-BFGS's tolerances stop it where it starts (measured: the scale stayed 1.000
    # while the validation likelihood was higher at 0.1). So the objective is summed per patch,
    # and the search starts from the best of a coarse grid of factor scales.
    n_patches = sum(int(m.flatten(1).any(1).sum()) for m in masks)

    def objective(log_scale: Tensor) -> Tensor:
        total = torch.zeros((), dtype=torch.float64)
        for o, t, m in zip(outputs, targets, masks, strict=True):
            count = int(m.sum())
            if count == 0:
                continue
            nll = losses.lowrank_gaussian_nll(
                o.mean.double().flatten(1),
                t.double().flatten(1),
                factor=o.factor.double().flatten(1, -2) * torch.exp(log_scale[1]),  # type: ignore[union-attr]
                log_diag=o.log_var.double().flatten(1) + 2 * log_scale[0],  # type: ignore[union-attr]
                mask=m.flatten(1),
                **_WIDE,
            )
            total = total + nll * count
        return total / n_patches

    with torch.no_grad():
        grid = [
            (float(objective(torch.tensor([0.0, math.log(b)], dtype=torch.float64))), b)
            for b in _FACTOR_GRID
        ]
    start = math.log(min(grid)[1])
    log_scale = torch.tensor([0.0, start], dtype=torch.float64, requires_grad=True)  # log a, log b
    opt = torch.optim.LBFGS(
        [log_scale], max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_change=1e-12
    )

    def closure() -> Tensor:
        opt.zero_grad()
        total = objective(log_scale)
        total.backward()
        return total

    opt.step(closure)
    a, b = torch.exp(log_scale.detach()).tolist()
    return {"diag": a, "factor": b}
