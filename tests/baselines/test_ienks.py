"""Iterative ensemble Kalman smoother: linear limits (ETKF/ETKS, Kalman), rotation, L63 skill."""

from __future__ import annotations

import pytest
import torch

from geodl.baselines.enkf import ensemble_smoother, random_rotation
from geodl.baselines.ienks import _window_update, ienks
from geodl.errors import UserInputError
from geodl.obs import observe_state
from geodl.sim import lorenz_vector_field, rk4_step, simulate_lorenz

F64 = torch.float64
F63 = lorenz_vector_field("lorenz63")


pytestmark = pytest.mark.usefixtures("one_thread")


def l63_step(x):
    return rk4_step(F63, x, 0.01)


def linear_model(seed=1):
    """A stable rotation-scaling-shear ``A`` (spectral radius 0.999) and its step ``x -> A x``."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.linalg.matrix_exp(0.05 * torch.randn(3, 3, generator=gen, dtype=F64))
    a = a / torch.linalg.eigvals(a).abs().max() * 0.999
    return a, lambda x: x @ a.T


def linear_twin(step, n_traj=2, n_steps=60, every=5, seed=2):
    gen = torch.Generator().manual_seed(seed)
    truth = torch.empty(n_traj, n_steps + 1, 3, dtype=F64)
    truth[:, 0] = 3 * torch.randn(n_traj, 3, generator=gen, dtype=F64)
    for i in range(n_steps):
        truth[:, i + 1] = step(truth[:, i])
    obs = torch.full_like(truth, float("nan"))
    obs[:, ::every] = truth[:, ::every] + torch.randn(truth[:, ::every].shape, generator=gen)
    obs[:, 2 * every, 1] = float("nan")  # a partly observed time
    return truth, obs


@pytest.mark.parametrize("epsilon", [1e-4, None])
@pytest.mark.parametrize("inflation", [1.0, 1.1])
def test_linear_one_iteration_is_etkf_and_etks(epsilon, inflation):
    _, step = linear_model()
    _, obs = linear_twin(step)
    kw = {"obs_std": 1.0, "n_members": 5, "inflation": inflation}
    res = ienks(step, obs, n_iter=1, rotation=False, epsilon=epsilon, **kw)
    etkf = ensemble_smoother(step, obs, lag=0, **kw)  # same initial draw from the same seed
    etks = ensemble_smoother(step, obs, lag=5, **kw)  # one cycle of lag
    torch.testing.assert_close(res.filter_mean, etkf.filter_mean, atol=1e-8, rtol=0)
    torch.testing.assert_close(res.smoother_mean, etks.smoother_mean, atol=1e-8, rtol=0)
    at = torch.isfinite(obs).any(dim=(0, 2))
    torch.testing.assert_close(res.spread[:, at], etkf.spread[:, at], atol=1e-8, rtol=0)


def test_linear_shift_equal_lag_matches_etkf_at_window_ends():
    """S = L = 2: both observations of a window at once give the sequential ETKF's mean."""
    _, step = linear_model()
    _, obs = linear_twin(step, n_steps=70)  # analysis times 0, 5, ..., 70: windows end at 5, 15..
    res = ienks(step, obs, obs_std=1.0, n_members=5, lag=2, shift=2, n_iter=1)
    etkf = ensemble_smoother(step, obs, obs_std=1.0, n_members=5)
    ends = [5, 15, 25, 35, 45, 55, 65, 70]
    torch.testing.assert_close(
        res.filter_mean[:, ends], etkf.filter_mean[:, ends], atol=1e-8, rtol=0
    )
    torch.testing.assert_close(res.spread[:, ends], etkf.spread[:, ends], atol=1e-8, rtol=0)


def kalman(mean, cov, y, h, r):
    """Kalman analysis of ``N(mean, cov)`` with ``y = H x + N(0, r I)``: mean, covariance, gain."""
    gain = cov @ h.T @ torch.linalg.inv(h @ cov @ h.T + r * torch.eye(len(h), dtype=F64))
    return mean + gain @ (y - h @ mean), (torch.eye(3, dtype=F64) - gain @ h) @ cov, gain


