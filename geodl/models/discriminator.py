"""Discriminators for gridded fields: a patch GAN (Isola et al. 2017) and a judge of their power
spectra."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from geodl.errors import UserInputError
from geodl.models.blocks import check_padding
from geodl.models.checks import check_grid, check_positive

__all__ = ["PatchDiscriminator", "SpectrumDiscriminator", "radial_log_spectrum"]


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


def radial_log_spectrum(x: Tensor, n_bins: int, k_min: float = 0.0) -> Tensor:
    """Isotropic log10 power spectrum of each field: ``(..., H, W) -> (..., n_bins)``.

    .. math:: S_b = \\log_{10}\\Big(\\varepsilon + \\operatorname{mean}_{|k| \\in b}
              |\\hat x(k)|^2 / (H W)\\Big)

    over ``n_bins`` equal annuli ``k_min + (j, j + 1] w``, ``w = (0.5 - k_min) / n_bins``, of the
    wavenumber magnitude ``|k|`` (cycles per cell) up to the Nyquist wavenumber 0.5; the mean
    (``k = 0``) is left out; ``epsilon = 1e-10``. Each annulus holds a wavenumber when
    ``w >= 1 / min(H, W)``. Differentiable (``torch.fft``).

    Examples
    --------
    >>> import math, torch
    >>> xx = torch.arange(32.0)
    >>> wave = torch.sin(2 * math.pi * 8 * xx / 32).expand(32, 32)  # |k| = 0.25
    >>> int(radial_log_spectrum(wave, 8).argmax())  # annulus (0.1875, 0.25]
    3
    >>> int(radial_log_spectrum(wave, 4, k_min=0.125).argmax())  # (0.21875, 0.3125]
    1
    """
    h, w = x.shape[-2:]
    if not 0.0 <= k_min < 0.5:
        raise UserInputError(
            f"radial_log_spectrum: k_min={k_min} must lie in [0, 0.5) cycles per cell"
        )
    width = (0.5 - k_min) / n_bins if n_bins > 0 else 0.0
    if n_bins <= 0 or width * min(h, w) < 1 - 1e-9:
        most = int((0.5 - k_min) * min(h, w) + 1e-9)
        raise UserInputError(
            f"radial_log_spectrum: n_bins={n_bins} annuli above k_min={k_min:g} need fields of "
            f"at least {math.ceil(n_bins / (0.5 - k_min))} cells a side, got {h} x {w} (at most "
            f"{most} annuli fit)"
        )
    power = torch.fft.rfft2(x, norm="ortho").abs().pow(2)  # (..., H, W // 2 + 1)
    ky = torch.fft.fftfreq(h, device=x.device)
    kx = torch.fft.rfftfreq(w, device=x.device)
    k = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)  # (H, W // 2 + 1)
    # annulus j holds k_min + (j, j + 1] w; index n_bins: the rest (k <= k_min, |k| > 0.5)
    band = torch.ceil((k - k_min) / width - 1e-6).long() - 1
    inside = (k > k_min) & (k > 0) & (band < n_bins)
    band = torch.where(inside, band, torch.full_like(band, n_bins))
    onehot = torch.nn.functional.one_hot(band.flatten(), n_bins + 1)[:, :n_bins].to(power.dtype)
    mean = power.flatten(-2) @ onehot / onehot.sum(0)  # (..., n_bins)
    return torch.log10(mean + 1e-10)


class SpectrumDiscriminator(nn.Module):
    """Judges fields by their isotropic power spectra: ``(B, T, C, H, W) -> logits (B,)``.

    Why beside the patch GAN: MSE-trained maps lack energy at small scales, and a discriminator
    that sees only :func:`radial_log_spectrum` of each time and channel can push that energy up
    without judging (or rewarding) any particular small-scale pattern. The spectra of the
    ``n_times`` x ``in_channels`` fields are concatenated and judged by a three-layer MLP.
    ``k_min`` (cycles per cell) keeps the annuli above it: the scales that observations leave
    unconstrained, while the point-wise loss keeps the larger ones.

    Examples
    --------
    >>> import torch
    >>> SpectrumDiscriminator(2, 3, n_bins=8, width=16)(torch.randn(4, 3, 2, 16, 16)).shape
    torch.Size([4])
    """

    def __init__(
        self,
        in_channels: int,
        n_times: int,
        *,
        n_bins: int = 16,
        width: int = 64,
        k_min: float = 0.0,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        check_positive(
            "SpectrumDiscriminator",
            in_channels=in_channels,
            n_times=n_times,
            n_bins=n_bins,
            width=width,
        )
        self.in_channels = in_channels
        self.n_times = n_times
        self.n_bins = n_bins
        self.k_min = float(k_min)
        wrap = _spectral_norm if spectral_norm else (lambda m: m)
        self.net = nn.Sequential(
            wrap(nn.Linear(in_channels * n_times * n_bins, width)),
            nn.LeakyReLU(0.2),
            wrap(nn.Linear(width, width)),
            nn.LeakyReLU(0.2),
            wrap(nn.Linear(width, 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        check_grid(
            x,
            "x",
            "SpectrumDiscriminator.forward",
            channels=self.in_channels,
            times=self.n_times,
            multiple=1,
        )
        spectra = radial_log_spectrum(x, self.n_bins, self.k_min)  # (B, T, C, n_bins)
        return self.net(spectra.flatten(1))[:, 0]  # (B,)
