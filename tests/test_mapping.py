"""Mapping experiment on a user-supplied lat/lon NetCDF truth, its bad inputs, and the Python API."""

import json
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
import xarray as xr

import geodl.mapping
from geodl.cli import main
from geodl.data import Batch
from geodl.errors import ConfigError, DataError, UserInputError
from geodl.methods.mapping import mapping_loss
from geodl.testing import make_field

TINY = {"depth": 1, "width": 4}
FAST = "{max_epochs: 1, batch_size: 4, progress_bar: false}"


def _config(tmp_path, truth, extra=""):
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"""experiment: {{name: latlon, task: mapping}}
data: {{path: {truth}, variable: ssh}}
obs: {{kind: nadir, noise_std: 0.01, track_spacing_km: 120.0}}
split:
  train: ['2020-01-01', '2020-01-30']
  val: ['2020-02-05', '2020-02-14']
  test: ['2020-02-20', '2020-02-29']
patch: {{time: 4, y: 16, x: 24}}
methods: [oi, unet]
oi: {{lx_km: 80.0, ly_km: 80.0, lt_days: 3.0, noise_std: 0.1,
     tune: {{lx_factors: [0.5, 1.0, 2.0], lt_factors: [1.0, 2.0], expand: 1}}}}
unet:
  model: {{depth: 1, width: 4}}
  train: {FAST}
report: {{days: [2]}}
{extra}"""
    )
    return path


@pytest.fixture(scope="module")
def truth_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("truth") / "truth.nc"
    ds = make_field(nt=60)
    ds["ssh"].attrs["units"] = "m"
    ds.to_netcdf(path)
    return path


@pytest.fixture(scope="module")
def latlon_run(tmp_path_factory, truth_file):
    tmp = tmp_path_factory.mktemp("run")
    cfg = _config(tmp, truth_file)
    out = tmp / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    return cfg, out


def test_user_latlon_truth_end_to_end(latlon_run, truth_file):
    _, out = latlon_run
    truth = xr.open_dataset(truth_file)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "mapping" and set(metrics["methods"]) == {"oi", "unet"}
    for values in metrics["methods"].values():
        assert {"rmse", "mu", "mu_std", "lambda_x", "lambda_t"} <= set(values)
        assert all(np.isfinite(v) for v in values.values())
    assert {"coverage_68", "coverage_95", "crps"} <= set(metrics["methods"]["oi"])
    for method in ("oi", "unet"):
        pred = xr.open_dataset(out / "predictions" / f"{method}.nc")
        assert pred["ssh"].dims == ("time", "lat", "lon")
        np.testing.assert_array_equal(pred["lat"], truth["lat"])
        np.testing.assert_array_equal(pred["lon"], truth["lon"])
        assert pred["ssh"].attrs["units"] == "m" and pred.attrs["Conventions"] == "CF-1.8"
        assert pred.sizes["time"] == 10
        ocean = truth["land_mask"].values == 0
        assert np.isfinite(pred["ssh"].values[:, ocean]).all()
    # OI on a smooth field with tracks every 120 km must explain most of the variance
    assert metrics["methods"]["oi"]["mu"] > 0.5
    html = (out / "report" / "index.html").read_text()
    assert html.count("<img") >= 3 and "psd_score.png" in html and "oi_tuning.png" in html
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["name"] for s in manifest["stages"]] == [
        "prepare",
        "train_oi",
        "train_unet",
        "predict_oi",
        "predict_unet",
        "evaluate",
        "report",
    ]


def test_rerun_skips_and_method_change_reruns_only_it(latlon_run, capsys):
    cfg, out = latlon_run
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    assert "0 stage(s) ran, 7 skipped" in capsys.readouterr().out
    assert main(["run", str(cfg), "--out", str(out), "--set", "oi.lt_days=4.0"]) == 0
    text = capsys.readouterr().out
    assert "train_oi: running" in text and "train_unet: skipped" in text
    assert "4 stage(s) ran" in text  # train_oi (tuning), predict_oi, evaluate, report


def _run_error(tmp_path, truth, extra, capsys, *sets):
    cfg = _config(tmp_path, truth, extra)
    code = main(["run", str(cfg), "--out", str(tmp_path / "o"), *sets])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_obs_file_on_another_grid(tmp_path, truth_file, capsys):
    ds = make_field(nt=60)
    ds = ds.assign_coords(lon=ds["lon"] + 1.0)
    ds["ssh"].to_netcdf(tmp_path / "obs.nc")
    line = _run_error(
        tmp_path,
        truth_file,
        "",
        capsys,
        "--set",
        "obs.kind=file",
        "--set",
        f"obs.path={tmp_path / 'obs.nc'}",
        "--set",
        "obs.variable=ssh",
    )
    assert "its x axis" in line and "differs from the truth" in line


