"""Grid geometry shared by the tasks and the methods: time in days, y/x coordinates in km."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from geodl.errors import DataError

__all__ = ["EARTH_KM_PER_DEG", "days", "grid_km"]

EARTH_KM_PER_DEG = 111.195


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
    if "degree" in units or name.lower().startswith(("lat", "lon")):
        return "geographic", 1.0
    if units in _KM or units == "":
        return "projected", 1.0
    if units in _M:
        return "projected", 1e-3
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
