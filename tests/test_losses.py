"""Losses: minimal at perfect prediction, masked entries have no influence, NLL at the true variance."""

from __future__ import annotations

import math

import pytest
import torch

from geodl import losses as L
from geodl.errors import UserInputError


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waiting on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


POINTWISE = [L.mse, L.mae, L.lp, L.huber, L.gradient_loss]


def _fields(seed=0, shape=(2, 3, 1, 8, 8)):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)


@pytest.mark.parametrize("loss", POINTWISE)
def test_zero_at_perfect_prediction(loss):
    _, target = _fields()
    assert float(loss(target.clone(), target)) == pytest.approx(0.0, abs=1e-12)
    pred, _ = _fields(1)
    assert float(loss(pred, target)) > 0


@pytest.mark.parametrize("loss", POINTWISE)
def test_masked_entries_have_no_influence(loss):
    pred, target = _fields()
    mask = torch.rand(target.shape, generator=torch.Generator().manual_seed(3)) > 0.3
    nan_target = torch.where(mask, target, torch.full_like(target, float("nan")))
    other_pred = torch.where(mask, pred, torch.full_like(pred, 1e6))
    p1 = pred.clone().requires_grad_(True)
    v1 = loss(p1, nan_target, mask=mask)
    v2 = loss(other_pred, target, mask=mask)
    torch.testing.assert_close(v1, v2)
    v1.backward()
    assert torch.isfinite(p1.grad).all()
    if loss is not L.gradient_loss:
        assert (p1.grad[~mask] == 0).all()


@pytest.mark.parametrize("loss", POINTWISE)
def test_nan_without_mask_is_an_error(loss):
    pred, target = _fields()
    target[0, 0, 0, 4, 4] = float("nan")
    with pytest.raises(UserInputError, match="NaN"):
        loss(pred, target)


def test_weights_weight_entries():
    pred = torch.tensor([1.0, 3.0])
    target = torch.zeros(2)
    assert float(L.mse(pred, target, weights=torch.tensor([1.0, 0.0]))) == 1.0
    assert float(L.mse(pred, target, weights=torch.tensor([1.0, 1.0]))) == 5.0
    assert float(L.mae(pred, target, weights=torch.tensor([3.0, 1.0]))) == pytest.approx(1.5)


def test_known_values():
    pred, target = torch.tensor([0.0, 3.0]), torch.zeros(2)
    assert float(L.lp(pred, target, p=3)) == pytest.approx(13.5)
    assert float(L.huber(pred, target, delta=1.0)) == pytest.approx((3 - 0.5) / 2)


def test_empty_mask_is_an_error():
    with pytest.raises(UserInputError, match="selects no entries"):
        L.mse(torch.zeros(3), torch.zeros(3), mask=torch.zeros(3, dtype=torch.bool))


