"""Along-track altimetry as operational L3 products give it: one file per day and mission, with
``time`` (CF dates), ``latitude``, ``longitude`` (0..360) and ``sla_filtered`` (scaled integers,
NaN where flagged), read through ``obs.kind: file`` with a glob pattern or a list of files."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geodl.cli import main
from geodl.errors import DataError
from geodl.methods.observing import obs_files, read_observations
from geodl.testing import make_field

MISSIONS = {"j3": "Jason-3", "s3a": "Sentinel-3A"}
NT, NY, NX = 60, 16, 24
#: sla_filtered is stored as int32 with this scale_factor, as the products do
SCALE = 1e-4


def _l3_files(directory, truth, *, lon360=True, per_day=12, seed=0):
    """Daily L3-style files of each mission sampling ``truth`` ``(time, lat, lon)`` at cell
    centres (jittered by < a quarter cell, 0 to 5 h after the day's time step), noise 0, a tenth
    of the values NaN. Returns the files and the expected gridded observations."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lat, lon = truth["lat"].values, truth["lon"].values
    expected = np.full(truth.shape, np.nan, dtype=np.float32)
    files = []
    for short, platform in MISSIONS.items():
        for it, day in enumerate(pd.DatetimeIndex(truth["time"].values)):
            iy, ix = rng.integers(0, NY, per_day), rng.integers(0, NX, per_day)
            value = truth.values[it, iy, ix].astype(np.float64)
            value[rng.random(per_day) < 0.1] = np.nan
            seen = np.isfinite(value)
            expected[it, iy[seen], ix[seen]] = value[seen]
            jitter = rng.uniform(-0.06, 0.06, (2, per_day))  # cells are 0.25 degrees
            lons = lon[ix] + jitter[1]
            ds = xr.Dataset(
                {
                    "sla_filtered": ("time", value, {"units": "m"}),
                    "latitude": ("time", lat[iy] + jitter[0], {"units": "degrees_north"}),
                    "longitude": (
                        "time",
                        lons % 360 if lon360 else lons,
                        {"units": "degrees_east"},
                    ),
                },
                coords={"time": day + pd.to_timedelta(rng.uniform(0, 5, per_day), "h")},
                attrs={"platform": platform},
            )
            encoding = {
                "sla_filtered": {"dtype": "int32", "scale_factor": SCALE, "_FillValue": -(2**31)},
                "time": {"units": "days since 1950-01-01", "dtype": "float64"},
            }
            path = directory / f"{short}_l3_{day:%Y%m%d}.nc"
            ds.to_netcdf(path, encoding=encoding)
            files.append(path)
    return files, expected


@pytest.fixture(scope="module")
def truth_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("truth") / "truth.nc"
    make_field(nt=NT, ny=NY, nx=NX, land=False).to_netcdf(path)
    return path


@pytest.fixture(scope="module")
def truth(truth_file):
    with xr.open_dataset(truth_file) as ds:
        return ds["ssh"].load()


@pytest.fixture(scope="module")
def l3(tmp_path_factory, truth):
    directory = tmp_path_factory.mktemp("l3")
    files, expected = _l3_files(directory, truth)
    return directory, files, expected


def _same(obs, expected):
    np.testing.assert_array_equal(np.isfinite(obs), np.isfinite(expected))
    np.testing.assert_allclose(obs, expected, atol=SCALE, equal_nan=True)


def test_daily_files_of_two_missions_bin_onto_the_truth_cells(l3, truth):
    directory, files, expected = l3
    obs = read_observations(str(directory / "*_l3_2020*.nc"), "sla_filtered", truth)
    assert obs.shape == truth.shape and obs.dtype == np.float32
    assert 0.03 < np.isfinite(obs).mean() < 0.07  # 2 x 12 points a day, 384 cells
    _same(obs, expected)


def test_glob_and_list_give_the_same_observations(l3, truth):
    directory, files, _ = l3
    by_glob = read_observations(str(directory / "*.nc"), "sla_filtered", truth)
    by_list = read_observations([str(f) for f in reversed(files)], "sla_filtered", truth)
    np.testing.assert_array_equal(by_glob, by_list)
    # a list may mix patterns and files; what is named twice is read once
    mixed = read_observations(
        [str(directory / "j3_*.nc"), str(files[-1]), str(directory / "s3a*")], "sla_filtered", truth
    )
    np.testing.assert_array_equal(by_glob, mixed)


def test_longitude_conventions_meet_on_either_grid(tmp_path, l3, truth):
    directory, _, expected = l3
    pattern = str(directory / "*.nc")
    _, expected_180 = _l3_files(tmp_path / "pm180", truth, lon360=False)
    np.testing.assert_array_equal(expected_180, expected)  # same seed: same points
    _same(read_observations(str(tmp_path / "pm180" / "*.nc"), "sla_filtered", truth), expected)
    # a truth on 0..360 (300 .. 305.75) observed by files in -180..180, and by files in 0..360
    truth360 = truth.assign_coords(lon=truth["lon"] + 360.0)
    for files in (str(tmp_path / "pm180" / "*.nc"), pattern):
        _same(read_observations(files, "sla_filtered", truth360), expected)


def test_gridded_observations_in_monthly_files(tmp_path, truth):
    obs = truth.where(np.random.default_rng(1).random(truth.shape) < 0.2)
    for month, part in obs.groupby("time.month"):
        part.to_netcdf(tmp_path / f"obs_2020{month:02d}.nc")
    got = read_observations(str(tmp_path / "obs_2020*.nc"), "ssh", truth)
    np.testing.assert_array_equal(got, obs.values)


def test_points_per_platform_are_logged(l3, truth, caplog):
    directory, _, expected = l3
    with caplog.at_level(logging.INFO, logger="geodl.obs"):
        read_observations(str(directory / "*.nc"), "sla_filtered", truth)
    lines = [r.getMessage() for r in caplog.records if "NaN values dropped" in r.getMessage()]
    assert len(lines) == 1 and f"from {2 * NT} file(s)" in lines[0], lines
    assert "Jason-3 " in lines[0] and "Sentinel-3A " in lines[0]


def test_points_outside_the_grid_are_dropped_and_counted(tmp_path, truth, caplog):
    day = truth["time"].values[3]
    ds = xr.Dataset(
        {
            "sla_filtered": ("time", [1.0, 2.0, np.nan]),
            "latitude": ("time", [30.5, 50.0, 30.5]),
            "longitude": ("time", [300.5, 300.5, 300.5]),
        },
        coords={"time": [day, day, day]},
    )
    ds.to_netcdf(tmp_path / "one.nc")
    with caplog.at_level(logging.INFO, logger="geodl.obs"):
        obs = read_observations(str(tmp_path / "one.nc"), "sla_filtered", truth)
    assert np.isfinite(obs).sum() == 1 and obs[3, 2, 2] == 1.0  # lat 30.5, lon -59.5
    assert "1 observation points fall outside" in caplog.text
    assert "2 points from 1 file(s), 1 NaN values dropped" in caplog.text


def test_bad_inputs_are_one_line_errors(tmp_path, l3, truth):
    directory, files, _ = l3
    with pytest.raises(DataError, match=r"obs.path: no file matches '.*\*_1999\*\.nc'"):
        read_observations(str(directory / "*_1999*.nc"), "sla_filtered", truth)
    with pytest.raises(DataError, match="obs.path: file not found: .*nope.nc"):
        read_observations([str(files[0]), str(tmp_path / "nope.nc")], "sla_filtered", truth)
    with pytest.raises(DataError, match="variable 'sla' not in"):
        read_observations(str(directory / "*.nc"), "sla", truth)
    projected = make_field(nt=NT, ny=NY, nx=NX, grid="projected", land=False)["ssh"]
    with pytest.raises(DataError, match="latitude/longitude but the truth's grid"):
        read_observations(str(directory / "*.nc"), "sla_filtered", projected)
    with xr.open_dataset(files[0]) as first:
        first.drop_vars("latitude").to_netcdf(tmp_path / "nolat.nc")
    with pytest.raises(DataError, match=r"nolat.nc needs time, y \(or lat/latitude\)"):
        read_observations(str(tmp_path / "nolat.nc"), "sla_filtered", truth)
    numeric = truth.assign_coords(time=np.arange(NT, dtype=float))
    with pytest.raises(DataError, match="are dates but the truth's time axis holds numbers"):
        read_observations(str(directory / "*.nc"), "sla_filtered", numeric)


def test_missing_pattern_is_kept_for_the_cache_key(tmp_path):
    pattern = str(tmp_path / "*.nc")
    assert obs_files(pattern, strict=False) == [tmp_path / "*.nc"]
    (tmp_path / "b.nc").write_bytes(b"")
    (tmp_path / "a.nc").write_bytes(b"")
    assert obs_files([pattern], strict=False) == [tmp_path / "a.nc", tmp_path / "b.nc"]


# ----- through the CLI ----------------------------------------------------------------------------
def _config(tmp_path, truth_file, obs_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"""experiment: {{name: alongtrack, task: mapping}}
data: {{path: {truth_file}, variable: ssh}}
obs: {{kind: file, path: {json.dumps(obs_path)}, variable: sla_filtered, noise_std: 0.01}}
split:
  train: ['2020-01-01', '2020-01-30']
  val: ['2020-02-05', '2020-02-14']
  test: ['2020-02-20', '2020-02-29']
patch: {{time: 4, y: 16, x: 24}}
methods: [oi]
oi: {{tune: {{lx_factors: [0.5, 1.0, 2.0], lt_factors: [1.0, 2.0], expand: 1}}}}
report: {{days: [2]}}
"""
    )
    return path


def test_glob_matching_nothing_fails_the_run_in_one_line(tmp_path, truth_file, capsys):
    pattern = str(tmp_path / "l3" / "*_2019*.nc")
    cfg = _config(tmp_path, truth_file, pattern)
    assert main(["config", "validate", str(cfg)]) == 0
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"no file matches '{pattern}'" in err[0], err


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5", "expected a file, a glob pattern or a non-empty list of them, got 5"), ("[]", "got []")],
)
def test_path_of_a_wrong_type_fails_validation_in_one_line(
    tmp_path, truth_file, capsys, value, expected
):
    cfg = _config(tmp_path, truth_file, "x.nc")
    assert main(["config", "validate", str(cfg), "--set", f"obs.path={value}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "obs.path" in err[0] and expected in err[0], err


def test_mapping_run_on_daily_files_and_cache_key_follows_the_files(
    tmp_path, truth_file, truth, capsys
):
    l3_dir = tmp_path / "l3"
    files, expected = _l3_files(l3_dir, truth, per_day=40)
    cfg = _config(tmp_path, truth_file, [str(l3_dir / "j3_*.nc"), str(l3_dir / "s3a_*.nc")])
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    obs = xr.open_dataset(out / "obs.nc")["ssh_obs"].values
    _same(obs, expected)
    metrics = json.loads((out / "metrics.json").read_text())
    oi = metrics["methods"]["oi"]
    assert np.isfinite(oi["rmse"]) and oi["mu"] > 0.5, oi
    # one more day file: prepare sees a changed input and runs again
    capsys.readouterr()
    assert main(["stage", "prepare", str(cfg), "--out", str(out)]) == 0
    assert "prepare: skipped" in capsys.readouterr().out
    with xr.open_dataset(files[0]) as first:
        first.load().to_netcdf(l3_dir / "j3_l3_extra.nc")
    assert main(["stage", "prepare", str(cfg), "--out", str(out)]) == 0
    assert "prepare: running" in capsys.readouterr().out
