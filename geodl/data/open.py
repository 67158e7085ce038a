"""Open NetCDF/Zarr fields lazily and find their axes (DESIGN.md, data contract).

Axes are found from CF metadata (``axis``, ``standard_name``, ``units``) or common names. Projected
grids (``y``/``x`` in km or m) and geographic grids (``lat``/``lon`` in degrees) are both first class.
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

__all__ = ["Axes", "describe", "find_axes", "open_dataset"]

_NAMES = {
    "time": ("time", "t", "time_counter"),
    "y": ("lat", "latitude", "nav_lat", "y", "rlat", "yc"),
    "x": ("lon", "longitude", "nav_lon", "x", "rlon", "xc"),
    "z": ("depth", "level", "lev", "z", "height", "plev"),
}
_STANDARD = {
    "time": ("time",),
    "y": ("latitude", "projection_y_coordinate", "grid_latitude"),
    "x": ("longitude", "projection_x_coordinate", "grid_longitude"),
    "z": ("depth", "height", "altitude", "air_pressure", "model_level_number"),
}
_AXIS_ATTR = {"T": "time", "Y": "y", "X": "x", "Z": "z"}


@dataclass(frozen=True)
class Axes:
    """Names of the dimensions that play each role (None where absent)."""

    time: str | None
    y: str | None
    x: str | None
    z: str | None = None

    @property
    def spatial(self) -> tuple[str, str]:
        if self.y is None or self.x is None:
            raise DataError("no spatial axes (y/lat and x/lon) found")
        return (self.y, self.x)


def _role(name: str, var: xr.DataArray) -> str | None:
    axis = str(var.attrs.get("axis", "")).upper()
    if axis in _AXIS_ATTR:
        return _AXIS_ATTR[axis]
    std = str(var.attrs.get("standard_name", "")).lower()
    for role, names in _STANDARD.items():
        if std in names:
            return role
    units = str(var.attrs.get("units", "")).lower()
    if units in ("degrees_north", "degree_north", "degrees_n"):
        return "y"
    if units in ("degrees_east", "degree_east", "degrees_e"):
        return "x"
    if np.issubdtype(var.dtype, np.datetime64) or " since " in units:
        return "time"
    for role, names in _NAMES.items():
        if name.lower() in names:
            return role
    return None


def find_axes(ds: xr.Dataset | xr.DataArray) -> Axes:
    """Map roles (time, y, x, z) to dimension names of ``ds``.

    A dimension gets a role from its coordinate variable's CF attributes, else from its name.
    """
    found: dict[str, str] = {}
    for dim in ds.dims:
        var = ds[dim] if dim in ds.coords else xr.DataArray(np.empty(0), name=str(dim))
        role = _role(str(dim), var)
        if role is not None and role not in found:
            found[role] = str(dim)
    return Axes(time=found.get("time"), y=found.get("y"), x=found.get("x"), z=found.get("z"))


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
        raise DataError(f"file not found: {', '.join(missing)}; check data.path")
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
