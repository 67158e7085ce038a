"""Normalisation statistics: training split only, plain data, applied and inverted exactly."""

import io
import json

import numpy as np
import pytest
import torch

from geodl.data import Normalizer, compute_stats
from geodl.errors import DataError


def test_stats_use_the_training_range_only(field):
    stats = compute_stats(field, ["ssh", "sst"], time_range=(0, 10))
    train = field["ssh"].values[:10]
    assert stats["variables"]["ssh"]["mean"] == pytest.approx(float(np.nanmean(train)), rel=1e-6)
    assert stats["variables"]["ssh"]["std"] == pytest.approx(float(np.nanstd(train)), rel=1e-5)
    assert stats["variables"]["ssh"]["count"] == int(np.isfinite(train).sum())
    everything = compute_stats(field, ["ssh"])
    assert everything["variables"]["ssh"]["mean"] != stats["variables"]["ssh"]["mean"]


def test_stats_are_plain_json_and_survive_weights_only_checkpoints(field):
    stats = compute_stats(field, ["ssh"], time_range=(0, 10), per_pixel=True)
    assert json.loads(json.dumps(stats)) == stats
    buf = io.BytesIO()
    torch.save({"norm": stats, "w": torch.zeros(2)}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    assert loaded["norm"] == stats


def test_per_pixel_climatology(field):
    stats = compute_stats(field, ["ssh"], time_range=(0, 10), per_pixel=True)
    entry = stats["variables"]["ssh"]
    mean = np.asarray(entry["mean"])
    assert mean.shape == (16, 24)
    np.testing.assert_allclose(mean[8, 20], np.nanmean(field["ssh"].values[:10, 8, 20]), rtol=1e-5)
    assert entry["no_data_pixels"] == int(field["land_mask"].values.sum())
    assert np.asarray(entry["std"])[0, 0] == 1.0  # land pixel: neutral, masked anyway


def test_apply_then_invert_round_trips(field):
    for per_pixel in (False, True):
        norm = Normalizer(compute_stats(field, ["ssh"], time_range=(0, 10), per_pixel=per_pixel))
        x = field["ssh"].values[:3, 2:9, 4:12].astype("float32")
        z = norm.apply("ssh", x.copy(), y=slice(2, 9), x=slice(4, 12))
        assert abs(np.nanmean(z)) < 1.5
        back = norm.invert("ssh", torch.from_numpy(z), y=slice(2, 9), x=slice(4, 12))
        np.testing.assert_allclose(back.numpy(), x, rtol=1e-5, atol=1e-5)


def test_invert_dataset(field):
    norm = Normalizer(compute_stats(field, ["ssh"], per_pixel=True))
    m, s = np.asarray(norm.stats["variables"]["ssh"]["mean"]), norm._std["ssh"]
    z = field.assign(ssh=(field["ssh"] - m) / s)
    back = norm.invert_dataset(z)
    np.testing.assert_allclose(back["ssh"].values, field["ssh"].values, rtol=1e-5, atol=1e-5)
    assert back["ssh"].attrs == field["ssh"].attrs


def test_all_nan_variable_in_training_split(field):
    ds = field.copy()
    ds["ssh"] = ds["ssh"].where(ds["time"] >= ds["time"][10])
    with pytest.raises(DataError, match="'ssh' is all NaN in the training split"):
        compute_stats(ds, ["ssh"], time_range=(0, 10))


def test_constant_variable(field):
    ds = field.assign(flat=field["ssh"] * 0 + 3.0)
    with pytest.raises(DataError, match="'flat' is constant"):
        compute_stats(ds, ["flat"])


def test_missing_variable_and_bad_stats(field):
    with pytest.raises(DataError, match=r"\['sla'\] not found; available"):
        compute_stats(field, ["sla"])
    with pytest.raises(DataError, match="expected a dict with format"):
        Normalizer({"ssh": 1})
    norm = Normalizer(compute_stats(field, ["ssh"]))
    with pytest.raises(DataError, match="no normalisation statistics for variable 'sst'"):
        norm.apply("sst", np.zeros(3))
