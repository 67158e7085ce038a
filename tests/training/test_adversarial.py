"""Adversarial training (geodl.training.AdversarialTaskModule): a tiny GAN learns a known 1-D
distribution; a spectrum discriminator teaches a generator the truth's small-scale energy; the R1
penalty; the checkpoint holds the generator as any geodl model file."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from geodl.training import (
    AdversarialTaskModule,
    TrainSection,
    fit,
    load_checkpoint,
    load_model_weights,
    r1_penalty,
)

MEAN, STD = 3.0, 0.5


def _mlp(n_in: int, n_out: int, sn: bool = False) -> nn.Module:
    wrap = nn.utils.parametrizations.spectral_norm if sn else (lambda m: m)
    return nn.Sequential(
        wrap(nn.Linear(n_in, 32)), nn.LeakyReLU(0.2), wrap(nn.Linear(32, 32)), nn.LeakyReLU(0.2),
        wrap(nn.Linear(32, n_out)),
    )  # fmt: skip


def _fields(model, batch):
    (real,) = batch
    fake = model(torch.randn(real.shape[0], 4))
    return {"loss": 0.0 * fake.sum()}, real, fake  # no supervised term: the adversarial one alone


def _gan(tmp_path, **kw):
    torch.manual_seed(0)
    real = MEAN + STD * torch.randn(4096, 1, generator=torch.Generator().manual_seed(1))
    spec = TrainSection(max_epochs=12, batch_size=128, lr=2e-3, progress_bar=False, seed=0)
    gen = _mlp(4, 1)
    module = AdversarialTaskModule(
        gen, _fields, spec, discriminator=_mlp(1, 1, sn=True), weight=1.0, **kw
    )
    result = fit(
        module, TensorDataset(real), None, spec,
        ckpt_dir=tmp_path / "ckpt", log_dir=tmp_path / "logs", key="gan",
    )  # fmt: skip
    return gen, result


def test_a_tiny_gan_learns_a_known_1d_distribution(tmp_path):
    gen, result = _gan(tmp_path, r1_weight=1.0)
    with torch.no_grad():
        x = gen(torch.randn(20000, 4, generator=torch.Generator().manual_seed(2)))[:, 0].numpy()
    torch.manual_seed(0)
    start = _mlp(4, 1)  # the generator before training (the same initial weights)
    with torch.no_grad():
        x0 = start(torch.randn(20000, 4))[:, 0].numpy()
    assert abs(x0.mean() - MEAN) > 2.0  # it started far from the target
    print(f"generated mean {x.mean():.3f} std {x.std():.3f} (target {MEAN}, {STD})")
    assert abs(x.mean() - MEAN) < 0.2, x.mean()
    assert 0.6 * STD < x.std() < 1.4 * STD, x.std()
    # the checkpoint is a geodl model file whose model.* weights are the generator's
    ckpt = load_checkpoint(result.last_path)
    assert any(k.startswith("discriminator.") for k in ckpt["state_dict"])
    copy = load_model_weights(_mlp(4, 1), ckpt)
    z = torch.randn(5, 4)
    torch.testing.assert_close(copy(z), gen(z))


def test_r1_penalty_is_the_squared_input_gradient():
    d = nn.Sequential(nn.Linear(2, 1))
    x = torch.randn(7, 2)
    w = d[0].weight.detach()
    assert np.isclose(r1_penalty(d, x).item(), float(w.pow(2).sum()))
    quad = lambda v: (v**2).sum(1, keepdim=True)  # noqa: E731  grad 2x
    assert np.isclose(float(r1_penalty(quad, x)), float((2 * x).pow(2).sum(1).mean()), rtol=1e-5)


class _NoisyGenerator(nn.Module):
    """A smooth random field plus white noise of a learned amplitude (starting at 0.05)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_amp = nn.Parameter(torch.tensor(np.log(0.05), dtype=torch.float32))

    def forward(self, smooth: torch.Tensor) -> torch.Tensor:
        return smooth + self.log_amp.exp() * torch.randn_like(smooth)


def _smooth(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 1, 1, 16, 16) fields of large scales only (a 5 x 5 box filter of white noise)."""
    w = torch.randn(n, 1, 20, 20, generator=gen)
    return nn.functional.avg_pool2d(w, 5, stride=1)[:, None]  # (n, 1, 1, 16, 16)


def test_a_spectrum_discriminator_teaches_the_small_scale_energy(tmp_path):
    """Trained against a :class:`~geodl.models.SpectrumDiscriminator` alone, a generator that
    adds white noise of a learned amplitude to smooth fields finds the truth's amplitude (0.5):
    the spectra's high-wavenumber plateau is all that tells the two apart."""
    from geodl.models import SpectrumDiscriminator

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    smooth = _smooth(2048, g)
    real = smooth + 0.5 * torch.randn(smooth.shape, generator=g)

    def fields(model, batch):
        (s, r) = batch
        fake = model(s)
        return {"loss": 0.0 * fake.sum()}, r, fake

    gen = _NoisyGenerator()
    spec = TrainSection(
        max_epochs=12, batch_size=64, lr=5e-2, schedule="cosine", progress_bar=False, seed=0
    )  # a decaying rate settles the GAN's oscillation about the truth (0.37-0.73 at a fixed one)
    disc = SpectrumDiscriminator(1, 1, n_bins=8, width=32, spectral_norm=True)
    module = AdversarialTaskModule(
        gen, fields, spec, discriminator=disc, weight=1.0, d_lr=2e-3, r1_weight=1.0
    )
    fit(
        module, TensorDataset(_smooth(2048, g), real), None, spec,
        ckpt_dir=tmp_path / "ckpt", log_dir=tmp_path / "logs", key="spec",
    )  # fmt: skip
    amp = float(gen.log_amp.detach().exp())
    print(f"learned noise amplitude {amp:.3f} (truth 0.5, start 0.05)")
    assert 0.4 < amp < 0.6, amp
