"""Stitching: cut into overlapping patches and put back returns the field exactly."""

import numpy as np
import pytest
import torch
import xarray as xr

from geodl.data import (
    GriddedSource,
    PatchDataset,
    StitchWriter,
    compute_stats,
    make_loader,
    open_dataset,
    stitch,
    taper,
)
from geodl.errors import DataError
from geodl.testing import make_field

SIZE = {"time": 5, "y": 8, "x": 8}
STRIDE = {"time": 2, "y": 3, "x": 5}


@pytest.fixture
def src():
    return GriddedSource(make_field(nt=17, ny=21, nx=26, land=True), "ssh")


def test_cut_and_stitch_returns_the_field_exactly(src):
    ds = PatchDataset(src, SIZE, STRIDE)
    b = ds.__getitems__(range(len(ds)))
    out = stitch(b.target, b.starts, src)
    field = src.dataset()["ssh"]
    np.testing.assert_array_equal(out["ssh"].values, field.values)  # NaN on land in both
    assert out["ssh"].attrs == field.attrs
    xr.testing.assert_identical(out["lat"], field["lat"])
    assert out.attrs["title"] == "geodl synthetic field"
    raw = stitch(b.target, b.starts, src, kind="none", mask_land=False)
    assert np.isfinite(raw["ssh"].values).all()


def test_stitch_inverts_normalisation(src):
    stats = compute_stats(src.dataset(), ["ssh"], per_pixel=True)
    ds = PatchDataset(src, SIZE, STRIDE, normalizer=stats)
    b = ds.__getitems__(range(len(ds)))
    out = stitch(b.target, b.starts, src, normalizer=stats)
    np.testing.assert_allclose(out["ssh"].values, src.dataset()["ssh"].values, rtol=1e-5, atol=1e-5)


def test_overlap_add_weights_patches(src):
    starts = torch.tensor([[0, 0, 0], [0, 0, 4]])
    patches = torch.stack([torch.full((5, 1, 8, 8), 1.0), torch.full((5, 1, 8, 8), 3.0)])
    out = stitch(patches, starts, src, mask_land=False)["ssh"].values
    assert out.shape == (5, 21, 26)
    assert out[0, 4, 2] == 1.0 and out[0, 4, 10] == 3.0
    mid = out[2, 4, 4:8]
    assert np.all((mid > 1.0) & (mid < 3.0)) and np.all(np.diff(mid) > 0)  # taper blends
    assert np.isnan(out[0, 12, 0])  # no patch reached it
    w = taper((5, 8, 8))
    assert w[2, 3, 3] > w[0, 0, 0] > 0


def test_stitch_errors(src):
    with pytest.raises(DataError, match="falls outside the output"):
        stitch(np.zeros((1, 5, 1, 8, 8)), np.array([[0, 20, 0]]), src)
    with pytest.raises(DataError, match="expected \\(N, T, C, H, W\\) and \\(N, 3\\)"):
        stitch(np.zeros((2, 5, 8, 8)), np.zeros((2, 3)), src)
    with pytest.raises(DataError, match="2 channel\\(s\\) in the patches but 1 names"):
        stitch(np.zeros((1, 5, 2, 8, 8)), np.zeros((1, 3)), src)
    with pytest.raises(DataError, match="taper='cosine'"):
        stitch(np.zeros((1, 5, 1, 8, 8)), np.zeros((1, 3)), src, kind="cosine")


@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_streamed_stitching_matches_in_memory(tmp_path, src, suffix):
    stats = compute_stats(src.dataset(), ["ssh"])
    ds = PatchDataset(src, SIZE, STRIDE, normalizer=stats)
    path = tmp_path / f"pred{suffix}"
    with StitchWriter(path, src, (5, 8, 8), normalizer=stats) as writer:
        for b in make_loader(ds, batch_size=12):
            assert not path.exists()  # appears only when complete
            writer.add(b.target, b.starts)
    assert writer.peak_slab_bytes < 3 * 12 * 21 * 26 * 8  # a few time steps, not 17
    got = open_dataset(path)["ssh"]
    np.testing.assert_allclose(got.values, src.dataset()["ssh"].values, rtol=1e-5, atol=1e-5)
    assert got.attrs["units"] == "m"
    np.testing.assert_array_equal(got["time"].values, src.times)


