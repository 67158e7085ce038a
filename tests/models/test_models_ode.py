"""Neural ODE: analytic solutions, gradcheck in float64, adjoint gradients equal direct ones."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from geodl.errors import UserInputError
from geodl.models import MLP, NeuralODE, build_model, rk4_odeint


class Linear(nn.Module):
    """dx/dt = -a x with a learnable a."""

    def __init__(self, a: float = 1.0) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, x):
        return -self.a * x


@pytest.mark.parametrize(
    ("method", "kwargs", "tol"),
    [
        ("rk4", {"step_size": 0.05}, 1e-6),
        ("dopri5", {"rtol": 1e-9, "atol": 1e-11}, 1e-8),
        ("euler", {"step_size": 0.001}, 2e-3),
    ],
)
def test_exponential_decay(method, kwargs, tol):
    ode = NeuralODE(Linear(), method=method, **kwargs)
    x0 = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    torch.testing.assert_close(
        ode(x0, t), x0[:, None] * torch.exp(-t)[None, :, None], rtol=tol, atol=tol
    )


def test_rk4_is_fourth_order():
    def error(h):
        x = rk4_odeint(
            lambda x: -x,
            torch.ones(1, 1, dtype=torch.float64),
            torch.tensor([0.0, 1.0]).double(),
            h,
        )
        return abs(float(x[0, -1, 0]) - math.exp(-1))

    assert 12 < error(0.1) / error(0.05) < 20  # 2**4 = 16


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_gradcheck_float64(method):
    torch.manual_seed(0)
    field = MLP(2, 2, hidden=(4,), act="tanh").double()
    ode = NeuralODE(field, method=method, step_size=0.1, rtol=1e-10, atol=1e-12)
    t = torch.tensor([0.0, 0.2, 0.3], dtype=torch.float64)
    x0 = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)

    assert torch.autograd.gradcheck(lambda x: ode(x, t), (x0,))
    # Parameters: gradcheck through a functional call of the module.
    params = dict(ode.named_parameters())
    name = "func.field.net.0.weight"
    p = params[name].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p_: torch.func.functional_call(ode, {**params, name: p_}, (x0.detach(), t)), (p,)
    )


def test_adjoint_gradient_equals_direct():
    torch.manual_seed(0)
    field = MLP(3, 3, hidden=(8,), act="tanh").double()
    x0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.linspace(0, 0.5, 4, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        ode = NeuralODE(field, method="dopri5", rtol=1e-10, atol=1e-12, adjoint=adjoint)
        field.zero_grad()
        x = x0.clone().requires_grad_(True)
        ode(x, t).square().sum().backward()
        grads.append([x.grad.clone(), *(p.grad.clone() for p in field.parameters())])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_min_step_bounds_the_number_of_evaluations():
    field = Linear(50.0)  # stiff: dopri5 wants small steps
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    x0 = torch.ones(1, 1, dtype=torch.float64)
    free = NeuralODE(field, method="dopri5", rtol=1e-10, atol=1e-12)
    floor = NeuralODE(field, method="dopri5", rtol=1e-10, atol=1e-12, min_step=0.05)
    free(x0, t)
    floor(x0, t)
    assert floor.func.n_evals < free.func.n_evals
    assert floor.func.n_evals <= 6 * (1.0 / 0.05 + 2) + 10


def test_gridded_vector_field():
    field = build_model("cnn_emulator", channels=1, width=4, n_layers=1, mode="vector_field")
    ode = build_model("neural_ode", vector_field=field, step_size=0.1)
    assert ode(torch.zeros(2, 1, 8, 8), torch.linspace(0, 0.3, 4)).shape == (2, 4, 1, 8, 8)


def test_errors():
    with pytest.raises(
        UserInputError, match=r"unknown method 'rk45'; expected one of \['rk4', .*'dopri5'"
    ):
        NeuralODE(Linear(), method="rk45")
    with pytest.raises(UserInputError, match="adjoint=True needs a torchdiffeq solver"):
        NeuralODE(Linear(), adjoint=True)
    with pytest.raises(UserInputError, match="exactly one of dim"):
        build_model("neural_ode")
    ode = NeuralODE(Linear())
    with pytest.raises(UserInputError, match="strictly increasing"):
        ode(torch.ones(1, 1), torch.tensor([0.0, 0.0]))
    with pytest.raises(UserInputError, match=r"1-D tensor of output times"):
        ode(torch.ones(1, 1), torch.zeros(2, 2))
    with pytest.raises(UserInputError, match=r"expected \(batch, \.\.\.\)"):
        ode(torch.ones(3), torch.tensor([0.0, 1.0]))
    with pytest.raises(UserInputError, match="min_step must be >= 0"):
        NeuralODE(Linear(), method="dopri5", min_step=-1.0)
