"""Real products as they come: descending latitude, wrapping longitude, curvilinear or
coordinate-less grids (the user-trust issue, item 2)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from geodl.data.source import GriddedSource
from geodl.errors import DataError
from geodl.grid import restore_order, sort_axes
from geodl.testing import make_field


@pytest.fixture
def field():
    return make_field(nt=6, ny=8, nx=10, land=False)


def test_descending_latitude_is_read_ascending_and_written_back(field):
    desc = field.isel(lat=slice(None, None, -1))
    src = GriddedSource(desc, target="ssh")
    got = src.variable("ssh").transpose(*src.dims)
    assert (np.diff(got.lat.values) > 0).all()
    np.testing.assert_array_equal(got.values, field.ssh.transpose(*src.dims).values)
    back = src.restore_order(got.to_dataset())
    np.testing.assert_array_equal(back.lat.values, desc.lat.values)
    np.testing.assert_array_equal(back.ssh.values, desc.ssh.transpose(*src.dims).values)
    # block reads (what the patch datasets use) see the sorted grid too
    block = src.read("ssh", (slice(0, 2), slice(0, 3), slice(0, 4)))
    np.testing.assert_allclose(block, field.ssh.values[:2, :3, :4])


def test_wrapping_longitudes_become_one_increasing_run(field):
    about0 = field.lon.values - field.lon.values.mean()  # -1.125 .. 1.125
    conventions = {
        "0..360": about0 % 360,  # 358.9 .. 359.9, 0.1 .. 1.1: wraps at the prime meridian
        "-180..180": (about0 + 360) % 360 - 180,  # 178.9 .. 179.9, -179.9 ..: the date line
    }
    for convention, lon in conventions.items():
        wrapped = field.assign_coords(lon=("lon", lon, {"units": "degrees_east"}))
        src = GriddedSource(wrapped, target="ssh")
        x = src.coords["lon"].values
        assert (np.diff(x) > 0).all(), convention
        np.testing.assert_allclose(np.diff(x), 0.25, rtol=1e-5)
        back = src.restore_order(src.variable("ssh").to_dataset())
        np.testing.assert_array_equal(back.lon.values, lon)


def test_unsorted_axis_is_sorted_and_restored():
    da = xr.DataArray(np.arange(4.0), dims="lat", coords={"lat": ("lat", [2.0, 0.0, 3.0, 1.0], {})})
    out, order = sort_axes(xr.Dataset({"v": da}), ("lat",))
    assert out.lat.values.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert out.v.values.tolist() == [1.0, 3.0, 0.0, 2.0]
    back = restore_order(out, order)
    assert back.lat.values.tolist() == [2.0, 0.0, 3.0, 1.0] and back.v.values.tolist() == [
        0,
        1,
        2,
        3,
    ]
    same, none = sort_axes(out, ("lat",))
    assert none == {} and same is out


def test_duplicated_coordinate_is_one_line():
    da = xr.DataArray(np.arange(3.0), dims="lat", coords={"lat": [1.0, 0.0, 1.0]})
    with pytest.raises(DataError, match="duplicated values"):
        sort_axes(xr.Dataset({"v": da}), ("lat",))


def test_curvilinear_and_coordinate_less_grids_are_refused(field):
    bare = xr.Dataset(
        {"ssh": (("time", "y", "x"), field.ssh.values)},
        coords={"time": field.time.values},
    )
    with pytest.raises(DataError, match="no coordinate values") as info:
        GriddedSource(bare, target="ssh")
    assert "\n" not in str(info.value)
    lat2, lon2 = np.meshgrid(field.lat.values, field.lon.values, indexing="ij")
    curv = bare.assign_coords(nav_lat=(("y", "x"), lat2), nav_lon=(("y", "x"), lon2))
    with pytest.raises(DataError, match="curvilinear grid.*nav_lat"):
        GriddedSource(curv, target="ssh")
