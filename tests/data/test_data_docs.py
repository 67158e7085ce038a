"""geodl.testing's lazy fields are Dask-backed (the Examples run in tests/test_docs.py)."""

import pytest

def test_lazy_field_is_dask_backed(tmp_path):
    from geodl.testing import lazy_field

    for fmt in ("zarr", "netcdf"):
        ds = lazy_field(tmp_path / fmt, fmt=fmt, chunks={"time": 5}, nt=10)
        assert ds["ssh"].chunks is not None and ds["ssh"].chunks[0] == (5, 5)
