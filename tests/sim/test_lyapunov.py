"""Lyapunov exponents: linear systems, autograd against hand-written tangents, learned fields, errors.

The Lorenz-63/96 reference values with hand-written tangents are in ``test_lorenz.py``.
"""

import math

import pytest
import torch
from torch import nn

import geodl.sim
from geodl.errors import UserInputError
from geodl.sim import lorenz63_rhs, lorenz_tangent_field, lorenz_vector_field, lyapunov_exponents
from geodl.sim.lyapunov import lyapunov_exponents as implementation


def test_one_implementation():
    assert geodl.sim.lyapunov_exponents is implementation


def test_lyapunov_of_a_linear_system():
    rates = torch.tensor([0.5, -1.0, -2.0], dtype=torch.float64)
    lam = lyapunov_exponents(
        lambda x: rates * x,
        torch.ones(2, 3, dtype=torch.float64),
        dt=0.05,
        n_steps=40,
        n_transient=200,
        n_exponents=2,
    )
    assert lam.shape == (2, 2)
    assert lam.mean(0).tolist() == pytest.approx([0.5, -1.0], abs=1e-4)


def test_lyapunov_of_lorenz63_by_autograd():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.0, 1.0, 25.0], dtype=torch.float64) + torch.randn(
        4, 3, generator=gen, dtype=torch.float64
    )
    lam = lyapunov_exponents(lorenz63_rhs, x0, dt=0.02, n_steps=1000, n_transient=100)
    # Reference 0.9056 (Sprott 2003); 20 time units.
    assert lam.mean(0)[0].item() == pytest.approx(0.906, abs=0.15)


def test_autograd_matches_hand_written_tangents_and_sum_is_the_divergence():
    x0 = geodl.sim.simulate_lorenz("lorenz63", n_trajectories=2, n_steps=0)[:, -1]
    f, jvp = lorenz_vector_field("lorenz63"), lorenz_tangent_field("lorenz63")
    kw = {"dt": 0.01, "n_steps": 100, "n_transient": 10, "n_exponents": 3}
    by_hand = lyapunov_exponents(f, x0, jvp=jvp, **kw)
    torch.testing.assert_close(lyapunov_exponents(f, x0, **kw), by_hand, rtol=1e-9, atol=1e-9)
    # Lorenz-63 contracts volume at the constant rate sigma + 1 + beta: the exponents sum to minus
    # that (0.906 + 0 - 14.57) over any stretch of trajectory, up to the RK4 error.
    assert by_hand.sum(1).tolist() == pytest.approx([-(10 + 1 + 8 / 3)] * 2, rel=1e-4)


def test_renormalisation_interval_does_not_change_the_estimate():
    # 30 steps in blocks of 7: the last, shorter block must still be counted.
    x0 = geodl.sim.simulate_lorenz("lorenz63", n_steps=0)[:, -1]
    f, jvp = lorenz_vector_field("lorenz63"), lorenz_tangent_field("lorenz63")
    kw = {"dt": 0.01, "n_steps": 30, "n_transient": 5, "n_exponents": 2, "jvp": jvp}
    every = lyapunov_exponents(f, x0, **kw)
    torch.testing.assert_close(
        lyapunov_exponents(f, x0, renorm_every=7, **kw), every, rtol=1e-10, atol=1e-10
    )


# torch.func's first use scripts a helper with the deprecated torch.jit.script (torch 2.13).
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_learned_network_without_jvp_under_no_grad():
    # The dynamics task calls it on a trained network, inside no_grad, with (batch, ...) states.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 4)).double()

    def field(x):  # (B, 2, 2) states
        return net(x.reshape(-1, 4)).reshape(x.shape)

    x0 = torch.randn(3, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        lam = lyapunov_exponents(field, x0, dt=0.1, n_steps=20, n_exponents=2)
    assert lam.shape == (3, 2) and torch.isfinite(lam).all()
    # The same with forward-mode tangents: an independent autograd path.
    forward = lyapunov_exponents(
        field,
        x0,
        dt=0.1,
        n_steps=20,
        n_exponents=2,
        jvp=lambda x, v: torch.func.jvp(field, (x,), (v,))[1],
    )
    torch.testing.assert_close(lam, forward, rtol=1e-10, atol=1e-10)
    assert all(p.grad is None for p in net.parameters())  # parameters are not differentiated


@pytest.mark.parametrize(
    ("x0", "kwargs", "match"),
    [
        (torch.ones(1, 3), {"n_exponents": 4}, "n_exponents must be in 1..3"),
        (torch.ones(3), {}, r"x0 has shape \(3,\), expected \(batch, ...\)"),
        (torch.ones(1, 3), {"dt": 0.0}, "need dt > 0"),
        (torch.ones(1, 3), {"n_transient": -1}, "n_transient >= 0"),
        (torch.ones(1, 3), {"renorm_every": 0}, "n_steps >= renorm_every >= 1"),
    ],
)
def test_bad_input(x0, kwargs, match):
    with pytest.raises(UserInputError, match=match):
        lyapunov_exponents(lambda x: x, x0, **{"dt": 0.1, "n_steps": 1, **kwargs})


def test_doubling_time_of_exponential_growth():
    lam = lyapunov_exponents(lambda x: math.log(2) * x, torch.ones(1, 1), dt=0.01, n_steps=100)
    assert lam.item() == pytest.approx(math.log(2), rel=1e-5)
