"""Normalisation statistics: computed with Dask on the training split, stored as plain data.

The statistics are a plain ``dict`` of floats and nested lists (JSON-serialisable), so they travel
inside a checkpoint loaded with ``torch.load(..., weights_only=True)`` and in ``metrics.json``-style
files. :class:`Normalizer` applies them on the fly to NumPy blocks as they are read and inverts
them on model output (NumPy, torch or xarray).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import numpy as np
import xarray as xr

from geodl.data.cluster import dask_client
from geodl.data.open import find_axes
from geodl.errors import DataError

__all__ = ["Normalizer", "compute_stats"]

log = logging.getLogger("geodl.data")

FORMAT = "geodl.norm.v1"


def compute_stats(
    ds: xr.Dataset,
    variables: Sequence[str],
    *,
    time_range: tuple[int, int] | None = None,
    per_pixel: bool = False,
    dask_workers: int | None = None,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Mean and standard deviation of each variable over the training time range, ignoring NaN.

    Parameters
    ----------
    ds : xarray.Dataset
        Lazily opened (Dask-backed) or in-memory data.
    variables : sequence of str
        Variables to describe; time-independent ones (``static``) use every point.
    time_range : (int, int), optional
        Half-open range of time indices: the training split. Default: all times.
    per_pixel : bool
        Per-pixel climatology (time mean and std maps) instead of one number per variable.
        Pixels without data get mean 0 and std 1 (they are masked anyway); pixels with a zero
        std get the variable's global std. Both are counted in the result.
    dask_workers, scheduler :
        Where Dask runs (see :func:`geodl.data.cluster.dask_client`); in process by default.

    Returns
    -------
    dict
        ``{"format", "per_pixel", "time_range", "variables": {name: {"mean", "std", "count"}}}``.

    Examples
    --------
    >>> from geodl.testing import make_field
    >>> stats = compute_stats(make_field(nt=6), ["ssh"], time_range=(0, 4))
    >>> sorted(stats["variables"]["ssh"])
    ['count', 'mean', 'std']
    """
    axes = find_axes(ds)
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise DataError(
            f"cannot compute statistics: variable(s) {missing} not found; available: "
            f"{sorted(map(str, ds.data_vars))}"
        )
    tr = time_range or (0, ds.sizes[axes.time] if axes.time else 0)
    lazy: dict[str, tuple[Any, ...]] = {}
    for name in variables:
        da = ds[name]
        if axes.time in da.dims:
            da = da.isel({axes.time: slice(*tr)})
        da = da.astype("float64")
        spatial = [d for d in da.dims if d in (axes.y, axes.x)]
        over = [d for d in da.dims if d not in spatial] if per_pixel else list(da.dims)
        if per_pixel and axes.time not in da.dims:
            over = list(da.dims)  # a static variable has no climatology: one number
        lazy[name] = (
            da.count(),
            da.mean(over, skipna=True),
            da.std(over, skipna=True),
            da.mean(skipna=True),
            da.std(skipna=True),
        )
    with dask_client(dask_workers, scheduler):
        (done,) = dask.compute(lazy)
    out: dict[str, Any] = {
        "format": FORMAT,
        "per_pixel": bool(per_pixel),
        "time_range": [int(tr[0]), int(tr[1])],
        "variables": {},
    }
    for name, (count, mean, std, gmean, gstd) in done.items():
        count = int(count)
        if count == 0:
            raise DataError(
                f"variable '{name}' is all NaN in the training split (time indices "
                f"{tr[0]}..{tr[1] - 1}); check the file or the split"
            )
        gstd = float(gstd)
        if not gstd > 0:
            raise DataError(
                f"variable '{name}' is constant ({float(gmean):.6g}) in the training split; "
                "a constant channel carries no information: drop it"
            )
        entry: dict[str, Any] = {"count": count}
        if mean.ndim == 0:
            entry["mean"], entry["std"] = float(mean), float(std)
        else:
            m, s = np.asarray(mean.values), np.asarray(std.values)
            empty = ~np.isfinite(m)
            flat = np.isfinite(s) & (s == 0) & ~empty
            m = np.where(empty, 0.0, m)
            s = np.where(empty, 1.0, np.where(flat, gstd, s))
            entry.update(mean=m.tolist(), std=s.tolist())
            entry["no_data_pixels"] = int(empty.sum())
            entry["zero_std_pixels"] = int(flat.sum())
            if flat.any():
                log.warning(
                    "%s: %d pixel(s) with zero std over the training split use the global std",
                    name,
                    int(flat.sum()),
                )
        out["variables"][name] = entry
    return out


