"""FourDVarNet as in the reference design: observation term over observed pixels, prior cost and
projection, final projection, learned cost weights, and the choice of prior."""

from __future__ import annotations

import math

import pytest
import torch

from geodl.errors import UserInputError
from geodl.models import FourDVarNet, build_model
from geodl.models.fourdvarnet import PRIORS, BilinearAEPrior, ConvAEPrior, UNetPrior

TINY = {"n_iter": 2, "prior_hidden": 4, "lstm_hidden": 4}


def _obs_and_mask(b: int = 2, t: int = 2, h: int = 8, w: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(b, t, 1, h, w, generator=gen)
    mask = (torch.rand(obs.shape, generator=gen) > 0.5).float()
    return obs, mask


def test_obs_term_is_the_mean_over_observed_pixels_only():
    torch.manual_seed(0)
    net = FourDVarNet(1, 2, **TINY, prior_weight=0.0)  # cost = obs term alone
    state, obs = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    mask = torch.zeros(2, 2, 4, 4)
    mask[0, 0, 1, 2] = mask[0, 1, 3, 0] = mask[0, 1, 0, 0] = 1.0  # 3 observed pixels
    mask[1, 0, 2, 2] = 1.0  # 1 observed pixel
    d = (state - obs) ** 2
    by_hand = torch.stack([(d[0, 0, 1, 2] + d[0, 1, 3, 0] + d[0, 1, 0, 0]) / 3, d[1, 0, 2, 2]])
    torch.testing.assert_close(net.cost(state, obs, mask), by_hand)
    # Unobserved values of obs play no part.
    other = torch.where(mask.bool(), obs, torch.full_like(obs, 1e3))
    torch.testing.assert_close(net.cost(state, other, mask), by_hand)
    # A sample without observations has an obs term of 0 (not NaN).
    assert net.cost(state, obs, torch.zeros_like(mask)).eq(0).all()


def test_obs_term_does_not_depend_on_coverage():
    # The same misfit at every observed pixel gives the same term at 5 % and 50 % coverage.
    torch.manual_seed(0)
    net = FourDVarNet(1, 1, **TINY, prior_weight=0.0)
    state, obs = torch.ones(1, 1, 20, 20), torch.zeros(1, 1, 20, 20)
    sparse, dense = torch.zeros_like(obs), torch.zeros_like(obs)
    sparse.view(-1)[::20] = 1.0
    dense.view(-1)[::2] = 1.0
    torch.testing.assert_close(net.cost(state, obs, sparse), torch.ones(1))
    torch.testing.assert_close(net.cost(state, obs, dense), torch.ones(1))


@pytest.mark.parametrize("prior", PRIORS)
def test_prior_cost_and_project_use_the_time_as_channels_prior(prior):
    torch.manual_seed(0)
    net = FourDVarNet(1, 3, **TINY, prior=prior)
    x = torch.randn(2, 3, 1, 8, 8)
    by_hand = net.prior(x.reshape(2, 3, 8, 8)).reshape(x.shape)
    torch.testing.assert_close(net.project(x), by_hand)
    cost = net.prior_cost(x)
    assert cost.ndim == 0
    torch.testing.assert_close(cost, (x - by_hand).pow(2).mean())


@pytest.mark.parametrize("prior", PRIORS)
def test_training_on_prior_cost_of_the_target_makes_phi_a_prior_of_the_target(prior):
    # The prior-consistency term is a loss that trains phi (and only phi): a few Adam steps on it
    # reduce it (measured: by 14x for bilinear, 4x for unet).
    torch.manual_seed(0)
    net = FourDVarNet(1, 2, **TINY, prior=prior)
    axis = torch.linspace(0, 2 * math.pi, 8)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    phase = torch.rand(4, 1, 1, 1, 1) * 2 * math.pi
    t = torch.arange(2.0).reshape(1, 2, 1, 1, 1)
    target = torch.sin(xx + 0.3 * t + phase) * torch.cos(yy)  # (4, 2, 1, 8, 8), smooth
    before = net.prior_cost(target).item()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        net.prior_cost(target).backward()
        opt.step()
    after = net.prior_cost(target).item()
    assert after < 0.5 * before, (before, after)
    assert all(p.grad is None for p in net.lstm.parameters())


@pytest.mark.parametrize(
    ("prior", "cls"),
    [("bilinear", BilinearAEPrior), ("unet", UNetPrior), ("conv_ae", ConvAEPrior)],
)
@pytest.mark.parametrize("project", [True, False])
def test_constructor_priors_and_projection(prior, cls, project):
    torch.manual_seed(0)
    net = build_model(
        "fourdvarnet", in_channels=1, n_times=2, **TINY, prior=prior, project=project, variance=True
    )
    assert isinstance(net.prior, cls)
    obs, mask = _obs_and_mask()
    out = net(obs, mask)
    assert out.mean.shape == obs.shape and out.log_var.shape == obs.shape
    assert torch.isfinite(out.mean).all() and torch.isfinite(out.log_var).all()
    # project=False returns the last iterate; project=True its image by phi.
    unprojected = FourDVarNet(1, 2, **TINY, prior=prior, project=False, variance=True)
    unprojected.load_state_dict(net.state_dict())
    with torch.no_grad():
        last = unprojected(obs, mask)
        got = net(obs, mask)
    expected = net.project(last.mean) if project else last.mean
    torch.testing.assert_close(got.mean, expected)
    torch.testing.assert_close(got.log_var, last.log_var)  # the head sees the last iterate


def test_unet_prior_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = FourDVarNet(1, 2, **TINY, prior="unet", variance=True)
    obs, mask = _obs_and_mask()
    out = net(obs, mask)
    (out.mean.square().mean() + out.log_var.square().mean()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_unet_prior_circular_padding_is_equivariant_to_periodic_shifts():
    torch.manual_seed(0)
    phi = UNetPrior(2, 4, levels=2, padding="circular")
    x = torch.randn(1, 2, 8, 16)
    shift = 4  # a multiple of 2**levels
    torch.testing.assert_close(
        phi(torch.roll(x, shift, dims=-1)), torch.roll(phi(x), shift, dims=-1)
    )


def test_unet_prior_needs_patches_divisible_by_four():
    net = FourDVarNet(1, 2, **TINY, prior="unet", downsample=1)
    with pytest.raises(UserInputError, match=r"patch size 6x8 .* not divisible by 4"):
        net(torch.zeros(1, 2, 1, 6, 8))
    with pytest.raises(UserInputError, match=r"patch size 6x8 .* not divisible by 4"):
        net.prior_cost(torch.zeros(1, 2, 1, 6, 8))


def test_prior_cost_refuses_nan_and_wrong_shapes():
    net = FourDVarNet(1, 2, **TINY)
    x = torch.zeros(1, 2, 1, 8, 8)
    x[0, 0, 0, 1, 1] = float("nan")
    with pytest.raises(UserInputError, match="prior_cost: x contains NaN"):
        net.prior_cost(x)
    with pytest.raises(UserInputError, match=r"FourDVarNet.project: x has 4 dims"):
        net.project(torch.zeros(1, 2, 8, 8))


def test_learned_weights_are_positive_parameters_with_gradients():
    torch.manual_seed(0)
    net = FourDVarNet(1, 2, **TINY, learn_weights=True, obs_weight=2.0, prior_weight=0.5)
    params = dict(net.named_parameters())
    assert {"log_obs_weight", "log_prior_weight"} <= set(params)
    torch.testing.assert_close(net.obs_weight, torch.tensor(2.0))
    torch.testing.assert_close(net.prior_weight, torch.tensor(0.5))
    obs, mask = _obs_and_mask()
    net(obs, mask).mean.square().mean().backward()
    for name in ("log_obs_weight", "log_prior_weight"):
        grad = params[name].grad
        assert grad is not None and torch.isfinite(grad) and grad != 0, name
    # A step of any size keeps them positive (they are exp(log)).
    with torch.no_grad():
        net.log_obs_weight -= 100.0
    assert net.obs_weight > 0


def test_fixed_weights_are_not_parameters():
    net = FourDVarNet(1, 2, **TINY, obs_weight=2.0)
    assert not any("weight" in n and "log_" in n for n, _ in net.named_parameters())
    assert net.obs_weight == 2.0 and net.prior_weight == 1.0


def test_unknown_prior_lists_the_choices():
    with pytest.raises(
        ValueError, match=r"prior='resnet', expected one of \['bilinear', 'unet', 'conv_ae'\]"
    ):
        FourDVarNet(1, 2, prior="resnet")


def test_bad_cost_weights():
    with pytest.raises(UserInputError, match="obs_weight must be >= 0, got -1.0"):
        FourDVarNet(1, 2, obs_weight=-1.0)
    with pytest.raises(UserInputError, match="prior_weight must be > 0 with learn_weights=True"):
        FourDVarNet(1, 2, prior_weight=0.0, learn_weights=True)


def test_first_guess_starts_the_solver_and_is_trained_with_it():
    obs, mask = _obs_and_mask(h=8, w=8)
    torch.manual_seed(0)
    net = FourDVarNet(1, 2, first_guess="unet", first_guess_depth=1, first_guess_width=4, **TINY)
    plain = FourDVarNet(1, 2, **TINY)
    plain.load_state_dict(
        {k: v for k, v in net.state_dict().items() if not k.startswith("first_guess.")}
    )
    # the same solver from another start gives another analysis
    assert not torch.allclose(net(obs, mask).mean, plain(obs, mask).mean)
    net(obs, mask).mean.pow(2).mean().backward()
    grads = [p.grad for p in net.first_guess.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    with torch.inference_mode():  # Lightning's evaluation mode
        assert net(obs, mask).mean.shape == obs.shape
    # without a first guess the state dict has no first-guess weights (old checkpoints load)
    assert not any(k.startswith("first_guess.") for k in plain.state_dict())


def test_first_guess_choices_and_patch_multiple():
    with pytest.raises(UserInputError, match=r"first_guess='oi', expected one of \[None, 'unet'\]"):
        FourDVarNet(1, 2, first_guess="oi", **TINY)
    net = FourDVarNet(1, 2, first_guess="unet", first_guess_depth=3, **TINY)
    with pytest.raises(UserInputError, match="divisible by 8"):
        net(torch.zeros(1, 2, 1, 12, 12))
