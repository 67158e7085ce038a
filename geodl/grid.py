"""Grid axes and geometry, the one copy for data, metrics, obs, methods and tasks: which dimension
is time / y / x / z (CF ``axis``, ``standard_name`` and ``units``, else common names), time in
days (datetime64, cftime or numeric) and y/x coordinates in km (projected in km or m, or
geographic in degrees)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

from geodl.errors import DataError

__all__ = [
    "AXIS_NAMES",
    "DEGREES",
    "EARTH_KM_PER_DEG",
    "METRES",
    "Axes",
    "days",
    "find_axes",
    "grid_km",
    "grid_mapping",
    "restore_order",
    "sort_axes",
    "wrap_longitude",
]

EARTH_KM_PER_DEG = 111.195

#: Spellings of degree and metre units (CF and common).
DEGREES = (
    "degrees",
    "degree",
    "degrees_east",
    "degree_east",
    "degrees_north",
    "degree_north",
    "degE",
    "degN",
)
METRES = ("m", "meter", "meters", "metre", "metres")

#: The WGS 84 ellipsoid as CF grid-mapping attributes (CF 1.8, section 5.6 and appendix F).
WGS84 = {"semi_major_axis": 6378137.0, "inverse_flattening": 298.257223563}

#: Common dimension names of each role, tried after the CF attributes.
AXIS_NAMES = {
    "time": ("time", "t", "time_counter"),
    "y": ("lat", "latitude", "nav_lat", "y", "rlat", "yc", "j"),
    "x": ("lon", "longitude", "nav_lon", "x", "rlon", "xc", "i"),
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
    for role, names in AXIS_NAMES.items():
        if name.lower() in names:
            return role
    return None


def find_axes(ds: xr.Dataset | xr.DataArray) -> Axes:
    """Map roles (time, y, x, z) to dimension names of ``ds``.

    A dimension gets a role from its coordinate variable's CF attributes, else from its name.

    Examples
    --------
    >>> find_axes(xr.DataArray(np.zeros((2, 3, 4)), dims=("time", "lat", "lon")))
    Axes(time='time', y='lat', x='lon', z=None)
    """
    found: dict[str, str] = {}
    for dim in ds.dims:
        var = ds[dim] if dim in ds.coords else xr.DataArray(np.empty(0), name=str(dim))
        role = _role(str(dim), var)
        if role is not None and role not in found:
            found[role] = str(dim)
    return Axes(time=found.get("time"), y=found.get("y"), x=found.get("x"), z=found.get("z"))


def days(time: np.ndarray) -> np.ndarray:
    """Time coordinate in days since its first value: datetime64, cftime (object arrays of
    dates) or numeric (taken as days already)."""
    time = np.asarray(time)
    if np.issubdtype(time.dtype, np.datetime64):
        return (time - time[0]) / np.timedelta64(1, "D")
    if time.dtype == object and time.size and hasattr(time.flat[0], "year"):  # cftime
        return np.array([(t - time.flat[0]).total_seconds() / 86400.0 for t in time.flat])
    return np.asarray(time, dtype=np.float64)


_KM = {"km", "kilometre", "kilometres", "kilometer", "kilometers"}
_M = {"m", "metre", "metres", "meter", "meters"}


def _axis_kind(coord: xr.DataArray, name: str) -> tuple[str, float]:
    """``("geographic", 1.0)`` for degrees, else ``("projected", factor to km)`` from one axis's
    own ``units`` (no units: km)."""
    units = str(coord.attrs.get("units", "")).strip().lower()
    if "degree" in units:
        return "geographic", 1.0
    if units in _KM:  # before the name: y/x built in km on dims named lat/lon are projected
        return "projected", 1.0
    if units in _M:
        return "projected", 1e-3
    if name.lower().startswith(("lat", "lon")):
        return "geographic", 1.0
    if units == "":
        return "projected", 1.0
    raise DataError(
        f"coordinate '{name}' has units '{coord.attrs.get('units')}'; expected km, m or degrees"
    )


def grid_km(ds: xr.Dataset | xr.DataArray, y: str, x: str) -> tuple[np.ndarray, np.ndarray, str]:
    """1-D y and x coordinates in km: projected (each axis in km or m, by its own units) as they
    are, geographic (degrees) mapped with an equirectangular projection about the domain centre.
    Returns (y_km, x_km, kind); one axis in degrees and the other not is a :class:`DataError`.
    """
    yc, xc = ds[y], ds[x]
    (ky, fy), (kx, fx) = _axis_kind(yc, y), _axis_kind(xc, x)
    if ky != kx:
        raise DataError(
            f"coordinates '{y}' ({yc.attrs.get('units', 'no units')}) and '{x}' "
            f"({xc.attrs.get('units', 'no units')}): one is in degrees and the other is not"
        )
    yv, xv = yc.values.astype(np.float64), xc.values.astype(np.float64)
    if ky == "geographic":
        lat0 = math.radians(float(np.mean(yv)))
        return yv * EARTH_KM_PER_DEG, xv * EARTH_KM_PER_DEG * math.cos(lat0), "geographic"
    return yv * fy, xv * fx, "projected"


def grid_mapping(ds: xr.Dataset, var: str, y: str, x: str) -> xr.DataArray | None:
    """The CF grid-mapping variable (scalar, named) that an output of ``ds[var]`` carries.

    The input's own where ``var`` has a ``grid_mapping`` attribute naming a variable of ``ds``
    (copied with its attributes; CF 1.7's ``"crs: y x"`` form gives its first name); else, on a
    geographic grid (``y``/``x`` in degrees), ``crs`` with ``grid_mapping_name:
    latitude_longitude`` on the WGS 84 ellipsoid (CF 1.8, section 5.6); else None: a projected
    grid without a mapping keeps none (geodl does not invent a projection).

    Examples
    --------
    >>> lat = xr.DataArray([0.0, 1.0], dims="lat", attrs={"units": "degrees_north"})
    >>> lon = xr.DataArray([0.0, 1.0], dims="lon", attrs={"units": "degrees_east"})
    >>> ds = xr.Dataset({"v": (("lat", "lon"), np.zeros((2, 2)))}, coords={"lat": lat, "lon": lon})
    >>> crs = grid_mapping(ds, "v", "lat", "lon")
    >>> crs.name, crs.attrs["grid_mapping_name"]
    ('crs', 'latitude_longitude')
    >>> grid_mapping(ds.rename(lat="y", lon="x").assign_coords(
    ...     y=("y", [0.0, 5.0], {"units": "km"}), x=("x", [0.0, 5.0], {"units": "km"})), "v", "y", "x")
    """
    da = ds[var]
    # in the attributes as files are opened; in the encoding with xarray's decode_coords="all"
    given = str(da.attrs.get("grid_mapping") or da.encoding.get("grid_mapping", ""))
    name = given.split(":")[0].split()
    if name and name[0] in ds.variables:
        src = ds[name[0]]
        numeric = src.ndim == 0 and np.issubdtype(src.dtype, np.number)
        value = src.values if numeric else np.int32(0)  # CF: the value itself is not used
        return xr.DataArray(value, name=name[0], attrs=dict(src.attrs))
    if y not in ds.coords or x not in ds.coords:
        return None
    if _axis_kind(ds[y], y)[0] != "geographic" or _axis_kind(ds[x], x)[0] != "geographic":
        return None
    attrs = {"grid_mapping_name": "latitude_longitude", "longitude_of_prime_meridian": 0.0, **WGS84}
    return xr.DataArray(np.int32(0), name="crs", attrs=attrs)


def wrap_longitude(lon: np.ndarray, centre: float) -> np.ndarray:
    """Longitudes ``lon`` (degrees) shifted by whole turns into ``[centre - 180, centre + 180)``.

    With ``centre`` the middle of a grid's longitudes, points given in 0..360 land on a -180..180
    grid and the reverse (and on a grid that :func:`sort_axes` unwrapped, e.g. 356 .. 363.9).

    Examples
    --------
    >>> wrap_longitude(np.array([350.0, 10.0, -170.0]), centre=0.0).tolist()
    [-10.0, 10.0, -170.0]
    >>> wrap_longitude(np.array([-10.0, 10.0]), centre=180.0).tolist()
    [350.0, 10.0]
    """
    lon = np.asarray(lon, dtype=np.float64)
    return centre + np.mod(lon - centre + 180.0, 360.0) - 180.0


def _longitude(coord: xr.DataArray, name: str) -> bool:
    units = str(coord.attrs.get("units", "")).lower()
    std = str(coord.attrs.get("standard_name", "")).lower()
    if std == "longitude" or units in ("degrees_east", "degree_east", "degrees_e", "dege"):
        return True
    return name.lower().startswith("lon") and units in ("", "degrees", "degree")


def sort_axes(ds: xr.Dataset, dims: tuple[str, ...]) -> tuple[xr.Dataset, dict[str, dict]]:
    """``ds`` with its 1-D ``dims`` coordinates increasing, as products come and models need.

    A descending axis (ERA5's latitude, many L4 products) is reversed; an unsorted one is sorted;
    a longitude that wraps (0..360 across the prime meridian, -180..180 across the date line) is
    unwrapped into one increasing run (e.g. 356 .. 363.9). Returns ``(sorted dataset, order)``,
    where ``order`` maps each changed dim to what :func:`restore_order` needs to write outputs
    back in the input's order and convention (empty when nothing changed).

    Examples
    --------
    >>> da = xr.DataArray(np.arange(3.0), dims="lat", coords={"lat": [10.0, 5.0, 0.0]})
    >>> out, order = sort_axes(xr.Dataset({"v": da}), ("lat",))
    >>> out.lat.values.tolist(), out.v.values.tolist(), list(order)
    ([0.0, 5.0, 10.0], [2.0, 1.0, 0.0], ['lat'])
    >>> restore_order(out, order).lat.values.tolist()
    [10.0, 5.0, 0.0]
    """
    order: dict[str, dict] = {}
    for dim in dims:
        if dim not in ds.coords or ds[dim].ndim != 1 or ds.sizes[dim] < 2:
            continue
        coord = ds[dim]
        values = coord.values
        if not np.issubdtype(values.dtype, np.number):
            continue
        v = values.astype(np.float64)
        if (np.diff(v) > 0).all():
            continue
        new = v
        if _longitude(coord, dim):
            unwrapped = np.unwrap(v, period=360.0)
            step = np.diff(unwrapped)
            if (step > 0).all() or (step < 0).all():  # one run once unwrapped
                new = unwrapped
        perm = np.argsort(new, kind="stable")
        sorted_new = new[perm]
        if (np.diff(sorted_new) <= 0).any():
            raise DataError(
                f"coordinate '{dim}' has duplicated values; remove them, e.g. "
                f"ds.drop_duplicates('{dim}')"
            )
        ds = ds.isel({dim: perm}).assign_coords(
            {dim: (dim, sorted_new.astype(values.dtype, copy=False), coord.attrs)}
        )
        order[dim] = {"perm": perm, "values": values}
    return ds, order


def restore_order(ds: xr.Dataset | xr.DataArray, order: dict[str, dict]):
    """Undo :func:`sort_axes` on an output on the sorted grid: the input's order and coordinate
    values (a wrapped longitude in the input's own convention)."""
    for dim, how in order.items():
        if dim not in ds.dims:
            continue
        inverse = np.empty_like(how["perm"])
        inverse[how["perm"]] = np.arange(how["perm"].size)
        attrs = ds[dim].attrs if dim in ds.coords else {}
        ds = ds.isel({dim: inverse}).assign_coords({dim: (dim, how["values"], attrs)})
    return ds