class Normalizer:
    """Apply and invert statistics from :func:`compute_stats`: ``(x - mean) / std``.

    Per-pixel statistics are indexed with the same ``y``/``x`` slices as the data block.

    Examples
    --------
    >>> import numpy as np
    >>> n = Normalizer({"format": "geodl.norm.v1", "per_pixel": False, "time_range": [0, 1],
    ...                 "variables": {"ssh": {"mean": 1.0, "std": 2.0, "count": 4}}})
    >>> n.apply("ssh", np.array([3.0, 5.0])).tolist()
    [1.0, 2.0]
    >>> n.invert("ssh", np.array([1.0, 2.0])).tolist()
    [3.0, 5.0]
    """

    def __init__(self, stats: Mapping[str, Any]) -> None:
        if not isinstance(stats, Mapping) or stats.get("format") != FORMAT:
            raise DataError(
                f"normalisation statistics: expected a dict with format '{FORMAT}' "
                "(from geodl.data.compute_stats)"
            )
        self.stats = dict(stats)
        self._mean: dict[str, np.ndarray] = {}
        self._std: dict[str, np.ndarray] = {}
        for name, entry in stats["variables"].items():
            self._mean[name] = np.asarray(entry["mean"], dtype=np.float32)
            self._std[name] = np.asarray(entry["std"], dtype=np.float32)

    @property
    def variables(self) -> list[str]:
        return list(self._mean)

    def to_dict(self) -> dict[str, Any]:
        """The plain statistics (for checkpoints and JSON)."""
        return self.stats

    def _get(self, name: str, y: slice, x: slice) -> tuple[np.ndarray, np.ndarray]:
        if name not in self._mean:
            raise DataError(
                f"no normalisation statistics for variable '{name}'; have {self.variables}"
            )
        m, s = self._mean[name], self._std[name]
        if m.ndim == 2:
            return m[y, x], s[y, x]
        return m, s

    def apply(
        self,
        name: str,
        values: np.ndarray,
        *,
        y: slice = slice(None),
        x: slice = slice(None),
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(values - mean) / std`` over trailing ``(y, x)`` axes; in place when ``out`` is given."""
        m, s = self._get(name, y, x)
        out = np.subtract(values, m, out=out)
        return np.divide(out, s, out=out)

    def invert(self, name: str, values: Any, *, y: slice = slice(None), x: slice = slice(None)):
        """``values * std + mean`` for NumPy arrays or torch tensors (trailing ``(y, x)`` axes)."""
        m, s = self._get(name, y, x)
        if hasattr(values, "new_tensor"):  # torch, without importing it here
            m, s = values.new_tensor(m), values.new_tensor(s)
        return values * s + m

    def invert_dataset(self, ds: xr.Dataset) -> xr.Dataset:
        """Undo the normalisation of every variable of ``ds`` that has statistics."""
        axes = find_axes(ds)
        out = ds.copy()
        for name in ds.data_vars:
            if name not in self._mean:
                continue
            m, s = self._mean[name], self._std[name]
            if m.ndim == 2:
                dims = (axes.y, axes.x)
                m = xr.DataArray(m.astype("float64"), dims=dims)
                s = xr.DataArray(s.astype("float64"), dims=dims)
            else:
                m, s = float(m), float(s)
            out[name] = (ds[name] * s + m).astype(ds[name].dtype)
            out[name].attrs = ds[name].attrs
        return out
