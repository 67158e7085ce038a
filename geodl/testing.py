"""Tiny synthetic gridded datasets for tests, examples and benchmarks.

The factories build CF-annotated ``xr.Dataset`` objects on a geographic (lat/lon, degrees) or a
projected (y/x, km) grid, with a land mask and optional missing values, NumPy-backed or written to
NetCDF/Zarr and re-opened lazily with Dask. They are deterministic for a given ``seed``.

Examples
--------
>>> from geodl.testing import make_field
>>> ds = make_field(nt=4, ny=8, nx=10)
>>> ds["ssh"].dims, ds["ssh"].shape
(('time', 'lat', 'lon'), (4, 8, 10))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["lazy_field", "make_field", "write_netcdf", "write_zarr"]


def make_field(
    nt: int = 20,
    ny: int = 16,
    nx: int = 24,
    *,
    grid: Literal["latlon", "projected"] = "latlon",
    variables: Sequence[str] = ("ssh",),
    inputs: Sequence[str] = (),
    land: bool = True,
    nan_fraction: float = 0.0,
    seed: int = 0,
    dtype: str = "float32",
) -> xr.Dataset:
    """A smooth moving-wave field per variable, NaN on land, plus a static ``land_mask``.

    Parameters
    ----------
    nt, ny, nx : int
        Sizes of the time and spatial axes.
    grid : {"latlon", "projected"}
        ``lat``/``lon`` in degrees, or ``y``/``x`` in km (projected).
    variables : sequence of str
        Names of the target-like variables (NaN on land and at ``nan_fraction`` random points).
    inputs : sequence of str
        Names of extra, gap-free input variables (NaN on land only).
    land : bool
        Put a rectangular island in the lower-left corner (``land_mask`` = 1 there).
    nan_fraction : float
        Fraction of ocean points set to NaN at random in ``variables`` (missing observations).
    seed : int
        Seed of the random generator.
    dtype : str
        Floating dtype of the data variables.

    Returns
    -------
    xarray.Dataset
        NumPy-backed dataset with dims ``(time, lat, lon)`` or ``(time, y, x)``.
    """
    rng = np.random.default_rng(seed)
    time = pd.date_range("2020-01-01", periods=nt, freq="D")
    if grid == "latlon":
        ydim, xdim = "lat", "lon"
        yc = np.linspace(30.0, 30.0 + 0.25 * (ny - 1), ny)
        xc = np.linspace(-60.0, -60.0 + 0.25 * (nx - 1), nx)
        yattrs = {"units": "degrees_north", "standard_name": "latitude"}
        xattrs = {"units": "degrees_east", "standard_name": "longitude"}
    elif grid == "projected":
        ydim, xdim = "y", "x"
        yc = np.arange(ny) * 10.0
        xc = np.arange(nx) * 10.0
        yattrs = {"units": "km", "standard_name": "projection_y_coordinate"}
        xattrs = {"units": "km", "standard_name": "projection_x_coordinate"}
    else:
        raise ValueError(f"grid={grid!r}; expected 'latlon' or 'projected'")
    land_mask = np.zeros((ny, nx), dtype="int8")
    if land:
        land_mask[: max(1, ny // 4), : max(1, nx // 4)] = 1
    tt, yy, xx = np.meshgrid(np.arange(nt), np.arange(ny), np.arange(nx), indexing="ij")
    data_vars = {}
    for k, name in enumerate([*variables, *inputs]):
        phase = 0.3 * k
        field = np.sin(2 * np.pi * (xx / max(nx, 2) + 0.05 * tt) + phase) * np.cos(
            2 * np.pi * yy / max(ny, 2)
        )
        field = (field + 0.1 * rng.standard_normal(field.shape) + 10.0 * k).astype(dtype)
        field[:, land_mask.astype(bool)] = np.nan
        if name in variables and nan_fraction > 0:
            field[rng.random(field.shape) < nan_fraction] = np.nan
        data_vars[name] = (("time", ydim, xdim), field, {"units": "m", "long_name": name})
    data_vars["land_mask"] = ((ydim, xdim), land_mask, {"long_name": "1 on land"})
    return xr.Dataset(
        data_vars,
        coords={
            "time": ("time", time, {"standard_name": "time"}),
            ydim: (ydim, yc, yattrs),
            xdim: (xdim, xc, xattrs),
        },
        attrs={"title": "geodl synthetic field"},
    )


def write_netcdf(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to a NetCDF4 file and return its path."""
    path = Path(path)
    ds.to_netcdf(path)
    return path


def write_zarr(
    ds: xr.Dataset,
    path: str | Path,
    *,
    chunks: Mapping[str, int] | None = None,
    zarr_format: Literal[2, 3] = 3,
) -> Path:
    """Write ``ds`` to a Zarr store (format 2 or 3) with the given storage ``chunks``.

    Examples
    --------
    >>> import tempfile, pathlib, xarray as xr
    >>> p = write_zarr(make_field(nt=4), pathlib.Path(tempfile.mkdtemp()) / "f.zarr",
    ...                chunks={"time": 2})
    >>> xr.open_zarr(p, consolidated=False)["ssh"].encoding["chunks"]
    (2, 16, 24)
    """
    path = Path(path)
    if chunks:
        ds = ds.chunk({k: v for k, v in chunks.items() if k in ds.dims})
    ds.to_zarr(path, mode="w", zarr_format=zarr_format, consolidated=zarr_format == 2)
    return path


def lazy_field(
    directory: str | Path,
    *,
    fmt: Literal["zarr", "netcdf"] = "zarr",
    chunks: Mapping[str, int] | None = None,
    zarr_format: Literal[2, 3] = 3,
    **kwargs,
) -> xr.Dataset:
    """:func:`make_field` written under ``directory`` and re-opened lazily, Dask-backed.

    Examples
    --------
    >>> import tempfile
    >>> ds = lazy_field(tempfile.mkdtemp(), chunks={"time": 2}, nt=4)
    >>> ds["ssh"].chunks[0]
    (2, 2)
    """
    ds = make_field(**kwargs)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if fmt == "zarr":
        path = write_zarr(ds, directory / "field.zarr", chunks=chunks, zarr_format=zarr_format)
        return xr.open_zarr(path, consolidated=zarr_format == 2)
    if fmt == "netcdf":
        path = write_netcdf(ds, directory / "field.nc")
        return xr.open_dataset(path, chunks=dict(chunks or {}))
    raise ValueError(f"fmt={fmt!r}; expected 'zarr' or 'netcdf'")
