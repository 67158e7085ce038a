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


def test_local_prior_represents_lorenz96_exactly():
    """(x_{i+1} - x_{i-2}) x_{i-1} - x_i + F as one bilinear stencil of width 5."""
    from geodl.models.fourdvarnet_state import LocalBilinearStep
    from geodl.sim import lorenz_vector_field, rk4_step

    step = LocalBilinearStep(n_bilinear=1, stencil=5, dt=0.05).double()
    with torch.no_grad():
        for p in step.parameters():
            p.zero_()
        # cross-correlation: output i reads x_{i + j - 2} with weight w[j]
        step.left.weight[0, 0, 3], step.left.weight[0, 0, 0] = 1.0, -1.0
        step.right.weight[0, 0, 1] = 1.0
        step.mix.weight.fill_(1.0)
        step.linear.weight[0, 0, 2], step.linear.bias[0] = -1.0, 8.0
    x = torch.randn(4, 40, dtype=torch.float64) * 3 + 2
    f = lorenz_vector_field("lorenz96", forcing=8.0)
    torch.testing.assert_close(step.vector_field(x), f(x))
    torch.testing.assert_close(step(x), rk4_step(f, x, 0.05))


def test_local_prior_is_translation_equivariant_and_trains():
    torch.manual_seed(0)
    net = StateFourDVarNet(12, dt=1.0, n_iter=2, lstm_hidden=8, prior="local", n_bilinear=2)
    x = torch.randn(3, 12)
    torch.testing.assert_close(net.prior(x.roll(3, -1)), net.prior(x).roll(3, -1))
    y = torch.randn(2, 20, 12)
    out = net(y, (torch.rand_like(y) > 0.5).float())
    (out.pow(2).mean() + net.prior_loss(y)).backward()
    assert out.shape == (2, 20, 12) and net.prior.left.weight.grad.abs().sum() > 0


def test_bad_local_prior():
    with pytest.raises(
        UserInputError, match=r"prior='global', expected one of \['dense', 'local'\]"
    ):
        StateFourDVarNet(8, dt=1.0, prior="global")
    with pytest.raises(UserInputError, match=r"stencil \(5\) is wider than the state \(3"):
        StateFourDVarNet(3, dt=1.0, prior="local")
    with pytest.raises(UserInputError, match="stencil must be odd"):
        StateFourDVarNet(8, dt=1.0, prior="local", stencil=4)


def test_truncated_backprop_same_analysis_gradient_reaches_the_solver():
    torch.manual_seed(0)
    y = torch.randn(2, 30, 3)
    mask = (torch.rand_like(y) > 0.7).float()
    full, short = make(), make(grad_iters=1)
    short.load_state_dict(full.state_dict())
    out = short(y, mask)
    torch.testing.assert_close(out, full(y, mask))  # truncation changes gradients, not values
    out.pow(2).mean().backward()
    assert short.lstm.gates.weight.grad.abs().sum() > 0
    with pytest.raises(UserInputError, match=r"grad_iters must be in 1..n_iter=3"):
        make(grad_iters=4)
