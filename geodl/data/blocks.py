"""Bounded-memory passes over large fields: block sizes from a byte budget, NaN-aware moments
merged across blocks, and :class:`FieldWriter`, which writes a CF file region by region.

Why: a basin-size grid (2000 x 2000 x 365 float32 is 5.8 GB) cannot be held, let alone copied
in float64, by the preparation, the OI and the scoring. They walk it by time blocks or spatial
bands instead, each sized so that its working arrays stay within :data:`MEMORY_BUDGET`; a field
that fits the budget in one block goes through the same arithmetic as before (one block).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
import xarray as xr

from geodl.atomic import atomic_path
from geodl.data.open import consolidate_zarr
from geodl.errors import DataError

__all__ = ["MEMORY_BUDGET", "FieldWriter", "block_ranges", "block_size", "nan_moments"]

#: Bytes the working arrays of one block may take (per pass); tests lower it to force blocking.
MEMORY_BUDGET = 256 * 2**20


def block_size(n: int, bytes_per_step: float, budget: int | None = None) -> int:
    """How many of ``n`` steps of ``bytes_per_step`` fit ``budget`` (default
    :data:`MEMORY_BUDGET`): at least one, at most ``n``.

    Examples
    --------
    >>> block_size(100, 10 * 2**20, budget=64 * 2**20)
    6
    """
    budget = MEMORY_BUDGET if budget is None else budget
    return int(min(max(n, 1), max(1, budget // max(bytes_per_step, 1))))


def block_ranges(start: int, stop: int, size: int) -> Iterator[tuple[int, int]]:
    """``(a, b)`` half-open ranges of at most ``size`` covering ``start .. stop - 1``.

    Examples
    --------
    >>> list(block_ranges(0, 7, 3))
    [(0, 3), (3, 6), (6, 7)]
    """
    for a in range(start, stop, max(1, size)):
        yield a, min(stop, a + size)


def nan_moments(blocks: Iterable[np.ndarray]) -> tuple[int, float, float]:
    """``(count, mean, std)`` of the finite values of ``blocks``, NaN ignored.

    One block gives ``np.nanmean`` / ``np.nanstd`` of it (the in-memory result, bit for bit);
    several are merged in float64 (Chan et al.'s pairwise update), which agrees with the
    in-memory result to float32 rounding.

    Examples
    --------
    >>> a = np.array([1.0, 2.0, np.nan, 4.0], dtype=np.float32)
    >>> one = nan_moments([a])
    >>> two = nan_moments([a[:2], a[2:]])
    >>> one[0], two[0], round(one[1], 6) == round(two[1], 6), round(one[2], 6) == round(two[2], 6)
    (3, 3, True, True)
    """
    # streamed: one block at a time is held (the first until a second one shows there are
    # several), so the memory is a block's whatever the number of blocks
    count, mean, m2 = 0, 0.0, 0.0
    first: np.ndarray | None = None

    def fold(block: np.ndarray) -> None:
        nonlocal count, mean, m2
        v = block[np.isfinite(block)].astype(np.float64)
        n, b_mean = v.size, float(v.mean())
        b_m2 = float(((v - b_mean) ** 2).sum())
        delta = b_mean - mean
        total = count + n
        mean += delta * n / total
        m2 += b_m2 + delta**2 * count * n / total
        count = total

    for block in blocks:
        block = np.asarray(block)
        if not np.isfinite(block).any():
            continue
        if first is None and count == 0:
            first = block
            continue
        if first is not None:
            fold(first)
            first = None
        fold(block)
    if first is not None:  # a single block: the in-memory result, bit for bit
        return int(np.isfinite(first).sum()), float(np.nanmean(first)), float(np.nanstd(first))
    if count == 0:
        return 0, math.nan, math.nan
    return count, mean, math.sqrt(m2 / count)


class FieldWriter:
    """A CF NetCDF (``.nc``) or Zarr (``.zarr``) file written region by region, atomically.

    The file is laid out from ``template`` (a Dataset of Dask-backed variables: dims, coordinates,
    attributes; its values are not computed, the variables start all NaN), with storage
    ``chunks`` per variable dim. :meth:`write` fills one region of one variable; on a normal exit
    the file replaces ``path``, after an error it is removed (no half file).

    Examples
    --------
    >>> import tempfile, pathlib, dask.array as dsa
    >>> tmpl = xr.Dataset({"v": (("time", "y"), dsa.full((4, 3), np.nan, chunks=(1, 3)))})
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "f.nc"
    >>> with FieldWriter(out, tmpl, {"time": 2, "y": 3}) as w:
    ...     w.write("v", (slice(0, 2), slice(0, 3)), np.ones((2, 3)))
    >>> xr.open_dataset(out)["v"].values[:, 0].tolist()
    [1.0, 1.0, nan, nan]
    """

    def __init__(self, path: str | Path, template: xr.Dataset, chunks: dict[str, int]) -> None:
        self.path = Path(path)
        if self.path.suffix not in (".zarr", ".nc"):
            raise DataError(f"output '{path}': expected a .zarr or .nc path")
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._closed = False
        try:
            coords = {str(c): {"_FillValue": None} for c in template.coords}  # CF: no missing
            enc = {}
            for n, da in template.data_vars.items():
                shape = tuple(min(chunks.get(str(d), s), s) for d, s in da.sizes.items())
                key = "chunks" if self.path.suffix == ".zarr" else "chunksizes"
                enc[str(n)] = {key: shape}
                if self.path.suffix == ".nc":
                    enc[str(n)].update(zlib=True, complevel=1)
            if self.path.suffix == ".zarr":
                template.to_zarr(
                    self._tmp, compute=False, mode="w", encoding=enc | coords, consolidated=False
                )
            else:
                template.to_netcdf(self._tmp, encoding=enc | coords)
        except BaseException:
            self._closed = True
            self._ctx.__exit__(*sys.exc_info())
            raise
        self._dims = {
            str(n): tuple(str(d) for d in da.dims) for n, da in template.data_vars.items()
        }

    def write(self, name: str, region: tuple[slice, ...], values: np.ndarray) -> None:
        """Write ``values`` into ``region`` (one slice per dim of ``name``)."""
        if self.path.suffix == ".zarr":
            dims = self._dims[name]
            xr.Dataset({name: (dims, values)}).to_zarr(
                self._tmp, region=dict(zip(dims, region, strict=True)), consolidated=False
            )
        else:
            import netCDF4

            with netCDF4.Dataset(self._tmp, "a") as nc:
                nc[name][region] = values

    def close(self) -> Path:
        """Move the written file into place (a Zarr store with its consolidated metadata)."""
        if not self._closed:
            if self.path.suffix == ".zarr":
                consolidate_zarr(self._tmp)
            self._closed = True
            self._ctx.__exit__(None, None, None)
        return self.path

    def __enter__(self) -> FieldWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self._closed = True
            self._ctx.__exit__(exc_type, exc, tb)
