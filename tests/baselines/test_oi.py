import json
import math

import pytest
import torch

from geodl.baselines import (
    OIParams,
    estimate_scales,
    optimal_interpolation,
    optimal_interpolation_dense,
    tune_oi,
)
from geodl.baselines.oi import _select_tiles, _wrap
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


# --- periodic domains -------------------------------------------------------------------------


def _dense_on_grid(obs, t, y, x, params, mean, **kwargs):
    ok = torch.isfinite(obs)
    it, iy, ix = ok.nonzero(as_tuple=True)
    pts = torch.stack((t[it], y[iy], x[ix]), -1)
    grid = torch.cartesian_prod(t, y, x)
    m, s = optimal_interpolation_dense(pts, obs[ok] - mean, grid, params, **kwargs)
    return m.reshape(obs.shape) + mean, None if s is None else s.reshape(obs.shape)


def test_periodic_local_equals_dense_when_tiles_see_everything():
    # scales of a quarter of the domain: the covariance needs the periodic images
    obs, t, y, x, _ = _problem(seed=4, shape=(6, 12, 10))
    period = (12.0, 10.0)
    mean, std = optimal_interpolation(
        obs, t, y, x, P, tile=(2, 5, 4), cutoff=1e6, max_obs=10**6, period=period
    )
    bg = float(obs[torch.isfinite(obs)].mean())
    m_ref, s_ref = _dense_on_grid(obs, t, y, x, P, bg, period=period)
    torch.testing.assert_close(mean, m_ref, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(std, s_ref, rtol=1e-7, atol=1e-8)
    plain, _ = optimal_interpolation(obs, t, y, x, P, tile=(2, 5, 4), cutoff=1e6, max_obs=10**6)
    assert (plain - mean).abs().max() > 1e-2  # the period changes the analysis


def test_periodic_local_cutoff_is_close_to_dense_and_shift_equivariant():
    obs, t, y, x, _ = _problem(seed=5, shape=(6, 24, 24))
    p = OIParams(lx=2.0, ly=2.0, lt=2.0, signal_std=1.5, noise_std=0.2)
    kw = {"tile": (2, 6, 6), "cutoff": 4.0, "period": (24.0, 24.0), "mean": 0.5}
    local, _ = optimal_interpolation(obs, t, y, x, p, **kw)
    m_ref, _ = _dense_on_grid(obs, t, y, x, p, 0.5, period=kw["period"])
    # the truncation error of the local solves (1.5e-2 at cutoff 3, 4e-3 at 4 without period);
    # tiles that missed the observations across the boundary would be off by ~0.3
    assert (local - m_ref).abs().max() < 1e-2
    # a cyclic shift of the observations by whole tiles shifts the analysis: every tile sees
    # the same observations across the boundary as inside
    rolled, _ = optimal_interpolation(obs.roll((6, 12), (1, 2)), t, y, x, p, **kw)
    torch.testing.assert_close(rolled, local.roll((6, 12), (1, 2)), rtol=0, atol=1e-9)


def test_observation_near_x0_influences_x_near_l_only_with_period():
    obs = torch.full((1, 8, 32), float("nan"), dtype=torch.float64)
    obs[0, 4, 0] = 1.0
    t, y, x = torch.zeros(1), torch.arange(8.0), torch.arange(32.0)
    p = OIParams(lx=2.0, ly=2.0, lt=1.0, signal_std=1.0, noise_std=0.1)
    kw = {"tile": (1, 8, 8), "mean": 0.0}  # the tile x in [24, 31] must find the obs at x = 0
    wrapped, std = optimal_interpolation(obs, t, y, x, p, period=(None, 32.0), **kw)
    bounded, std0 = optimal_interpolation(obs, t, y, x, p, **kw)
    expected = math.exp(-1 / 4) / (1 + 0.1**2)  # one cell away across the boundary
    assert wrapped[0, 4, 31] == pytest.approx(expected, rel=1e-9)
    assert wrapped[0, 4, 31] == pytest.approx(float(wrapped[0, 4, 1]), rel=1e-9)
    assert std[0, 4, 31] < 0.9 and std0[0, 4, 31] == pytest.approx(1.0)
    assert bounded[0, 4, 31] == 0.0 and bounded[0, 4, 1] == pytest.approx(expected, rel=1e-9)


def test_periodic_covariance_stays_positive_definite_for_long_scales():
    # every cell of a ring observed, scale a third of the ring: exp(-wrap(d)^2 / L^2) alone is
    # not positive definite there and the Cholesky fails
    x = torch.arange(32.0, dtype=torch.float64)
    pts = torch.stack((torch.zeros(32), torch.zeros(32), x), -1).double()
    p = OIParams(lx=10.0, ly=1.0, lt=1.0, signal_std=1.0, noise_std=1e-3)
    values = torch.sin(2 * math.pi * x / 32)
    mean, std = optimal_interpolation_dense(pts, values, pts, p, period=(None, 32.0))
    torch.testing.assert_close(mean, values, atol=1e-4, rtol=0)
    # the analysis commutes with a cyclic shift of the observations
    shifted, _ = optimal_interpolation_dense(pts, values.roll(5), pts, p, period=(None, 32.0))
    torch.testing.assert_close(shifted, mean.roll(5), atol=1e-9, rtol=0)


# --- mean-only fast path and analysis times ----------------------------------------------------


def test_times_subset_and_mean_only_match_the_full_analysis():
    obs, t, y, x, _ = _problem(seed=6)
    kw = {"tile": (2, 5, 4), "cutoff": 1e6, "max_obs": 10**6}
    full_mean, full_std = optimal_interpolation(obs, t, y, x, P, **kw)
    times = torch.tensor([4, 1, 3])
    mean, std = optimal_interpolation(obs, t, y, x, P, times=times, **kw)
    fast, none = optimal_interpolation(obs, t, y, x, P, times=times, return_std=False, **kw)
    assert none is None
    keep = torch.tensor([1, 3, 4])
    skip = torch.tensor([0, 2, 5])
    torch.testing.assert_close(mean[keep], full_mean[keep], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(std[keep], full_std[keep], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fast, mean, rtol=0, atol=1e-12, equal_nan=True)
    assert mean[skip].isnan().all() and std[skip].isnan().all()
    m_dense, s_dense = _dense_on_grid(obs, t, y, x, P, 0.0, return_std=False)
    assert s_dense is None and m_dense.shape == obs.shape


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"period": (10.0,)}, "period must be a pair"),
        ({"period": (None, -1.0)}, "period along x must be None or a length > 0"),
        ({"period": (2.0, None)}, r"period along y \(2.0\) must exceed the extent"),
        ({"times": torch.tensor([0.5])}, "integer time indices"),
        ({"times": torch.tensor([], dtype=torch.long)}, "times is empty"),
        ({"times": torch.tensor([0, 2])}, r"times must lie in 0..1"),
        ({"window": (slice(0, 2),)}, r"window must be a pair \(ys, xs\)"),
        ({"window": (slice(0, 3, 2), slice(None))}, "window along y must be a slice of step 1"),
        ({"window": (slice(None), slice(3, 5))}, "window along x .* selects no grid point"),
    ],
)
def test_bad_period_and_times(kwargs, pattern):
    obs = torch.zeros(2, 3, 3)
    with pytest.raises(UserInputError, match=pattern):
        optimal_interpolation(
            obs, torch.arange(2.0), torch.arange(3.0), torch.arange(3.0), P, **kwargs
        )


