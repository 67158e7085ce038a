"""What mapping models return: a small frozen dataclass with ``mean`` and an optional ``log_var``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MappingOutput", "clamp_log_var"]


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
    """

    mean: Tensor
    log_var: Tensor | None = None

    @property
    def std(self) -> Tensor | None:
        """Predicted standard deviation ``exp(log_var / 2)``, or None."""
        return None if self.log_var is None else torch.exp(0.5 * self.log_var)


def clamp_log_var(raw: Tensor, min_log_var: float, max_log_var: float) -> Tensor:
    """Clamp a raw log-variance so that ``exp(-log_var)`` in the likelihood never overflows."""
    return raw.clamp(min_log_var, max_log_var)