def test_window_update_is_the_kalman_update_of_the_sample_statistics():
    a, step = linear_model()
    gen = torch.Generator().manual_seed(4)
    ens0 = torch.randn(1, 6, 3, generator=gen, dtype=F64) * torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    y = torch.tensor([[0.5, 0.0, -1.0]], dtype=F64)  # component 1 unobserved
    rsd = torch.tensor([[1.0, 0.0, 1.0]], dtype=F64) / 0.7
    w, sqrt, post = _window_update(
        step, ens0, 0, 2, [2], y, rsd, inflation=1.0, n_iter=1, tol=0.0, epsilon=1e-4
    )
    fc = ens0 @ (a @ a).T  # forecast two steps ahead
    h = torch.eye(3, dtype=F64)[[0, 2]]
    mean, cov, _ = kalman(fc.mean(1)[0], torch.cov(fc[0].T), y[0, [0, 2]], h, 0.49)
    torch.testing.assert_close(post.mean(1)[0], mean, atol=1e-8, rtol=0)
    torch.testing.assert_close(torch.cov(post[0].T), cov, atol=1e-8, rtol=0)
    # the smoothed initial ensemble is the Kalman smoother of the initial time
    smoothed = ens0.mean(1) + (w[:, None] + sqrt) @ (ens0 - ens0.mean(1, keepdim=True))
    m0, c0 = ens0.mean(1)[0], torch.cov(ens0[0].T)
    s_mean, s_cov, _ = kalman(m0, c0, y[0, [0, 2]], h @ a @ a, 0.49)
    torch.testing.assert_close(smoothed.mean(1)[0], s_mean, atol=1e-8, rtol=0)
    torch.testing.assert_close(torch.cov(smoothed[0].T), s_cov, atol=1e-8, rtol=0)


def test_large_ensemble_matches_the_kalman_filter():
    """N = 1000 members drawn from N(m, I): one analysis close to the exact Kalman filter's."""
    a, step = linear_model()
    obs = torch.full((1, 4, 3), float("nan"), dtype=F64)
    obs[0, 3] = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    m = torch.tensor([[0.3, -1.0, 2.0]], dtype=F64)
    kw = {"n_members": 1000, "init_mean": m, "n_iter": 1, "rotation": False, "seed": 3}
    res = ienks(step, obs, obs_std=0.8, **kw)
    a3 = torch.linalg.matrix_power(a, 3)
    mean, cov, _ = kalman(a3 @ m[0], a3 @ a3.T, obs[0, 3], torch.eye(3, dtype=F64), 0.64)
    torch.testing.assert_close(res.filter_mean[0, 3], mean, atol=0.05, rtol=0)
    torch.testing.assert_close(res.spread[0, 3], cov.diagonal().sqrt(), atol=0.03, rtol=0)


def test_random_rotation_keeps_mean_and_covariance():
    gen = torch.Generator().manual_seed(0)
    q = random_rotation(3000, 5, gen, F64)  # (3000, 5, 5)
    eye, ones = torch.eye(5, dtype=F64), torch.ones(5, 1, dtype=F64)
    torch.testing.assert_close(q @ q.transpose(1, 2), eye.expand(3000, 5, 5))
    torch.testing.assert_close(q @ ones, ones.expand(3000, 5, 1))
    ens = torch.randn(5, 3, generator=gen, dtype=F64)
    rotated = q[0] @ ens
    torch.testing.assert_close(rotated.mean(0), ens.mean(0))
    torch.testing.assert_close(torch.cov(rotated.T), torch.cov(ens.T))
    assert not torch.allclose(rotated, ens)
    # Haar on the rotations fixing 1: the average is the projector onto the ones vector
    torch.testing.assert_close(q.mean(0), torch.full((5, 5), 0.2, dtype=F64), atol=0.05, rtol=0)
    again = random_rotation(3000, 5, torch.Generator().manual_seed(0), F64)
    assert torch.equal(again, q)


