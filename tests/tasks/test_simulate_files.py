"""`geodl simulate` / `geodl observe` and their file writers: CF attributes, formats, errors."""

import numpy as np
import pytest
import xarray as xr

from geodl.cli import main
from geodl.errors import DataError, UserInputError
from geodl.tasks.simulate import observe_dataset, qg_dataset, simulate_to_file


@pytest.fixture(scope="module")
def qg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("qg") / "qg.nc"
    rc = main(
        ["simulate", "qg", "--nx", "16", "--days", "6", "--spinup-days", "2", "--out", str(path)]
    )
    assert rc == 0
    return path


def test_simulate_qg_writes_cf_netcdf(qg_file):
    ds = xr.open_dataset(qg_file)
    assert set(ds.data_vars) == {"ssh", "psi", "q"}
    assert ds.ssh.dims == ("time", "y", "x") and ds.q.dims == ("time", "layer", "y", "x")
    assert ds.sizes["time"] == 6 and ds.ssh.dtype == np.float32
    assert ds.ssh.attrs["units"] == "m"
    assert ds.ssh.attrs["standard_name"] == "sea_surface_height_above_sea_level"
    assert ds.q.attrs["units"] == "s-1" and ds.psi.attrs["units"] == "m2 s-1"
    for c, axis in (("y", "Y"), ("x", "X")):
        assert ds[c].attrs["units"] == "km" and ds[c].attrs["axis"] == axis
        assert ds[c].attrs["standard_name"] == f"projection_{c}_coordinate"
    # time in days: daily steps after the spin-up
    days = (ds.time.values - np.datetime64("2000-01-01")) / np.timedelta64(1, "D")
    np.testing.assert_allclose(days, 2 + np.arange(1, 7))
    for key in ("nx=16", "beta=1.5e-11", "rek=5.787e-07", "dt=3600.0", "spinup_days=2"):
        assert key in ds.attrs["source"], key
    # SSH proxy is f0/g times the upper-layer streamfunction
    np.testing.assert_allclose(ds.ssh, 1e-4 / 9.81 * ds.psi.sel(layer=1), rtol=1e-5, atol=1e-12)


def test_simulate_lorenz_and_zarr(tmp_path):
    out = tmp_path / "l96.zarr"
    rc = main(
        [
            "simulate",
            "lorenz96",
            "--n-steps",
            "20",
            "--n-trajectories",
            "2",
            "--n-components",
            "8",
            "--dtype",
            "float32",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    ds = xr.open_zarr(out, consolidated=False)
    assert ds.state.shape == (2, 21, 8) and ds.state.dtype == np.float32
    assert '"n_components": 8' in ds.attrs["source"]
    assert not list(tmp_path.glob(".tmp-*"))  # atomic: no leftovers


def test_qg_ensemble_members_and_variables():
    ds = qg_dataset(nx=16, days=2, spinup_days=0, members=2, variables=("ssh",))
    assert list(ds.data_vars) == ["ssh"] and ds.ssh.dims == ("member", "time", "y", "x")
    assert not np.allclose(ds.ssh[0], ds.ssh[1])


@pytest.mark.parametrize("kind", ["nadir", "swath", "clouds"])
def test_observe_writes_grid_and_point_table(qg_file, tmp_path, kind):
    out = tmp_path / f"{kind}.nc"
    extra = ["--cover", "0.3"] if kind == "clouds" else ["--noise-std", "0.0"]
    rc = main(
        ["observe", kind, "--truth", str(qg_file), "--variable", "ssh", "--out", str(out), *extra]
    )
    assert rc == 0
    obs = xr.open_dataset(out)
    truth = xr.open_dataset(qg_file)
    grid = obs.ssh_obs.values
    assert grid.shape == truth.ssh.shape
    assert obs.sizes["obs"] == np.isfinite(grid).sum() > 0
    assert obs.ssh_obs.attrs["units"] == "m" and obs.x.attrs["axis"] == "X"
    assert kind in obs.attrs["source"]
    if kind == "clouds":
        assert obs.attrs["coverage"] == pytest.approx(0.7, abs=0.01)
    else:
        seen = np.isfinite(grid)
        np.testing.assert_allclose(grid[seen], truth.ssh.values[seen])


def test_observe_reads_a_zarr_truth(tmp_path):
    truth = tmp_path / "truth.zarr"
    assert (
        main(
            [
                "simulate",
                "qg",
                "--nx",
                "16",
                "--days",
                "4",
                "--spinup-days",
                "1",
                "--variables",
                "ssh",
                "--out",
                str(truth),
            ]
        )
        == 0
    )
    out = tmp_path / "obs.zarr"
    rc = main(
        [
            "observe",
            "nadir",
            "--truth",
            str(truth),
            "--variable",
            "ssh",
            "--out",
            str(out),
            "--noise-std",
            "0",
        ]
    )
    assert rc == 0
    obs = xr.open_zarr(out, consolidated=False).load()
    seen = np.isfinite(obs.ssh_obs.values)
    np.testing.assert_allclose(
        obs.ssh_obs.values[seen], xr.open_zarr(truth, consolidated=False).ssh.values[seen]
    )


def test_observe_transplants_masks_from_another_file(qg_file, tmp_path):
    donor = tmp_path / "donor.nc"
    assert (
        main(
            [
                "observe",
                "clouds",
                "--truth",
                str(qg_file),
                "--variable",
                "ssh",
                "--out",
                str(donor),
                "--cover",
                "0.6",
                "--seed",
                "4",
            ]
        )
        == 0
    )
    out = tmp_path / "t.nc"
    rc = main(
        [
            "observe",
            "clouds",
            "--truth",
            str(qg_file),
            "--variable",
            "ssh",
            "--out",
            str(out),
            "--mask-from",
            str(donor),
            "--mask-variable",
            "ssh_obs",
        ]
    )
    assert rc == 0
    assert float(np.isnan(xr.open_dataset(out).ssh_obs).mean()) == pytest.approx(0.6, abs=0.01)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "qg", "--nx", "15"], "even integer >= 8"),
        (["simulate", "qg", "--nx", "16", "--dt", "5e6"], "use dt <="),
        (["simulate", "lorenz63", "--nx", "4"], "do not apply to lorenz63"),
        (["simulate", "lorenz63", "--sigma", "-1"], "sigma must be > 0"),
        (["simulate", "qg", "--nx", "16", "--dtype", "float16"], "float32 or float64"),
    ],
)
def test_simulate_bad_input_exits_2(tmp_path, capsys, argv, message):
    rc = main([*argv, "--out", str(tmp_path / "x.nc")])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.nc").exists()


