"""Opening files and validating variables, axes, times and grids (each user error is tested)."""

import numpy as np
import pytest
import xarray as xr

from geodl.data import GriddedSource, open_dataset
from geodl.errors import DataError
from geodl.testing import make_field, write_netcdf, write_zarr


def test_open_one_file_is_lazy(nc_path):
    ds = open_dataset(nc_path)
    assert ds["ssh"].chunks is not None
    assert ds["ssh"].shape == (20, 16, 24)


def test_open_many_files_concatenates_along_time(tmp_path, field):
    for i in range(4):
        write_netcdf(field.isel(time=slice(5 * i, 5 * i + 5)), tmp_path / f"part{i}.nc")
    ds = open_dataset(str(tmp_path / "part*.nc"))
    assert ds.sizes["time"] == 20
    assert "time" not in ds["land_mask"].dims  # static variables are not stacked
    np.testing.assert_array_equal(ds["ssh"].values, field["ssh"].values)
    listed = open_dataset(sorted(tmp_path.glob("part*.nc")))
    assert listed.sizes["time"] == 20


def test_open_zarr_v2_and_v3(zarr_path, field):
    ds = open_dataset(zarr_path)
    assert ds["ssh"].encoding["chunks"] == (5, 8, 12)
    np.testing.assert_array_equal(ds["ssh"].values, field["ssh"].values)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        open_dataset(tmp_path / "nope.nc")
    with pytest.raises(DataError, match="no file matches"):
        open_dataset(str(tmp_path / "nope*.nc"))


def test_truncated_and_corrupted_netcdf(tmp_path, nc_path):
    blob = nc_path.read_bytes()
    (tmp_path / "half.nc").write_bytes(blob[: len(blob) // 2])
    (tmp_path / "junk.nc").write_bytes(b"not a netcdf file" * 50)
    for name in ("half.nc", "junk.nc"):
        with pytest.raises(DataError, match="truncated or corrupted"):
            GriddedSource(tmp_path / name, "ssh")


def test_missing_variable_lists_what_exists(field):
    with pytest.raises(DataError, match=r"variable 'sla' not found; available variables: .*ssh"):
        GriddedSource(field, "sla")
    with pytest.raises(DataError, match="'bathy' not found"):
        GriddedSource(field, "ssh", static="bathy")


def test_no_time_axis_lists_dims(field):
    ds = field.rename({"time": "step"}).drop_vars("step")
    with pytest.raises(DataError, match=r"no time axis found among dims \['step'"):
        GriddedSource(ds, "ssh")


def test_no_spatial_axes_lists_dims(field):
    ds = field.rename({"lat": "a", "lon": "b"}).drop_vars(["a", "b"])
    with pytest.raises(DataError, match=r"no spatial axes found among dims .*'a', 'b'"):
        GriddedSource(ds, "ssh")


def test_duplicated_times(field):
    t = field["time"].values.copy()
    t[5] = t[4]
    with pytest.raises(DataError, match="duplicated values .*index 5"):
        GriddedSource(field.assign_coords(time=t), "ssh")


def test_non_monotonic_times(field):
    t = field["time"].values.copy()
    t[[3, 4]] = t[[4, 3]]
    with pytest.raises(DataError, match="not increasing .*sortby"):
        GriddedSource(field.assign_coords(time=t), "ssh")


def test_irregular_grid(field):
    lon = field["lon"].values.copy()
    lon[10:] += 1.0
    ds = field.assign_coords(lon=("lon", lon, field["lon"].attrs))
    with pytest.raises(DataError, match="grid axis 'lon' is irregular"):
        GriddedSource(ds, "ssh")
    assert GriddedSource(ds, "ssh", require_regular=False).shape["x"] == 24


def test_extra_dims_need_a_level(field):
    ds = field.expand_dims(depth=[0.0, 10.0]).transpose("time", "depth", "lat", "lon")
    with pytest.raises(DataError, match=r"select one level first, e.g. ds.isel\(depth=0\)"):
        GriddedSource(ds, "ssh")


def test_mismatched_grids_between_target_and_inputs(field):
    other = make_field(nt=20, ny=16, nx=24, variables=("u",))
    ok = GriddedSource(field, "ssh", inputs="u", extra=other)
    assert ok.inputs == ("u",)
    shifted = other.assign_coords(lon=other["lon"] + 0.1)
    with pytest.raises(DataError, match="grids of target and inputs do not match: x"):
        GriddedSource(field, "ssh", inputs="u", extra=shifted)
    smaller = make_field(nt=20, ny=12, nx=24, variables=("u",))
    with pytest.raises(DataError, match="do not match: y axis lat=16 in data, lat=12 in extra"):
        GriddedSource(field, "ssh", inputs="u", extra=smaller)


def test_all_nan_target(field):
    ds = field.assign(ssh=field["ssh"] * np.nan)
    src = GriddedSource(ds, "ssh")
    with pytest.raises(DataError, match="'ssh' is all NaN"):
        src.land()


def test_projected_grid_and_cf_axis_attributes():
    ds = make_field(nt=5, grid="projected").rename({"y": "rows", "x": "cols"})
    ds["rows"].attrs["axis"] = "Y"
    ds["cols"].attrs["axis"] = "X"
    src = GriddedSource(ds, "ssh")
    assert src.dims == ("time", "rows", "cols")


def test_source_pickles_without_handle(nc_path):
    import pickle

    src = GriddedSource(nc_path, "ssh")
    src.read("ssh", (slice(0, 1), slice(None), slice(None)))
    assert src._handles is not None
    clone = pickle.loads(pickle.dumps(src))
    assert clone._handles is None
    np.testing.assert_array_equal(
        clone.read("ssh", (slice(0, 2), slice(0, 3), slice(0, 4))),
        src.read("ssh", (slice(0, 2), slice(0, 3), slice(0, 4))),
    )


def test_read_gives_time_y_x_order(field):
    ds = field.transpose("lon", "time", "lat")
    src = GriddedSource(ds, "ssh")
    block = src.read("ssh", (slice(2, 4), slice(0, 5), slice(1, 3)))
    np.testing.assert_array_equal(block, field["ssh"].values[2:4, 0:5, 1:3])


def test_zarr_stores_written_by_xarray(tmp_path):
    ds = make_field(nt=4)
    write_zarr(ds, tmp_path / "a.zarr", zarr_format=2)
    assert isinstance(open_dataset(tmp_path / "a.zarr"), xr.Dataset)
