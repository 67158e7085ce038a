"""The arithmetic patch index: coverage, memory, filtering with counts."""

import logging
import tracemalloc

import numpy as np
import pytest

from geodl.data import PatchIndex
from geodl.data.index import axis_starts, land_fraction
from geodl.errors import DataError


def test_index_matches_brute_force():
    idx = PatchIndex({"time": 11, "y": 9, "x": 10}, {"time": 3, "y": 4, "x": 5},
                     {"time": 2, "y": 3, "x": 2})  # fmt: skip
    expected = [(t, y, x) for t in [0, 2, 4, 6, 8] for y in [0, 3, 5] for x in [0, 2, 4, 5]]
    got = [tuple(r) for r in idx.starts(np.arange(len(idx))).tolist()]
    assert got == expected
    assert idx.starts(-1).tolist() == [8, 5, 5]
    with pytest.raises(IndexError):
        idx.starts(len(idx))


def test_cover_reaches_every_point():
    s = axis_starts(0, 240, 120, 50)
    assert s.tolist() == [0, 50, 100, 120]
    assert axis_starts(0, 240, 120, 50, cover=False).tolist() == [0, 50, 100]


def test_fifty_million_patches_cost_kilobytes():
    tracemalloc.start()
    idx = PatchIndex({"time": 5000, "y": 2000, "x": 2000}, {"time": 15, "y": 120, "x": 120},
                     {"time": 1, "y": 18, "x": 18})  # fmt: skip
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(idx) > 50_000_000
    assert peak < 1_000_000 and idx.nbytes < 100_000
    assert idx.starts(len(idx) - 1).tolist() == [4985, 1880, 1880]


def test_patch_larger_than_domain():
    with pytest.raises(DataError, match="patch y=20 is larger than the domain \\(16 steps in y\\)"):
        PatchIndex({"time": 10, "y": 16, "x": 16}, {"time": 2, "y": 20, "x": 8})
    with pytest.raises(DataError, match="missing \\['x'\\]"):
        PatchIndex({"time": 10, "y": 16, "x": 16}, {"time": 2, "y": 8})
    with pytest.raises(DataError, match="must both be >= 1"):
        PatchIndex({"time": 10, "y": 16, "x": 16}, {"time": 2, "y": 8, "x": 8}, {"time": 0})


def test_land_fraction_matches_direct_count():
    rng = np.random.default_rng(0)
    land = rng.random((20, 30)) < 0.3
    ys, xs = np.array([0, 5, 12]), np.array([0, 7, 22])
    frac = land_fraction(land, ys, xs, 8, 8)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            assert frac[i, j] == pytest.approx(land[y : y + 8, x : x + 8].mean())


def test_land_filter_is_counted_and_logged(caplog):
    land = np.zeros((16, 16), bool)
    land[:8, :8] = True
    with caplog.at_level(logging.INFO, logger="geodl.data"):
        idx = PatchIndex({"time": 4, "y": 16, "x": 16}, {"time": 2, "y": 8, "x": 8},
                         land=land, max_land_fraction=0.5)  # fmt: skip
    assert idx.report.total == 8 and idx.report.kept == 6 and idx.report.dropped_land == 2
    assert len(idx) == 6
    assert [0, 0] not in idx.starts(np.arange(6))[:, 1:].tolist()
    assert "6 patches kept of 8 (2 dropped for too much land)" in caplog.text
