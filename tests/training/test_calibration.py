"""Validation scaling of predicted uncertainty (:mod:`geodl.training.calibration`)."""

from __future__ import annotations

import pytest
import torch

from geodl.errors import DataError
from geodl.losses import lowrank_gaussian_nll
from geodl.models.outputs import MappingOutput, ScaledUncertainty
from geodl.training.calibration import fit_std_scales


def test_diagonal_scale_is_the_rms_z_score():
    gen = torch.Generator().manual_seed(0)
    mean = torch.zeros(4, 3, 1, 8, 8)
    target = 2.5 * torch.randn(mean.shape, generator=gen)  # errors 2.5x the predicted std of 1
    mask = torch.rand(mean.shape, generator=gen) < 0.8
    out = MappingOutput(mean, torch.zeros_like(mean))
    scales = fit_std_scales([out], [target], [mask])
    assert scales["factor"] == 1.0
    assert scales["diag"] == pytest.approx(2.5, rel=0.05)
    z = (target - mean) / out.scaled(**scales).std
    assert float((z[mask] ** 2).mean()) == pytest.approx(1.0, rel=1e-4)


def test_low_rank_scales_recover_a_mis_sized_covariance():
    """Errors drawn from diag(0.04) + F F^T; the model predicts a diagonal std twice too large and
    a factor half too small: the fitted scales undo both (0.5 and 2)."""
    gen = torch.Generator().manual_seed(1)
    shape = (400, 2, 1, 6, 6)
    factor = torch.randn((*shape, 2), generator=gen, dtype=torch.float64)
    log_var = torch.full(shape, float(torch.log(torch.tensor(0.04))), dtype=torch.float64)
    truth = MappingOutput(torch.zeros(shape, dtype=torch.float64), log_var, factor)
    target = truth.sample(1, generator=gen)[0]
    model = MappingOutput(truth.mean, log_var + 2 * torch.log(torch.tensor(2.0)), factor / 2)
    mask = torch.ones(shape, dtype=torch.bool)
    scales = fit_std_scales([model], [target], [mask])
    assert scales["diag"] == pytest.approx(0.5, rel=0.08)
    assert scales["factor"] == pytest.approx(2.0, rel=0.08)
    z2 = (target - model.mean) ** 2 / model.scaled(**scales).std ** 2
    assert float(z2.mean()) == pytest.approx(1.0, rel=1e-6)  # marginally calibrated


def test_the_factor_scale_maximises_the_joint_likelihood_among_calibrated_pairs():
    """The coherent part of the errors is real (drawn from F F^T): the fit keeps a factor scale
    near the truth's, and scores a higher joint likelihood than the factor switched off."""
    gen = torch.Generator().manual_seed(3)
    shape = (200, 2, 1, 6, 6)
    factor = torch.randn((*shape, 2), generator=gen, dtype=torch.float64) / 3
    log_var = torch.full(shape, float(torch.log(torch.tensor(0.04))), dtype=torch.float64)
    truth = MappingOutput(torch.zeros(shape, dtype=torch.float64), log_var, factor)
    target = truth.sample(1, generator=gen)[0]
    mask = torch.ones(shape, dtype=torch.bool)
    scales = fit_std_scales([truth], [target], [mask])
    assert scales["factor"] == pytest.approx(1.0, rel=0.15)

    def nll(s):
        o = truth.scaled(**s)
        return float(
            lowrank_gaussian_nll(
                o.mean.flatten(1),
                target.flatten(1),
                factor=o.factor.flatten(1, -2),
                log_diag=o.log_var.flatten(1),
            )
        )

    off = {"diag": float(((target**2) / torch.exp(log_var)).mean().sqrt()), "factor": 1e-9}
    assert nll(scales) < nll(off) - 0.01


def test_a_far_too_wide_factor_is_shrunk_on_large_patches():
    """Patches of N = 118784 entries (29 x 64 x 64), errors from the diagonal part alone, a factor as large as the
    errors themselves pointing nowhere useful: the joint likelihood's slope in the factor's scale
    is O(R / N) per entry, and the fit must still find the small scale it prefers (it stayed at
    1.000 before the objective was summed per patch)."""
    gen = torch.Generator().manual_seed(2)
    shape = (3, 29, 1, 64, 64)  # the quick twin's patches
    log_var = torch.full(shape, float(torch.log(torch.tensor(0.04))), dtype=torch.float64)
    target = 0.2 * torch.randn(shape, generator=gen, dtype=torch.float64)
    factor = 0.2 * torch.randn((*shape, 4), generator=gen, dtype=torch.float64)
    model = MappingOutput(torch.zeros(shape, dtype=torch.float64), log_var, factor)
    mask = torch.ones(shape, dtype=torch.bool)
    scales = fit_std_scales([model], [target], [mask])
    assert scales["factor"] < 0.2
    assert scales["diag"] == pytest.approx(1.0, abs=0.03)
    z = (target / model.scaled(**scales).std).abs()
    assert float((z < 1.0).double().mean()) == pytest.approx(0.683, abs=0.02)


def test_refusals():
    m = torch.zeros(1, 1, 1, 2, 2)
    with pytest.raises(DataError, match="log_var"):
        fit_std_scales([MappingOutput(m)], [m], [m.bool()])
    with pytest.raises(DataError, match="no entry"):
        fit_std_scales([MappingOutput(m, m)], [m], [torch.zeros_like(m, dtype=torch.bool)])


def test_wrapper_scales_std_and_factor_and_keeps_the_mean():
    class Fixed(torch.nn.Module):
        def forward(self, obs, mask):
            f = torch.ones((*obs.shape, 1))
            return MappingOutput(obs + 1, torch.zeros_like(obs), f)

    x = torch.zeros(1, 1, 1, 2, 2)
    out = ScaledUncertainty(Fixed(), diag=3.0, factor=2.0)(x, x)
    torch.testing.assert_close(out.mean, x + 1)
    torch.testing.assert_close(out.std, torch.full_like(x, (9.0 + 4.0) ** 0.5))
    assert MappingOutput(x).scaled(2.0, 2.0).log_var is None
