"""Cloud masks for SST-like fields: spatially correlated, persistent in time, or transplanted.

A cloud mask is a boolean array ``(time, y, x)``, True where cloudy (unobserved). Generated masks
threshold a smooth Gaussian random field: white noise smoothed by a Gaussian kernel of std
``length_scale_km`` (by FFT, so the smoothing wraps around the domain edges), evolved in time as
an AR(1) process with lag-one correlation ``persistence``, and cut at each day's quantile, so that
every time step has exactly the requested cloud cover (up to ties).
"""

from __future__ import annotations

import math

import numpy as np

from geodl.errors import DataError, UserInputError
from geodl.obs.points import Grid, Observations

__all__ = ["cloud_masks", "observe_clouds", "transplant_clouds"]


def _check_cover(cover: float) -> None:
    if not (isinstance(cover, int | float) and 0 < cover < 1):
        raise UserInputError(
            f"cloud cover must be a fraction in (0, 1) (share of cloudy cells), got {cover!r}"
        )


def _check_noise(noise_std: float) -> None:
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise UserInputError(f"noise_std must be >= 0, got {noise_std!r}")


def cloud_masks(
    grid: Grid,
    *,
    cover: float = 0.5,
    length_scale_km: float = 100.0,
    persistence: float = 0.8,
    seed: int = 0,
) -> np.ndarray:
    """Cloud masks ``(time, y, x)`` (True = cloudy) with ``cover`` of the cells cloudy each day.

    Examples
    --------
    >>> g = Grid(time=np.arange(4.0), y=np.arange(32) * 10.0, x=np.arange(32) * 10.0)
    >>> m = cloud_masks(g, cover=0.25)
    >>> m.shape, float(m.mean())
    ((4, 32, 32), 0.25)
    """
    _check_cover(cover)
    if not (math.isfinite(length_scale_km) and length_scale_km > 0):
        raise UserInputError(f"length_scale_km must be > 0, got {length_scale_km!r}")
    if not 0 <= persistence < 1:
        raise UserInputError(
            f"persistence (lag-one correlation of the cloud field) must be in [0, 1), got "
            f"{persistence!r}"
        )
    nt, ny, nx = grid.shape
    rng = np.random.default_rng(seed)
    # Gaussian kernel in spectral space: exp(-(k sigma)^2 / 2), sigma in km.
    ky = 2 * np.pi * np.fft.fftfreq(ny, d=grid.dy)
    kx = 2 * np.pi * np.fft.rfftfreq(nx, d=grid.dx)
    kernel = np.exp(-0.5 * length_scale_km**2 * (ky[:, None] ** 2 + kx[None, :] ** 2))
    masks = np.empty(grid.shape, dtype=bool)
    innovation = math.sqrt(1.0 - persistence**2)
    z = np.zeros((ny, nx))
    for t in range(nt):
        smooth = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((ny, nx))) * kernel, s=(ny, nx))
        smooth /= smooth.std() or 1.0
        z = persistence * z + innovation * smooth if t else smooth
        # Exactly round(cover * n) cloudy cells: rank the field.
        n_cloudy = round(cover * ny * nx)
        order = np.argsort(z, axis=None)
        day = np.zeros(ny * nx, dtype=bool)
        day[order[ny * nx - n_cloudy :]] = True
        masks[t] = day.reshape(ny, nx)
    return masks


def _observe_where_clear(
    field: np.ndarray, grid: Grid, cloudy: np.ndarray, noise_std: float, seed: int
) -> Observations:
    rng = np.random.default_rng(seed)
    clear = ~cloudy & np.isfinite(field)
    obs = np.full(field.shape, np.nan, dtype=field.dtype)
    obs[clear] = field[clear] + noise_std * rng.standard_normal(int(clear.sum()))
    return Observations.from_grid(obs, grid)


def observe_clouds(
    field: np.ndarray,
    grid: Grid,
    *,
    cover: float = 0.5,
    length_scale_km: float = 100.0,
    persistence: float = 0.8,
    noise_std: float = 0.0,
    seed: int = 0,
) -> Observations:
    """Observations of ``field`` ``(time, y, x)`` where the sky is clear, plus white noise.

    Masks from :func:`cloud_masks`; ``noise_std`` is in the units of ``field`` (SST: ~0.2 K).

    Examples
    --------
    >>> g = Grid(time=np.arange(3.0), y=np.arange(16) * 10.0, x=np.arange(16) * 10.0)
    >>> round(observe_clouds(np.ones(g.shape), g, cover=0.75).coverage, 2)
    0.25
    """
    field = grid.check_field(field)
    _check_noise(noise_std)
    cloudy = cloud_masks(
        grid, cover=cover, length_scale_km=length_scale_km, persistence=persistence, seed=seed
    )
    return _observe_where_clear(field, grid, cloudy, noise_std, seed + 1)


def transplant_clouds(
    field: np.ndarray,
    grid: Grid,
    source_cloudy: np.ndarray,
    *,
    source_days: np.ndarray | None = None,
    noise_std: float = 0.0,
    seed: int = 0,
) -> Observations:
    """Observe ``field`` through cloud masks taken from other days (of another product, say).

    ``source_cloudy`` ``(n_source, y, x)`` holds the donor masks (True = cloudy, e.g. the NaNs of
    a real L3 SST product); day ``t`` of ``field`` gets mask ``source_days[t]``, drawn at random
    (seeded) if not given. This is how realistic gaps are added to a complete field.

    Examples
    --------
    >>> g = Grid(time=np.arange(2.0), y=np.arange(4.0), x=np.arange(4.0))
    >>> donor = np.zeros((3, 4, 4), bool); donor[2, :2] = True
    >>> obs = transplant_clouds(np.ones(g.shape), g, donor, source_days=np.array([2, 0]))
    >>> np.isnan(obs.grid).sum(axis=(1, 2)).tolist()
    [8, 0]
    """
    field = grid.check_field(field)
    _check_noise(noise_std)
    source_cloudy = np.asarray(source_cloudy, dtype=bool)
    if source_cloudy.ndim != 3 or source_cloudy.shape[1:] != field.shape[1:]:
        raise DataError(
            f"donor cloud masks have shape {source_cloudy.shape}, expected (n_days, "
            f"{field.shape[1]}, {field.shape[2]}) on the grid of the observed field"
        )
    n_src = source_cloudy.shape[0]
    rng = np.random.default_rng(seed)
    if source_days is None:
        source_days = rng.integers(0, n_src, size=field.shape[0])
    source_days = np.asarray(source_days)
    if (
        source_days.shape != (field.shape[0],)
        or not ((source_days >= 0) & (source_days < n_src)).all()
    ):
        raise UserInputError(
            f"source_days must hold {field.shape[0]} indices in 0..{n_src - 1} (one donor day per "
            "observed day)"
        )
    return _observe_where_clear(field, grid, source_cloudy[source_days], noise_std, seed + 1)
