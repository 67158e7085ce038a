"""Nadir and swath altimetry: geometry, coverage, noise, determinism, table, errors."""

import numpy as np
import pytest

from geodl.errors import DataError, UserInputError
from geodl.obs import Grid, observe_nadir, observe_swath, satellite_passes


def _grid(nt: int = 20, n: int = 50, dx: float = 20.0) -> Grid:
    c = (np.arange(n) + 0.5) * dx
    return Grid(time=np.arange(float(nt)), y=c, x=c)


def _truth(g: Grid) -> np.ndarray:
    t, y, x = np.meshgrid(g.time, g.y, g.x, indexing="ij")
    return np.sin(2 * np.pi * x / 500) * np.cos(2 * np.pi * y / 700) + 0.01 * t


def test_nadir_samples_lie_on_the_tracks_at_the_pass_times():
    g = _grid()
    obs = observe_nadir(_truth(g), g, n_satellites=1, along_track_km=2.0, noise_std=0.0)
    passes = satellite_passes(
        g,
        n_satellites=1,
        repeat_days=10.0,
        track_spacing_km=250.0,
        track_angle_deg=70.0,
        min_separation_km=20.0,
    )
    assert passes
    for p in passes:
        it = int(np.abs(g.time - p.time).argmin())
        sel = obs.time == g.time[it]
        d = np.stack(
            [
                np.abs(q.distance(obs.x[sel], obs.y[sel]))
                for q in passes
                if int(np.abs(g.time - q.time).argmin()) == it
            ]
        )
        # every observed cell of that day is within half a cell diagonal of one of its tracks
        assert (d.min(0) <= 20.0 * np.sqrt(2) / 2 + 1e-9).all()
    # noise-free values are the truth at those cells
    np.testing.assert_allclose(obs.grid[np.isfinite(obs.grid)], _truth(g)[np.isfinite(obs.grid)])


def test_nadir_repeat_cycle_and_satellite_count_set_coverage():
    g = _grid(nt=40)
    one = observe_nadir(_truth(g), g, n_satellites=1, noise_std=0.0)
    four = observe_nadir(_truth(g), g, n_satellites=4, noise_std=0.0)
    seen_one = np.isfinite(one.grid)
    # The pattern repeats after repeat_days = 10 (daily grid): day t and t + 10 see the same cells.
    np.testing.assert_array_equal(seen_one[:30], seen_one[10:])
    # Four satellites on distinct tracks see ~4x the cells of one (overlaps at crossovers only).
    ratio = four.coverage / one.coverage
    assert 3.3 < ratio < 4.1, ratio


def test_nadir_noise_std_and_seed():
    g = _grid()
    truth = _truth(g)
    a = observe_nadir(truth, g, noise_std=0.05, seed=1)
    b = observe_nadir(truth, g, noise_std=0.05, seed=1)
    c = observe_nadir(truth, g, noise_std=0.05, seed=2)
    np.testing.assert_array_equal(a.grid, b.grid)
    assert not np.array_equal(a.value, c.value)
    resid = a.grid - truth
    resid = resid[np.isfinite(resid)]
    assert resid.size > 2000
    assert abs(resid.std() - 0.05) < 0.05 * 0.05
    assert abs(resid.mean()) < 0.005


def test_point_table_matches_grid():
    g = _grid()
    obs = observe_nadir(_truth(g), g, noise_std=0.01)
    it = np.searchsorted(g.time, obs.time)
    iy = np.rint(obs.y / 20.0 - 0.5).astype(int)
    ix = np.rint(obs.x / 20.0 - 0.5).astype(int)
    np.testing.assert_array_equal(obs.grid[it, iy, ix], obs.value)
    assert obs.value.size == np.isfinite(obs.grid).sum()
    assert set(obs.table()) == {"time", "y", "x", "value"}


def test_swath_sees_cells_between_gap_and_outer_edge_only():
    g = _grid(nt=21)
    obs = observe_swath(_truth(g), g, noise_std=0.0)
    yy, xx = np.meshgrid(g.y, g.x, indexing="ij")
    passes = satellite_passes(
        g,
        n_satellites=1,
        repeat_days=21.0,
        track_spacing_km=130.0,
        track_angle_deg=70.0,
        min_separation_km=20.0,
    )
    for day in range(3):
        todays = [p for p in passes if int(np.abs(g.time - p.time).argmin()) == day]
        expect = np.zeros(yy.shape, bool)
        for p in todays:
            d = np.abs(p.distance(xx, yy))
            expect |= (d >= 10.0) & (d <= 60.0)
        np.testing.assert_array_equal(np.isfinite(obs.grid[day]), expect)
    # Swath coverage is far above nadir's (2 x 50 km wide vs a line).
    assert obs.coverage > 3 * observe_nadir(_truth(g), g, n_satellites=1).coverage


def test_swath_noise_std_is_its_own():
    g = _grid()
    truth = _truth(g)
    obs = observe_swath(truth, g, noise_std=0.02, seed=3)
    resid = (obs.grid - truth)[np.isfinite(obs.grid)]
    assert abs(resid.std() - 0.02) < 0.02 * 0.03


@pytest.mark.parametrize(
    ("func", "kwargs", "match"),
    [
        (observe_nadir, {"n_satellites": 20}, r"use at most 12 satellites"),
        (observe_nadir, {"n_satellites": 0}, "n_satellites must be an integer >= 1"),
        (observe_nadir, {"repeat_days": -1.0}, "repeat_days must be > 0"),
        (observe_nadir, {"track_angle_deg": 90.0}, r"track_angle_deg must be in \(0, 90\)"),
        (observe_nadir, {"along_track_km": 0.0}, "along_track_km must be > 0"),
        (observe_nadir, {"noise_std": -0.1}, "noise_std must be >= 0"),
        (observe_swath, {"swath_width_km": 0.0}, "swath_width_km must be > 0"),
        (observe_swath, {"gap_km": -5.0}, "gap_km must be >= 0"),
    ],
)
def test_bad_parameters(func, kwargs, match):
    g = _grid(nt=2)
    with pytest.raises(UserInputError, match=match):
        func(np.zeros(g.shape), g, **kwargs)


def test_bad_grids():
    with pytest.raises(DataError, match="strictly increasing"):
        Grid(time=np.array([0.0, 0.0]), y=np.arange(3.0), x=np.arange(3.0))
    with pytest.raises(DataError, match="regularly spaced"):
        Grid(time=np.arange(2.0), y=np.array([0.0, 1.0, 3.0]), x=np.arange(3.0))
    g = _grid(nt=2)
    with pytest.raises(DataError, match=r"expected \(time, y, x\) = \(2, 50, 50\)"):
        observe_nadir(np.zeros((2, 50, 49)), g)
