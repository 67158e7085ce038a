"""Mapping models (unet, dincae, fourdvarnet): the shared forward convention and its errors."""

from __future__ import annotations

import pytest
import torch

from geodl.errors import UserInputError
from geodl.models import DINCAE, FourDVarNet, MappingOutput, UNet, build_model

SMALL = {
    "unet": {"in_channels": 1, "n_times": 2, "depth": 2, "width": 4},
    "dincae": {"in_channels": 1, "n_times": 2, "depth": 2, "width": 4},
    "fourdvarnet": {
        "in_channels": 1,
        "n_times": 2,
        "n_iter": 2,
        "prior_hidden": 4,
        "lstm_hidden": 4,
    },
}


@pytest.fixture(params=sorted(SMALL))
def model(request):
    torch.manual_seed(0)
    return build_model(request.param, **SMALL[request.param]).eval()


def test_returns_mapping_output(model):
    out = model(torch.randn(2, 2, 1, 8, 8), torch.ones(2, 2, 1, 8, 8))
    assert isinstance(out, MappingOutput)
    assert out.mean.shape == (2, 2, 1, 8, 8)


def test_unobserved_values_have_no_influence(model):
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(1, 2, 1, 8, 8, generator=gen)
    mask = (torch.rand(obs.shape, generator=gen) > 0.5).float()
    other = torch.where(mask.bool(), obs, torch.full_like(obs, 1e3))
    with_nan = torch.where(mask.bool(), obs, torch.full_like(obs, float("nan")))
    with torch.no_grad():
        a, b = model(other, mask).mean, model(with_nan, mask).mean
    assert torch.isfinite(b).all()
    torch.testing.assert_close(a, b)


def test_nan_gradients_never_appear(model):
    obs = torch.randn(1, 2, 1, 8, 8)
    mask = (torch.rand(obs.shape) > 0.5).float()
    obs = torch.where(mask.bool(), obs, torch.full_like(obs, float("nan")))
    model.train()
    model(obs, mask).mean.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_wrong_number_of_dims(model):
    with pytest.raises(UserInputError, match=r"expected 5 dims \(batch, time, channel, y, x\)"):
        model(torch.zeros(2, 1, 8, 8))


def test_wrong_number_of_channels(model):
    with pytest.raises(
        UserInputError, match=r"3 channels .* expected 1 in \(batch, time, channel, y, x\)"
    ):
        model(torch.zeros(2, 2, 3, 8, 8))


def test_wrong_number_of_times_for_time_as_channels(model):
    with pytest.raises(UserInputError, match=r"4 time steps .* uses time as channels"):
        model(torch.zeros(2, 4, 1, 8, 8))


def test_nan_without_mask(model):
    obs = torch.zeros(1, 2, 1, 8, 8)
    obs[0, 0, 0, 3, 3] = float("nan")
    with pytest.raises(UserInputError, match="obs contains NaN but no obs_mask"):
        model(obs)


def test_nan_where_mask_says_observed(model):
    obs = torch.zeros(1, 2, 1, 8, 8)
    obs[0, 0, 0, 3, 3] = float("nan")
    with pytest.raises(UserInputError, match="NaN at points where obs_mask is 1"):
        model(obs, torch.ones_like(obs))


def test_mask_shape_mismatch(model):
    with pytest.raises(UserInputError, match="obs_mask has shape"):
        model(torch.zeros(1, 2, 1, 8, 8), torch.ones(1, 2, 1, 8))


@pytest.mark.parametrize("cls", [UNet, DINCAE])
def test_unet_patch_not_divisible_by_two_to_the_depth(cls):
    net = cls(1, 2, depth=3, width=4)
    with pytest.raises(UserInputError, match=r"patch size 12x16 .* not divisible by 8"):
        net(torch.zeros(1, 2, 1, 12, 16))


def test_fourdvarnet_patch_not_divisible_by_downsample():
    net = FourDVarNet(1, 2, n_iter=1, prior_hidden=4, lstm_hidden=4, downsample=4)
    with pytest.raises(UserInputError, match="not divisible by 4"):
        net(torch.zeros(1, 2, 1, 10, 8))


def test_unet_time_as_channels_needs_n_times():
    with pytest.raises(UserInputError, match="needs n_times"):
        UNet(1)


