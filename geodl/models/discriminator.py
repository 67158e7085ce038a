"""Patch GAN discriminator for gridded fields (Isola et al. 2017)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from geodl.models.blocks import check_padding
from geodl.models.checks import check_grid, check_positive

__all__ = ["PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """Patch GAN: ``(B, T, C, H, W) -> logits (B, H / 2**n_layers, W / 2**n_layers)``.

    Each logit judges one receptive-field patch as real (large) or generated (small); use with
    :func:`geodl.losses.adversarial_generator_loss` and
    :func:`geodl.losses.adversarial_discriminator_loss`. Time is used as channels (reshaped inside,
    ``n_times`` fixed) so that the discriminator also judges temporal consistency.

    Examples
    --------
    >>> import torch
    >>> PatchDiscriminator(1, 2, width=8, n_layers=2)(torch.zeros(3, 2, 1, 16, 16)).shape
    torch.Size([3, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        n_times: int,
        *,
        width: int = 32,
        n_layers: int = 3,
        padding: str = "zeros",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        check_padding(padding, "PatchDiscriminator")
        check_positive(
            "PatchDiscriminator", in_channels=in_channels, n_times=n_times, n_layers=n_layers
        )
        self.in_channels = in_channels
        self.n_times = n_times
        self.n_layers = n_layers
        wrap = _spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        c_in = in_channels * n_times
        for i in range(n_layers):
            c_out = width * 2 ** min(i, 3)
            layers += [
                wrap(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, padding_mode=padding)),
                nn.LeakyReLU(0.2),
            ]
            c_in = c_out
        layers.append(wrap(nn.Conv2d(c_in, 1, 3, padding=1, padding_mode=padding)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        check_grid(
            x,
            "x",
            "PatchDiscriminator.forward",
            channels=self.in_channels,
            times=self.n_times,
            multiple=2**self.n_layers,
        )
        b = x.shape[0]
        return self.net(x.reshape(b, -1, *x.shape[-2:]))[:, 0]  # (B, h, w)
