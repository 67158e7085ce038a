"""Cloud masks: exact cover, spatial correlation, persistence, transplanting, noise, errors."""

import numpy as np
import pytest

from geodl.errors import DataError, UserInputError
from geodl.obs import Grid, cloud_masks, observe_clouds, transplant_clouds


def _grid(nt: int = 30, n: int = 48, dx: float = 10.0) -> Grid:
    c = np.arange(n) * dx
    return Grid(time=np.arange(float(nt)), y=c, x=c)


@pytest.mark.parametrize("cover", [0.1, 0.5, 0.9])
def test_cover_is_as_configured_every_day(cover):
    m = cloud_masks(_grid(), cover=cover, seed=1)
    np.testing.assert_allclose(m.mean(axis=(1, 2)), cover, atol=1 / 48**2)


def test_masks_are_spatially_correlated_at_the_length_scale():
    g = _grid(nt=5)
    smooth = cloud_masks(g, cover=0.5, length_scale_km=80.0, persistence=0.0, seed=2)
    rough = cloud_masks(g, cover=0.5, length_scale_km=5.0, persistence=0.0, seed=2)
    # Share of neighbouring cells with the same state: ~1 for big clouds, ~0.5 for salt-and-pepper.
    same = lambda m: (m[:, :, 1:] == m[:, :, :-1]).mean()  # noqa: E731
    assert same(smooth) > 0.9
    assert same(rough) < 0.75


def test_persistence_controls_day_to_day_agreement():
    g = _grid(nt=40)
    agree = {
        p: (
            cloud_masks(g, persistence=p, seed=3)[1:] == cloud_masks(g, persistence=p, seed=3)[:-1]
        ).mean()
        for p in (0.0, 0.95)
    }
    assert agree[0.95] > 0.85
    assert abs(agree[0.0] - 0.5) < 0.1  # independent days agree by chance only


def test_observe_clouds_noise_seed_and_table():
    g = _grid()
    truth = np.random.default_rng(0).standard_normal(g.shape)
    a = observe_clouds(truth, g, cover=0.3, noise_std=0.2, seed=5)
    b = observe_clouds(truth, g, cover=0.3, noise_std=0.2, seed=5)
    np.testing.assert_array_equal(a.grid, b.grid)
    assert a.coverage == pytest.approx(0.7, abs=1e-3)
    resid = (a.grid - truth)[np.isfinite(a.grid)]
    assert abs(resid.std() - 0.2) < 0.2 * 0.03
    assert a.value.size == np.isfinite(a.grid).sum()


def test_land_stays_unobserved():
    g = _grid(nt=3)
    truth = np.ones(g.shape)
    truth[:, :10] = np.nan
    obs = observe_clouds(truth, g, cover=0.2)
    assert np.isnan(obs.grid[:, :10]).all()
    assert np.isfinite(obs.value).all()


def test_transplant_uses_donor_days():
    g = _grid(nt=4)
    donor = cloud_masks(_grid(nt=10), cover=0.6, seed=9)
    obs = transplant_clouds(np.zeros(g.shape), g, donor, source_days=np.array([3, 3, 7, 0]))
    np.testing.assert_array_equal(np.isnan(obs.grid), donor[[3, 3, 7, 0]])
    random = transplant_clouds(np.zeros(g.shape), g, donor, seed=1)
    again = transplant_clouds(np.zeros(g.shape), g, donor, seed=1)
    np.testing.assert_array_equal(random.grid, again.grid)
    assert any((np.isnan(random.grid[0]) == donor[d]).all() for d in range(10))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cover": 0.0}, r"cloud cover must be a fraction in \(0, 1\)"),
        ({"cover": 1.0}, r"cloud cover must be a fraction in \(0, 1\)"),
        ({"cover": 1.5}, r"cloud cover must be a fraction in \(0, 1\)"),
        ({"persistence": 1.0}, r"persistence .* must be in \[0, 1\)"),
        ({"length_scale_km": -1.0}, "length_scale_km must be > 0"),
        ({"noise_std": -1.0}, "noise_std must be >= 0"),
    ],
)
def test_bad_parameters(kwargs, match):
    g = _grid(nt=2)
    with pytest.raises(UserInputError, match=match):
        observe_clouds(np.zeros(g.shape), g, **kwargs)


def test_bad_donor_masks():
    g = _grid(nt=2)
    with pytest.raises(DataError, match="donor cloud masks have shape"):
        transplant_clouds(np.zeros(g.shape), g, np.zeros((3, 5, 5), bool))
    with pytest.raises(UserInputError, match="source_days must hold 2 indices in 0..2"):
        transplant_clouds(
            np.zeros(g.shape), g, np.zeros((3, 48, 48), bool), source_days=np.array([0, 3])
        )
