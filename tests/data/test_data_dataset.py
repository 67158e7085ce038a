"""Torch datasets: values match array slicing on every backend, no NaN, block reads, DDP shares."""

import numpy as np
import pytest
import torch

from geodl.data import (
    GriddedSource,
    Normalizer,
    PatchDataset,
    PatchStream,
    compute_stats,
    make_loader,
)
from geodl.errors import DataError
from geodl.testing import make_field, write_zarr

SIZE = {"time": 4, "lat": 6, "lon": 8}
STRIDE = {"time": 2, "lat": 3, "lon": 4}


def test_patches_match_array_slices_on_every_backend(any_data, field):
    src = GriddedSource(any_data, "ssh", inputs="sst", static="land_mask")
    ds = PatchDataset(src, SIZE, STRIDE)
    batch = ds.__getitems__(range(len(ds)))
    batch.check_finite()
    ssh = field["ssh"].values
    for n in (0, 7, len(ds) - 1):
        t0, y0, x0 = batch.starts[n].tolist()
        ref = ssh[t0 : t0 + 4, y0 : y0 + 6, x0 : x0 + 8]
        np.testing.assert_array_equal(batch.target_mask[n, :, 0].numpy(), np.isfinite(ref))
        np.testing.assert_array_equal(batch.target[n, :, 0].numpy(), np.nan_to_num(ref))
        land = field["land_mask"].values[y0 : y0 + 6, x0 : x0 + 8] == 1
        np.testing.assert_array_equal(batch.land_mask[n, 0, 0].numpy(), land)
        np.testing.assert_array_equal(batch.static[n, 0, 0].numpy(), land.astype("float32"))
    assert batch.inputs.shape == (len(ds), 4, 1, 6, 8)
    assert torch.equal(batch.obs, batch.target) and torch.equal(batch.obs_mask, batch.target_mask)
    assert np.isnan(field["ssh"].values).sum() > 0  # the user's arrays are never modified


def test_single_items_equal_batched_items(field):
    ds = PatchDataset(GriddedSource(field, "ssh"), SIZE, STRIDE)
    whole = ds.__getitems__([3, 5])
    assert torch.equal(ds[5].target[0], whole.target[1])
    loader = make_loader(ds, batch_size=4)
    first = next(iter(loader))
    assert first.batch_size == 4 and torch.equal(first.target[3], ds[3].target[0])


def test_normalisation_is_applied_on_the_fly(field):
    stats = compute_stats(field, ["ssh"], time_range=(0, 10))
    src = GriddedSource(field, "ssh")
    ds = PatchDataset(src, SIZE, STRIDE, split=(0, 10), normalizer=stats)
    b = ds.__getitems__(range(len(ds)))
    t0, y0, x0 = b.starts[2].tolist()
    raw = field["ssh"].values[t0 : t0 + 4, y0 : y0 + 6, x0 : x0 + 8]
    m, s = stats["variables"]["ssh"]["mean"], stats["variables"]["ssh"]["std"]
    expect = np.where(np.isfinite(raw), (raw - m) / s, 0.0)
    np.testing.assert_allclose(b.target[2, :, 0].numpy(), expect, rtol=1e-5, atol=1e-6)
    back = Normalizer(stats).invert("ssh", b.target[2, :, 0])
    np.testing.assert_allclose(back.numpy()[np.isfinite(raw)], raw[np.isfinite(raw)], rtol=1e-5)
    with pytest.raises(DataError, match=r"statistics lack \['sst'\]"):
        PatchDataset(GriddedSource(field, "ssh", inputs="sst"), SIZE, normalizer=stats)


def test_separate_obs_variable(field):
    ds = field.assign(obs=field["ssh"].where(field["lon"] > -58.0))
    b = PatchDataset(GriddedSource(ds, "ssh", obs="obs"), SIZE, STRIDE)[0]
    assert not torch.equal(b.obs_mask, b.target_mask)
    assert not b.obs_mask[..., :8].any() and b.target_mask[..., 4:8].any()


