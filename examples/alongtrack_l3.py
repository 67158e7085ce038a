"""Map along-track altimetry given as operational L3 products: daily files per mission, one command.

Run: python examples/alongtrack_l3.py [--out DIR]

L3 along-track sea-level products (e.g. Copernicus Marine SEALEVEL_GLO_PHY_L3) come as one file
per day and per mission: a 1-d ``time`` dimension with ``time`` (CF dates), ``latitude``,
``longitude`` (0..360) and ``sla_filtered`` (scaled integers, fill values where the point was
edited out), and the mission in the global attribute ``platform``. geodl reads them as they are:

    obs: {kind: file, path: "l3/*_2019*.nc", variable: sla_filtered, noise_std: 0.002}

(``path`` may also be a list of files or patterns). This script makes such files from a small
simulated twin (the embedded QG model, 32 x 32 cells, 120 days, placed on a lat/lon grid across
the prime meridian, -5.5 .. 5.4 degrees east, so that the files' 0..360 longitudes must be
wrapped), sampled by two nadir missions (each sample at the centre of the cell it falls in), then
runs ``geodl run alongtrack_l3.yaml`` with optimal interpolation and prints its scores.
"""

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from geodl.cli import main as geodl
from geodl.grid import EARTH_KM_PER_DEG
from geodl.obs import Grid, observe_nadir
from geodl.tasks.simulate import qg_dataset

#: the two missions: repeat cycle (days) and track spacing (km) of one satellite each
MISSIONS = {
    "j3": ("Jason-3", 10.0, 150.0),
    "s3a": ("Sentinel-3A", 27.0, 100.0),
}
START = np.datetime64("2019-01-01")
NOISE = 0.002  # m, instrument noise of the twin's observations (its SSH std is about 0.015 m)


def latlon_truth(twin: xr.Dataset) -> xr.Dataset:
    """The twin's ``ssh`` on a lat/lon grid (the equirectangular mapping geodl uses) with dates."""
    lat0 = 30.0 + 0.5 * float(twin.y[0] + twin.y[-1]) / EARTH_KM_PER_DEG  # domain centre
    lat = 30.0 + twin.y.values / EARTH_KM_PER_DEG
    lon = (twin.x.values - 500.0) / (EARTH_KM_PER_DEG * math.cos(math.radians(lat0)))
    ssh = twin["ssh"].values
    time = START + np.arange(ssh.shape[0]).astype("timedelta64[D]")
    return xr.Dataset(
        {"ssh": (("time", "lat", "lon"), ssh, twin["ssh"].attrs)},
        coords={
            "time": ("time", time, {"standard_name": "time"}),
            "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}),
        },
        attrs={"title": "QG twin on a lat/lon grid (geodl example)"},
    )


def write_l3(twin: xr.Dataset, truth: xr.Dataset, directory: Path) -> list[Path]:
    """Daily L3-style files of each mission observing the twin; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    grid = Grid(time=np.arange(twin.sizes["time"], dtype=float), y=twin.y.values, x=twin.x.values)
    y_of = dict(zip(twin.y.values, truth.lat.values, strict=True))
    x_of = dict(zip(twin.x.values, truth.lon.values % 360.0, strict=True))  # as the products give
    rng = np.random.default_rng(0)
    files = []
    for k, (short, (platform, repeat, spacing)) in enumerate(MISSIONS.items()):
        table = observe_nadir(
            twin["ssh"].values,
            grid,
            n_satellites=1,
            repeat_days=repeat,
            track_spacing_km=spacing,
            noise_std=NOISE,
            seed=k,
        ).table()
        value = table["value"].astype(np.float64)
        value[rng.random(value.size) < 0.02] = np.nan  # edited out (fill values in the file)
        for day in np.unique(table["time"]):
            sel = table["time"] == day
            date = START + np.timedelta64(int(day), "D")
            seconds = np.sort(rng.uniform(0, 6 * 3600, int(sel.sum()))).astype("timedelta64[s]")
            ds = xr.Dataset(
                {
                    "sla_filtered": ("time", value[sel], {"units": "m"}),
                    "latitude": ("time", [y_of[v] for v in table["y"][sel]]),
                    "longitude": ("time", [x_of[v] for v in table["x"][sel]]),
                },
                coords={"time": ("time", date + seconds)},
                attrs={"platform": platform},
            )
            ds["latitude"].attrs = {"units": "degrees_north", "standard_name": "latitude"}
            ds["longitude"].attrs = {"units": "degrees_east", "standard_name": "longitude"}
            path = directory / f"{short}_l3_{pd.Timestamp(date):%Y%m%d}.nc"
            ds.to_netcdf(
                path,
                encoding={
                    "sla_filtered": {"dtype": "int32", "scale_factor": 1e-4, "_FillValue": -1},
                    "time": {"units": "days since 1950-01-01", "dtype": "float64"},
                },
            )
            files.append(path)
    return files


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    twin = qg_dataset(nx=32, days=120, spinup_days=1095, variables=("ssh",))
    truth = latlon_truth(twin)
    truth.to_netcdf(out / "truth.nc")
    files = write_l3(twin, truth, out / "l3")
    print(f"wrote {len(files)} daily L3 files of {len(MISSIONS)} missions under {out / 'l3'}")
    config = out / "alongtrack_l3.yaml"
    config.write_text(
        f"""experiment: {{name: alongtrack_l3, task: mapping, seed: 0}}
data: {{path: {out / "truth.nc"}, variable: ssh}}
obs: {{kind: file, path: "{out / "l3"}/*_2019*.nc", variable: sla_filtered, noise_std: {NOISE}}}
split:
  train: ['2019-01-01', '2019-02-28']
  val: ['2019-03-10', '2019-03-29']
  test: ['2019-04-10', '2019-04-30']
patch: {{time: 5, y: 32, x: 32}}
methods: [oi]
oi: {{max_obs: 500}}
report: {{days: [5]}}
"""
    )
    print(f"geodl run {config} --out {out / 'run'}")
    code = geodl(["run", str(config), "--out", str(out / "run")])
    if code:
        raise SystemExit(code)
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    for name, m in metrics["methods"].items():
        print(name, " ".join(f"{k} {m[k]:.3f}" for k in ("rmse", "mu", "coverage_68")))


if __name__ == "__main__":
    main()