def test_unet_bad_options():
    with pytest.raises(UserInputError, match=r"time_mode='time'.*\['channels', 'conv3d'\]"):
        UNet(1, 2, time_mode="time")
    with pytest.raises(UserInputError, match=r"padding='reflect'.*\['zeros', 'circular'\]"):
        UNet(1, 2, padding="reflect")


def test_unet_conv3d_accepts_any_time_length():
    net = UNet(1, time_mode="conv3d", depth=1, width=4).eval()
    for t in (1, 5):
        assert net(torch.zeros(1, t, 1, 8, 8)).mean.shape == (1, t, 1, 8, 8)


def test_unet_circular_padding_is_equivariant_to_periodic_shifts():
    torch.manual_seed(0)
    net = UNet(1, 2, depth=2, width=4, padding="circular").eval()
    x = torch.randn(1, 2, 1, 8, 8)
    with torch.no_grad():
        shifted = net(torch.roll(x, 4, dims=-1)).mean  # shift by a multiple of 2**depth
        torch.testing.assert_close(
            shifted, torch.roll(net(x).mean, 4, dims=-1), rtol=1e-5, atol=1e-5
        )


def test_dincae_log_var_is_clamped():
    net = DINCAE(1, 2, depth=1, width=4, min_log_var=-1.0, max_log_var=0.5)
    with torch.no_grad():
        for p in net.log_var_head.parameters():
            p.fill_(10.0)
    out = net(torch.ones(1, 2, 1, 8, 8))
    assert out.log_var.max() <= 0.5 and out.log_var.min() >= -1.0
    torch.testing.assert_close(out.std, torch.exp(0.5 * out.log_var))


def test_fourdvarnet_works_under_no_grad_and_matches_grad_mode():
    torch.manual_seed(0)
    net = FourDVarNet(1, 2, n_iter=3, prior_hidden=4, lstm_hidden=4).eval()
    obs, mask = torch.randn(1, 2, 1, 8, 8), torch.ones(1, 2, 1, 8, 8)
    with torch.no_grad():
        a = net(obs, mask).mean
    b = net(obs, mask).mean
    assert not a.requires_grad and b.requires_grad
    torch.testing.assert_close(a, b.detach())


def test_fourdvarnet_detach_gives_same_forward():
    torch.manual_seed(0)
    full = FourDVarNet(1, 2, n_iter=3, prior_hidden=4, lstm_hidden=4)
    cut = FourDVarNet(1, 2, n_iter=3, prior_hidden=4, lstm_hidden=4, detach=True)
    cut.load_state_dict(full.state_dict())
    obs, mask = torch.randn(1, 2, 1, 8, 8), (torch.rand(1, 2, 1, 8, 8) > 0.5).float()
    torch.testing.assert_close(full(obs, mask).mean, cut(obs, mask).mean)


def test_fourdvarnet_solver_reduces_the_cost_from_the_first_guess():
    # The raw-gradient part of the update alone (ConvLSTM output zeroed) is a descent step; the
    # final projection by an untrained phi is not, so it is switched off.
    torch.manual_seed(0)
    net = FourDVarNet(
        1, 2, n_iter=4, prior_hidden=4, lstm_hidden=4, downsample=1, grad_step=0.5, project=False
    )
    torch.nn.init.zeros_(net.lstm_out.conv.weight)
    obs, mask = torch.randn(2, 2, 1, 8, 8), (torch.rand(2, 2, 1, 8, 8) > 0.5).float()
    with torch.no_grad():
        out = net(obs, mask).mean
    y, m = obs.reshape(2, 2, 8, 8) * mask.reshape(2, 2, 8, 8), mask.reshape(2, 2, 8, 8)
    with torch.enable_grad():
        before = net.cost(y, y, m)
        after = net.cost(out.reshape(2, 2, 8, 8), y, m)
    assert (after < before).all()


def test_fourdvarnet_works_under_inference_mode():
    # Lightning validates and predicts under torch.inference_mode() by default.
    torch.manual_seed(0)
    net = FourDVarNet(1, 2, n_iter=2, prior_hidden=4, lstm_hidden=4, variance=True).eval()
    obs, mask = torch.randn(1, 2, 1, 8, 8), torch.ones(1, 2, 1, 8, 8)
    with torch.no_grad():
        ref = net(obs, mask)
    with torch.inference_mode():
        out = net(obs, mask)
    torch.testing.assert_close(out.mean, ref.mean)
    torch.testing.assert_close(out.log_var, ref.log_var)
