"""Satellite altimetry of a gridded field: nadir altimeters and wide-swath (SWOT-like) sampling.

Both return :class:`~geodl.obs.points.Observations`: the field, plus white noise, at the cells the
instruments see (the cell nearest each sample, at the time step nearest the pass), NaN elsewhere.
Default noise levels are in metres (SSH); pass ``noise_std`` in the units of your field.
"""

from __future__ import annotations

import math

import numpy as np

from geodl.errors import UserInputError
from geodl.obs.points import Grid, Observations
from geodl.obs.tracks import Pass, satellite_passes

__all__ = ["observe_nadir", "observe_swath"]


def _check_nonneg(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise UserInputError(f"{name} must be >= 0, got {value!r}")


def _time_index(grid: Grid, t: float) -> int:
    return int(np.abs(grid.time - t).argmin())


def _finish(field: np.ndarray, mask: np.ndarray, grid: Grid, noise_std: float, seed: int):
    rng = np.random.default_rng(seed)
    obs = np.full(field.shape, np.nan, dtype=field.dtype)
    noise = rng.standard_normal(int(mask.sum()))
    obs[mask] = field[mask] + noise_std * noise
    return Observations.from_grid(obs, grid)


def _nadir_cells(p: Pass, grid: Grid, along_track_km: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(iy, ix)`` of the cells under the samples of pass ``p``."""
    hy, hx = 0.5 * grid.dy, 0.5 * grid.dx
    y_lo, y_hi = grid.y[0] - hy, grid.y[-1] + hy
    x_lo, x_hi = grid.x[0] - hx, grid.x[-1] + hx
    ax, ay = p.along
    corners = np.array([(x, y) for x in (x_lo, x_hi) for y in (y_lo, y_hi)])
    s_proj = corners @ np.array(p.along)
    s = np.arange(s_proj.min(), s_proj.max(), along_track_km)
    xs = p.offset * p.normal[0] + s * ax
    ys = p.offset * p.normal[1] + s * ay
    inside = (xs >= x_lo) & (xs < x_hi) & (ys >= y_lo) & (ys < y_hi)
    ix = np.clip(np.rint((xs[inside] - grid.x[0]) / grid.dx).astype(int), 0, grid.x.size - 1)
    iy = np.clip(np.rint((ys[inside] - grid.y[0]) / grid.dy).astype(int), 0, grid.y.size - 1)
    return iy, ix


def observe_nadir(
    field: np.ndarray,
    grid: Grid,
    *,
    n_satellites: int = 4,
    repeat_days: float = 10.0,
    track_spacing_km: float = 250.0,
    track_angle_deg: float = 70.0,
    along_track_km: float = 7.0,
    noise_std: float = 0.03,
    seed: int = 0,
) -> Observations:
    """Along-track observations of ``field`` ``(time, y, x)`` by ``n_satellites`` nadir altimeters.

    Each satellite flies inclined tracks ``track_spacing_km`` apart (ascending at
    ``+track_angle_deg`` from the x axis, descending at ``-track_angle_deg``), all of them once per
    ``repeat_days`` (see :mod:`geodl.obs.tracks`), sampling every ``along_track_km`` (1 Hz is about
    7 km). Each sampled cell gets the field plus Gaussian noise of std ``noise_std``.

    Examples
    --------
    >>> g = Grid(time=np.arange(10.0), y=np.arange(50) * 20.0, x=np.arange(50) * 20.0)
    >>> obs = observe_nadir(np.zeros(g.shape), g, noise_std=0.0)
    >>> 0 < obs.coverage < 0.1, obs.grid.shape == g.shape, len(obs.value) == obs.time.size
    (True, True, True)
    """
    field = grid.check_field(field)
    if not (math.isfinite(along_track_km) and along_track_km > 0):
        raise UserInputError(f"along_track_km must be > 0, got {along_track_km!r}")
    _check_nonneg("noise_std", noise_std)
    passes = satellite_passes(
        grid,
        n_satellites=n_satellites,
        repeat_days=repeat_days,
        track_spacing_km=track_spacing_km,
        track_angle_deg=track_angle_deg,
        min_separation_km=max(grid.dx, grid.dy),
    )
    mask = np.zeros(grid.shape, dtype=bool)
    for p in passes:
        iy, ix = _nadir_cells(p, grid, along_track_km)
        mask[_time_index(grid, p.time), iy, ix] = True
    return _finish(field, mask, grid, noise_std, seed)


def observe_swath(
    field: np.ndarray,
    grid: Grid,
    *,
    swath_width_km: float = 50.0,
    gap_km: float = 20.0,
    n_satellites: int = 1,
    repeat_days: float = 21.0,
    track_spacing_km: float = 130.0,
    track_angle_deg: float = 70.0,
    noise_std: float = 0.01,
    seed: int = 0,
) -> Observations:
    """Wide-swath observations (SWOT-like) of ``field`` ``(time, y, x)``.

    Each pass sees two swaths of ``swath_width_km`` on either side of a nadir gap of ``gap_km``
    (SWOT: 2 x 50 km around 20 km): every cell whose centre lies at a cross-track distance between
    ``gap_km / 2`` and ``gap_km / 2 + swath_width_km`` from the ground track, at the time step
    nearest the pass. Track geometry as in :func:`observe_nadir` (SWOT: 21-day repeat); white
    noise of std ``noise_std``.

    Examples
    --------
    >>> g = Grid(time=np.arange(21.0), y=np.arange(50) * 20.0, x=np.arange(50) * 20.0)
    >>> obs = observe_swath(np.zeros(g.shape), g)
    >>> bool(np.isfinite(obs.grid).any(axis=0).mean() > 0.5)  # most cells seen in a cycle
    True
    """
    field = grid.check_field(field)
    if not (math.isfinite(swath_width_km) and swath_width_km > 0):
        raise UserInputError(f"swath_width_km must be > 0, got {swath_width_km!r}")
    _check_nonneg("gap_km", gap_km)
    _check_nonneg("noise_std", noise_std)
    passes = satellite_passes(
        grid,
        n_satellites=n_satellites,
        repeat_days=repeat_days,
        track_spacing_km=track_spacing_km,
        track_angle_deg=track_angle_deg,
        min_separation_km=max(grid.dx, grid.dy),
    )
    yy, xx = np.meshgrid(grid.y, grid.x, indexing="ij")
    mask = np.zeros(grid.shape, dtype=bool)
    inner, outer = 0.5 * gap_km, 0.5 * gap_km + swath_width_km
    for p in passes:
        d = np.abs(p.distance(xx, yy))
        mask[_time_index(grid, p.time)] |= (d >= inner) & (d <= outer)
    return _finish(field, mask, grid, noise_std, seed)
