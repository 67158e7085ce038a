"""Known physics in dynamics learning: a hybrid neural ODE (known linear terms + learned rest) and
the physics residual in the loss; their config errors; the known part travels with the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import geodl.dynamics as gd
from geodl.cli import main
from geodl.methods.dynamics import (
    ModelSection,
    build_dynamics_model,
    known_terms,
    rollout_loss,
    training_loss,
    vector_field,
)
from geodl.sim import lorenz63_rhs, lorenz96_rhs, lorenz_linear_terms, simulate_lorenz

QUICK = "configs/l63_dynamics_quick.yaml"


@pytest.mark.parametrize("system", ["lorenz63", "lorenz96"])
def test_linear_terms_are_the_field_minus_its_quadratic_part(system):
    dim = 3 if system == "lorenz63" else 8
    x = torch.randn(50, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a, b = lorenz_linear_terms(system, dim, forcing=8.0)
    rest = (lorenz63_rhs(x) if system == "lorenz63" else lorenz96_rhs(x, 8.0)) - (x @ a.T + b)
    if system == "lorenz63":  # what is left: -x z and x y
        quad = torch.stack([0 * x[:, 0], -x[:, 0] * x[:, 2], x[:, 0] * x[:, 1]], -1)
    else:  # the advection (x_{i+1} - x_{i-2}) x_{i-1}
        quad = (torch.roll(x, -1, -1) - torch.roll(x, 2, -1)) * torch.roll(x, 1, -1)
    torch.testing.assert_close(rest, quad)
    assert (rest.abs().sum(0) > 0).sum() >= 2  # and it is not zero: the rest must be learned


def test_known_part_in_model_coordinates_is_the_true_linear_field():
    """In z = (x - mean) / std and steps of dt, the known part M z + c is (A x + b) dt / std."""
    m = ModelSection(kind="neural_ode", physics="lorenz63")
    mean, std, dt = np.array([0.5, -1.0, 25.0]), np.array([8.0, 9.0, 8.5]), 0.01
    net = build_dynamics_model(m, 3).double()
    net.vector_field.set_known(*known_terms(m, mean, std, dt))
    x = torch.randn(20, 3, dtype=torch.float64) * 8 + torch.as_tensor(mean)
    z = (x - torch.as_tensor(mean)) / torch.as_tensor(std)
    a, b = lorenz_linear_terms("lorenz63", 3)
    want = (x @ a.T + b) * dt / torch.as_tensor(std)
    torch.testing.assert_close(net.vector_field.known(z), want)
    assert set(net.state_dict()) >= {"func.field.known_matrix", "func.field.known_offset"}


def test_the_residual_term_is_added_only_with_its_weight():
    truth = simulate_lorenz("lorenz63", n_trajectories=2, n_steps=40, dt=0.01, seed=0)
    z = ((truth - truth.mean((0, 1))) / truth.std((0, 1))).float()
    x = torch.stack([z[:, k : k + 5] for k in range(0, 30, 5)], 1).flatten(0, 1)  # (B, 5, 3)
    torch.manual_seed(0)
    net = build_dynamics_model(ModelSection(kind="neural_ode"), 3)
    plain = rollout_loss(net, x)
    assert torch.equal(training_loss(net, x, ModelSection(kind="neural_ode")), plain)
    weighted = training_loss(net, x, ModelSection(kind="neural_ode", residual_weight=2.0))
    from geodl.losses import ode_residual

    res = ode_residual(x, vector_field(net), dt=1.0, scheme="central")
    torch.testing.assert_close(weighted, plain + 2.0 * res)
    assert res > 0


@pytest.fixture(scope="module")
def l63():
    truth = simulate_lorenz("lorenz63", n_trajectories=3, n_steps=600, dt=0.01, seed=3).numpy()
    test = simulate_lorenz("lorenz63", n_trajectories=1, n_steps=1000, dt=0.01, seed=9).numpy()
    return xr.DataArray(truth, dims=("trajectory", "time", "component"), attrs={"dt": 0.01}), test


def _rmse8(model, test):
    starts = np.arange(0, 900, 25)
    f = model.forecast(test[0, starts], 8).values[:, 8]
    return float(np.sqrt(((f - test[0, starts + 8]) ** 2).mean()))


def test_known_linear_terms_improve_the_fit_and_travel_with_the_file(l63, tmp_path):
    """Same data, budget and seed: with the known linear terms the MLP field forecasts better at
    8 steps (measured 0.151 against 0.194 for the pure MLP field; with a 60-iteration L-BFGS
    budget it was the other way round, 0.80 against 0.48: the benchmark measures where it pays);
    saved and loaded, the hybrid forecasts the same."""
    data, test = l63
    base = {"kind": "neural_ode", "init_scale": 0.01, "lbfgs_iter": 200}
    train = {"max_epochs": 3, "seed": 0}
    pure = gd.fit(data, model=base, train=train)
    hybrid = gd.fit(data, model={**base, "physics": "lorenz63"}, train=train)
    assert _rmse8(hybrid, test) < 0.9 * _rmse8(pure, test)
    loaded = gd.DynamicsModel.load(hybrid.save(tmp_path / "hybrid.pt"))
    np.testing.assert_allclose(
        loaded.forecast(test[0, 100], 20).values, hybrid.forecast(test[0, 100], 20).values
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["model.physics=lorenz63"], "model.physics: lorenz63 needs model.kind: neural_ode"),
        (
            ["model.kind=neural_ode", "model.physics=lorenz96"],
            "model.physics: lorenz96 is not the simulated system (lorenz63)",
        ),
        (
            ["model.kind=neural_ode", "model.residual_weight=1", "model.rollout=1"],
            "model.residual_weight > 0 needs model.rollout >= 2",
        ),
    ],
)
def test_physics_config_errors_exit_2_before_any_stage(tmp_path, capsys, overrides, match):
    out = tmp_path / "r"
    args = ["run", QUICK, "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not (out / "trajectories.nc").exists()