def _full_scan_tiles(pts, coords, scale, periods, blocks, tile, cutoff, max_obs, min_tile):
    """The tile selection as it was before the candidate search (geodl 626d742): every tile
    scans every observation, in torch."""
    _, ny, nx = tile
    todo = [
        (block, (b, min(b + ny, len(coords[1]))), (c, min(c + nx, len(coords[2]))))
        for block in blocks
        for b in range(0, len(coords[1]), ny)
        for c in range(0, len(coords[2]), nx)
    ]

    def near(box):
        lo = torch.stack([coords[k][box[k][0]] for k in range(3)])
        hi = torch.stack([coords[k][box[k][1] - 1] for k in range(3)])
        offset = pts - (lo + hi) / 2
        for k, per in enumerate(periods):
            if per is not None:
                offset[:, k] = _wrap(offset[:, k], per)
        gap = (offset.abs() - (hi - lo) / 2).clamp_min(0) / scale
        sel = (gap <= cutoff).all(-1).nonzero().squeeze(-1)
        return sel, gap[sel].norm(dim=-1)

    tiles = []
    while todo:
        box = todo.pop()
        sel, dist = near(box)
        sizes = [box[k][1] - box[k][0] for k in range(3)]
        if len(sel) > max_obs:
            if int((dist <= 1.0).sum()) > max_obs and math.prod(sizes) > min_tile:
                extent = [
                    float((coords[k][box[k][1] - 1] - coords[k][box[k][0]]) / scale[k])
                    if sizes[k] > 1
                    else -1.0
                    for k in range(3)
                ]
                k = max(range(3), key=lambda i: extent[i])
                mid = box[k][0] + sizes[k] // 2
                todo.append(tuple((box[i][0], mid) if i == k else box[i] for i in range(3)))
                todo.append(tuple((mid, box[i][1]) if i == k else box[i] for i in range(3)))
                continue
            sel = sel[dist.argsort()[:max_obs]]
        tiles.append((box, sel))
    return tiles


