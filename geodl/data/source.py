"""Variables with roles (target, inputs, static, obs, land mask), validated once, read by block.

A :class:`GriddedSource` remembers *where* the data is (paths, or an in-memory dataset) and what it
looks like (axes, sizes, coordinates, storage chunks); it opens files lazily, once per process, so
a DataLoader worker never shares a NetCDF handle created before ``fork``. Blocks are read without
Dask (lazy backend arrays read exactly the requested slice); a Dask-backed in-memory dataset is
computed with the synchronous scheduler.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from geodl.data.open import Axes, find_axes, open_dataset
from geodl.errors import DataError
from geodl.grid import restore_order, sort_axes

__all__ = ["GriddedSource"]

PathLike = str | Path | Sequence[str | Path]


def _names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _spacing(value: float | Sequence[float] | None) -> tuple[float, float] | None:
    """``grid_spacing_km`` as ``(dy, dx)``: one positive number for both, or a pair."""
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int | float) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | float) and v > 0 for v in pair):
        raise DataError(
            f"grid_spacing_km={value!r}; expected a positive number of km or a [dy, dx] pair "
            "of them"
        )
    return float(pair[0]), float(pair[1])


def _is_regular(coord: np.ndarray) -> bool:
    if coord.size < 3:
        return True
    d = np.diff(coord.astype("float64"))
    return bool(np.allclose(d, d[0], rtol=1e-3, atol=0))


class GriddedSource:
    """Validated, lazily opened gridded variables with roles.

    Parameters
    ----------
    data : path(s) or xarray.Dataset
        NetCDF file(s), a glob, a Zarr store, or a dataset already opened.
    target : str or sequence of str
        Variable(s) to predict: the channels of ``Batch.target``.
    inputs : str or sequence of str
        Extra dynamic channels (``Batch.inputs``), e.g. SST when mapping SSH.
    static : str or sequence of str
        Time-independent fields on the same grid (``Batch.static``), e.g. bathymetry.
    obs : str or sequence of str, optional
        Gridded observations (NaN where unobserved) for ``Batch.obs``; by default the target
        itself is the observation (emulation, or masks applied later by an observation operator).
    land_mask : str, optional
        A static variable, nonzero on land. By default land is where the target is NaN at every
        time step.
    extra : path(s) or xarray.Dataset, optional
        A second source holding some of the ``inputs``/``static`` variables; its grid and times
        must match ``data`` exactly.
    require_regular : bool
        Refuse 1-D grid coordinates with uneven spacing (convolutions assume a regular grid).
    grid_spacing_km : float or (float, float), optional
        The cell size in km (one number, or ``(dy, dx)``) of a file whose grid axes have no
        coordinate values: y/x coordinates in km from 0 are built with it. Refused for a file
        that has coordinates (they give the cell size).

    Examples
    --------
    >>> from geodl.testing import make_field
    >>> src = GriddedSource(make_field(nt=5), target="ssh", static="land_mask")
    >>> src.shape, src.dims
    ({'time': 5, 'y': 16, 'x': 24}, ('time', 'lat', 'lon'))
    """

    def __init__(
        self,
        data: PathLike | xr.Dataset,
        target: str | Sequence[str],
        *,
        inputs: str | Sequence[str] = (),
        static: str | Sequence[str] = (),
        obs: str | Sequence[str] | None = None,
        land_mask: str | None = None,
        extra: PathLike | xr.Dataset | None = None,
        require_regular: bool = True,
        grid_spacing_km: float | Sequence[float] | None = None,
    ) -> None:
        self.grid_spacing_km = _spacing(grid_spacing_km)
        self.target = _names(target)
        self.inputs = _names(inputs)
        self.static = _names(static)
        self.obs = _names(obs)
        self.land_mask_var = land_mask
        if not self.target:
            raise DataError("no target variable given; name at least one variable to predict")
        self._paths: dict[str, Any] = {}
        self._memory: dict[str, xr.Dataset] = {}
        handles: dict[str, xr.Dataset] = {}
        for key, src in (("main", data), ("extra", extra)):
            if src is None:
                continue
            if isinstance(src, xr.Dataset):
                self._memory[key] = src
                handles[key] = src
            else:
                self._paths[key] = src
                handles[key] = open_dataset(src)
        self.axes = self._check_axes(handles["main"])
        # Products come with descending latitude or wrapping longitude: sort once, here, for
        # every reader; `order` writes outputs back in the input's order (grid.restore_order).
        self.order: dict[str, dict] = {}
        for key in list(handles):
            built = self._with_grid(handles[key])
            handles[key], order = sort_axes(built, (self.axes.y, self.axes.x))
            if key in self._memory:
                self._memory[key] = handles[key]
            if key == "main":
                self.order = order
        main = handles["main"]
        self.dims: tuple[str, str, str] = (self.axes.time, self.axes.y, self.axes.x)  # type: ignore[assignment]
        self.shape = {
            "time": main.sizes[self.axes.time],
            "y": main.sizes[self.axes.y],
            "x": main.sizes[self.axes.x],
        }
        if "extra" in handles:
            self._check_same_grid(main, handles["extra"])
        self._where: dict[str, str] = {}
        dynamic = (*self.target, *self.inputs, *self.obs)
        statics = (*self.static, *((land_mask,) if land_mask else ()))
        for name in (*dynamic, *statics):
            self._where[name] = self._locate(name, handles)
            self._check_dims(name, handles[self._where[name]][name], name in statics)
        self._check_time(main)
        if require_regular:
            self._check_regular(main)
        self.coords = self._coords(main)
        self.attrs = {n: dict(handles[self._where[n]][n].attrs) for n in self._where}
        self.dataset_attrs = dict(main.attrs)
        self.dtype = {n: handles[self._where[n]][n].dtype for n in self._where}
        self.chunks = {
            n: self._chunk_shape(
                handles[self._where[n]][n], n in statics, self._where[n] in self._memory
            )
            for n in self._where
        }
        self._handles: dict[str, xr.Dataset] | None = None
        self._pid = -1
        self._land: np.ndarray | None = None

    # --- validation -------------------------------------------------------------------------
    def _check_axes(self, ds: xr.Dataset) -> Axes:
        axes = find_axes(ds)
        if axes.time is None:
            raise DataError(
                f"no time axis found among dims {list(ds.dims)}; name it 'time' or set the "
                "CF attribute axis='T' on its coordinate"
            )
        if axes.y is None or axes.x is None:
            raise DataError(
                f"no spatial axes found among dims {list(ds.dims)} (found y={axes.y}, "
                f"x={axes.x}); expected lat/lon or y/x, or CF attributes axis='Y'/'X'"
            )
        missing = [d for d in (axes.y, axes.x) if d not in ds.coords]
        if self.grid_spacing_km is not None and len(missing) < 2:
            given = [d for d in (axes.y, axes.x) if d in ds.coords]
            raise DataError(
                f"grid_spacing_km {list(self.grid_spacing_km)} is given, but the grid axes "
                f"{given} have coordinate values, which give the cell size; remove "
                "data.grid_spacing_km (it is for files without coordinates)"
            )
        if missing and self.grid_spacing_km is None:
            curvilinear = [
                str(n)
                for n, v in {**ds.coords, **ds.data_vars}.items()
                if v.ndim == 2
                and set(v.dims) == {axes.y, axes.x}
                and (
                    str(v.attrs.get("standard_name", "")) in ("latitude", "longitude")
                    or str(n).lower()
                    in ("nav_lat", "nav_lon", "lat", "lon", "latitude", "longitude")
                )
            ]
            if curvilinear:
                raise DataError(
                    f"curvilinear grid: 2-D coordinates {curvilinear} on dims "
                    f"({axes.y}, {axes.x}) are not supported; regrid onto a regular lat/lon or "
                    "projected y/x grid first (e.g. with xesmf)"
                )
            raise DataError(
                f"grid axes {missing} have no coordinate values, so the cell size is unknown; "
                "add 1-D coordinate variables (lat/lon in degrees or y/x in km or m), or give "
                "the cell size in km with data.grid_spacing_km"
            )
        return axes

    def _locate(self, name: str, handles: dict[str, xr.Dataset]) -> str:
        for key, ds in handles.items():
            if name in ds.data_vars:
                return key
        available = sorted({str(v) for ds in handles.values() for v in ds.data_vars})
        raise DataError(f"variable '{name}' not found; available variables: {available}")

    def _check_dims(self, name: str, da: xr.DataArray, static: bool) -> None:
        expected = {self.axes.y, self.axes.x} if static else set(self.dims)
        if set(da.dims) != expected:
            extra = [d for d in da.dims if d not in expected]
            hint = (
                f"select one level first, e.g. ds.isel({extra[0]}=0)"
                if extra
                else "it does not live on the target's grid"
            )
            role = "static" if static else "dynamic"
            raise DataError(
                f"variable '{name}' has dims {list(da.dims)}; a {role} variable needs exactly "
                f"{sorted(expected)}: {hint}"
            )
        for d in da.dims:
            role = {self.axes.time: "time", self.axes.y: "y", self.axes.x: "x"}[d]
            if da.sizes[d] != self.shape[role]:
                raise DataError(
                    f"variable '{name}' has {da.sizes[d]} steps along {d}, the target has "
                    f"{self.shape[role]}: grids of target and inputs do not match"
                )

    def _check_same_grid(self, a: xr.Dataset, b: xr.Dataset) -> None:
        axes_b = find_axes(b)
        for role, dim_a in (("time", self.axes.time), ("y", self.axes.y), ("x", self.axes.x)):
            dim_b = getattr(axes_b, role)
            if dim_b is None or b.sizes[dim_b] != a.sizes[dim_a]:
                got = f"{dim_b}={b.sizes[dim_b]}" if dim_b else "missing"
                raise DataError(
                    f"grids of target and inputs do not match: {role} axis {dim_a}="
                    f"{a.sizes[dim_a]} in data, {got} in extra; regrid the inputs to the target grid"
                )
            if dim_a in a.coords and dim_b in b.coords:
                ca, cb = a[dim_a].values, b[dim_b].values
                same = (
                    np.array_equal(ca, cb)
                    if not np.issubdtype(ca.dtype, np.floating)
                    else np.allclose(ca, cb, rtol=1e-6, atol=1e-9)
                )
                if not same:
                    raise DataError(
                        f"grids of target and inputs do not match: {role} coordinate '{dim_a}' "
                        f"differs from '{dim_b}' (first values {ca[:2]} vs {cb[:2]}); regrid the "
                        "inputs to the target grid"
                    )

    def _check_time(self, ds: xr.Dataset) -> None:
        name = self.axes.time
        if name not in ds.coords:
            return
        t = ds[name].values
        if t.size < 2:
            return
        d = np.diff(t)
        zero = d == np.zeros((), d.dtype)
        if zero.any():
            i = int(np.flatnonzero(zero)[0])
            raise DataError(
                f"time axis '{name}' has duplicated values (first at index {i + 1}: {t[i + 1]}); "
                "remove duplicates, e.g. ds.drop_duplicates('time')"
            )
        if (d < np.zeros((), d.dtype)).any():
            i = int(np.flatnonzero(d < np.zeros((), d.dtype))[0])
            raise DataError(
                f"time axis '{name}' is not increasing (index {i + 1}: {t[i + 1]} after {t[i]}); "
                "sort it, e.g. ds.sortby('time')"
            )

    def _check_regular(self, ds: xr.Dataset) -> None:
        for dim in (self.axes.y, self.axes.x):
            if dim in ds.coords and ds[dim].ndim == 1 and not _is_regular(ds[dim].values):
                d = np.diff(ds[dim].values.astype("float64"))
                raise DataError(
                    f"grid axis '{dim}' is irregular (spacing from {d.min():.4g} to "
                    f"{d.max():.4g}); a regular grid is needed: regrid it, or pass "
                    "require_regular=False if the model does not assume one"
                )

    # --- metadata ---------------------------------------------------------------------------
    def _coords(self, ds: xr.Dataset) -> xr.Dataset:
        """Coordinates (loaded, small) that stitched outputs carry."""
        keep = {}
        for name, c in ds.coords.items():
            if set(c.dims) <= set(self.dims):
                keep[name] = c.load() if c.size <= 10_000_000 else c
        return xr.Dataset(coords=keep)

    def _chunk_shape(self, da: xr.DataArray, static: bool, in_memory: bool) -> tuple[int, ...]:
        """Storage chunk shape in ``(t, y, x)`` (or ``(y, x)``) order: the unit of a read.

        Files: their chunks (Zarr ``chunks``, NetCDF ``chunksizes``). Dask-backed data in memory:
        its Dask chunks. Contiguous files and NumPy data: one time step, spatial tiles of 1024.
        """
        order = (self.axes.y, self.axes.x) if static else self.dims
        if static:
            return tuple(da.sizes[d] for d in order)  # statics are read once, whole
        enc = None if in_memory else da.encoding.get("chunks") or da.encoding.get("chunksizes")
        if enc is not None and len(enc) == da.ndim:
            by_dim = dict(zip(da.dims, enc, strict=True))
        elif da.chunks is not None and (in_memory or "chunksizes" not in da.encoding):
            by_dim = {d: c[0] for d, c in zip(da.dims, da.chunks, strict=True)}
        else:
            by_dim = {d: (1 if d == self.axes.time else min(1024, n)) for d, n in da.sizes.items()}
        return tuple(min(int(by_dim[d]), da.sizes[d]) for d in order)

    @property
    def times(self) -> np.ndarray:
        """The time coordinate (or ``arange`` when the file has none)."""
        name = self.axes.time
        if name in self.coords.coords:
            return self.coords[name].values
        return np.arange(self.shape["time"])

    @property
    def variables(self) -> list[str]:
        return list(self._where)

    # --- reading ----------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = None  # never ship an open file handle to another process
        state["_pid"] = -1
        return state

    def _open(self) -> dict[str, xr.Dataset]:
        if self._handles is None or self._pid != os.getpid():
            handles = dict(self._memory)
            for key, path in self._paths.items():
                handles[key] = self._sorted(open_dataset(path, dask=False))
            self._handles, self._pid = handles, os.getpid()
        return self._handles

    def dataset(self, *, dask: bool = True) -> xr.Dataset:
        """The main dataset (Dask-backed by default), e.g. for statistics."""
        if "main" in self._paths:
            return self._sorted(open_dataset(self._paths["main"], dask=dask))
        return self._memory["main"]

    def _sorted(self, ds: xr.Dataset) -> xr.Dataset:
        return sort_axes(self._with_grid(ds), (self.axes.y, self.axes.x))[0]

    def _with_grid(self, ds: xr.Dataset) -> xr.Dataset:
        """``ds`` with y/x coordinates in km from 0, ``grid_spacing_km`` apart, on the grid axes
        that have none (every open of a file without coordinates: readers see one grid)."""
        if self.grid_spacing_km is None:
            return ds
        built = {}
        for dim, step, role in zip(self.axes.spatial, self.grid_spacing_km, "yx", strict=True):
            if dim in ds.dims and dim not in ds.coords:
                attrs = {"units": "km", "standard_name": f"projection_{role}_coordinate"}
                built[dim] = (dim, step * np.arange(ds.sizes[dim], dtype=np.float64), attrs)
        return ds.assign_coords(built) if built else ds

    def restore_order(self, out: xr.Dataset | xr.DataArray) -> xr.Dataset | xr.DataArray:
        """An output on this source's (sorted) grid in the input file's order and coordinates."""
        return restore_order(out, self.order) if self.order else out

    def variable(self, name: str, *, dask: bool = True) -> xr.DataArray:
        """One variable, lazily (Dask-backed by default)."""
        key = self._where[name]
        if key in self._paths:
            return self._sorted(open_dataset(self._paths[key], dask=dask))[name]
        return self._memory[key][name]

    def read(self, name: str, region: Sequence[slice]) -> np.ndarray:
        """Decoded float32 values of ``name`` in ``region`` (slices in ``(t, y, x)`` or ``(y, x)``
        order), NaN where missing."""
        da = self._open()[self._where[name]][name]
        order = self.dims if len(region) == 3 else self.dims[1:]
        da = da.isel(dict(zip(order, region, strict=True))).transpose(*order)
        try:
            with dask.config.set(scheduler="synchronous"):
                values = da.values
        except (OSError, RuntimeError) as exc:
            where = self._paths.get(self._where[name], "in-memory dataset")
            raise DataError(
                f"cannot read '{name}' from {where} at {list(region)}: {exc}; "
                "the file may be truncated or corrupted"
            ) from None
        if self._where[name] in self._memory:
            # Callers normalise blocks in place: never hand out a view of the user's arrays.
            return np.array(values, dtype=np.float32, order="C", copy=True)
        return np.ascontiguousarray(values, dtype=np.float32)

    def land(self) -> np.ndarray:
        """``(ny, nx)`` bool land mask: the ``land_mask`` variable, or target NaN at all times.

        Computed once (one pass over the target with Dask when there is no mask variable) and
        kept: it travels to DataLoader workers with the source.
        """
        if self._land is not None:
            return self._land
        if self.land_mask_var is not None:
            values = self.read(self.land_mask_var, (slice(None), slice(None)))
            self._land = np.nan_to_num(values, nan=1.0) != 0
            return self._land
        da = self.variable(self.target[0])
        land = da.isnull().all(self.axes.time).transpose(self.axes.y, self.axes.x)
        values = np.asarray(land.values, dtype=bool)
        if values.all():
            raise DataError(
                f"variable '{self.target[0]}' is all NaN; check the file (or the variable name)"
            )
        self._land = values
        return values

    def template(self, name: str, time: slice = slice(None)) -> xr.DataArray:
        """An empty (all-NaN, lazy) ``DataArray`` like ``name`` on the source grid, for outputs."""
        import dask.array as dsa

        coords = (
            self.coords.isel({self.axes.time: time})
            if self.axes.time in self.coords.dims
            else self.coords
        )
        sizes = [
            coords.sizes.get(d, self.shape[r])
            for d, r in zip(self.dims, ("time", "y", "x"), strict=True)
        ]
        data = dsa.full(sizes, np.nan, dtype="float32", chunks=(1, *sizes[1:]))
        return xr.DataArray(
            data, dims=self.dims, coords=coords.coords, name=name, attrs=self.attrs.get(name, {})
        )

    def summary(self) -> str:
        """What was found: roles, sizes, read blocks and land fraction (for ``geodl info``)."""
        land = self.land()
        lines = [
            f"axes: time={self.dims[0]}, y={self.dims[1]}, x={self.dims[2]}; "
            f"sizes time={self.shape['time']}, y={self.shape['y']}, x={self.shape['x']}",
            f"land: {100 * land.mean():.1f}% of grid points "
            f"({'variable ' + self.land_mask_var if self.land_mask_var else 'target NaN at all times'})",
        ]
        for role, names in (
            ("target", self.target),
            ("inputs", self.inputs),
            ("obs", self.obs),
            ("static", self.static),
        ):
            for name in names:
                chunk = "x".join(map(str, self.chunks[name]))
                lines.append(f"{role}: {name} {self.dtype[name]}, storage chunks {chunk}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        where = self._paths.get("main", "in-memory dataset")
        return (
            f"GriddedSource({where}, target={list(self.target)}, inputs={list(self.inputs)}, "
            f"static={list(self.static)}, shape={self.shape})"
        )