def test_each_chunk_is_read_once_in_stream_order(tmp_path):
    ds = make_field(nt=24, ny=16, nx=16, land=False)
    store = write_zarr(ds, tmp_path / "f.zarr", chunks={"time": 6, "lat": 16, "lon": 16})
    src = GriddedSource(store, "ssh")
    assert src.chunks["ssh"] == (6, 16, 16)
    stream = PatchStream(src, {"time": 3, "y": 8, "x": 8}, {"time": 1, "y": 4, "x": 4},
                         batch_size=8, shuffle=True, shuffle_buffer=16,
                         cache_bytes=4 * 6 * 16 * 16 * 5, block_bytes=1)  # fmt: skip
    assert stream.reader.block["ssh"] == (6, 16, 16)  # blocks = storage chunks
    seen = np.concatenate([b.starts.numpy() for b in stream])
    assert len(seen) == len(stream.index)
    assert len({tuple(r) for r in seen.tolist()}) == len(stream.index)  # each patch once
    assert stream.reader.cache.misses <= 4 + 3  # 4 chunks; a few re-reads at group borders


def test_random_order_over_chunks_reads_more():
    """The counterfactual of the test above: random access defeats a small cache."""
    ds = make_field(nt=24, ny=16, nx=16, land=False).chunk({"time": 6})
    src = GriddedSource(ds, "ssh")
    pd_ = PatchDataset(src, {"time": 3, "y": 8, "x": 8}, {"time": 1, "y": 4, "x": 4},
                       cache_bytes=6 * 16 * 16 * 5, block_bytes=1)  # fmt: skip
    for i in np.random.default_rng(0).permutation(len(pd_)):
        pd_[int(i)]
    assert pd_.reader.cache.misses > 20