def test_shape_mismatch_and_bad_broadcast():
    with pytest.raises(UserInputError, match="must match"):
        L.mse(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(UserInputError, match="does not broadcast"):
        L.mse(torch.zeros(2, 3), torch.zeros(2, 3), weights=torch.ones(2))


def test_bad_parameters():
    with pytest.raises(UserInputError, match="p must be > 0"):
        L.lp(torch.zeros(2), torch.zeros(2), p=0)
    with pytest.raises(UserInputError, match="delta must be > 0"):
        L.huber(torch.zeros(2), torch.zeros(2), delta=-1)


def test_gradient_loss_sees_gradients_not_offsets():
    _, target = _fields()
    assert float(L.gradient_loss(target + 5.0, target)) == pytest.approx(0.0, abs=1e-10)
    ramp = torch.arange(8.0).expand(8, 8)
    assert float(L.gradient_loss(ramp, torch.zeros(8, 8))) == pytest.approx(1.0)  # d/dx = 1


def test_gaussian_nll_minimised_by_true_variance():
    gen = torch.Generator().manual_seed(0)
    sigma = 0.7
    target = sigma * torch.randn(20000, generator=gen, dtype=torch.float64)
    mean = torch.zeros_like(target)
    log_vars = torch.linspace(-3, 2, 101, dtype=torch.float64)
    values = torch.stack(
        [L.gaussian_nll(mean, target, log_var=torch.full_like(target, lv)) for lv in log_vars]
    )
    best = log_vars[values.argmin()]
    assert abs(float(best) - math.log(float(target.var(correction=0)))) < 0.05 + 1e-9
    # Value at the true variance: 0.5 * (log s2 + 1 + log 2 pi)
    s2 = float(target.pow(2).mean())
    expected = 0.5 * (math.log(s2) + 1 + math.log(2 * math.pi))
    assert float(
        L.gaussian_nll(mean, target, log_var=torch.full_like(target, math.log(s2)))
    ) == pytest.approx(expected)


def test_gaussian_nll_masks_and_clamps():
    mean, target = _fields()
    mask = torch.rand(target.shape) > 0.5
    log_var = torch.zeros_like(mean).requires_grad_(True)
    nan_target = torch.where(mask, target, torch.full_like(target, float("nan")))
    value = L.gaussian_nll(mean, nan_target, log_var=log_var, mask=mask)
    value.backward()
    assert torch.isfinite(value) and (log_var.grad[~mask] == 0).all()
    huge = L.gaussian_nll(mean, target, log_var=torch.full_like(mean, -1e4), min_log_var=-10)
    assert torch.isfinite(huge)
    with pytest.raises(UserInputError, match="log_var has shape"):
        L.gaussian_nll(mean, target, log_var=torch.zeros(3))


def test_lowrank_nll_matches_dense_and_marginalises_masked_entries():
    gen = torch.Generator().manual_seed(0)
    b, n, r = 2, 6, 2
    mean = torch.randn(b, n, generator=gen, dtype=torch.float64)
    target = torch.randn(b, n, generator=gen, dtype=torch.float64)
    factor = torch.randn(b, n, r, generator=gen, dtype=torch.float64)
    log_diag = 0.3 * torch.randn(b, n, generator=gen, dtype=torch.float64)
    cov = factor @ factor.transpose(1, 2) + torch.diag_embed(log_diag.exp())
    dense = -torch.distributions.MultivariateNormal(mean, cov).log_prob(target).sum() / (b * n)
    torch.testing.assert_close(
        L.lowrank_gaussian_nll(mean, target, factor=factor, log_diag=log_diag), dense
    )
    # Mask: same as the dense marginal over the observed entries.
    keep = torch.tensor([True, True, False, True, False, True])
    mask = keep.expand(b, n)
    sub = cov[:, keep][:, :, keep]
    marginal = (
        -torch.distributions.MultivariateNormal(mean[:, keep], sub).log_prob(target[:, keep]).sum()
    )
    nan_target = torch.where(mask, target, torch.full_like(target, float("nan")))
    got = L.lowrank_gaussian_nll(mean, nan_target, factor=factor, log_diag=log_diag, mask=mask)
    torch.testing.assert_close(got, marginal / mask.sum())
    with pytest.raises(UserInputError, match=r"expected \(batch, N, rank\)"):
        L.lowrank_gaussian_nll(mean, target, factor=factor[0], log_diag=log_diag)
    with pytest.raises(UserInputError, match="weights are not supported"):
        L.lowrank_gaussian_nll(
            mean, target, factor=factor, log_diag=log_diag, weights=torch.ones(b, n)
        )


def test_lowrank_nll_minimised_by_true_covariance():
    torch.manual_seed(1)  # .sample() uses the global generator
    true_f = torch.tensor([[1.0], [0.8], [-0.5]], dtype=torch.float64)
    cov = true_f @ true_f.T + 0.1 * torch.eye(3, dtype=torch.float64)
    samples = torch.distributions.MultivariateNormal(
        torch.zeros(3, dtype=torch.float64), cov
    ).sample((4000,))
    mean = torch.zeros_like(samples)
    log_diag = torch.full_like(samples, math.log(0.1))

    def nll(scale):
        return float(
            L.lowrank_gaussian_nll(
                mean, samples, factor=(scale * true_f).expand(4000, 3, 1), log_diag=log_diag
            )
        )

    assert nll(1.0) < nll(0.8) and nll(1.0) < nll(1.25)


def test_gaussian_kl():
    zeros = torch.zeros(2, 3)
    assert float(L.gaussian_kl(zeros, zeros)) == 0.0
    assert float(L.gaussian_kl(torch.ones(2, 3), zeros)) == pytest.approx(1.5)


def test_sliced_wasserstein():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=gen)
    assert float(L.sliced_wasserstein(x[torch.randperm(256, generator=gen)], x)) == pytest.approx(
        0.0, abs=1e-10
    )
    shift = torch.tensor([1.0, 0.0, 0.0])
    # W2^2 of a translation by v, averaged over unit directions: |v|^2 / D
    assert float(L.sliced_wasserstein(x + shift, x, n_projections=2000)) == pytest.approx(
        1 / 3, rel=0.1
    )
    mask = torch.ones(256, dtype=torch.bool)
    mask[:10] = False
    y = x.clone()
    y[:10] = float("nan")
    assert torch.isfinite(L.sliced_wasserstein(x, y, mask=mask))
    with pytest.raises(UserInputError, match="same shape"):
        L.sliced_wasserstein(x, x[:5])
    with pytest.raises(UserInputError, match="NaN in the selected samples"):
        L.sliced_wasserstein(x, y)


