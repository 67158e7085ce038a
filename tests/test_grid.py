"""Grid geometry: each axis read by its own units."""

import numpy as np
import pytest
import xarray as xr

from geodl.errors import DataError
from geodl.grid import EARTH_KM_PER_DEG, grid_km


def _grid(y_units, x_units, y="y", x="x"):
    v = np.arange(4, dtype=float)
    return xr.Dataset(
        coords={y: (y, v * 2, {"units": y_units}), x: (x, v * 3000, {"units": x_units})}
    )


@pytest.mark.parametrize("y_units", ["km", "kilometers", "kilometre"])
def test_each_axis_has_its_own_units(y_units):
    # y in km and x in m: once read as km for both (the unit strings were joined)
    y_km, x_km, kind = grid_km(_grid(y_units, "m"), "y", "x")
    assert kind == "projected"
    np.testing.assert_allclose(y_km, [0, 2, 4, 6])
    np.testing.assert_allclose(x_km, [0, 3, 6, 9])


def test_metres_and_geographic():
    y_km, x_km, _ = grid_km(_grid("metres", "meters"), "y", "x")
    np.testing.assert_allclose(y_km, [0, 0.002, 0.004, 0.006])
    ds = xr.Dataset(
        coords={
            "lat": ("lat", [0.0, 1.0], {"units": "degrees_north"}),
            "lon": ("lon", [0.0, 1.0], {"units": "degrees_east"}),
        }
    )
    y_km, x_km, kind = grid_km(ds, "lat", "lon")
    assert kind == "geographic" and y_km[1] == pytest.approx(EARTH_KM_PER_DEG)
    assert x_km[1] == pytest.approx(EARTH_KM_PER_DEG * np.cos(np.radians(0.5)))


def test_unknown_or_mixed_units_are_one_line():
    with pytest.raises(DataError, match="coordinate 'x' has units 'furlong'; expected km, m or"):
        grid_km(_grid("km", "furlong"), "y", "x")
    with pytest.raises(DataError, match="one is in degrees and the other is not"):
        grid_km(_grid("degrees_north", "km"), "y", "x")


def test_days_reads_datetime64_cftime_and_numbers():
    import cftime

    from geodl.grid import days

    noleap = np.array([cftime.DatetimeNoLeap(2001, 2, 27), cftime.DatetimeNoLeap(2001, 3, 1)])
    np.testing.assert_allclose(days(noleap), [0.0, 2.0])  # no 29 February in that calendar
    dates = np.array(["2000-02-28", "2000-03-01"], dtype="datetime64[ns]")
    np.testing.assert_allclose(days(dates), [0.0, 2.0])
    np.testing.assert_allclose(days(np.array([3.0, 4.5])), [3.0, 4.5])