def test_rotation_changes_no_linear_estimate_and_is_seeded():
    _, step = linear_model()
    _, obs = linear_twin(step)
    plain = ienks(step, obs, obs_std=1.0, n_members=5, n_iter=1, rotation=False)
    rot = ienks(step, obs, obs_std=1.0, n_members=5, n_iter=1, rotation=True)
    torch.testing.assert_close(rot.filter_mean, plain.filter_mean, atol=1e-8, rtol=0)
    torch.testing.assert_close(rot.smoother_mean, plain.smoother_mean, atol=1e-8, rtol=0)
    torch.testing.assert_close(rot.spread, plain.spread, atol=1e-8, rtol=0)


def test_l63_sakov_2012_beats_etkf():
    """Sakov et al. (2012) setup, short run; DAPPER reference iEnKS N=10: rmse_a about 0.31."""
    truth = simulate_lorenz("lorenz63", n_trajectories=2, n_steps=2000, spinup_steps=1000, seed=7)
    obs = torch.from_numpy(observe_state(truth.numpy(), every=25, noise_std=2**0.5, seed=11))
    times = torch.isfinite(obs).any(dim=(0, 2))
    times[:500] = False  # burn-in

    def rmse(est):  # time mean of the instantaneous RMSE over analysis times (DAPPER)
        return float((est - truth)[:, times].pow(2).mean(-1).sqrt().mean())

    kw = {"obs_std": 2**0.5, "n_members": 10, "inflation": 1.02}
    res = ienks(l63_step, obs, lag=1, shift=1, **kw)
    etkf = ensemble_smoother(l63_step, obs, **kw)
    rmse_a, rmse_s = rmse(res.filter_mean), rmse(res.smoother_mean)
    assert rmse_a < 0.40, rmse_a
    assert rmse_s < rmse_a
    assert rmse_a < 0.8 * rmse(etkf.filter_mean)
    again = ienks(l63_step, obs, lag=1, shift=1, **kw)
    assert torch.equal(again.smoother_mean, res.smoother_mean)  # deterministic with a seed
    other = ienks(l63_step, obs[:, :300], lag=1, shift=1, seed=1, **kw)
    assert not torch.equal(other.filter_mean, res.filter_mean[:, :300])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_members": 1}, "n_members must be >= 2, got 1"),
        ({"lag": 0}, r"lag must be >= 1 \(analysis cycles per window\), got 0"),
        ({"shift": 0}, "shift must be in 1..lag=1, got 0"),
        ({"lag": 2, "shift": 3}, "shift must be in 1..lag=2, got 3"),
        ({"inflation": 0.9}, "inflation must be >= 1, got 0.9"),
        ({"obs_std": 0.0}, "obs_std must be > 0, got 0.0"),
        ({"n_iter": 0}, "n_iter must be >= 1, got 0"),
        ({"tol": -1.0}, "tol must be >= 0, got -1.0"),
        ({"epsilon": 0.0}, "epsilon must be > 0 or None, got 0.0"),
        ({"init_mean": torch.zeros(3)}, r"init_mean has shape \(3,\), need \(1, 3\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    obs = torch.zeros(1, 5, 3, dtype=F64)
    kwargs = {"obs_std": 1.0, **kwargs}
    with pytest.raises(UserInputError, match=match):
        ienks(l63_step, obs, **kwargs)


def test_bad_obs():
    with pytest.raises(
        UserInputError, match=r"shape \(5, 3\), expected \(batch, time, component\)"
    ):
        ienks(l63_step, torch.zeros(5, 3), obs_std=1.0)
    with pytest.raises(UserInputError, match="obs has no finite value"):
        ienks(l63_step, torch.full((1, 5, 3), float("nan")), obs_std=1.0)
