"""Bin scattered observations (along-track points) onto a ``(time, y, x)`` grid."""

from __future__ import annotations

import numpy as np

from geodl.errors import DataError
from geodl.obs.points import Grid

__all__ = ["bin_points"]


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around regularly or irregularly spaced centres."""
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate(([2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]))


def bin_points(
    time: np.ndarray, y: np.ndarray, x: np.ndarray, value: np.ndarray, grid: Grid
) -> tuple[np.ndarray, int]:
    """Mean of the points falling in each grid cell; NaN where no point falls.

    Returns the gridded observations ``(time, y, x)`` and the number of points outside the grid
    (dropped, and counted so that the caller can report them).

    Examples
    --------
    >>> g = Grid(time=np.arange(2.0), y=np.arange(3) * 10.0, x=np.arange(3) * 10.0)
    >>> obs, dropped = bin_points(np.array([0.1, 0.0]), np.array([9.0, 11.0]),
    ...                           np.array([0.0, 1.0]), np.array([1.0, 3.0]), g)
    >>> float(obs[0, 1, 0]), dropped
    (2.0, 0)
    """
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in (time, y, x, value)]
    if len({a.size for a in arrays}) != 1:
        raise DataError("observation points: time, y, x and value must have the same length")
    t, yy, xx, v = arrays
    ok = np.isfinite(v) & np.isfinite(t) & np.isfinite(yy) & np.isfinite(xx)
    it = np.digitize(t, _edges(grid.time)) - 1
    iy = np.digitize(yy, _edges(grid.y)) - 1
    ix = np.digitize(xx, _edges(grid.x)) - 1
    nt, ny, nx = grid.shape
    inside = ok & (it >= 0) & (it < nt) & (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
    flat = np.ravel_multi_index((it[inside], iy[inside], ix[inside]), grid.shape)
    total = np.bincount(flat, weights=v[inside], minlength=nt * ny * nx)
    count = np.bincount(flat, minlength=nt * ny * nx)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out.reshape(grid.shape), int(ok.sum() - inside.sum())
