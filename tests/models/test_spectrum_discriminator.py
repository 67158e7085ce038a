"""The spectrum discriminator and its isotropic log spectrum (geodl.models.discriminator)."""

from __future__ import annotations

import math

import pytest
import torch

from geodl.errors import UserInputError
from geodl.models import SpectrumDiscriminator, build_model
from geodl.models.discriminator import radial_log_spectrum


def test_the_spectrum_of_a_wave_peaks_in_its_annulus_and_keeps_parseval():
    n = 32
    yy, xx = torch.meshgrid(torch.arange(n * 1.0), torch.arange(n * 1.0), indexing="ij")
    for ky, kx in ((0, 4), (3, 4), (8, 0)):  # |k| = 4, 5, 8 cycles per 32 cells
        wave = torch.cos(2 * math.pi * (ky * yy + kx * xx) / n)
        s = radial_log_spectrum(wave, 16)  # annuli of 1/32 cycles per cell
        assert int(s.argmax()) == round(math.hypot(ky, kx)) - 1, (ky, kx, s)  # (j, j+1]/32
    # white noise: a flat spectrum at the variance (ortho FFT, per wavenumber)
    noise = torch.randn(64, n, n, generator=torch.Generator().manual_seed(0)) * 2.0
    flat = 10 ** radial_log_spectrum(noise, 8).mean(0)
    torch.testing.assert_close(flat, torch.full((8,), 4.0), rtol=0.1, atol=0)


def test_the_mean_does_not_enter_the_spectrum():
    x = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(radial_log_spectrum(x + 5.0, 8), radial_log_spectrum(x, 8))


@pytest.mark.parametrize(
    ("kw", "shape"),
    [
        ({"in_channels": 1, "n_times": 1, "n_bins": 4, "width": 8}, (2, 1, 1, 8, 8)),
        (
            {"in_channels": 2, "n_times": 3, "n_bins": 16, "width": 32, "spectral_norm": True},
            (5, 3, 2, 32, 48),
        ),
    ],
)
def test_constructor_and_gradient_in_two_configurations(kw, shape):
    torch.manual_seed(0)
    disc = build_model("spectrum_discriminator", **kw)
    x = torch.randn(shape, requires_grad=True)
    out = disc(x)
    assert out.shape == (shape[0],)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_errors_are_one_line():
    disc = SpectrumDiscriminator(1, 2, n_bins=8, width=8)
    with pytest.raises(
        UserInputError,
        match=r"n_bins=8 annuli above k_min=0 need fields of at least 16 cells a side, got 8 x 32 \(at most 4",
    ):
        disc(torch.zeros(1, 2, 1, 8, 32))
    with pytest.raises(UserInputError, match="k_min=0.5 must lie in"):
        radial_log_spectrum(torch.zeros(16, 16), 2, k_min=0.5)
    with pytest.raises(UserInputError, match="expected 2 in"):
        disc(torch.zeros(1, 3, 1, 16, 16))
    with pytest.raises(UserInputError, match="n_bins"):
        SpectrumDiscriminator(1, 2, n_bins=0)


def test_k_min_keeps_the_annuli_above_it():
    """Above ``k_min`` the annuli are those of the full range cut to it: a wave below it is
    not seen, one above it lands in its annulus."""
    n = 64
    xx = torch.arange(n * 1.0).expand(n, n)
    low, high = (torch.cos(2 * math.pi * k * xx / n) for k in (8, 24))  # 0.125, 0.375
    s_low, s_high = (radial_log_spectrum(f, 8, k_min=0.25) for f in (low, high))  # w = 1/32
    assert float(s_low.max()) < -8  # nothing above 0.25 but round-off
    assert int(s_high.argmax()) == 3  # (0.34375, 0.375]
    torch.testing.assert_close(
        radial_log_spectrum(high, 16)[8:], radial_log_spectrum(high, 8, k_min=0.25)
    )
