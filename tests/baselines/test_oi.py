import math

import pytest
import torch

from geodl.baselines import OIParams, optimal_interpolation, optimal_interpolation_dense
from geodl.errors import UserInputError

P = OIParams(lx=3.0, ly=4.0, lt=2.0, signal_std=1.5, noise_std=0.2)


def _problem(seed=0, shape=(6, 12, 10), frac=0.15):
    gen = torch.Generator().manual_seed(seed)
    t, y, x = (torch.arange(n, dtype=torch.float64) for n in shape)
    tt, yy, xx = torch.meshgrid(t, y, x, indexing="ij")
    truth = torch.sin(xx / 3) * torch.cos(yy / 4) + 0.3 * torch.sin(tt / 2)
    obs = truth + 0.2 * torch.randn(shape, generator=gen, dtype=torch.float64)
    obs[torch.rand(shape, generator=gen) > frac] = float("nan")
    return obs, t, y, x, truth


def test_local_equals_dense_when_tiles_see_everything():
    obs, t, y, x, _ = _problem()
    mean, std = optimal_interpolation(obs, t, y, x, P, tile=(2, 5, 4), cutoff=1e6, max_obs=10**6)
    ok = torch.isfinite(obs)
    it, iy, ix = ok.nonzero(as_tuple=True)
    pts = torch.stack((t[it], y[iy], x[ix]), -1)
    grid = torch.cartesian_prod(t, y, x)
    bg = obs[ok].mean()
    m_ref, s_ref = optimal_interpolation_dense(pts, obs[ok] - bg, grid, P)
    torch.testing.assert_close(mean, (m_ref + bg).reshape(obs.shape), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(std, s_ref.reshape(obs.shape), rtol=1e-7, atol=1e-8)


def test_local_cutoff_is_close_to_dense():
    obs, t, y, x, _ = _problem(seed=1)
    full, _ = optimal_interpolation(obs, t, y, x, P, cutoff=1e6, max_obs=10**6)
    local, _ = optimal_interpolation(obs, t, y, x, P, tile=(2, 4, 4), cutoff=3.0)
    # correlations beyond 3 scales are exp(-9) ~ 1e-4
    assert (local - full).abs().max() < 5e-3


def test_oi_beats_climatology_and_std_is_calibrated():
    obs, t, y, x, truth = _problem(seed=2, shape=(8, 24, 24), frac=0.25)
    mean, std = optimal_interpolation(obs, t, y, x, P)
    err = mean - truth
    clim = obs[torch.isfinite(obs)].mean()
    assert err.pow(2).mean().sqrt() < 0.5 * (truth - clim).pow(2).mean().sqrt()
    ok = torch.isfinite(obs)
    assert (std[ok] < std[~ok].mean()).float().mean() > 0.95  # observed points are more certain
    assert std.max() <= P.signal_std + 1e-9


def test_exact_observation_without_noise_is_reproduced():
    obs = torch.full((1, 5, 5), float("nan"), dtype=torch.float64)
    obs[0, 2, 2] = 2.0
    p = OIParams(lx=1.0, ly=1.0, lt=1.0, signal_std=1.0, noise_std=1e-4)
    mean, std = optimal_interpolation(
        obs, torch.zeros(1), torch.arange(5.0), torch.arange(5.0), p, mean=0.0
    )
    assert mean[0, 2, 2] == pytest.approx(2.0, rel=1e-6)
    assert std[0, 2, 2] < 1e-3 and std[0, 0, 0] == pytest.approx(1.0, abs=1e-3)
    assert mean[0, 2, 3] == pytest.approx(2.0 * math.exp(-1), rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"obs": torch.full((2, 3, 3), float("nan"))}, "no observation at all"),
        ({"obs": torch.zeros(3, 3)}, r"expects observations \(time, y, x\)"),
        ({"obs": torch.zeros(2, 3, 4)}, "do not match observations"),
    ],
)
def test_bad_input(kwargs, pattern):
    with pytest.raises(UserInputError, match=pattern):
        optimal_interpolation(
            kwargs["obs"], torch.arange(2.0), torch.arange(3.0), torch.arange(3.0), P
        )


def test_bad_params():
    with pytest.raises(UserInputError, match="lx must be > 0"):
        OIParams(lx=0.0, ly=1.0, lt=1.0, signal_std=1.0, noise_std=0.1)


def test_max_obs_bounds_the_system_and_stays_accurate():
    obs, t, y, x, truth = _problem(seed=3, shape=(10, 32, 32), frac=0.1)
    full, _ = optimal_interpolation(obs, t, y, x, P, tile=(5, 16, 16), max_obs=10**6)
    capped, _ = optimal_interpolation(obs, t, y, x, P, tile=(5, 16, 16), max_obs=400)
    assert torch.isfinite(capped).all()
    rmse = lambda a: float((a - truth).pow(2).mean().sqrt())  # noqa: E731
    assert rmse(capped) < 1.1 * rmse(full)
