"""Every Zarr store geodl writes carries consolidated metadata: ``xr.open_zarr`` opens it in one
metadata read and without a warning (issue: "Zarr written without consolidated metadata")."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

from geodl.data.blocks import FieldWriter
from geodl.data.convert import convert
from geodl.data.open import _consolidated
from geodl.tasks.simulate import write_dataset


def _opens_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (zarr's or xarray's) fails the test
        with xr.open_zarr(path) as ds:
            return ds.load()


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_convert_writes_consolidated_metadata(tmp_path, nc_path, field, zarr_format):
    out = convert(nc_path, tmp_path / "out.zarr", zarr_format=zarr_format)
    assert _consolidated(out)
    np.testing.assert_array_equal(_opens_quietly(out)["ssh"].values, field["ssh"].values)


def test_simulated_and_block_written_stores_are_consolidated(tmp_path, field):
    out = write_dataset(field[["ssh"]], tmp_path / "sim.zarr")
    assert _consolidated(out)
    _opens_quietly(out)
    template = xr.zeros_like(field[["ssh"]]).chunk({"time": 5})
    with FieldWriter(tmp_path / "blocks.zarr", template, {"time": 5}) as writer:
        for t in range(0, 20, 5):
            writer.write(
                "ssh", (slice(t, t + 5), slice(None), slice(None)), np.full((5, 16, 24), t)
            )
    assert _consolidated(tmp_path / "blocks.zarr")
    values = _opens_quietly(tmp_path / "blocks.zarr")["ssh"].values
    assert values[0].max() == 0 and values[-1].min() == 15  # the blocks written after the template
