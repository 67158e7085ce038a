"""Lorenz-63/96: RK4 order, Lyapunov exponent, parameters, dtypes, noise, errors."""

import math

import pytest
import torch

from geodl.errors import UserInputError
from geodl.sim import (
    integrate,
    lorenz63_rhs,
    lorenz96_rhs,
    lorenz_tangent_field,
    lorenz_vector_field,
    lyapunov_exponents,
    simulate_lorenz,
    tangent_rk4_step,
)


def test_rk4_converges_with_order_four():
    x0 = torch.tensor([[1.0, 2.0, 20.0]], dtype=torch.float64)
    t_end = 0.5
    reference = integrate(lorenz63_rhs, x0, t_end / 6400, 6400)[:, -1]
    errors = []
    for n in (100, 200, 400):
        errors.append((integrate(lorenz63_rhs, x0, t_end / n, n)[:, -1] - reference).norm().item())
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(3.7 < p < 4.3 for p in orders), orders


def test_lorenz63_leading_lyapunov_exponent_near_0906():
    # 64 trajectories x 20 time units: the spread of single estimates is ~0.08 (measured), so the
    # mean's sampling error is ~0.01, while 5% is 0.045.
    x0 = simulate_lorenz("lorenz63", n_trajectories=64, n_steps=0, spinup_steps=1000)[:, -1]
    f, jvp = lorenz_vector_field("lorenz63"), lorenz_tangent_field("lorenz63")
    le = lyapunov_exponents(f, x0, dt=0.01, n_steps=2000, n_transient=500, jvp=jvp)
    assert le.shape == (64, 1)
    assert abs(le.mean().item() - 0.906) < 0.05 * 0.906


@pytest.mark.parametrize("system", ["lorenz63", "lorenz96"])
def test_hand_written_tangent_matches_autodiff(system):
    f, jvp = lorenz_vector_field(system), lorenz_tangent_field(system)
    gen = torch.Generator().manual_seed(1)
    n = 3 if system == "lorenz63" else 10
    x = 5 * torch.randn((4, n), generator=gen, dtype=torch.float64)
    v = torch.randn((4, n), generator=gen, dtype=torch.float64)
    _, by_hand = tangent_rk4_step(f, jvp, x, v, 0.01)
    _, by_autodiff = tangent_rk4_step(f, None, x, v, 0.01)
    torch.testing.assert_close(by_hand, by_autodiff, rtol=1e-12, atol=1e-12)


def test_lorenz96_standard_setup_is_chaotic():
    x0 = simulate_lorenz("lorenz96", n_trajectories=2, n_steps=0, spinup_steps=500)[:, -1]
    f, jvp = lorenz_vector_field("lorenz96"), lorenz_tangent_field("lorenz96")
    le = lyapunov_exponents(f, x0, dt=0.01, n_steps=1000, jvp=jvp)
    # Literature value for 40 variables, F = 8: about 1.7 per time unit.
    assert 1.0 < le.mean().item() < 2.5


def test_batched_trajectories_equal_single_runs():
    batch = simulate_lorenz("lorenz96", n_trajectories=3, n_steps=20, n_components=8, seed=4)
    x0 = batch[:, 0]
    for i in range(3):
        single = integrate(lambda x: lorenz96_rhs(x, 8.0), x0[i : i + 1], 0.01, 20)
        torch.testing.assert_close(single[0], batch[i], rtol=0, atol=1e-12)


def test_dtype_spinup_and_parameters():
    x32 = simulate_lorenz("lorenz63", n_steps=10, spinup_steps=100, dtype=torch.float32)
    x64 = simulate_lorenz("lorenz63", n_steps=10, spinup_steps=100)
    assert x32.dtype == torch.float32 and x64.dtype == torch.float64
    torch.testing.assert_close(x32.double(), x64, rtol=1e-3, atol=1e-3)
    # rho below 1: the origin is a global attractor, so a long spin-up ends near 0.
    settled = simulate_lorenz("lorenz63", rho=0.5, n_steps=0, spinup_steps=5000)
    assert settled.abs().max() < 1e-3
    # Spin-up moves the start onto the attractor: L63 starts away from the (1, 1, 1) seed point.
    assert (x64[0, 0] - 1).abs().max() > 2


def test_model_noise_is_seeded_and_scaled():
    a = simulate_lorenz("lorenz63", n_steps=50, noise_std=0.5, seed=3)
    b = simulate_lorenz("lorenz63", n_steps=50, noise_std=0.5, seed=3)
    clean = simulate_lorenz("lorenz63", n_steps=1, seed=3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # First step: noise of std 0.5 * sqrt(dt) added to the deterministic step.
    assert 0 < (a[0, 1] - clean[0, 1]).abs().max() < 0.5 * 0.1 * 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"system": "lorenz63", "sigma": 0.0}, "sigma must be > 0"),
        ({"system": "lorenz63", "beta": -1.0}, "beta must be > 0"),
        ({"system": "lorenz63", "dt": 0.0}, "dt must be > 0"),
        ({"system": "lorenz63", "spinup_steps": -1}, "spinup_steps must be >= 0"),
        ({"system": "lorenz63", "noise_std": -0.1}, "noise_std must be >= 0"),
        ({"system": "lorenz96", "n_components": 3}, "n_components >= 4"),
        ({"system": "lorenz96", "forcing": float("nan")}, "forcing must be finite"),
        ({"system": "lorenz63", "dtype": torch.int64}, "float32 or torch.float64"),
        ({"system": "lorenz99"}, "choose lorenz63 or lorenz96"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, match):
    system = kwargs.pop("system")
    with pytest.raises(UserInputError, match=match):
        simulate_lorenz(system, **{"n_steps": 1, "spinup_steps": 0, **kwargs})


def test_lyapunov_bad_input():
    f = lorenz_vector_field("lorenz63")
    x0 = torch.ones((1, 3), dtype=torch.float64)
    with pytest.raises(UserInputError, match="n_exponents must be in 1..3"):
        lyapunov_exponents(f, x0, dt=0.01, n_steps=100, n_exponents=4)
    with pytest.raises(UserInputError, match="n_steps >= renorm_every"):
        lyapunov_exponents(f, x0, dt=0.01, n_steps=5, renorm_every=10)
