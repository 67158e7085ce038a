"""What mapping models return: a small frozen dataclass with ``mean`` and an optional ``log_var``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from geodl.errors import UserInputError

__all__ = ["MappingOutput", "ScaledUncertainty", "clamp_log_var"]


@dataclass(frozen=True)
class MappingOutput:
    """Output of every mapping model (``unet``, ``dincae``, ``fourdvarnet``).

    Attributes
    ----------
    mean : Tensor
        Reconstructed field ``(B, T, C, H, W)``.
    log_var : Tensor or None
        Log-variance of a diagonal Gaussian ``(B, T, C, H, W)``, already clamped by the model; None
        when the model gives no uncertainty.
    factor : Tensor or None
        ``(B, T, C, H, W, R)``: a low-rank covariance factor over the patch, so that the error
        covariance is ``diag(exp(log_var)) + F F^T`` with ``F`` the factor flattened to
        ``(T*C*H*W, R)`` (DINCAE with ``rank > 0``); None for a diagonal Gaussian.
    """

    mean: Tensor
    log_var: Tensor | None = None
    factor: Tensor | None = None

    @property
    def std(self) -> Tensor | None:
        """Predicted marginal standard deviation: ``exp(log_var / 2)``, plus the low-rank part
        ``sqrt(sum_r factor_r**2)`` where there is a ``factor``; None without a variance."""
        if self.log_var is None:
            return None
        var = torch.exp(self.log_var)
        if self.factor is not None:
            var = var + (self.factor**2).sum(-1)
        return torch.sqrt(var)

    def scaled(self, diag: float = 1.0, factor: float = 1.0) -> MappingOutput:
        """The same mean with the diagonal std multiplied by ``diag`` and the covariance factor
        by ``factor`` (the covariance becomes ``diag**2 D + factor**2 F F^T``)."""
        if self.log_var is None:
            return self
        log_var = self.log_var + 2 * math.log(diag)
        fac = None if self.factor is None else self.factor * factor
        return MappingOutput(self.mean, log_var, fac)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``(n, B, T, C, H, W)`` of the predicted Gaussian: the diagonal part
        independently per pixel, the low-rank part (``factor``) with ``R`` shared normal weights
        per sample, so that its errors are coherent over the whole patch."""
        if self.log_var is None:
            raise UserInputError("sample: the model predicts no variance (log_var)")
        shape = (n, *self.mean.shape)
        z = torch.randn(shape, generator=generator, dtype=self.mean.dtype)
        draws = self.mean + torch.exp(0.5 * self.log_var) * z.to(self.mean.device)
        if self.factor is not None:
            rank = self.factor.shape[-1]
            w = torch.randn((n, self.mean.shape[0], rank), generator=generator)
            w = w.to(self.mean.device, self.mean.dtype)
            draws = draws + torch.einsum("btchwr,nbr->nbtchw", self.factor, w)
        return draws


def clamp_log_var(raw: Tensor, min_log_var: float, max_log_var: float) -> Tensor:
    """Clamp a raw log-variance so that ``exp(-log_var)`` in the likelihood never overflows."""
    return raw.clamp(min_log_var, max_log_var)


class ScaledUncertainty(nn.Module):
    """A mapping model whose predicted uncertainty is rescaled after training.

    The scales are fitted on held-out data (:func:`geodl.training.calibration.fit_std_scales`)
    and travel with the checkpoint; keeping them in a wrapper leaves the trained model itself,
    and its weights, as they were trained.
    """

    def __init__(self, model: nn.Module, diag: float = 1.0, factor: float = 1.0) -> None:
        super().__init__()
        self.model, self.diag, self.factor = model, float(diag), float(factor)

    def forward(self, *args: Tensor) -> MappingOutput:
        return self.model(*args).scaled(self.diag, self.factor)
