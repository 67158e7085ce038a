"""Cycled 4D-Var (overlapping windows, background term): analytic checks and Lorenz-63."""

from __future__ import annotations

import pytest
import torch

from geodl.baselines.fourdvar import cycled_4dvar, weak_4dvar
from geodl.errors import UserInputError
from geodl.obs import observe_state
from geodl.sim import lorenz_vector_field, rk4_step, simulate_lorenz

F63 = lorenz_vector_field("lorenz63")
A = torch.tensor([[0.9, 0.2], [-0.1, 0.95]], dtype=torch.float64)  # a linear 2-variable model
B_COV = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
NAN = float("nan")


pytestmark = pytest.mark.usefixtures("one_thread")


def l63_step(x):
    return rk4_step(F63, x, 0.01)


def linear_step(x):
    return x @ A.T


def linear_twin():
    """Two trajectories of 6 steps of the linear model, partly observed; a background state."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 2, generator=gen, dtype=torch.float64)
    truth = [x0]
    for _ in range(5):
        truth.append(linear_step(truth[-1]))
    truth = torch.stack(truth, dim=1)  # (B, T, D) = (2, 6, 2)
    obs = torch.full_like(truth, NAN)
    obs[:, 1, 0] = truth[:, 1, 0]
    obs[:, 3] = truth[:, 3]
    obs[:, 5, 1] = truth[:, 5, 1]
    obs = obs + 0.3 * torch.randn(obs.shape, generator=gen, dtype=torch.float64)
    background = x0 + torch.randn(2, 2, generator=gen, dtype=torch.float64)
    return obs, background


def test_linear_strong_limit_is_the_kalman_gain_solution():
    """Tiny model_std: the 4D-Var trajectory is A^t x0 with the least-squares (gain form) x0.

    Tolerances are L-BFGS's stopping rule (its default tolerances on the scaled cost), not the
    weak-to-strong gap, which is O(model_std^2) here."""
    obs, xb = linear_twin()
    b, t, d = obs.shape
    sigma_o = 0.5
    smooth, filt = cycled_4dvar(
        linear_step, obs, obs_std=sigma_o, model_std=1e-4, background_std=B_COV, window=t,
        background=xb, n_iter=200, n_outer=2, first_guess="forecast",
    )  # fmt: skip
    for i in range(b):
        # G stacks the observed rows of A^t: y = G x0 + noise; x0 = xb + B G^T (G B G^T + R)^-1 d.
        rows, ys, power = [], [], torch.eye(d, dtype=torch.float64)
        for k in range(t):
            for j in range(d):
                if torch.isfinite(obs[i, k, j]):
                    rows.append(power[j])
                    ys.append(obs[i, k, j])
            power = A @ power
        g, y = torch.stack(rows), torch.stack(ys)
        r = sigma_o**2 * torch.eye(len(ys), dtype=torch.float64)
        gain = B_COV @ g.T @ torch.linalg.inv(g @ B_COV @ g.T + r)
        x0 = xb[i] + gain @ (y - g @ xb[i])
        expected = [x0]
        for _ in range(t - 1):
            expected.append(A @ expected[-1])
        torch.testing.assert_close(smooth[i], torch.stack(expected), atol=1e-4, rtol=0)
    torch.testing.assert_close(filt, smooth)  # one window: its estimate is also the filter's


def test_linear_weak_constraint_solves_the_normal_equations():
    """Moderate model_std: the solution solves the (T D)-dimensional normal equations exactly."""
    obs, xb = linear_twin()
    b, t, d = obs.shape
    sigma_o, sigma_q = 0.5, 0.3
    smooth, _ = cycled_4dvar(
        linear_step, obs, obs_std=sigma_o, model_std=sigma_q, background_std=B_COV, window=t,
        background=xb, n_iter=200, n_outer=1, first_guess="forecast",
    )  # fmt: skip
    n = t * d
    sel = lambda k: torch.eye(n, dtype=torch.float64)[k * d : (k + 1) * d]  # noqa: E731
    p = torch.linalg.inv(B_COV)
    for i in range(b):
        mask = torch.isfinite(obs[i]).reshape(-1).double()
        y = torch.nan_to_num(obs[i]).reshape(-1)
        hess = sel(0).T @ p @ sel(0) + torch.diag(mask) / sigma_o**2
        for k in range(t - 1):
            gk = sel(k + 1) - A @ sel(k)  # model error of step k as a linear map of the trajectory
            hess = hess + gk.T @ gk / sigma_q**2
        rhs = sel(0).T @ p @ xb[i] + mask * y / sigma_o**2
        expected = torch.linalg.solve(hess, rhs).reshape(t, d)
        torch.testing.assert_close(smooth[i], expected, atol=1e-4, rtol=0)  # L-BFGS stopping


def test_background_std_forms_agree():
    """A scalar std, (D,) stds and the (D, D) covariance s^2 I are the same background term."""
    obs, xb = linear_twin()
    kw = dict(obs_std=0.5, model_std=0.3, window=6, background=xb, n_iter=100, n_outer=1)
    scalar, _ = cycled_4dvar(linear_step, obs, background_std=0.7, **kw)
    diag, _ = cycled_4dvar(linear_step, obs, background_std=torch.tensor([0.7, 0.7]), **kw)
    full, _ = cycled_4dvar(linear_step, obs, background_std=0.49 * torch.eye(2).double(), **kw)
    torch.testing.assert_close(diag, scalar)
    torch.testing.assert_close(full, scalar, atol=1e-7, rtol=0)
    none, _ = cycled_4dvar(linear_step, obs, background_std=4.0, **kw)
    assert (none - scalar).abs().max() > 1e-3  # the background term matters


def l63_twin(n_steps, n_traj=2, seed=3, every=25):
    truth = simulate_lorenz(
        "lorenz63", n_trajectories=n_traj, n_steps=n_steps, dt=0.01, spinup_steps=1000, seed=seed
    )
    obs = observe_state(truth.numpy(), every=every, noise_std=2**0.5, seed=1)
    return truth, torch.from_numpy(obs)


def test_no_overlap_no_background_is_weak_4dvar():
    """shift == window, no background, interpolated first guess: the windows of weak_4dvar,
    including a trailing one-step window that keeps its first guess."""
    truth, obs = l63_twin(n_steps=120, every=8)  # 121 times: windows of 40, 40, 40, 1
    kw = dict(obs_std=2**0.5, model_std=0.01, n_iter=20, n_outer=2)
    smooth, filt = cycled_4dvar(
        l63_step, obs, background_std=None, window=40, shift=40, first_guess="interpolate", **kw
    )
    expected = weak_4dvar(l63_step, obs, window=40, **kw)
    torch.testing.assert_close(smooth, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(filt[:, :40], smooth[:, :40])  # the first window
    for end in (79, 119):  # the analysis at each window end
        torch.testing.assert_close(filt[:, end], smooth[:, end])
    torch.testing.assert_close(filt[:, 41], l63_step(l63_step(smooth[:, 39])))  # a forecast


def test_filter_uses_only_past_observations():
    truth, obs = l63_twin(n_steps=120, every=8)
    kw = dict(obs_std=2**0.5, model_std=0.01, background_std=1.0, window=40, shift=20, n_iter=15)
    smooth, filt = cycled_4dvar(l63_step, obs, n_outer=2, first_guess="forecast", **kw)
    later = obs.clone()
    later[:, 80:] += 3.0  # window ends at 39, 59, 79, ...: the filter up to 79 must not move
    smooth2, filt2 = cycled_4dvar(l63_step, later, n_outer=2, first_guess="forecast", **kw)
    assert torch.equal(filt2[:, :80], filt[:, :80])
    assert (filt2[:, 99] - filt[:, 99]).abs().max() > 1e-2
    assert (smooth2[:, 70] - smooth[:, 70]).abs().max() > 1e-3  # the smoother looks ahead


def test_cycled_beats_independent_windows_on_lorenz63():
    """Sakov (2012) setup: overlapping windows with a background term beat weak_4dvar's
    independent windows of the same length, most of all near the latter's window ends."""
    truth, obs = l63_twin(n_steps=1000)
    kw = dict(obs_std=2**0.5, model_std=0.001, n_iter=100, n_outer=4)
    cycled, filt = cycled_4dvar(l63_step, obs, background_std=0.5, window=200, shift=50, **kw)
    plain = weak_4dvar(l63_step, obs, window=200, **kw)

    def rmse(est, times):  # DAPPER's: time mean of the instantaneous RMSE
        return float((est - truth)[:, times].pow(2).mean(-1).sqrt().mean())

    steps = torch.arange(truth.shape[1])
    after = steps >= 100
    near_ends = after & ((steps % 200 < 25) | (steps % 200 >= 175)) & (steps < 975)
    assert rmse(cycled, after) < 0.85 * rmse(plain, after)  # measured 0.239 against 0.318
    assert rmse(cycled, near_ends) < 0.7 * rmse(plain, near_ends)  # 0.209 against 0.426
    ends = torch.zeros_like(after)
    ends[199::50] = True  # the filter's analyses; in between it is a free forecast
    assert rmse(filt, ends) < 0.6 * 2**0.5  # well below the observation error


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shift": 0}, r"shift must be in \[1, window=10\]"),
        ({"shift": 11}, r"shift must be in \[1, window=10\]"),
        ({"window": 1}, "window must be >= 2"),
        ({"background_std": 0.0}, "background_std must be a scalar or"),
        ({"background_std": float("nan")}, "background_std must be a scalar or"),
        ({"background_std": torch.tensor([1.0, -1.0, 1.0])}, "background_std must be a scalar"),
        ({"background_std": torch.ones(2)}, r"got shape \(2,\)"),
        ({"background_std": torch.ones(3, 3)}, "not a symmetric positive definite"),
        ({"background_std": torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 1]])}, "not a symmetric"),
        ({"first_guess": "climatology"}, "expected 'forecast' or 'interpolate'"),
        ({"background_std": None, "background": torch.zeros(1, 3)}, "background_std is None"),
        ({"background": torch.zeros(2, 3)}, r"background must be finite with shape \(1, 3\)"),
        ({"model_std": 0.0}, "obs_std and model_std must be > 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    obs = torch.zeros(1, 30, 3, dtype=torch.float64)
    args = dict(obs_std=1.0, model_std=0.1, background_std=1.0, window=10) | kwargs
    with pytest.raises(UserInputError, match=match) as err:
        cycled_4dvar(l63_step, obs, **args)
    assert "\n" not in str(err.value)
    with pytest.raises(UserInputError, match=r"expected \(batch, time, component\)"):
        cycled_4dvar(l63_step, torch.zeros(30, 3), obs_std=1.0, model_std=0.1, background_std=1.0,
                     window=10)  # fmt: skip
