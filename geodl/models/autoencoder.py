"""Convolutional autoencoders on gridded fields: plain, denoising and variational."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geodl.errors import UserInputError
from geodl.models.blocks import ConvBlock, PaddedConv, check_padding
from geodl.models.checks import check_grid, check_positive
from geodl.ranks import randn_like

__all__ = ["AutoencoderOutput", "ConvAutoencoder"]

KINDS = ("plain", "denoising", "variational")


@dataclass(frozen=True)
class AutoencoderOutput:
    """Reconstruction ``(B, T, C, H, W)``, latent sample, and (variational) latent Gaussian parameters.

    Train a variational autoencoder with a reconstruction loss plus
    ``geodl.losses.gaussian_kl(latent_mean, latent_log_var)``.
    """

    reconstruction: Tensor
    latent: Tensor
    latent_mean: Tensor | None = None
    latent_log_var: Tensor | None = None


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder; time is used as channels (reshaped inside, ``n_times`` fixed).

    ``forward(x) -> AutoencoderOutput`` for ``x`` ``(B, T, C, H, W)``. The latent grid is
    ``(B, latent_channels, H / 2**depth, W / 2**depth)``.

    ``kind="denoising"`` adds Gaussian noise of std ``noise_std`` to the input in training mode
    only; ``kind="variational"`` samples the latent by the reparameterisation trick in training mode
    and uses the latent mean in evaluation mode.

    Examples
    --------
    >>> import torch
    >>> ae = ConvAutoencoder(1, 2, kind="variational", depth=1, width=8)
    >>> ae(torch.zeros(3, 2, 1, 8, 8)).reconstruction.shape
    torch.Size([3, 2, 1, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        n_times: int,
        *,
        kind: str = "plain",
        depth: int = 2,
        width: int = 32,
        latent_channels: int = 8,
        noise_std: float = 0.1,
        padding: str = "zeros",
        act: str = "relu",
    ) -> None:
        super().__init__()
        check_padding(padding, "ConvAutoencoder")
        check_positive("ConvAutoencoder", in_channels=in_channels, n_times=n_times, width=width)
        if kind not in KINDS:
            raise UserInputError(f"ConvAutoencoder: kind={kind!r}, expected one of {list(KINDS)}")
        self.in_channels = in_channels
        self.n_times = n_times
        self.kind = kind
        self.depth = depth
        self.noise_std = noise_std
        k = in_channels * n_times
        self.encoder = nn.ModuleList(
            ConvBlock(k if i == 0 else width, width, padding=padding, act=act)
            for i in range(depth + 1)
        )
        n_latent = latent_channels * (2 if kind == "variational" else 1)
        self.to_latent = PaddedConv(width, n_latent, 1)
        self.from_latent = PaddedConv(latent_channels, width, 1)
        self.decoder = nn.ModuleList(
            ConvBlock(width, width, padding=padding, act=act) for _ in range(depth)
        )
        self.out = PaddedConv(width, k, 1)

    def encode(self, x: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` -> latent features (for ``variational``: mean and log-variance stacked
        on the channel axis)."""
        h = x.reshape(x.shape[0], -1, *x.shape[-2:])  # (B, T*C, H, W)
        for i, block in enumerate(self.encoder):
            h = block(h if i == 0 else F.avg_pool2d(h, 2))
        return self.to_latent(h)

    def decode(self, z: Tensor) -> Tensor:
        """Latent ``(B, L, h, w)`` -> ``(B, T, C, H, W)``."""
        h = self.from_latent(z)
        for block in self.decoder:
            h = block(F.interpolate(h, scale_factor=2, mode="nearest"))
        out = self.out(h)
        return out.reshape(out.shape[0], self.n_times, self.in_channels, *out.shape[-2:])

    def forward(self, x: Tensor) -> AutoencoderOutput:
        check_grid(
            x,
            "x",
            "ConvAutoencoder.forward",
            channels=self.in_channels,
            times=self.n_times,
            multiple=2**self.depth,
        )
        if torch.isnan(x).any():
            raise UserInputError(
                "ConvAutoencoder.forward: x contains NaN; fill gaps first (e.g. with a mapping model "
                "or torch.nan_to_num) since an autoencoder has no mask input"
            )
        if self.kind == "denoising" and self.training:
            x = x + self.noise_std * randn_like(x)
        z = self.encode(x)
        if self.kind != "variational":
            return AutoencoderOutput(self.decode(z), z)
        mean, log_var = z.chunk(2, dim=1)
        log_var = log_var.clamp(-10.0, 10.0)
        latent = mean + torch.exp(0.5 * log_var) * randn_like(mean) if self.training else mean
        return AutoencoderOutput(self.decode(latent), latent, mean, log_var)