@pytest.mark.parametrize("period", [(None, None), (24.0, 30.0)])
def test_candidate_selection_equals_the_full_scan(period):
    # small max_obs: tiles split several times and drop observations; the candidate search must
    # give the same tiles, in the same order, with the same observations in the same order
    obs, t, y, x, _ = _problem(seed=7, shape=(12, 24, 30), frac=0.2)
    ok = torch.isfinite(obs)
    it, iy, ix = ok.nonzero(as_tuple=True)
    pts = torch.stack((t[it], y[iy], x[ix]), -1)
    scale = pts.new_tensor([P.lt, P.ly, P.lx])
    periods = (None, *period)
    blocks = [(0, 5), (5, 10), (10, 12)]
    kw = {"cutoff": 3.0, "max_obs": 60, "min_tile": 4}
    ref = _full_scan_tiles(pts, (t, y, x), scale, periods, blocks, (5, 8, 8), **kw)
    new = _select_tiles(
        pts.numpy(),
        [c.tolist() for c in (t, y, x)],
        scale.tolist(),
        periods,
        blocks,
        (range(24), range(30)),
        (5, 8, 8),
        **kw,
    )
    assert len(ref) > 3 * len(blocks) * 3 * 4  # tiles were split
    assert any(len(sel) == kw["max_obs"] for _, sel in ref)  # and observations dropped
    assert [box for box, _ in new] == [box for box, _ in ref]
    for (_, a), (_, b) in zip(new, ref, strict=True):
        assert a.tolist() == b.tolist()


