"""Mapping a product as it comes: a descending-latitude file maps like the ascending one, and
its reconstructions are written back in the file's order (the user-trust issue, item 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from geodl.cli import main
from geodl.testing import make_field

SETTINGS = [
    "methods=[oi, unet]",
    "split={train: [2020-01-01, 2020-02-28], val: [2020-03-05, 2020-03-20], "
    "test: [2020-03-25, 2020-04-29]}",
    "patch.y=16",
    "patch.x=16",
    "patch.time=5",
    "unet.train.max_epochs=1",
    "unet.model={depth: 1, width: 4}",
    "unet.extra_members=0",
]


def _run(tmp_path, name, ds):
    path = tmp_path / f"{name}.nc"
    ds.to_netcdf(path)
    out = tmp_path / f"run_{name}"
    args = ["run", "configs/ssh_mapping_quick.yaml", "--out", str(out)]
    args += ["--set", f"data.path={path}"]
    for s in SETTINGS:
        args += ["--set", s]
    assert main(args) == 0
    return out


@pytest.mark.slow
def test_descending_latitude_maps_as_ascending_and_is_written_back(tmp_path):
    asc = make_field(nt=120, ny=16, nx=16, land=False)
    desc = asc.isel(lat=slice(None, None, -1))
    runs = {name: _run(tmp_path, name, ds) for name, ds in (("asc", asc), ("desc", desc))}
    scores = {n: json.loads((r / "metrics.json").read_text())["methods"] for n, r in runs.items()}
    report = runs["desc"] / "report"
    page = (report / "index.html").read_text()
    maps = sorted(p.name for p in report.glob("maps_day*.png"))
    assert maps
    for fig in ("rmse_time.png", "spectra.png", "reliability.png", *maps):
        assert (report / fig).stat().st_size > 10_000 and fig in page  # drawn, and shown
    assert "<h2>Config</h2>" in page and "ssh_mapping_quick" in page
    assert page.index("rmse") < page.index("mu") < page.index("crps")  # the field's order
    for method in ("oi", "unet"):
        assert scores["desc"][method]["rmse"] == pytest.approx(
            scores["asc"][method]["rmse"], rel=1e-4
        )
        with (
            xr.open_dataset(runs["asc"] / "predictions" / f"{method}.nc") as a,
            xr.open_dataset(runs["desc"] / "predictions" / f"{method}.nc") as d,
        ):
            np.testing.assert_array_equal(d.lat.values, desc.lat.values)  # the file's order
            np.testing.assert_allclose(
                d.ssh.isel(lat=slice(None, None, -1)).values, a.ssh.values, rtol=1e-4, atol=1e-6
            )


def test_python_api_returns_the_obs_grid_in_its_order():
    import geodl.mapping as gm

    truth = make_field(nt=40, ny=12, nx=12, land=False)["ssh"]
    rng = np.random.default_rng(0)
    obs = truth.where(rng.random(truth.shape) < 0.2)
    model = gm.fit(obs, truth, method="oi", noise_std=0.01)
    asc = model.reconstruct(obs)
    flip = {"lat": slice(None, None, -1)}
    desc = model.reconstruct(obs.isel(flip))
    np.testing.assert_array_equal(desc.lat.values, obs.lat.values[::-1])
    np.testing.assert_allclose(desc["mean"].values, asc["mean"].isel(flip).values, rtol=1e-5)


def test_lowrank_dincae_end_to_end_and_its_ensembles(tmp_path):
    """The low-rank likelihood through the task, then ensembles drawn from the trained model."""
    from geodl.methods.mapping import MappingData, patch_ensembles
    from geodl.metrics import ensemble_scores
    from geodl.tasks import load_config

    path = tmp_path / "f.nc"
    make_field(nt=120, ny=16, nx=16, land=False).to_netcdf(path)
    out = tmp_path / "run"
    sets = [
        f"data.path={path}",
        "methods=[dincae]",
        "dincae.loss={mse: 1.0, lowrank_nll: 1.0}",
        "dincae.model={depth: 1, width: 4, rank: 2}",
        *[s for s in SETTINGS if not s.startswith(("methods", "unet"))],
        "dincae.train.max_epochs=1",
    ]
    args = ["run", "configs/ssh_mapping_quick.yaml", "--out", str(out)]
    assert main([*args, *(x for s in sets for x in ("--set", s))]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["methods"]["dincae"]
    assert np.isfinite(metrics["crps"]) and 0 < metrics["coverage_68"] <= 1
    cfg, _ = load_config(out / "config.yaml")
    prep = json.loads((out / "prepare.json").read_text())
    data = MappingData.from_prepare(prep, path, out / "obs.nc", variable="ssh", patch=cfg.patch)
    ens, truth, shape = patch_ensembles(
        "dincae", cfg.dincae, data, out / "models" / "dincae.ckpt", data.splits["test"],
        n_members=8,
    )  # fmt: skip
    assert ens.shape[0] == 8 and ens.shape[1:] == truth.shape and truth.shape[1] == np.prod(shape)
    scores = ensemble_scores(ens, truth, shape)
    assert all(np.isfinite(v) for v in scores.values())


@pytest.mark.slow
def test_run_on_a_local_dask_cluster_gives_the_in_process_outputs(tmp_path):
    """`geodl run --dask-workers 2`: the stages' Dask work (statistics, reading) on a 2-worker
    LocalCluster; the same prepare.json and scores as in process (the scale issue, item 2)."""
    path = tmp_path / "f.nc"
    make_field(nt=120, ny=16, nx=16, land=False).to_netcdf(path)
    sets = [f"data.path={path}", "methods=[oi]", *SETTINGS[1:5]]
    outs = {}
    for name, extra in (("local", []), ("cluster", ["--dask-workers", "2"])):
        out = tmp_path / name
        args = ["run", "configs/ssh_mapping_quick.yaml", "--out", str(out), *extra]
        assert main([*args, *(x for s in sets for x in ("--set", s))]) == 0
        outs[name] = out
    prep = {n: json.loads((o / "prepare.json").read_text()) for n, o in outs.items()}
    assert prep["cluster"] == prep["local"]
    got = {
        n: json.loads((o / "metrics.json").read_text())["methods"]["oi"] for n, o in outs.items()
    }
    assert got["cluster"] == pytest.approx(got["local"], rel=1e-9)
    assert main(["run", "configs/ssh_mapping_quick.yaml", "--dask-workers", "0"]) == 2


def test_a_file_without_coordinates_maps_with_data_grid_spacing_km(tmp_path, monkeypatch):
    """``data.grid_spacing_km`` gives a file without coordinate values y/x axes in km from 0:
    prepare records the cell size, and OI is fitted, written on those axes and scored."""
    path = tmp_path / "nocoords.nc"
    make_field(nt=40, ny=12, nx=16, land=False).drop_vars(["lat", "lon"]).to_netcdf(path)
    config = tmp_path / "c.yaml"
    config.write_text(
        "experiment: {name: spacing, task: mapping}\n"
        f"data: {{path: {path}, variable: ssh, grid_spacing_km: [5, 10]}}\n"
        "obs: {kind: clouds, cover: 0.5}\n"
        "split: {train: [2020-01-01, 2020-01-20], val: [2020-01-25, 2020-01-30], "
        "test: [2020-02-04, 2020-02-09]}\n"
        "patch: {time: 4, y: 8, x: 8}\n"
        "methods: [oi]\n"
        "oi: {lx_km: 40.0, lt_days: 3.0, tune: {enabled: false}}\n"
        "report: {days: [0]}\n"
    )
    out = tmp_path / "run"
    from geodl.tasks import mapping_report

    extents = []
    real = mapping_report._extent
    monkeypatch.setattr(
        mapping_report, "_extent", lambda *a: extents.append(real(*a)) or extents[-1]
    )
    assert main(["run", str(config), "--out", str(out)]) == 0
    grid = json.loads((out / "prepare.json").read_text())["grid"]
    assert grid == {"kind": "projected", "dy_km": 5.0, "dx_km": 10.0}
    # the report's maps are drawn on those km axes, not on cell indices
    assert extents == [([-5.0, 155.0, -2.5, 57.5], "lat [km]", "lon [km]")], extents
    assert np.isfinite(json.loads((out / "metrics.json").read_text())["methods"]["oi"]["rmse"])
    with xr.open_dataset(out / "predictions" / "oi.nc") as pred:
        np.testing.assert_array_equal(pred.lat.values, 5.0 * np.arange(12))
        np.testing.assert_array_equal(pred.lon.values, 10.0 * np.arange(16))
        assert pred.lat.attrs["units"] == "km" and "grid_mapping" not in pred.ssh.attrs