def test_stream_shuffles_by_epoch_and_is_deterministic(field):
    src = GriddedSource(field, "ssh")
    s = PatchStream(src, SIZE, STRIDE, batch_size=5, seed=1)
    a = torch.cat([b.starts for b in s])
    b = torch.cat([b.starts for b in s])
    s.set_epoch(1)
    c = torch.cat([b.starts for b in s])
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, c.tolist()))
    ordered = torch.cat([b.starts for b in PatchStream(src, SIZE, STRIDE, shuffle=False)])
    assert not torch.equal(a, ordered)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_ranks_get_equal_shares(field, world_size):
    src = GriddedSource(field, "ssh")
    n = len(PatchDataset(src, SIZE, STRIDE))
    counts, union = [], set()
    for rank in range(world_size):
        s = PatchStream(src, SIZE, STRIDE, batch_size=4, rank=rank, world_size=world_size)
        got = torch.cat([b.starts for b in s])
        counts.append(len(got))
        assert len(list(iter(s))) == len(s)
        union |= {tuple(r) for r in got.tolist()}
    assert len(set(counts)) == 1 and counts[0] == -(-n // world_size)
    assert len(union) == n  # padding repeats, never drops
    with pytest.raises(DataError, match="rank=2 with world_size=2"):
        PatchStream(src, SIZE, rank=2, world_size=2)


def test_workers_split_the_stream_without_duplicates(nc_path):
    src = GriddedSource(nc_path, "ssh")
    stream = PatchStream(src, SIZE, STRIDE, batch_size=4, seed=3)
    loader = make_loader(stream, num_workers=2, multiprocessing_context="fork")
    got = torch.cat([b.starts for b in loader])
    assert len(loader) == len(stream)
    assert len(got) == len(stream.index) == len({tuple(r) for r in got.tolist()})


def test_map_style_with_workers_reopens_files(zarr_path):
    ds = PatchDataset(GriddedSource(zarr_path, "ssh"), SIZE, STRIDE)
    loader = make_loader(ds, batch_size=8, num_workers=2, multiprocessing_context="fork")
    total = sum(b.batch_size for b in loader)
    assert total == len(ds)


def test_land_filter_counts_and_errors(field):
    src = GriddedSource(field, "ssh", land_mask="land_mask")
    full = PatchDataset(src, SIZE, STRIDE)
    some = PatchDataset(src, SIZE, STRIDE, max_land_fraction=0.1)
    assert some.index.report.dropped_land > 0
    assert len(some) == full.index.report.total - some.index.report.dropped_land
    assert (
        not some.__getitems__(range(len(some)))
        .land_mask.float()
        .mean(dim=(1, 2, 3, 4))
        .gt(0.1)
        .any()
    )
    ds = field.assign(land_mask=field["land_mask"] * 0 + 1)
    with pytest.raises(DataError, match="zero usable patches: 0 patches kept"):
        PatchDataset(GriddedSource(ds, "ssh", land_mask="land_mask"), SIZE, max_land_fraction=0.5)


def test_patch_size_errors(field):
    src = GriddedSource(field, "ssh")
    with pytest.raises(DataError, match="patch lon=30 is larger|patch x=30 is larger"):
        PatchDataset(src, {"time": 2, "lat": 4, "lon": 30})
    with pytest.raises(DataError, match="unknown dim 'depth'"):
        PatchDataset(src, {"time": 2, "lat": 4, "depth": 3})
    with pytest.raises(DataError, match="patch size is missing"):
        PatchDataset(src, {"time": 2, "lat": 4})


def test_cache_smaller_than_a_group_warns(tmp_path, caplog):
    import logging

    ds = make_field(nt=24, ny=16, nx=16, land=False)
    store = write_zarr(ds, tmp_path / "f.zarr", chunks={"time": 6, "lat": 8, "lon": 8})
    src = GriddedSource(store, "ssh")
    size, stride = {"time": 3, "y": 8, "x": 8}, {"time": 1, "y": 4, "x": 4}
    with caplog.at_level(logging.WARNING, logger="geodl.data"):
        PatchStream(src, size, stride, cache_bytes=16 * 6 * 8 * 8 * 5)
    assert not caplog.text
    with caplog.at_level(logging.WARNING, logger="geodl.data"):
        small = PatchStream(src, size, stride, cache_bytes=6 * 8 * 8 * 5)
    assert "below twice the working set" in caplog.text
    assert sum(b.batch_size for b in small) == len(small.index)  # still correct, only slower


def test_stream_loader_reshuffles_every_epoch_with_workers(field):
    stream = PatchStream(GriddedSource(field, "ssh"), SIZE, STRIDE, batch_size=8, seed=5)
    loader = make_loader(stream, num_workers=2, multiprocessing_context="fork")
    first = torch.cat([b.starts for b in loader])
    second = torch.cat([b.starts for b in loader])
    assert len(first) == len(second) == len(stream.index)
    assert not torch.equal(first, second)
    assert sorted(map(tuple, first.tolist())) == sorted(map(tuple, second.tolist()))
    assert stream.epoch == 1


def test_argument_errors(field):
    src = GriddedSource(field, "ssh")
    with pytest.raises(DataError, match="batch_size=0; expected >= 1"):
        PatchStream(src, SIZE, batch_size=0)
    with pytest.raises(DataError, match="lat='6'; expected an integer"):
        PatchDataset(src, {"time": 4, "lat": "6", "lon": 8})
    with pytest.raises(DataError, match="region has unknown dim 'depth'"):
        PatchDataset(src, SIZE, region={"depth": (0, 3)})


def test_stream_region_keeps_patches_starting_inside(field):
    src = GriddedSource(field, "ssh")
    s = PatchStream(src, SIZE, STRIDE, batch_size=50, region={"lat": (3, 7), "x": (0, 5)})
    starts = torch.cat([b.starts for b in s])
    assert set(starts[:, 1].tolist()) == {3, 6} and set(starts[:, 2].tolist()) == {0, 4}