def test_window_with_a_halo_equals_the_whole_grid():
    obs, t, y, x, _ = _problem(seed=8, shape=(10, 32, 36), frac=0.2)
    kw = {"tile": (5, 4, 4), "max_obs": 40, "min_tile": 4, "mean": 0.1}
    full, full_std = optimal_interpolation(obs, t, y, x, P, **kw)
    # the window alone: the same analysis there, NaN elsewhere
    win = (slice(8, 20), slice(12, 22))
    m, s = optimal_interpolation(obs, t, y, x, P, window=win, **kw)
    torch.testing.assert_close(m[:, win[0], win[1]], full[:, win[0], win[1]], rtol=0, atol=1e-12)
    torch.testing.assert_close(s[:, win[0], win[1]], full_std[:, win[0], win[1]])
    outside = torch.ones_like(obs, dtype=torch.bool)
    outside[:, win[0], win[1]] = False
    assert m[outside].isnan().all() and s[outside].isnan().all()
    # a region with a halo of whole tiles beyond the cutoff (3 scales: 12 cells in y, 9 in x)
    crop = (slice(None), slice(4, 32), slice(0, 36))  # y: 16 - 12 = 4, a whole tile
    region = (slice(16 - 4, 20 - 4), slice(12, 16))
    m, s = optimal_interpolation(obs[crop], t, y[crop[1]], x[crop[2]], P, window=region, **kw)
    inner = (slice(None), slice(16, 20), slice(12, 16))
    torch.testing.assert_close(m[:, region[0], region[1]], full[inner], rtol=0, atol=1e-12)
    torch.testing.assert_close(s[:, region[0], region[1]], full_std[inner])


# --- scale estimation and tuning -----------------------------------------------------------------


def _gaussian_field(shape, lt, lx, *, noise, frac=0.1, seed=0):
    """Periodic Gaussian random field of correlation exp(-dt^2/lt^2 - dr^2/lx^2), unit variance,
    observed with white noise at a random ``frac`` of the cells (grid spacing 1)."""
    gen = torch.Generator().manual_seed(seed)
    white = torch.randn(shape, generator=gen, dtype=torch.float64)
    kt, ky, kx = torch.meshgrid(
        *(2 * math.pi * torch.fft.fftfreq(n, dtype=torch.float64) for n in shape), indexing="ij"
    )
    # a Gaussian kernel of std s gives the correlation exp(-d^2 / (4 s^2)): s = L / 2
    kernel = torch.exp(-0.5 * (kt**2 * (lt / 2) ** 2 + (ky**2 + kx**2) * (lx / 2) ** 2))
    truth = torch.fft.ifftn(torch.fft.fftn(white) * kernel).real
    truth = truth / truth.std()
    seen = torch.rand(shape, generator=gen) < frac
    noisy = truth + noise * torch.randn(shape, generator=gen, dtype=torch.float64)
    obs = torch.where(seen, noisy, math.nan)
    t, y, x = (torch.arange(n, dtype=torch.float64) for n in shape)
    return obs, truth, t, y, x


@pytest.mark.parametrize("periodic", [True, False])
def test_estimate_scales_recovers_known_scales(periodic):
    obs, _, t, y, x = _gaussian_field((40, 32, 32), lt=3.0, lx=5.0, noise=0.1)
    period = (32.0, 32.0) if periodic else (None, None)
    s = estimate_scales(obs, t, y, x, noise_std=0.1, period=period)
    assert s["lx"] == pytest.approx(5.0, rel=0.2)
    assert s["lt"] == pytest.approx(3.0, rel=0.2)
    assert s["signal_std"] == pytest.approx(1.0, rel=0.1)
    assert not s["lx_bounded"] and not s["lt_bounded"]
    assert json.loads(json.dumps(s)) == s


def test_estimate_scales_flags_a_scale_beyond_the_lags():
    obs, _, t, y, x = _gaussian_field((40, 32, 32), lt=3.0, lx=5.0, noise=0.0)
    frozen = obs[:1].expand(40, 32, 32).clone()  # the same field at every time: lt = infinity
    frozen[torch.rand(frozen.shape, generator=torch.Generator().manual_seed(1)) > 0.3] = math.nan
    s = estimate_scales(frozen, t, y, x, noise_std=0.0)
    assert s["lt_bounded"] and not s["lx_bounded"]
    assert 20.0 <= s["lt"] <= 39.0  # the largest lag with enough pairs


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"noise_std": 5.0}, "does not exceed the noise variance"),
        ({"t": torch.tensor([0.0, 1.0, 3.0])}, "regular t coordinate"),
        ({"period": (5.0, None)}, r"period along y \(5.0\) must equal the grid length"),
        ({"min_pairs": 10**6}, "no spatial separation has 1000000 pairs"),
    ],
)
def test_estimate_scales_bad_input(kwargs, pattern):
    obs = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    args = {"t": torch.arange(3.0), "y": torch.arange(4.0), "x": torch.arange(4.0)}
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    kwargs.setdefault("noise_std", 0.1)
    with pytest.raises(UserInputError, match=pattern):
        estimate_scales(obs, args["t"], args["y"], args["x"], **kwargs)