def test_bad_output_suffix(tmp_path, capsys):
    assert main(["simulate", "lorenz63", "--out", str(tmp_path / "x.csv")]) == 2
    assert "must end in .nc" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--variable", "sst"], "variable 'sst' not in the truth file; available: ssh, psi, q"),
        (["--variable", "q"], "need exactly (time, y, x)"),
        (["--variable", "ssh", "--cover", "1.5"], "cloud cover must be a fraction in (0, 1)"),
        (["--variable", "ssh", "--mask-variable", "x"], "go together"),
    ],
)
def test_observe_bad_input_exits_2(qg_file, tmp_path, capsys, extra, message):
    rc = main(
        ["observe", "clouds", "--truth", str(qg_file), "--out", str(tmp_path / "o.nc"), *extra]
    )
    assert rc == 2
    assert message in capsys.readouterr().err


def test_observe_too_many_satellites_and_missing_file(qg_file, tmp_path, capsys):
    rc = main(
        [
            "observe",
            "nadir",
            "--truth",
            str(qg_file),
            "--variable",
            "ssh",
            "--out",
            str(tmp_path / "o.nc"),
            "--n-satellites",
            "40",
        ]
    )
    assert rc == 2 and "use at most" in capsys.readouterr().err
    rc = main(
        [
            "observe",
            "nadir",
            "--truth",
            str(tmp_path / "nope.nc"),
            "--variable",
            "ssh",
            "--out",
            str(tmp_path / "o.nc"),
        ]
    )
    assert rc == 2


def test_observe_needs_projected_coordinates():
    ds = xr.Dataset(
        {"sst": (("time", "lat", "lon"), np.zeros((2, 4, 4)))},
        coords={
            "time": [0.0, 1.0],
            "lat": ("lat", np.arange(4.0), {"units": "degrees_north"}),
            "lon": ("lon", np.arange(4.0), {"units": "degrees_east"}),
        },
    )
    with pytest.raises(DataError, match="projected grid in km or m"):
        observe_dataset("clouds", ds, "sst")
    with pytest.raises(UserInputError, match="unknown system"):
        simulate_to_file("lorenz84", "x.nc")