def test_obs_point_table_is_binned(tmp_path, truth_file):
    truth = xr.open_dataset(truth_file)
    lat, lon = truth["lat"].values, truth["lon"].values
    n = 400
    rng = np.random.default_rng(0)
    it = rng.integers(0, 60, n)
    iy, ix = rng.integers(0, 16, n), rng.integers(0, 24, n)
    table = xr.Dataset(
        {
            "sla": ("obs", truth["ssh"].values[it, iy, ix]),
            "time": ("obs", truth["time"].values[it]),
            "lat": ("obs", lat[iy]),
            "lon": ("obs", lon[ix]),
        }
    )
    table.to_netcdf(tmp_path / "points.nc")
    cfg = _config(tmp_path, truth_file)
    out = tmp_path / "o"
    sets = [
        "--set",
        "obs.kind=file",
        "--set",
        f"obs.path={tmp_path / 'points.nc'}",
        "--set",
        "obs.variable=sla",
        "--set",
        "methods=[oi]",
    ]
    assert main(["stage", "prepare", str(cfg), "--out", str(out), *sets]) == 0
    obs = xr.open_dataset(out / "obs.nc")["ssh_obs"].values
    finite = np.isfinite(obs)
    assert 0 < finite.sum() <= n
    np.testing.assert_allclose(
        obs[it[0], iy[0], ix[0]], truth["ssh"].values[it[0], iy[0], ix[0]], rtol=1e-5
    )


def test_split_without_observations(tmp_path, truth_file, capsys):
    ds = make_field(nt=60)
    obs = ds["ssh"].where(ds["time"] < np.datetime64("2020-02-15"))
    obs.to_netcdf(tmp_path / "obs.nc")
    line = _run_error(
        tmp_path,
        truth_file,
        "",
        capsys,
        "--set",
        "obs.kind=file",
        "--set",
        f"obs.path={tmp_path / 'obs.nc'}",
        "--set",
        "obs.variable=ssh",
    )
    assert "split 'test'" in line and "holds no observation" in line


def test_all_nan_truth(tmp_path, capsys):
    ds = make_field(nt=60)
    ds["ssh"][:] = np.nan
    ds.to_netcdf(tmp_path / "nan.nc")
    line = _run_error(tmp_path, tmp_path / "nan.nc", "", capsys)
    assert "NaN" in line


def test_unknown_method_lists_methods(tmp_path, truth_file, capsys):
    line = _run_error(tmp_path, truth_file, "", capsys, "--set", "methods=[kriging]")
    assert "['kriging'] invalid" in line and "'oi', 'unet', 'dincae', 'fourdvarnet'" in line


def test_land_only_patches(tmp_path, truth_file, capsys):
    line = _run_error(
        tmp_path,
        truth_file,
        "",
        capsys,
        "--set",
        "patch.max_land_fraction=0.0",
        "--set",
        "methods=[unet]",
    )
    assert "zero usable patches" in line and "max_land_fraction" in line


def test_noise_larger_than_signal_is_warned(tmp_path, truth_file):
    cfg = _config(tmp_path, truth_file)
    out = tmp_path / "o"
    assert (
        main(["stage", "prepare", str(cfg), "--out", str(out), "--set", "obs.noise_std=50.0"]) == 0
    )
    prep = json.loads((out / "prepare.json").read_text())
    assert any("mostly noise" in w for w in prep["warnings"])


def _batch(b=4, t=3, h=8, w=8):
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(b, t, 1, h, w, generator=gen)
    mask = torch.rand(b, t, 1, h, w, generator=gen) < 0.3
    mask[0] = False
    return Batch(
        target=target,
        obs=torch.where(mask, target, 0.0),
        obs_mask=mask,
        target_mask=torch.ones_like(mask),
        land_mask=torch.zeros(b, 1, 1, h, w, dtype=torch.bool),
        time_index=torch.arange(b),
        y0=torch.zeros(b, dtype=torch.long),
        x0=torch.zeros(b, dtype=torch.long),
    )


def test_mask_swap_uses_other_windows_masks():
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, obs, mask):
            seen.append(mask.clone())
            from geodl.models import MappingOutput

            return MappingOutput(mean=obs, log_var=None)

    batch = _batch()
    spy = Spy().train()
    mapping_loss({"mse": 1.0}, mask_swap=1.0, noise_std=0.0)(spy, batch)
    torch.testing.assert_close(seen[-1], torch.roll(batch.obs_mask, 1, 0).float())
    spy.eval()
    mapping_loss({"mse": 1.0}, mask_swap=1.0)(spy, batch)
    torch.testing.assert_close(seen[-1], batch.obs_mask.float())  # never at validation


def test_loss_config_errors():
    with pytest.raises(ConfigError, match="unknown loss term .l7."):
        mapping_loss({"l7": 1.0})

    class NoVar(torch.nn.Module):
        def forward(self, obs, mask):
            from geodl.models import MappingOutput

            return MappingOutput(mean=obs, log_var=None)

    with pytest.raises(ConfigError, match="needs a model that predicts a variance"):
        mapping_loss({"nll": 1.0})(NoVar(), _batch())


