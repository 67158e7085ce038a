"""Convert and rechunk NetCDF/Zarr data into a Zarr store (or NetCDF file), atomically.

Patch loaders read whole storage chunks (DESIGN.md), so the chunk shape decides the read cost:
a chunk holding many patches is decoded once for all of them. Rechunk once with
``geodl convert IN OUT.zarr --chunks time=30,y=240,x=240`` before training on large data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import xarray as xr

from geodl.atomic import atomic_path
from geodl.data.cluster import dask_client
from geodl.data.open import consolidate_zarr, find_axes, open_dataset
from geodl.errors import ConfigError, DataError

__all__ = ["convert", "parse_chunks"]

_KEEP_ENCODING = ("dtype", "_FillValue", "scale_factor", "add_offset", "units", "calendar")


def parse_chunks(text: str) -> dict[str, int]:
    """Parse ``"time=30,y=120,x=120"`` into a dict.

    Examples
    --------
    >>> parse_chunks("time=30, y=120,x=-1")
    {'time': 30, 'y': 120, 'x': -1}
    """
    out: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = int(value)
        except ValueError:
            raise ConfigError(
                f"--chunks '{text}': '{item}' is not DIM=INT; expected e.g. time=30,y=120,x=120 "
                "(-1 for a whole dim)"
            ) from None
    return out


def _resolve(ds: xr.Dataset, chunks: Mapping[str, int]) -> dict[str, int]:
    axes = find_axes(ds)
    roles = {"time": axes.time, "y": axes.y, "x": axes.x, "z": axes.z}
    out = {}
    for key, value in chunks.items():
        dim = key if key in ds.dims else roles.get(key)
        if dim is None or dim not in ds.dims:
            raise ConfigError(
                f"--chunks: unknown dim '{key}'; the data has dims {list(ds.dims)} "
                "(roles time/y/x are accepted too)"
            )
        if value == 0 or value < -1:
            raise ConfigError(f"--chunks: {key}={value}; expected a positive size or -1")
        out[dim] = ds.sizes[dim] if value == -1 else min(value, ds.sizes[dim])
    return out


def convert(
    src: str | Path | Sequence[str | Path],
    dst: str | Path,
    *,
    chunks: Mapping[str, int] | None = None,
    zarr_format: Literal[2, 3] = 3,
    overwrite: bool = False,
    dask_workers: int | None = None,
    scheduler: str | None = None,
) -> Path:
    """Copy ``src`` into ``dst`` (``*.zarr`` or ``*.nc``) with storage ``chunks``, atomically.

    Parameters
    ----------
    src : path(s)
        NetCDF file(s), glob or Zarr store (see :func:`~geodl.data.open.open_dataset`).
    dst : path
        Output: a Zarr store (``*.zarr``, format ``zarr_format``) or a NetCDF4 file (``*.nc``).
    chunks : mapping, optional
        Chunk size per dim (names or roles ``time``/``y``/``x``; -1 = whole dim). Dims not given
        keep their current chunking.
    overwrite : bool
        Replace an existing ``dst``.
    dask_workers, scheduler :
        Run the copy on a LocalCluster or an existing scheduler (default: in process).

    Returns
    -------
    Path
        ``dst``; it only appears once the copy is complete.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from geodl.testing import make_field, write_netcdf
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> nc = write_netcdf(make_field(nt=6), d / "f.nc")
    >>> out = convert(nc, d / "f.zarr", chunks={"time": 2, "y": -1, "x": -1})
    >>> open_dataset(out)["ssh"].encoding["chunks"]
    (2, 16, 24)
    """
    dst = Path(dst)
    if dst.suffix not in (".zarr", ".nc"):
        raise ConfigError(f"convert: output '{dst}' must end in .zarr or .nc")
    if dst.exists() and not overwrite:
        raise ConfigError(f"convert: output '{dst}' exists; pass --overwrite to replace it")
    if zarr_format not in (2, 3):
        raise ConfigError(f"convert: zarr_format={zarr_format!r}; expected 2 or 3")
    ds = open_dataset(src)
    target = _resolve(ds, chunks or {})
    ds = ds.chunk(target) if target else ds
    for var in ds.variables.values():
        var.encoding = {k: v for k, v in var.encoding.items() if k in _KEEP_ENCODING}
    encoding = {}
    if dst.suffix == ".nc":
        for name, var in ds.data_vars.items():
            if var.chunks is not None and var.ndim:
                encoding[name] = {"chunksizes": tuple(c[0] for c in var.chunks)}
    with dask_client(dask_workers, scheduler), atomic_path(dst) as tmp:
        try:
            if dst.suffix == ".zarr":
                ds.to_zarr(tmp, mode="w", zarr_format=zarr_format, consolidated=False)
                consolidate_zarr(tmp)
            else:
                ds.to_netcdf(tmp, encoding=encoding)
        except (OSError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"convert: cannot copy {src} to {dst}: {first}") from None
    return dst
