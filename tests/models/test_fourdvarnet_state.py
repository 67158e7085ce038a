"""StateFourDVarNet: shapes, grad modes, learned cost weights, errors."""

from __future__ import annotations

import pytest
import torch

from geodl.errors import UserInputError
from geodl.models.fourdvarnet_state import StateFourDVarNet


def make(**kw):
    torch.manual_seed(0)
    return StateFourDVarNet(3, dt=1.0, n_iter=3, lstm_hidden=8, **kw)


def test_shapes_and_no_grad_evaluation():
    net = make()
    y = torch.randn(2, 40, 3)
    mask = (torch.rand_like(y) > 0.7).float()
    out = net(y, mask)
    assert out.shape == (2, 40, 3) and out.requires_grad
    with torch.no_grad():
        ev = net(y, mask)
    assert not ev.requires_grad
    torch.testing.assert_close(ev, out.detach())


def test_training_gradient_reaches_solver_prior_and_weights():
    net = make()
    y = torch.randn(2, 40, 3)
    mask = (torch.rand_like(y) > 0.7).float()
    out = net(y, mask, init=torch.zeros_like(y))
    (out.pow(2).mean() + net.prior_loss(y)).backward()
    for name in ("lstm.gates.weight", "prior.linear.weight", "log_prior_weight", "log_obs_weight"):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_prior_loss_is_zero_for_a_prior_trajectory():
    net = StateFourDVarNet(3, dt=0.01, n_iter=1)  # small steps: the random prior stays bounded
    x0 = torch.randn(2, 3)
    with torch.no_grad():
        traj = [x0]
        for _ in range(9):
            traj.append(net.prior(traj[-1]))
        x = torch.stack(traj, 1)
    assert float(net.prior_loss(x)) < 1e-10
    assert float(net.prior_loss(torch.randn(2, 10, 3))) > 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel": 4}, "kernel must be odd"),
        ({"prior_weight": 0.0}, "must be > 0"),
        ({"n_iter": 0}, "n_iter must be >= 1"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        StateFourDVarNet(3, dt=1.0, **{"n_iter": 2, **kwargs})


def test_bad_shapes():
    with pytest.raises(UserInputError, match=r"must both be \(batch, time, 3\)"):
        make()(torch.zeros(2, 10, 4), torch.ones(2, 10, 4))