def test_streamed_stitching_refuses_time_going_back(tmp_path, src):
    writer = StitchWriter(tmp_path / "p.zarr", src, (5, 8, 8))
    writer.add(np.zeros((1, 5, 1, 8, 8)), np.array([[6, 0, 0]]))
    with pytest.raises(DataError, match="non-decreasing time order"):
        writer.add(np.zeros((1, 5, 1, 8, 8)), np.array([[0, 0, 0]]))
    with pytest.raises(DataError, match="expected a .zarr or .nc path"):
        StitchWriter(tmp_path / "p.txt", src, (5, 8, 8))


def test_failed_stream_leaves_nothing(tmp_path, src):
    path = tmp_path / "p.zarr"
    with pytest.raises(RuntimeError), StitchWriter(path, src, (5, 8, 8)) as w:
        w.add(np.zeros((1, 5, 1, 8, 8)), np.array([[0, 0, 0]]))
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("suffix", "tile"), [(".zarr", (8, 10)), (".nc", (7, 26))])
def test_tile_by_tile_prediction_matches_in_memory(tmp_path, src, suffix, tile):
    from geodl.data import make_splits, predict_to_file

    stats = compute_stats(src.dataset(), ["ssh"], per_pixel=True)
    split = make_splits(src.times, {"test": (src.times[4], src.times[15])}, window=5)["test"]
    ds = PatchDataset(src, SIZE, STRIDE, split=split, normalizer=stats)
    whole = ds.__getitems__(range(len(ds)))
    expected = stitch(whole.target * 2, whole.starts, src, normalizer=stats)
    calls = []

    def predict(batch):
        calls.append(batch.batch_size)
        return batch.target * 2

    path = predict_to_file(tmp_path / f"p{suffix}", src, predict, SIZE, STRIDE, split=split,
                           normalizer=stats, tile=tile, batch_size=7)  # fmt: skip
    got = open_dataset(path)["ssh"]
    assert got.sizes["time"] == len(split)
    np.testing.assert_allclose(got.values, expected["ssh"].values, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["time"].values, expected["time"].values)
    assert sum(calls) >= len(ds)  # patches on tile borders are predicted once per tile


def test_tiles_bound_the_accumulator(tmp_path, src):
    from geodl.data import predict_to_file

    big = GriddedSource(make_field(nt=12, ny=64, nx=64), "ssh")
    size, stride = {"time": 4, "y": 8, "x": 8}, {"time": 2, "y": 4, "x": 4}
    writer_peaks = []
    original = StitchWriter.close

    def spy(self):
        writer_peaks.append(self.peak_slab_bytes)
        return original(self)

    StitchWriter.close = spy
    try:
        predict_to_file(tmp_path / "p.zarr", big, lambda b: b.target, size, stride, tile=(16, 16))
    finally:
        StitchWriter.close = original
    plane = 12 * 64 * 64 * 8
    assert writer_peaks[0] < plane / 4  # (tile + halo)^2 x a few steps, not the whole record
    with pytest.raises(DataError, match="no patch starts in y range"):
        PatchDataset(big, size, stride, region={"y": (61, 64)})


def test_predict_to_file_errors(tmp_path, src):
    from geodl.data import predict_to_file

    with pytest.raises(DataError, match=r"tile=\(0, 5\); expected two positive sizes"):
        predict_to_file(tmp_path / "p.zarr", src, lambda b: b.target, SIZE, tile=(0, 5))
    assert not (tmp_path / "p.zarr").exists()


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_written_reconstructions_are_cf_clean(tmp_path, suffix):
    """Coordinates carry no _FillValue, the file has a dated history line after the input's,
    and a Zarr store opens with consolidated metadata and without a warning."""
    import warnings

    import zarr

    from geodl.data import GriddedSource, predict_to_file
    from geodl.testing import make_field

    field = make_field(nt=6, ny=16, nx=24)
    field.attrs["history"] = "made by a test"
    src = GriddedSource(field, "ssh")
    out = predict_to_file(
        tmp_path / f"p{suffix}", src, lambda b: b.target, {"time": 3, "y": 8, "x": 8},
        {"time": 1, "y": 4, "x": 4}, tile=(8, 8),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(out) if suffix == ".zarr" else xr.open_dataset(out)
    history = ds.attrs["history"].splitlines()
    assert history[0] == "made by a test" and "geodl" in history[1]
    if suffix == ".zarr":
        meta = zarr.open_group(str(out), mode="r").metadata.consolidated_metadata
        assert meta is not None
        for c in ds.coords:
            assert "_FillValue" not in ds[c].encoding, c
    else:
        import netCDF4 as nc

        with nc.Dataset(out) as f:
            for c in ds.coords:
                assert "_FillValue" not in f.variables[c].ncattrs(), c