def test_python_api_oi_and_dincae():
    ds = make_field(nt=40, land=False)
    truth = ds["ssh"]
    rng = np.random.default_rng(1)
    obs = truth.where(rng.random(truth.shape) < 0.2)
    model = geodl.mapping.fit(
        obs[:30], truth[:30], method="oi", noise_std=0.1, lx_km=80.0, lt_days=3.0
    )
    out = model.reconstruct(obs[30:])
    assert set(out.data_vars) == {"mean", "std"} and out["mean"].dims == truth.dims
    err = float(np.sqrt(((out["mean"] - truth[30:]) ** 2).mean()))
    assert err < float(truth[30:].std())
    learned = geodl.mapping.fit(
        obs[:30],
        truth[:30],
        method="dincae",
        patch={"time": 4, "y": 16, "x": 24},
        model={"depth": 1, "width": 4},
        train={"max_epochs": 1, "batch_size": 4},
    )
    rec = learned.reconstruct(obs[30:])
    assert rec["mean"].shape == truth[30:].shape and bool((rec["std"] > 0).all())
    with pytest.raises(UserInputError, match="unknown mapping method"):
        geodl.mapping.fit(obs, truth, method="magic")
    with pytest.raises(DataError, match=r"dims \(time, y, x\)"):
        geodl.mapping.fit(obs.isel(time=0), truth.isel(time=0))


@pytest.mark.parametrize("kind", ["swath", "nadir"])
def test_task_and_observe_command_build_the_same_orbits(tmp_path, kind):
    # the task once flew the swath on the nadir's repeat, spacing and satellite count
    from geodl.tasks.simulate import observe_dataset

    truth = tmp_path / "projected.nc"
    make_field(nt=60, grid="projected", land=False).to_netcdf(truth)  # `geodl observe` needs km
    cfg = _config(tmp_path, truth).read_text()
    cfg = cfg.replace(
        "obs: {kind: nadir, noise_std: 0.01, track_spacing_km: 120.0}",
        f"obs: {{kind: {kind}, noise_std: 0.01, seed: 3}}",
    )
    (tmp_path / "exp.yaml").write_text(cfg)
    out = tmp_path / "out"
    assert main(["stage", "prepare", str(tmp_path / "exp.yaml"), "--out", str(out)]) == 0
    task = xr.open_dataset(out / "obs.nc")["ssh_obs"]
    with xr.open_dataset(truth) as ds:
        cli = observe_dataset(kind, ds.load(), "ssh", noise_std=0.01, seed=3)["ssh_obs"]
    np.testing.assert_array_equal(np.isfinite(task.values), np.isfinite(cli.values))
    np.testing.assert_allclose(task.values, cli.values, equal_nan=True)


class _Page(HTMLParser):
    """The images, captions, table header cells and section titles of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.captions: list[str] = []
        self.headers: list[str] = []
        self.titles: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag in ("figcaption", "th", "h2"):
            self._in, self._text = tag, ""

    def handle_data(self, data):
        if self._in:
            self._text += data

    def handle_endtag(self, tag):
        if tag == self._in:
            {"figcaption": self.captions, "th": self.headers, "h2": self.titles}[tag].append(
                self._text.strip()
            )
            self._in = None


def test_report_page_shows_every_figure_with_its_reading_and_the_scores_in_order(latlon_run):
    """What a browser would show: every image the page names exists and decodes to a non-blank
    picture, each with a caption that says what it shows (not its file name); the maps' caption
    gives the date; the table reads rmse, mu, ... with the ratios to OI; the config is there."""
    from matplotlib.image import imread

    _, out = latlon_run
    page = _Page()
    page.feed((out / "report" / "index.html").read_text())
    srcs = [img["src"] for img in page.images]
    assert len(srcs) == len(page.captions) >= 6
    assert {"rmse_time.png", "spectra.png", "reliability.png", "psd_score.png"} <= set(srcs)
    for src, caption in zip(srcs, page.captions, strict=True):
        pixels = imread(out / "report" / src)  # (h, w, 4) floats in [0, 1]
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300, (src, pixels.shape)
        assert pixels[..., :3].std() > 0.05, f"{src} is blank"
        assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 50, src  # not a flat plot
        assert src not in caption and len(caption) > 40, (src, caption)
    maps = [c for s, c in zip(srcs, page.captions, strict=True) if s.startswith("maps_day")]
    assert maps and all("test day" in c and "time" in c for c in maps), maps
    cols = [h.split(" [")[0] for h in page.headers]
    assert cols[:4] == ["method", "rmse", "mu", "mu_std"], cols
    assert cols.index("lambda_x") < cols.index("coverage_68") < cols.index("rmse_ratio_oi")
    assert {"oi", "unet"} <= set(cols)  # one row per method
    assert page.titles[0].startswith("Metrics") and "Config" in page.titles
