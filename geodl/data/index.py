"""Arithmetic patch index: patch ``i`` -> its start ``(t, y, x)`` from sizes and strides.

No per-patch object is ever built: the index stores the start positions along each axis (a few
thousand integers at most) and, when patches are filtered, the kept spatial positions only. Its
memory does not grow with the number of time positions, so 50 million patches cost kilobytes.
Flat order is time-major: ``i = it * n_spatial + isp``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from geodl.errors import DataError

__all__ = ["PatchIndex", "axis_starts", "check_patch_fits", "land_fraction"]

log = logging.getLogger("geodl.data")

ROLES = ("time", "y", "x")


def axis_starts(
    lo: int, hi: int, size: int, stride: int, *, cover: bool = True, name: str = "axis"
) -> np.ndarray:
    """Start positions of windows of ``size`` every ``stride`` inside ``[lo, hi)``.

    With ``cover`` a last window flush with ``hi`` is added when the stride does not land on it,
    so every point is covered (needed to stitch a whole field back).

    Examples
    --------
    >>> axis_starts(0, 10, 4, 3).tolist()
    [0, 3, 6]
    >>> axis_starts(0, 11, 4, 3).tolist()
    [0, 3, 6, 7]
    """
    if size < 1 or stride < 1:
        raise DataError(f"patch {name}: size={size} and stride={stride} must both be >= 1")
    if hi - lo < size:
        raise DataError(
            f"patch {name}={size} is larger than the domain ({hi - lo} steps in {name}); "
            f"use a patch size <= {hi - lo}"
        )
    starts = np.arange(lo, hi - size + 1, stride, dtype=np.int64)
    if cover and starts[-1] + size < hi:
        starts = np.append(starts, hi - size)
    return starts


def check_patch_fits(size: Mapping[str, int], shape: Sequence[int], where: str) -> None:
    """Raise one :class:`DataError` line unless a patch of ``size`` (``{"y": h, "x": w}``) fits
    in a grid of ``shape`` ``(ny, nx)`` (the grid of ``where``).

    Examples
    --------
    >>> check_patch_fits({"y": 16, "x": 16}, (16, 24), "f.nc")
    """
    ny, nx = (int(n) for n in shape)
    if size["y"] > ny or size["x"] > nx:
        raise DataError(
            f"patch {size['y']} x {size['x']} (y x) is larger than the grid of {where} "
            f"({ny} x {nx}); lower patch.y to <= {ny} and patch.x to <= {nx}"
        )


def land_fraction(land: np.ndarray, ys: np.ndarray, xs: np.ndarray, h: int, w: int) -> np.ndarray:
    """Fraction of land in every ``(h, w)`` window starting at ``ys x xs``, shape ``(len(ys), len(xs))``.

    Computed from an integral image, so the cost is one pass over the mask, not one per window.
    """
    ii = np.zeros((land.shape[0] + 1, land.shape[1] + 1), dtype=np.int64)
    ii[1:, 1:] = np.cumsum(np.cumsum(land.astype(np.int64), axis=0), axis=1)
    y0, x0 = ys[:, None], xs[None, :]
    total = ii[y0 + h, x0 + w] - ii[y0, x0 + w] - ii[y0 + h, x0] + ii[y0, x0]
    return total / float(h * w)


@dataclass(frozen=True)
class IndexReport:
    """Counts of patches before and after filtering (reported, never silent)."""

    total: int
    kept: int
    dropped_land: int

    def __str__(self) -> str:
        return (
            f"{self.kept} patches kept of {self.total} "
            f"({self.dropped_land} dropped for too much land)"
        )


class PatchIndex:
    """Start positions of every patch of ``size`` taken every ``stride`` along (time, y, x).

    Parameters
    ----------
    shape : mapping
        Domain sizes by role: ``{"time": nt, "y": ny, "x": nx}``.
    size, stride : mapping
        Patch size and stride by role (stride defaults to size: no overlap).
    time_range : (int, int), optional
        Half-open range of time indices the patches must stay inside (a split).
    land : ndarray, optional
        ``(ny, nx)`` bool land mask, used with ``max_land_fraction``.
    max_land_fraction : float, optional
        Drop spatial positions whose patch is more than this fraction land; counted in
        :attr:`report`.
    cover : bool
        Add a last patch flush with each domain edge so that every point is covered.
    y_range, x_range : (int, int), optional
        Keep only patches whose start lies in this half-open range (spatial tiles).

    Examples
    --------
    >>> idx = PatchIndex({"time": 10, "y": 8, "x": 8}, size={"time": 3, "y": 4, "x": 4},
    ...                  stride={"time": 1, "y": 4, "x": 4})
    >>> len(idx), idx.starts(np.array([0, 4])).tolist()
    (32, [[0, 0, 0], [1, 0, 0]])
    """

    def __init__(
        self,
        shape: Mapping[str, int],
        size: Mapping[str, int],
        stride: Mapping[str, int] | None = None,
        *,
        time_range: tuple[int, int] | None = None,
        land: np.ndarray | None = None,
        max_land_fraction: float | None = None,
        cover: bool = True,
        y_range: tuple[int, int] | None = None,
        x_range: tuple[int, int] | None = None,
    ) -> None:
        for what, mapping in (("shape", shape), ("size", size)):
            missing = [r for r in ROLES if r not in mapping]
            if missing:
                raise DataError(f"patch {what} is missing {missing}; give time, y and x")
        stride = dict(stride or size)
        for r in ROLES:
            stride.setdefault(r, size[r])
        self.size = {r: int(size[r]) for r in ROLES}
        self.stride = {r: int(stride[r]) for r in ROLES}
        self.shape = {r: int(shape[r]) for r in ROLES}
        t0, t1 = time_range if time_range is not None else (0, self.shape["time"])
        self.time_range = (int(t0), int(t1))
        self.t_starts = axis_starts(
            t0, t1, self.size["time"], self.stride["time"], cover=cover, name="time"
        )
        self.y_starts = axis_starts(
            0, self.shape["y"], self.size["y"], self.stride["y"], cover=cover, name="y"
        )
        self.x_starts = axis_starts(
            0, self.shape["x"], self.size["x"], self.stride["x"], cover=cover, name="x"
        )
        # A spatial window keeps the global stride grid and only drops starts outside it (tiles).
        for role, bounds in (("y", y_range), ("x", x_range)):
            if bounds is None:
                continue
            starts = getattr(self, f"{role}_starts")
            kept = starts[(starts >= bounds[0]) & (starts < bounds[1])]
            if kept.size == 0:
                raise DataError(
                    f"no patch starts in {role} range {bounds[0]}..{bounds[1] - 1} "
                    f"(starts every {self.stride[role]} from 0); widen the range"
                )
            setattr(self, f"{role}_starts", kept)
        n_grid = self.y_starts.size * self.x_starts.size
        # Kept spatial positions as flat indices into the (y_starts, x_starts) grid; None = all.
        self._spatial: np.ndarray | None = None
        dropped = 0
        if max_land_fraction is not None:
            if land is None:
                raise DataError("max_land_fraction is set but no land mask was given")
            frac = land_fraction(
                np.asarray(land, bool), self.y_starts, self.x_starts, self.size["y"], self.size["x"]
            )
            keep = (frac <= max_land_fraction).ravel()
            dropped = int((~keep).sum())
            if dropped:
                self._spatial = np.flatnonzero(keep).astype(np.int32)
        n_spatial = n_grid if self._spatial is None else self._spatial.size
        self.report = IndexReport(
            total=self.t_starts.size * n_grid,
            kept=self.t_starts.size * n_spatial,
            dropped_land=self.t_starts.size * dropped,
        )
        if dropped:
            log.info("patch index: %s", self.report)

    @property
    def n_spatial(self) -> int:
        """Number of kept spatial positions."""
        if self._spatial is None:
            return self.y_starts.size * self.x_starts.size
        return int(self._spatial.size)

    def __len__(self) -> int:
        return self.t_starts.size * self.n_spatial

    def spatial_starts(self, isp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(y, x)`` starts of kept spatial positions ``isp``."""
        isp = np.asarray(isp, dtype=np.int64)
        grid = isp if self._spatial is None else self._spatial[isp].astype(np.int64)
        iy, ix = np.divmod(grid, self.x_starts.size)
        return self.y_starts[iy], self.x_starts[ix]

    def starts(self, i: int | np.ndarray) -> np.ndarray:
        """``(..., 3)`` int64 array of ``(t, y, x)`` starts of flat patch index ``i``."""
        i = np.asarray(i, dtype=np.int64)
        n = len(self)
        if np.any((i < -n) | (i >= n)):
            raise IndexError(f"patch index out of range for {n} patches")
        i = np.where(i < 0, i + n, i)
        it, isp = np.divmod(i, self.n_spatial)
        ys, xs = self.spatial_starts(isp)
        return np.stack([self.t_starts[it], ys, xs], axis=-1)

    @property
    def nbytes(self) -> int:
        """Memory held by the index arrays."""
        extra = 0 if self._spatial is None else self._spatial.nbytes
        return self.t_starts.nbytes + self.y_starts.nbytes + self.x_starts.nbytes + extra

    def __repr__(self) -> str:
        return (
            f"PatchIndex({len(self)} patches, size={self.size}, stride={self.stride}, "
            f"time_range={self.time_range})"
        )
