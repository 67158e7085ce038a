"""geodl.integrate: order of the steps, rollouts, and where a rollout left its bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geodl.errors import UserInputError
from geodl.integrate import euler_step, first_exit, rk4_step, rollout, rollout_until_exit


def _oscillator(x: torch.Tensor) -> torch.Tensor:
    """Harmonic oscillator ``q' = p, p' = -q``: the state ``(q, p)`` turns at unit speed."""
    return torch.stack((x[..., 1], -x[..., 0]), dim=-1)


def _error(step, f, x0, exact, t_end: float, n: int) -> float:
    x = x0
    for _ in range(n):
        x = step(f, x, t_end / n)
    return float((x - exact).abs().max())


@pytest.mark.parametrize(
    ("f", "x0", "exact"),
    [
        (lambda x: -x, [[1.0]], [[math.exp(-1.0)]]),
        (_oscillator, [[1.0, 0.0]], [[math.cos(1.0), -math.sin(1.0)]]),
    ],
    ids=["decay", "oscillator"],
)
@pytest.mark.parametrize(("step", "order"), [(rk4_step, 4), (euler_step, 1)], ids=["rk4", "euler"])
def test_convergence_order(f, x0, exact, step, order):
    x0, exact = torch.tensor(x0, dtype=torch.float64), torch.tensor(exact, dtype=torch.float64)
    errors = [_error(step, f, x0, exact, 1.0, n) for n in (10, 20, 40)]
    for coarse, fine in zip(errors[:-1], errors[1:], strict=True):
        assert coarse / fine == pytest.approx(2.0**order, rel=0.1)


def test_rk4_step_is_the_classical_scheme_and_differentiable():
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    dt = 0.1
    k1 = _oscillator(x)
    k2 = _oscillator(x + 0.5 * dt * k1)
    k3 = _oscillator(x + 0.5 * dt * k2)
    k4 = _oscillator(x + dt * k3)
    assert torch.equal(rk4_step(_oscillator, x, dt), x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4))
    assert torch.autograd.gradcheck(lambda z: rk4_step(_oscillator, z, dt), (x,))


@pytest.mark.parametrize("shape", [(3, 2), (2, 1, 4, 5)], ids=["state", "grid"])
def test_rollout_shape_and_manual_loop(shape):
    x0 = torch.randn(shape)

    def step(x: torch.Tensor) -> torch.Tensor:
        return 0.9 * x + 0.1 * torch.tanh(x)

    traj = rollout(step, x0, 5)
    assert traj.shape == (shape[0], 6, *shape[1:])
    x, manual = x0, [x0]
    for _ in range(5):
        x = step(x)
        manual.append(x)
    assert torch.equal(traj, torch.stack(manual, dim=1))
    assert torch.equal(rollout(step, x0, 0), x0[:, None])


def test_rollout_rejects_negative_steps():
    with pytest.raises(UserInputError, match="n_steps must be >= 0, got -1"):
        rollout(lambda x: x, torch.zeros(1, 1), -1)
    with pytest.raises(UserInputError, match="check_every must be >= 1, got 0"):
        rollout_until_exit(lambda x: x, torch.zeros(1, 1), 3, 1.0, check_every=0)


def test_first_exit_known_step_and_never():
    traj = torch.zeros(2, 10, 3)  # (B, T, D)
    traj[1, 6, 2] = -4.0  # one member, one component, beyond the bound at step 6
    assert first_exit(traj, 3.0) == 6
    assert first_exit(traj, 5.0) is None
    assert first_exit(traj.transpose(0, 1), 3.0, dim=0) == 6  # (T, B, D)
    traj[0, 4, 0] = float("nan")  # non-finite counts as out, whatever the bound
    assert first_exit(traj, 5.0) == 4
    traj[0, 2, 1] = float("inf")
    assert first_exit(traj, math.inf) == 2


def test_first_exit_agrees_with_the_numpy_wrappers():
    from geodl.methods.dynamics import leave_step
    from geodl.methods.emulation import first_bad_step

    rng = np.random.default_rng(0)
    for _ in range(50):
        x = 3.0 * rng.normal(size=(2, 7, 3))
        x.flat[rng.integers(x.size)] = rng.choice([np.nan, np.inf, -np.inf, 0.0])
        assert first_bad_step(x, 4.0) == first_exit(torch.from_numpy(x), 4.0)
        assert leave_step(x[0], 4.0) == first_exit(torch.from_numpy(x[:1]), 4.0)


@pytest.mark.parametrize("check_every", [1, 3, 100])
def test_rollout_until_exit(check_every):
    def grow(x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x

    x0 = torch.ones(2, 1)
    kept, left = rollout_until_exit(grow, x0, 10, 100.0, check_every=check_every)
    assert left == 7 and kept.shape == (2, 7, 1)  # 2**7 = 128 is the first beyond 100
    assert torch.equal(kept, rollout(grow, x0, 6))
    kept, left = rollout_until_exit(grow, x0, 5, 100.0, check_every=check_every)
    assert left is None and torch.equal(kept, rollout(grow, x0, 5))
    kept, left = rollout_until_exit(grow, torch.full((1, 1), 200.0), 5, 100.0)
    assert left == 0 and kept.shape == (1, 0, 1)
