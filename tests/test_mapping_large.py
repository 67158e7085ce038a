"""Mapping in bounded memory (issue 17): the block-wise preparation, OI and scoring give what the
in-memory path gives, on a Zarr field small enough to run both ways."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

import geodl.data.blocks as blocks
import geodl.methods.mapping as mm
from geodl.cli import main
from geodl.data.blocks import FieldWriter, nan_moments
from geodl.methods.observing import ObsSection, observe, observe_blocks
from geodl.metrics import ScoreAccumulator, score
from geodl.testing import make_field, write_large_field

SETTINGS = [
    "data.variable=ssh",
    "data.land_mask=land_mask",
    "methods=[oi, unet]",
    "split={train: [0, 34], val: [40, 47], test: [53, 59]}",
    "patch={time: 5, y: 32, x: 32}",
    "oi={max_obs: 100, tile_time: 3, tile_space: 8, tune: {enabled: false}}",
    "unet.model={depth: 1, width: 4}",
    "unet.calibrate=false",
    "unet.train={max_epochs: 1, max_steps: 2, batch_size: 4, progress_bar: false}",
    "report.days=[0]",
]


def _run(tmp_path, name, field):
    out = tmp_path / f"run_{name}"
    args = ["run", "configs/ssh_mapping_quick.yaml", "--out", str(out)]
    args += ["--set", f"data.path={field}", "--set", "experiment.name=large"]
    for s in SETTINGS:
        args += ["--set", s]
    assert main(args) == 0
    return out


@pytest.mark.slow
def test_blockwise_run_scores_as_in_memory(tmp_path, monkeypatch):
    """prepare -> predict -> evaluate on a 64 x 64 x 60 Zarr store: in memory (one block) and
    with a budget that forces 4-step observation blocks, 4 x 4 OI regions, 19-row score bands;
    every metric agrees to float32 rounding."""
    field = write_large_field(tmp_path / "f.zarr", 60, 64, 64, chunks={"time": 7, "y": 16, "x": 16})
    monkeypatch.setattr(mm, "_OI_REGION_TILES", 1000)  # the OI of the whole grid in one call
    whole = _run(tmp_path, "whole", field)
    monkeypatch.setattr(blocks, "MEMORY_BUDGET", 64 * 64 * 200)  # 4 steps of obs, 19 score rows
    monkeypatch.setattr(mm, "_OI_REGION_TILES", 2)  # 16-cell regions with an OI halo
    monkeypatch.setattr(mm, "_PREDICT_TILE", 24)
    small = _run(tmp_path, "small", field)
    prep = [json.loads((r / "prepare.json").read_text()) for r in (whole, small)]
    assert prep[0]["splits"] == prep[1]["splits"] and prep[0]["coverage"] == prep[1]["coverage"]
    assert prep[1]["obs_std_train"] == pytest.approx(prep[0]["obs_std_train"], rel=1e-5)
    assert prep[1]["scales"] == pytest.approx(prep[0]["scales"], rel=1e-5)
    with xr.open_dataset(whole / "obs.nc") as a, xr.open_dataset(small / "obs.nc") as b:
        np.testing.assert_array_equal(a["ssh_obs"].values, b["ssh_obs"].values)
    for method in ("oi", "unet"):
        with (
            xr.open_dataset(whole / "predictions" / f"{method}.nc") as a,
            xr.open_dataset(small / "predictions" / f"{method}.nc") as b,
        ):
            np.testing.assert_allclose(b["ssh"].values, a["ssh"].values, rtol=1e-4, atol=1e-5)
    scores = [json.loads((r / "metrics.json").read_text())["methods"] for r in (whole, small)]
    for method, got in scores[1].items():
        for key, value in got.items():
            assert value == pytest.approx(scores[0][method][key], rel=1e-4, abs=1e-6), (method, key)


@pytest.mark.parametrize("kind", ["nadir", "swath"])
@pytest.mark.parametrize("grid", ["projected", "latlon"])
def test_observe_blocks_equal_observe(kind, grid):
    da = make_field(nt=23, ny=30, nx=40, grid=grid)["ssh"]
    section = ObsSection(kind=kind, noise_std=0.05, seed=3, repeat_days=3.0)
    full = observe(da, section, 0.05)
    for steps in (1, 4, 23):
        got = np.concatenate([v for _, _, v in observe_blocks(da, section, 0.05, steps=steps)])
        np.testing.assert_array_equal(got, full)


@pytest.mark.parametrize("steps", [1, 4, 7, 12])
def test_observe_blocks_reads_the_truth_by_whole_time_chunks(monkeypatch, steps):
    """A Dask-backed truth is read by spans of whole storage chunks in time and bands of rows
    (one step of a 5-step chunk would decode all 5), and the observations are the same bit for
    bit."""
    da = make_field(nt=23, ny=30, nx=40)["ssh"]
    section = ObsSection(kind="nadir", noise_std=0.05, seed=3, repeat_days=3.0)
    full = observe(da, section, 0.05)
    t, y, x = da.dims
    lazy = da.chunk({t: 5, y: 10, x: 40})
    monkeypatch.setattr(blocks, "MEMORY_BUDGET", 2 * 4 * 40 * 5 * 10)  # bands of 10 rows
    reads = []
    isel = xr.DataArray.isel

    def spy(self, indexers=None, **kw):
        sel = {**(indexers or {}), **kw}
        if self.chunks is not None and t in sel:
            reads.append((sel[t], sel.get(y)))
        return isel(self, indexers, **kw)

    monkeypatch.setattr(xr.DataArray, "isel", spy)
    got = np.concatenate([v for _, _, v in observe_blocks(lazy, section, 0.05, steps=steps)])
    np.testing.assert_array_equal(got, full)
    span = 5 * max(1, steps // 5)
    assert reads and all(t.start % 5 == 0 for t, _ in reads)
    assert all(t.stop - t.start == min(span, 23 - t.start) for t, _ in reads)
    assert {(y.start, y.stop) for _, y in reads} == {(0, 10), (10, 20), (20, 30)}


def test_nan_moments_merge_blocks():
    rng = np.random.default_rng(0)
    a = rng.normal(3.0, 2.0, (10, 5, 5)).astype(np.float32)
    a[rng.random(a.shape) < 0.3] = np.nan
    n, mean, std = nan_moments([a[:3], a[3:4], a[4:]])
    assert n == np.isfinite(a).sum()
    assert mean == pytest.approx(float(np.nanmean(a.astype(np.float64))), rel=1e-12)
    assert std == pytest.approx(float(np.nanstd(a.astype(np.float64))), rel=1e-12)
    assert nan_moments([np.full(3, np.nan)])[0] == 0


def test_score_accumulator_bands_equal_score():
    rng = np.random.default_rng(1)
    truth = xr.DataArray(
        np.cumsum(rng.normal(size=(20, 12, 16)), axis=2),
        dims=("time", "y", "x"),
        coords={"x": np.arange(16) * 10.0, "y": np.arange(12) * 10.0, "time": np.arange(20.0)},
    )
    truth[:, :3, :4] = np.nan  # land in the first band
    pred = truth + rng.normal(scale=0.5, size=truth.shape)
    std = xr.full_like(truth, 0.5)
    acc = ScoreAccumulator()
    for y0 in range(0, 12, 5):
        rows = slice(y0, y0 + 5)
        acc.add(pred.isel(y=rows), truth.isel(y=rows), std=std.isel(y=rows), dx=10.0)
    got, want = acc.result(bounds={}), score(pred, truth, std=std, dx=10.0, bounds={})
    assert got == pytest.approx(want, rel=1e-10)


def test_field_writer_removes_its_file_after_an_error(tmp_path):
    import dask.array as dsa

    template = xr.Dataset({"v": (("t", "y"), dsa.full((2, 3), np.nan, chunks=(1, 3)))})
    out = tmp_path / "f.nc"
    with pytest.raises(RuntimeError), FieldWriter(out, template, {"t": 1, "y": 3}):
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_nan_moments_holds_one_block_at_a_time():
    """The moments of a training period read block by block hold at most the block being read
    and the one before it (they once kept every block: the whole period, ~0.8 x the field, the
    peak of `prepare` at 2000 x 2000), and give the same figures as all the values at once."""
    import weakref

    rng = np.random.default_rng(0)
    refs, most = [], 0

    def blocks():
        nonlocal most
        for _ in range(6):
            block = rng.normal(2.0, 3.0, (4, 50)).astype(np.float32)
            block[rng.random(block.shape) < 0.3] = np.nan
            refs.append(weakref.ref(block))
            most = max(most, sum(r() is not None for r in refs))
            yield block

    n, mean, std = nan_moments(blocks())
    assert most <= 2, most
    rng = np.random.default_rng(0)
    every = []
    for _ in range(6):
        block = rng.normal(2.0, 3.0, (4, 50)).astype(np.float32)
        block[rng.random(block.shape) < 0.3] = np.nan
        every.append(block)
    whole = np.concatenate(every)
    assert n == np.isfinite(whole).sum()
    assert mean == pytest.approx(float(np.nanmean(whole.astype(np.float64))), rel=1e-12)
    assert std == pytest.approx(float(np.nanstd(whole.astype(np.float64))), rel=1e-12)


@pytest.mark.parametrize("window", [32, 64])
def test_oi_is_tuned_on_the_central_window_of_a_larger_grid(tmp_path, monkeypatch, window):
    """``oi.tune.window`` smaller than the grid: the search and the std calibration read only
    the central window of the validation period (its values, not the whole grid's); a window
    as large as the grid tunes on all of it, as before."""
    import geodl.baselines as baselines

    field = write_large_field(tmp_path / "f.zarr", 60, 64, 64, chunks={"time": 7, "y": 16, "x": 16})
    seen = []
    original = baselines.tune_oi

    def spy(obs, truth, *args, **kwargs):
        seen.append((obs.clone(), truth.clone(), kwargs["period"]))
        return original(obs, truth, *args, **kwargs)

    monkeypatch.setattr(baselines, "tune_oi", spy)
    out = tmp_path / "run"
    sets = [
        f"data.path={field}",
        "experiment.name=large",
        *[s for s in SETTINGS if not s.startswith("oi=")],
        "methods=[oi]",
        "oi={max_obs: 100, tile_time: 3, tile_space: 8, tune: {"
        f"window: {window}, lx_factors: [0.5, 1, 2], lt_factors: [0.5, 1, 2], expand: 0, "
        "every_days: 3}}",
    ]
    flags = [x for s in sets for x in ("--set", s)]
    for stage in ("prepare", "train_oi"):
        assert (
            main(["stage", stage, "configs/ssh_mapping_quick.yaml", "--out", str(out), *flags]) == 0
        )
    ((obs, truth, period),) = seen
    a, b = json.loads((out / "prepare.json").read_text())["splits"]["val"]
    ys = slice(16, 48) if window == 32 else slice(None)
    with xr.open_dataset(out / "obs.nc") as ds:
        want = ds["ssh_obs"].transpose("time", "y", "x").values[a:b, ys, ys]
    np.testing.assert_array_equal(obs.numpy(), want.astype(np.float64))
    with xr.open_zarr(field) as ds:
        want = ds["ssh"].transpose("time", "y", "x").values[a:b, ys, ys]
    np.testing.assert_array_equal(truth.numpy(), want.astype(np.float64))
    assert period == (None, None)
    tuned = json.loads((out / "models" / "oi.json").read_text())
    if window == 32:
        assert tuned["tuning_window"] == {"y": [16, 48], "x": [16, 48]}
    else:
        assert "tuning_window" not in tuned
    assert tuned["params"]["std_scale"] > 0
