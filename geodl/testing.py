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

__all__ = [
    "gaussian_twin",
    "lazy_field",
    "make_field",
    "write_large_field",
    "write_netcdf",
    "write_zarr",
]


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


def gaussian_twin(nt: int = 120, n: int = 16, seed: int = 0) -> tuple[xr.Dataset, xr.Dataset]:
    """A mapping twin on a projected grid of ``n`` x ``n`` 10 km cells over ``nt`` days.

    Truth ``ssh``: a smooth Gaussian random field (unit std, ~2 days, ~15 km); ``sst``: the truth
    plus noise of 0.1 (an informative predictor); ``depth`` / ``depth_t``: uninformative static
    fields; ``dead``: all NaN; no land. Observations ``ssh``: 5 % of the cells, noise 0.05.
    Returns ``(truth, obs)``.
    """
    rng = np.random.default_rng(seed)
    kt = np.fft.fftfreq(nt)[:, None, None]
    ky = np.fft.fftfreq(n)[None, :, None]
    kx = np.fft.fftfreq(n)[None, None, :]
    gain = np.exp(-2 * np.pi**2 * (4 * kt**2 + 2 * (ky**2 + kx**2)))
    g = np.fft.ifftn(np.fft.fftn(rng.standard_normal((nt, n, n))) * gain).real
    g /= g.std()
    sst = g + 0.1 * rng.standard_normal(g.shape)
    obs = g + 0.05 * rng.standard_normal(g.shape)
    obs[rng.random(g.shape) > 0.05] = np.nan
    coords = {
        "time": np.arange(nt, dtype=float),
        "y": ("y", np.arange(n) * 10.0, {"units": "km"}),
        "x": ("x", np.arange(n) * 10.0, {"units": "km"}),
    }
    d = ("time", "y", "x")
    truth = xr.Dataset(
        {
            "ssh": (d, g.astype("f4"), {"units": "m"}),
            "sst": (d, sst.astype("f4")),
            "depth": (d[1:], (1000 + 100 * rng.standard_normal((n, n))).astype("f4")),
            "depth_t": (d, np.repeat(rng.standard_normal((1, n, n)), nt, 0).astype("f4")),
            "dead": (d, np.full(g.shape, np.nan, "f4")),
        },
        coords=coords,
    )
    return truth, xr.Dataset({"ssh": (d, obs.astype("f4"))}, coords=coords)


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


def write_large_field(
    path: str | Path,
    nt: int = 365,
    ny: int = 2000,
    nx: int = 2000,
    *,
    chunks: Mapping[str, int] | None = None,
    wavelength: float = 64.0,
    seed: int = 0,
) -> Path:
    """A :func:`make_field`-like projected field (10 km cells) of any size, written to a Zarr store
    chunk row by chunk row, so that making it holds one ``(time, y)`` chunk row in memory.

    The wave has a fixed ``wavelength`` in cells (not the grid's size, as in :func:`make_field`),
    so that its correlation scales do not grow with the grid; the noise (std 0.1) is drawn per
    chunk from ``(seed, time chunk, y chunk)``. Land (NaN, ``land_mask`` 1) is the lower-left
    quarter's corner, as in :func:`make_field`. Chunks default to ``time=30, y=250, x=250``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = write_large_field(pathlib.Path(tempfile.mkdtemp()) / "f.zarr", 6, 20, 30,
    ...                       chunks={"time": 4, "y": 8, "x": 8})
    >>> ds = xr.open_zarr(p)
    >>> ds["ssh"].shape, ds["ssh"].encoding["chunks"]
    ((6, 20, 30), (4, 8, 8))
    """
    c = {"time": 30, "y": 250, "x": 250, **dict(chunks or {})}
    ct, cy, cx = min(c["time"], nt), min(c["y"], ny), min(c["x"], nx)
    path = Path(path)
    land = np.zeros((ny, nx), dtype="int8")
    land[: max(1, ny // 4), : max(1, nx // 4)] = 1
    coords = {
        "time": (
            "time",
            pd.date_range("2020-01-01", periods=nt, freq="D"),
            {"standard_name": "time"},
        ),
        "y": (
            "y",
            np.arange(ny) * 10.0,
            {"units": "km", "standard_name": "projection_y_coordinate"},
        ),
        "x": (
            "x",
            np.arange(nx) * 10.0,
            {"units": "km", "standard_name": "projection_x_coordinate"},
        ),
    }
    import dask.array as dsa

    lazy = dsa.zeros((nt, ny, nx), dtype="float32", chunks=(ct, cy, cx))
    template = xr.Dataset(
        {
            "ssh": (("time", "y", "x"), lazy, {"units": "m", "long_name": "ssh"}),
            "land_mask": (("y", "x"), land, {"long_name": "1 on land"}),
        },
        coords=coords,
        attrs={"title": "geodl synthetic large field"},
    )
    enc = {"ssh": {"chunks": (ct, cy, cx)}, "land_mask": {"chunks": (cy, cx)}}
    template.to_zarr(path, mode="w", compute=False, encoding=enc, zarr_format=3, consolidated=False)
    template[["land_mask"]].to_zarr(path, mode="r+", consolidated=False)
    k = 2 * np.pi / wavelength
    x = np.arange(nx, dtype=np.float32)[None, None, :]
    for i, t0 in enumerate(range(0, nt, ct)):
        t = np.arange(t0, min(nt, t0 + ct), dtype=np.float32)[:, None, None]
        for j, y0 in enumerate(range(0, ny, cy)):
            y = np.arange(y0, min(ny, y0 + cy), dtype=np.float32)[None, :, None]
            rng = np.random.default_rng([seed, i, j])
            block = np.sin(k * x + np.float32(2 * np.pi * 0.05) * t) * np.cos(k * y)
            block += np.float32(0.1) * rng.standard_normal(block.shape, dtype=np.float32)
            block[:, land[y0 : y0 + cy].astype(bool)] = np.nan
            region = {"time": slice(t0, t0 + len(t)), "y": slice(y0, y0 + block.shape[1])}
            xr.Dataset({"ssh": (("time", "y", "x"), block)}).to_zarr(
                path, region={**region, "x": slice(0, nx)}, consolidated=False
            )
    from geodl.data.open import consolidate_zarr

    consolidate_zarr(path)  # opened without a warning, as every store geodl writes
    return path