def _tuning_problem():
    obs, truth, t, y, x = _gaussian_field((30, 32, 32), lt=3.0, lx=5.0, noise=0.1)
    truth = truth.clone()
    truth[:, :4, :6] = math.nan  # land: not scored
    kw = {"signal_std": 1.0, "noise_std": 0.1, "period": (32.0, 32.0), "tile": (2, 32, 32)}
    kw.update({"times": torch.tensor([14, 15]), "max_obs": 400})
    return obs, truth, t, y, x, kw


def test_tune_oi_picks_the_known_scales():
    obs, truth, t, y, x, kw = _tuning_problem()
    r = math.sqrt(2)
    res = tune_oi(obs, truth, t, y, x, lx=[5 / r, 5, 5 * r], lt=[3 / r, 3, 3 * r], **kw)
    assert res.params.lx == pytest.approx(5.0, rel=r - 1 + 1e-9)  # within one grid step
    assert res.params.lt == pytest.approx(3.0, rel=r - 1 + 1e-9)
    assert res.params.ly == res.params.lx and res.params.noise_std == 0.1
    assert not res.on_edge
    rmses = [point["rmse"] for point in res.grid]
    assert res.rmse == min(rmses) and len(res.grid) >= 9
    assert res.grid == sorted(res.grid, key=lambda p: (p["lx"], p["lt"], p["noise_std"]))
    # the tuned OI beats the prior guess of 1.4 x the scales
    assert res.rmse < next(p["rmse"] for p in res.grid if p["lx"] > 7 and p["lt"] > 4)


def test_tune_oi_expands_a_grid_below_the_optimum():
    obs, truth, t, y, x, kw = _tuning_problem()
    r = math.sqrt(2)
    low = [5 / r**3, 5 / r**2]  # the optimum (5) lies two steps above the grid
    res = tune_oi(obs, truth, t, y, x, lx=low, lt=[3.0], expand=3, **kw)
    assert not res.on_edge
    assert res.params.lx == pytest.approx(5.0)
    assert sorted({p["lx"] for p in res.grid}) == pytest.approx([5 * r**k for k in range(-3, 2)])
    stuck = tune_oi(obs, truth, t, y, x, lx=low, lt=[3.0], expand=0, **kw)
    assert stuck.on_edge and stuck.params.lx == pytest.approx(low[-1])
    content = json.loads(json.dumps(res.to_dict()))
    assert content["params"]["lx"] == res.params.lx and content["on_edge"] is False
    assert len(content["grid"]) == 5


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"truth": torch.zeros(2, 3, 4)}, "truth has shape"),
        ({"lx": []}, "lx must hold at least one finite value > 0"),
        ({"lt": [1.0, -2.0]}, "lt must hold at least one finite value > 0"),
        ({"expand": -1}, "expand must be an integer >= 0"),
        ({"truth": torch.full((2, 3, 3), math.nan)}, "truth has no finite value"),
    ],
)
def test_tune_oi_bad_input(kwargs, pattern):
    obs = torch.zeros(2, 3, 3)
    args = {"truth": torch.zeros(2, 3, 3), "lx": [1.0], "lt": [1.0]} | kwargs
    truth = args.pop("truth")
    with pytest.raises(UserInputError, match=pattern):
        tune_oi(
            obs,
            truth,
            torch.arange(2.0),
            torch.arange(3.0),
            torch.arange(3.0),
            signal_std=1.0,
            noise_std=0.1,
            **args,
        )
