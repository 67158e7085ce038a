"""Open NetCDF/Zarr fields lazily and find their axes (DESIGN.md, data contract).

Axes are found by :func:`geodl.grid.find_axes` (CF metadata, else common names). Projected grids
(``y``/``x`` in km or m) and geographic grids (``lat``/``lon`` in degrees) are both first class.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from geodl.errors import DataError
from geodl.grid import Axes, find_axes

__all__ = ["Axes", "consolidate_zarr", "describe", "find_axes", "open_dataset"]


def _expand(path: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(path, str | Path):
        text = str(path)
        if any(ch in text for ch in "*?["):
            paths = [Path(p) for p in sorted(glob.glob(text))]
            if not paths:
                raise DataError(f"no file matches '{text}'; check the pattern")
            return paths
        return [Path(text)]
    return [Path(p) for p in path]


def _is_zarr(path: Path) -> bool:
    if path.suffix == ".zarr":
        return True
    return path.is_dir() and any(
        (path / marker).exists() for marker in ("zarr.json", ".zgroup", ".zarray", ".zmetadata")
    )


def consolidate_zarr(path: str | Path) -> None:
    """Write the consolidated metadata of the Zarr store ``path``: a reader gets every array's
    metadata in one read, and ``xr.open_zarr`` opens it without a warning. Zarr 3 warns that
    consolidated metadata is not yet part of the v3 specification; zarr-python and xarray read
    it, so that one warning is silenced here, where it arises."""
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Consolidated metadata is currently not part", Warning)
        zarr.consolidate_metadata(str(path))


def _consolidated(path: Path) -> bool:
    """Whether a Zarr store carries consolidated metadata (v2 ``.zmetadata`` or v3 ``zarr.json``)."""
    if (path / ".zmetadata").exists():
        return True
    meta = path / "zarr.json"
    if meta.exists():
        try:
            return json.loads(meta.read_text()).get("consolidated_metadata") is not None
        except (OSError, ValueError):
            return False
    return False


def open_dataset(path: str | Path | Sequence[str | Path], *, dask: bool = True) -> xr.Dataset:
    """Open one NetCDF file, several (glob or list, concatenated along time) or a Zarr store, lazily.

    Parameters
    ----------
    path : str, Path or sequence of them
        A NetCDF file, a glob pattern or list of NetCDF files (concatenated along their time axis),
        or a Zarr store (format 2 or 3).
    dask : bool
        Back variables with Dask arrays (one Dask chunk per storage chunk). With ``False`` the
        variables stay lazily indexed backend arrays: reading a slice reads only that slice, with no
        Dask overhead (what the patch readers inside DataLoader workers use).

    Examples
    --------
    >>> import numpy as np, xarray as xr, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "f.nc"
    >>> xr.Dataset({"ssh": (("time", "y", "x"), np.zeros((2, 3, 4)))}).to_netcdf(p)
    >>> open_dataset(p)["ssh"].shape
    (2, 3, 4)
    """
    paths = _expand(path)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DataError(f"file not found: {', '.join(missing)}; check the path")
    folders = [str(p) for p in paths if p.is_dir() and not _is_zarr(p)]
    if folders:
        raise DataError(
            f"{folders[0]} is a directory, not a NetCDF file or a Zarr store (no zarr.json or "
            f".zgroup in it); give a file, a glob such as '{folders[0]}/*.nc', or a Zarr store"
        )
    chunks = {} if dask else None
    try:
        if len(paths) == 1 and _is_zarr(paths[0]):
            return xr.open_zarr(paths[0], chunks=chunks, consolidated=_consolidated(paths[0]))
        if len(paths) == 1:
            return xr.open_dataset(paths[0], chunks=chunks, cache=False)
        with xr.open_dataset(paths[0]) as first:
            concat = find_axes(first).time
        if concat is None:
            raise DataError(
                f"cannot concatenate {len(paths)} files: no time axis in {paths[0]} "
                f"(dims {list(first.dims)}); open them one by one or add a time coordinate"
            )
        return xr.open_mfdataset(
            paths,
            combine="nested",
            concat_dim=concat,
            chunks={},
            data_vars="minimal",
            coords="minimal",
            compat="override",
            parallel=False,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if isinstance(exc, DataError):
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "did not find a match in any of xarray's" in first:  # no backend knows the bytes
            first = "no NetCDF or HDF5 header (is it a text or another kind of file?)"
        raise DataError(
            f"cannot read {', '.join(str(p) for p in paths)}: {first}; "
            "expected a NetCDF file or a Zarr store (is it truncated or corrupted?)"
        ) from None


def _spacing(coord: np.ndarray) -> tuple[float, bool]:
    if coord.size < 2:
        return float("nan"), True
    d = np.diff(coord.astype("float64"))
    return float(d.mean()), bool(np.allclose(d, d[0], rtol=1e-3, atol=0))


def describe(path: str | Path | Sequence[str | Path]) -> str:
    """Human summary of a file as geodl sees it: variables, axes, grid, time range, missing data."""
    ds = open_dataset(path)
    axes = find_axes(ds)
    lines = [f"source: {path}"]
    lines.append(
        "axes: " + ", ".join(f"{role}={getattr(axes, role)}" for role in ("time", "y", "x", "z"))
    )
    if axes.y and axes.x and axes.y in ds.coords and axes.x in ds.coords:
        yc, xc = ds[axes.y].values, ds[axes.x].values
        units = str(ds[axes.x].attrs.get("units", ""))
        geographic = "degree" in units or axes.x.lower().startswith("lon")
        kind = "geographic (degrees)" if geographic else f"projected ({units or 'no units'})"
        dy, ry = _spacing(yc)
        dx, rx = _spacing(xc)
        lines.append(
            f"grid: {kind}, {yc.size} x {xc.size} (y x), spacing dy={dy:.4g} dx={dx:.4g}, "
            f"{'regular' if ry and rx else 'irregular'}"
        )
    elif axes.y is None or axes.x is None:
        lines.append(f"grid: no spatial axes found among dims {list(ds.dims)}")
    if axes.time and axes.time in ds.coords:
        t = ds[axes.time].values
        lines.append(f"time: {t.size} steps, {t[0]} .. {t[-1]}")
    elif axes.time is None:
        lines.append(f"time: no time axis found among dims {list(ds.dims)}")
    lines.append("variables:")
    for name, var in ds.data_vars.items():
        if np.issubdtype(var.dtype, np.number):
            missing = float(var.isnull().mean().compute())
            miss = f", missing {100 * missing:.1f}%"
        else:
            miss = ""
        dims = ", ".join(f"{d}={n}" for d, n in zip(var.dims, var.shape, strict=True))
        units = var.attrs.get("units", "")
        lines.append(f"  {name}({dims}) {var.dtype}{' [' + units + ']' if units else ''}{miss}")
    return "\n".join(lines)
