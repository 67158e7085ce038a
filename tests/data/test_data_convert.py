"""Conversion/rechunking, the Dask cluster options, and the data commands of the CLI."""

import numpy as np
import pytest

from geodl.cli import main
from geodl.data import compute_stats, dask_client, open_dataset
from geodl.data.convert import convert, parse_chunks
from geodl.errors import ConfigError


def test_convert_rechunks_atomically(tmp_path, nc_path, field):
    out = convert(nc_path, tmp_path / "out.zarr", chunks={"time": 4, "lat": -1, "lon": 12})
    ds = open_dataset(out)
    assert ds["ssh"].encoding["chunks"] == (4, 16, 12)
    np.testing.assert_array_equal(ds["ssh"].values, field["ssh"].values)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        convert(nc_path, out)
    convert(nc_path, out, chunks={"time": 10}, overwrite=True, zarr_format=2)
    assert open_dataset(out)["ssh"].encoding["chunks"][0] == 10


def test_convert_to_netcdf(tmp_path, zarr_path, field):
    out = convert(zarr_path, tmp_path / "out.nc", chunks={"time": 5})
    ds = open_dataset(out)
    assert ds["ssh"].encoding["chunksizes"] == (5, 8, 12)
    np.testing.assert_array_equal(ds["ssh"].values, field["ssh"].values)


def test_convert_errors(tmp_path, nc_path):
    with pytest.raises(ConfigError, match="unknown dim 'depth'"):
        convert(nc_path, tmp_path / "o.zarr", chunks={"depth": 3})
    with pytest.raises(ConfigError, match="must end in .zarr or .nc"):
        convert(nc_path, tmp_path / "o.h5")
    with pytest.raises(ConfigError, match="'time' is not DIM=INT"):
        parse_chunks("time")
    with pytest.raises(ConfigError, match="expected a positive size"):
        convert(nc_path, tmp_path / "o.zarr", chunks={"time": 0})
    assert not (tmp_path / "o.zarr").exists()


def test_statistics_on_a_local_cluster_match_in_process(nc_path):
    local = compute_stats(open_dataset(nc_path), ["ssh", "sst"], time_range=(0, 12))
    cluster = compute_stats(open_dataset(nc_path), ["ssh", "sst"], time_range=(0, 12),
                            dask_workers=2)  # fmt: skip
    for name in ("ssh", "sst"):
        a, b = local["variables"][name], cluster["variables"][name]
        assert a["count"] == b["count"]
        assert a["mean"] == pytest.approx(b["mean"], rel=1e-12)
        assert a["std"] == pytest.approx(b["std"], rel=1e-12)


def test_convert_on_a_scheduler_address(tmp_path, nc_path, field):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:  # fmt: skip
        out = convert(nc_path, tmp_path / "o.zarr", chunks={"time": 5},
                      scheduler=cluster.scheduler_address)  # fmt: skip
    np.testing.assert_array_equal(open_dataset(out)["ssh"].values, field["ssh"].values)


def test_cluster_argument_errors():
    with pytest.raises(ConfigError, match="not both"), dask_client(2, "tcp://x:1"):
        pass
    with pytest.raises(ConfigError, match="expected a positive integer"), dask_client(0):
        pass


def test_cli_convert_and_info(tmp_path, nc_path, capsys):
    out = tmp_path / "c.zarr"
    assert main(["convert", str(nc_path), str(out), "--chunks", "time=5,y=8,x=-1"]) == 0
    assert open_dataset(out)["ssh"].encoding["chunks"] == (5, 8, 24)
    assert main(["convert", str(nc_path), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["info", str(out), "--target", "ssh", "--static", "land_mask"]) == 0
    text = capsys.readouterr().out
    assert "target: ssh float32, storage chunks 5x8x24" in text and "land: 6.2%" in text
    assert main(["info", str(out), "--target", "sla"]) == 2
    assert "available variables" in capsys.readouterr().err
