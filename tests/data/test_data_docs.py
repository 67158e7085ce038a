"""The Examples sections of the data layer and of geodl.testing run and give what they show."""

import doctest
import importlib

import pytest

MODULES = [
    "geodl.testing",
    "geodl.data.batch",
    "geodl.data.cluster",
    "geodl.data.convert",
    "geodl.data.dataset",
    "geodl.data.index",
    "geodl.data.normalize",
    "geodl.data.open",
    "geodl.data.source",
    "geodl.data.splits",
    "geodl.data.stitch",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_lazy_field_is_dask_backed(tmp_path):
    from geodl.testing import lazy_field

    for fmt in ("zarr", "netcdf"):
        ds = lazy_field(tmp_path / fmt, fmt=fmt, chunks={"time": 5}, nt=10)
        assert ds["ssh"].chunks is not None and ds["ssh"].chunks[0] == (5, 5)
