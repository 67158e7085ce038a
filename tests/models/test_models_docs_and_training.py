"""Each mapping model and the neural ODE can fit a tiny problem."""

from __future__ import annotations

import pytest
import torch

from geodl import losses
from geodl.models import build_model


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("unet", {"in_channels": 1, "n_times": 2, "depth": 1, "width": 8}),
        ("dincae", {"in_channels": 1, "n_times": 2, "depth": 1, "width": 8}),
        (
            "fourdvarnet",
            {"in_channels": 1, "n_times": 2, "n_iter": 3, "prior_hidden": 8, "lstm_hidden": 8},
        ),
    ],
)
def test_mapping_model_fits_a_tiny_problem(name, kwargs):
    torch.manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(0, 3, 8), torch.linspace(0, 3, 8), indexing="ij")
    target = (torch.sin(x + y) + torch.zeros(2, 2, 1, 8, 8)).contiguous()  # (B, T, C, H, W)
    mask = (torch.rand(target.shape, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    model = build_model(name, **kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_value():
        out = model(target, mask)
        if out.log_var is not None:
            return losses.gaussian_nll(out.mean, target, log_var=out.log_var)
        return losses.mse(out.mean, target)

    first = float(loss_value().detach())
    for _ in range(30):
        opt.zero_grad()
        loss = loss_value()
        loss.backward()
        opt.step()
    assert float(loss_value().detach()) < first - 0.5 * abs(first)


def test_neural_ode_learns_exponential_decay():
    torch.manual_seed(0)
    t = torch.linspace(0, 1, 6)
    x0 = torch.linspace(-1, 1, 8)[:, None]
    truth = x0[:, None] * torch.exp(-t)[None, :, None]  # (B, T, 1)
    model = build_model("neural_ode", dim=1, hidden=(16,), step_size=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(150):
        opt.zero_grad()
        loss = losses.mse(model(x0, t), truth)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 1e-3
