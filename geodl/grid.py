"""Grid geometry shared by the tasks and the methods: time in days, y/x coordinates in km."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

__all__ = ["EARTH_KM_PER_DEG", "days", "grid_km"]

EARTH_KM_PER_DEG = 111.195


def days(time: np.ndarray) -> np.ndarray:
    """Time coordinate in days since its first value (numeric axes are taken as days already)."""
    if np.issubdtype(time.dtype, np.datetime64):
        return (time - time[0]) / np.timedelta64(1, "D")
    return np.asarray(time, dtype=np.float64)


def grid_km(ds: xr.Dataset | xr.DataArray, y: str, x: str) -> tuple[np.ndarray, np.ndarray, str]:
    """1-D y and x coordinates in km: projected (km or m) as they are, geographic (degrees)
    mapped with an equirectangular projection about the domain centre. Returns (y_km, x_km, kind).
    """
    yc, xc = ds[y], ds[x]
    units = (str(yc.attrs.get("units", "")) + str(xc.attrs.get("units", ""))).lower()
    geographic = "degree" in units or y.lower().startswith("lat") or x.lower().startswith("lon")
    yv, xv = yc.values.astype(np.float64), xc.values.astype(np.float64)
    if geographic:
        lat0 = math.radians(float(np.mean(yv)))
        return yv * EARTH_KM_PER_DEG, xv * EARTH_KM_PER_DEG * math.cos(lat0), "geographic"
    if "km" in units or units.strip() == "":
        return yv, xv, "projected"
    if units.strip() in ("mm", "m m", "metre", "metres", "meter", "meters") or "m" in units:
        return yv / 1000.0, xv / 1000.0, "projected"
    return yv, xv, "projected"
