"""Fixtures of the data-layer tests: tiny synthetic fields from geodl.testing, on disk and in memory."""

import pytest

from geodl.testing import make_field, write_netcdf, write_zarr


@pytest.fixture
def field():
    """A NumPy-backed (time=20, lat=16, lon=24) field with land and 10% missing values."""
    return make_field(nt=20, ny=16, nx=24, nan_fraction=0.1, inputs=("sst",))


@pytest.fixture
def nc_path(tmp_path, field):
    return write_netcdf(field, tmp_path / "field.nc")


@pytest.fixture(params=[2, 3], ids=["zarr2", "zarr3"])
def zarr_path(request, tmp_path, field):
    return write_zarr(
        field,
        tmp_path / "field.zarr",
        chunks={"time": 5, "lat": 8, "lon": 12},
        zarr_format=request.param,
    )


@pytest.fixture(params=["numpy", "dask", "netcdf", "zarr"])
def any_data(request, tmp_path, field):
    """The same field NumPy-backed, Dask-backed, as a NetCDF file and as a Zarr store."""
    if request.param == "numpy":
        return field
    if request.param == "dask":
        return field.chunk({"time": 7})
    if request.param == "netcdf":
        return write_netcdf(field, tmp_path / "f.nc")
    return write_zarr(field, tmp_path / "f.zarr", chunks={"time": 6, "lat": 8, "lon": 8})
