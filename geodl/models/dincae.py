"""DINCAE-like likelihood autoencoder: observations -> Gaussian mean and log-variance per pixel."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geodl.errors import UserInputError
from geodl.models.blocks import PaddedConv, check_padding
from geodl.models.checks import check_grid, check_positive, masked_input
from geodl.models.outputs import MappingOutput, clamp_log_var
from geodl.models.unet import UNetCore, aux_input

__all__ = ["DINCAE"]


class DINCAE(nn.Module):
    """Convolutional autoencoder with skip connections and a Gaussian output (Barth et al. 2020).

    ``forward(obs, obs_mask=None, aux=None) -> MappingOutput`` with ``mean`` and ``log_var``, both
    ``(B, T, C, H, W)``. Time is used as channels: the model reshapes ``(B, T, C, H, W)`` to
    ``(B, T*2C, H, W)`` (observations with zeros at gaps, and the mask), as DINCAE stacks neighbouring
    days, so ``n_times`` is fixed at construction. ``aux`` ``(B, T, Ca, H, W)`` (predictors such as
    SST, static fields, the land mask; DINCAE's auxiliary fields) adds ``T*Ca`` input channels. Train it with
    :func:`geodl.losses.gaussian_nll`.

    Why the log-variance is clamped: the likelihood divides by ``exp(log_var)``; an unbounded head
    drives it to 0 on well-fitted pixels and the loss to -inf (Barth et al. 2020 bound it likewise).

    Parameters
    ----------
    in_channels, n_times : int
        C and T of the input.
    depth, width : int
        Levels and first-level channels of the encoder-decoder; H, W divisible by ``2**depth``.
    padding : {"zeros", "circular"}
        Padding in (y, x).
    min_log_var, max_log_var : float
        Bounds of the predicted log-variance (in units of the normalised field squared).
    aux_channels : int
        Channels Ca of ``aux``; 0 (the default) builds exactly the model without them.
    rank : int
        With ``rank > 0``, a third head predicts a low-rank covariance factor ``(B, T, C, H, W,
        rank)`` (``MappingOutput.factor``): the error covariance over the patch is
        ``diag(exp(log_var)) + F F^T``, trained with :func:`geodl.losses.lowrank_gaussian_nll`
        (loss term ``lowrank_nll``), whose samples (:meth:`MappingOutput.sample`) are maps with
        spatially coherent errors (Dorta et al. 2018). 0: the diagonal model.

    References
    ----------
    Dorta, G., Vicente, S., Agapito, L., Campbell, N. D. F., Simpson, I. (2018). Structured
    uncertainty prediction networks. CVPR.
    Barth, A., Alvera-Azcárate, A., Licer, M., Beckers, J.-M. (2020). DINCAE 1.0: a convolutional
    neural network with error estimates to reconstruct sea surface temperature satellite
    observations. Geosci. Model Dev. 13, 1609-1622.

    Examples
    --------
    >>> import torch
    >>> out = DINCAE(1, 3, depth=2, width=8)(torch.zeros(2, 3, 1, 16, 16))
    >>> out.mean.shape, out.log_var.shape
    (torch.Size([2, 3, 1, 16, 16]), torch.Size([2, 3, 1, 16, 16]))
    """

    FACTOR_INIT = 1e-2  # the factor head's initial weights, times the default init

    def __init__(
        self,
        in_channels: int,
        n_times: int,
        *,
        depth: int = 3,
        width: int = 32,
        padding: str = "zeros",
        act: str = "relu",
        min_log_var: float = -10.0,
        max_log_var: float = 5.0,
        aux_channels: int = 0,
        rank: int = 0,
    ) -> None:
        super().__init__()
        check_padding(padding, "DINCAE")
        if aux_channels < 0:
            raise UserInputError(f"DINCAE: aux_channels must be >= 0, got {aux_channels}")
        check_positive(
            "DINCAE", in_channels=in_channels, n_times=n_times, depth=depth + 1, width=width
        )
        self.in_channels = in_channels
        self.n_times = n_times
        self.depth = depth
        self.min_log_var = min_log_var
        self.max_log_var = max_log_var
        self.aux_channels = aux_channels
        self.core = UNetCore(
            (2 * in_channels + aux_channels) * n_times,
            depth=depth,
            width=width,
            ndim=2,
            padding=padding,
            act=act,
        )
        self.mean_head = PaddedConv(width, in_channels * n_times, 1)
        self.log_var_head = PaddedConv(width, in_channels * n_times, 1)
        if rank < 0:
            raise UserInputError(f"DINCAE: rank must be >= 0, got {rank}")
        self.rank = rank
        if rank:  # only then: rank 0 keeps the state dict of the diagonal model
            self.factor_head = PaddedConv(width, in_channels * n_times * rank, 1)
            # Started small: the joint likelihood hardly penalises a factor that is too large (R
            # log-determinant terms per patch against N per-pixel terms), so one born at the
            # default init's size stays far too wide (measured: marginal factor variance 4x the
            # squared error after 7 epochs). Near zero, the factor grows only along directions
            # where the residual exceeds the diagonal noise.
            with torch.no_grad():
                for p in self.factor_head.parameters():
                    p.mul_(self.FACTOR_INIT)

    def forward(
        self, obs: Tensor, obs_mask: Tensor | None = None, aux: Tensor | None = None
    ) -> MappingOutput:
        check_grid(
            obs,
            "obs",
            "DINCAE.forward",
            channels=self.in_channels,
            times=self.n_times,
            multiple=2**self.depth,
        )
        y, m = masked_input(obs, obs_mask, "DINCAE.forward")  # (B, T, C, H, W)
        a = aux_input(aux, y, self.aux_channels, "DINCAE.forward")  # (B, T, Ca, H, W) or None
        shape = y.shape
        b, _, _, h, w = shape
        x = torch.cat([y, m] if a is None else [y, m, a], dim=2)  # (B, T, 2C [+ Ca], H, W)
        features = self.core(x.reshape(b, -1, h, w))  # (B, width, H, W)
        mean = self.mean_head(features).reshape(shape)
        log_var = clamp_log_var(self.log_var_head(features), self.min_log_var, self.max_log_var)
        factor = None
        if self.rank:
            raw = self.factor_head(features).reshape(b, *shape[1:3], self.rank, h, w)
            factor = raw.permute(0, 1, 2, 4, 5, 3) / self.rank**0.5  # (B, T, C, H, W, R)
        return MappingOutput(mean, log_var.reshape(shape), factor)