def test_adversarial_losses():
    big = torch.full((4,), 20.0)
    assert float(L.adversarial_generator_loss(big)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.adversarial_discriminator_loss(big, -big)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.adversarial_discriminator_loss(big, -big, kind="hinge")) == 0.0
    assert (
        float(L.adversarial_discriminator_loss(torch.zeros(4), torch.zeros(4), kind="hinge")) == 2.0
    )
    assert float(L.adversarial_generator_loss(big, kind="hinge")) == -20.0
    with pytest.raises(UserInputError, match=r"kind='wgan'.*\['non_saturating', 'hinge'\]"):
        L.adversarial_generator_loss(big, kind="wgan")


@pytest.mark.parametrize(("scheme", "tol"), [("central", 1e-3), ("rk4", 1e-8)])
def test_ode_residual_minimal_at_the_true_trajectory(scheme, tol):
    from geodl.sim.lorenz import integrate, lorenz63_rhs

    x0 = torch.tensor([[1.0, 2.0, 20.0]], dtype=torch.float64)
    traj = integrate(lorenz63_rhs, x0, 0.001, 50)  # (1, 51, 3)
    truth_value = float(L.ode_residual(traj, lorenz63_rhs, dt=0.001, scheme=scheme))
    assert truth_value < tol
    noisy = traj + 0.01 * torch.randn(
        traj.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    assert float(L.ode_residual(noisy, lorenz63_rhs, dt=0.001, scheme=scheme)) > 100 * max(
        truth_value, 1e-12
    )
    mask = torch.ones_like(traj, dtype=torch.bool)
    mask[:, 20] = False
    bad = traj.clone()
    bad[:, 20] = float("nan")
    assert float(L.ode_residual(bad, lorenz63_rhs, dt=0.001, scheme=scheme, mask=mask)) < tol


def test_ode_residual_errors():
    with pytest.raises(UserInputError, match="at least 3 time steps"):
        L.ode_residual(torch.zeros(1, 2, 3), lambda x: x, dt=0.1)
    with pytest.raises(UserInputError, match="scheme='euler'"):
        L.ode_residual(torch.zeros(1, 5, 3), lambda x: x, dt=0.1, scheme="euler")


def test_registry():
    assert L.get_loss("nll") is L.gaussian_nll and L.get_loss("grad") is L.gradient_loss
    assert set(L.NEEDS) <= set(L.LOSSES)
    with pytest.raises(UserInputError, match=r"unknown loss 'l2'; expected one of \[.*'mse'.*\]"):
        L.get_loss("l2")


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({}, "unet: loss has no term"),
        ({"mse": 1.0, "nll": 0.1}, "loss term 'nll' needs a predicted variance"),
        ({"mse": 1.0, "kl": 0.1}, "loss term 'kl' needs a latent distribution"),
        ({"mse": 1.0, "lp": 0.1}, "loss term 'lp' is not one of its terms"),
        ({"mse": 1.0, "l2": 0.1}, "unknown loss term 'l2'"),
    ],
)
def test_check_terms_names_what_the_method_cannot_provide(weights, match):
    with pytest.raises(UserInputError, match=match):
        L.check_terms(weights, {"mse": "", "grad": ""}, "unet")
    L.check_terms({"mse": 1.0, "grad": 0.1}, {"mse": "", "grad": ""}, "unet")
