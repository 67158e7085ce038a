"""Splits: time ranges to index ranges, a gap of one window, clear errors."""

import numpy as np
import pandas as pd
import pytest

from geodl.data import GriddedSource, PatchDataset, make_splits
from geodl.errors import DataError
from geodl.testing import make_field

T = pd.date_range("2020-01-01", periods=40).values


def test_ranges_and_gap():
    s = make_splits(
        T,
        {"train": ("2020-01-01", "2020-01-20"), "val": ("2020-01-21", "2020-01-30"),
         "test": ("2020-02-01", "2020-02-09")},
        window=5,
    )  # fmt: skip
    assert s["train"].range == (0, 20)
    assert s["val"].range == (25, 30) and s["val"].dropped == 5
    assert s["test"].range == (35, 40) and s["test"].dropped == 4


def test_no_training_sample_touches_a_test_time():
    ds = make_field(nt=40, ny=8, nx=8, land=False)
    splits = make_splits(
        ds["time"].values,
        {"train": ("2020-01-01", "2020-01-25"), "test": ("2020-01-26", "2020-02-09")},
        window=6,
    )
    src = GriddedSource(ds, "ssh")
    size = {"time": 6, "y": 4, "x": 4}
    train = PatchDataset(src, size, {"time": 1, "y": 2, "x": 2}, split=splits["train"])
    test = PatchDataset(src, size, {"time": 1, "y": 2, "x": 2}, split=splits["test"])
    train_times = set()
    for t0 in train.index.starts(np.arange(len(train)))[:, 0]:
        train_times.update(range(t0, t0 + 6))
    test_times = set()
    for t0 in test.index.starts(np.arange(len(test)))[:, 0]:
        test_times.update(range(t0, t0 + 6))
    assert not train_times & test_times
    assert min(test_times) - max(train_times) > 6  # at least one window apart
    batch = train.__getitems__(range(len(train)))
    assert int((batch.time_index + 6).max()) <= splits["train"].stop


def test_split_outside_data():
    with pytest.raises(DataError, match="outside the data"):
        make_splits(T, {"train": ("2019-12-01", "2020-01-10")}, window=3)


def test_overlapping_splits():
    with pytest.raises(DataError, match="'train' and 'test' overlap"):
        make_splits(T, {"train": ("2020-01-01", "2020-01-20"), "test": ("2020-01-15", "2020-01-30")},
                    window=3)  # fmt: skip


def test_bad_bounds():
    with pytest.raises(DataError, match="is after last"):
        make_splits(T, {"train": ("2020-01-20", "2020-01-01")}, window=3)
    with pytest.raises(DataError, match="not a date"):
        make_splits(T, {"train": ("yesterday", "2020-01-10")}, window=3)
    with pytest.raises(DataError, match="expected \\(first, last\\)"):
        make_splits(T, {"train": "2020-01-01"}, window=3)


def test_split_with_zero_usable_patches():
    ds = make_field(nt=40, ny=8, nx=8)
    s = make_splits(
        ds["time"].values,
        {"train": ("2020-01-01", "2020-01-30"), "test": ("2020-01-31", "2020-02-06")},
        window=8,
    )
    assert len(s["test"]) == 0
    with pytest.raises(DataError, match="split 'test' has 0 usable time steps .* zero usable"):
        PatchDataset(GriddedSource(ds, "ssh"), {"time": 8, "y": 4, "x": 4}, split=s["test"])
