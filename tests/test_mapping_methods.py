"""The mapping method registry (a toy method through the task and the API) and seamless stitching."""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import geodl.mapping
from geodl.config import Section, validate
from geodl.methods import mapping as methods
from geodl.pipeline import run_experiment
from geodl.tasks.mapping import experiment
from geodl.testing import make_field


class ToySection(Section):
    offset: float = 0.0


def _toy_fit(section, data, artifact, **_):
    value = float(np.nanmean(data.obs(data.splits["train"]).values)) + section.offset
    Path(artifact).write_text(json.dumps({"value": value}))
    return {"value": value}


def _toy_reconstruct(section, data, artifact, split):
    value = json.loads(Path(artifact).read_text())["value"]
    obs = data.obs(split)
    return xr.full_like(obs, value), None


@pytest.fixture
def toy_method():
    methods.register(
        methods.MappingMethod(
            "toy_mean", ToySection, _toy_fit, _toy_reconstruct, learned=False, artifact=".json"
        )
    )
    yield "toy_mean"
    del methods.METHODS["toy_mean"]


def test_a_registered_method_runs_in_the_task_and_the_api(tmp_path, toy_method):
    ds = make_field(nt=60, land=False)
    ds["ssh"].attrs["units"] = "m"
    ds.to_netcdf(tmp_path / "truth.nc")
    exp = experiment()  # the schema now has a toy_mean section
    raw = {
        "experiment": {"name": "toy", "task": "mapping"},
        "data": {"path": str(tmp_path / "truth.nc")},
        "obs": {"kind": "nadir", "track_spacing_km": 120.0},
        "split": {
            "train": ["2020-01-01", "2020-01-30"],
            "val": ["2020-02-05", "2020-02-14"],
            "test": ["2020-02-20", "2020-02-29"],
        },
        "patch": {"time": 4, "y": 16, "x": 24},
        "methods": ["toy_mean"],
        "toy_mean": {"offset": 0.5},
    }
    cfg = validate(raw, exp.schema)
    run_experiment(cfg, exp, tmp_path / "run", echo=lambda s: None)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"toy_mean"}
    pred = xr.open_dataset(tmp_path / "run" / "predictions" / "toy_mean.nc")["ssh"]
    fitted = json.loads((tmp_path / "run" / "models" / "toy_mean.json").read_text())["value"]
    np.testing.assert_allclose(pred.values, fitted, rtol=1e-6)
    # the API goes through the same registry
    obs = ds["ssh"].where(np.random.default_rng(0).random(ds["ssh"].shape) < 0.2)
    model = geodl.mapping.fit(obs, ds["ssh"], method="toy_mean", offset=1.0, patch={"time": 4})
    out = model.reconstruct(obs[:5])
    assert float(out["mean"].mean()) == pytest.approx(float(obs[:40].mean()) + 1.0, abs=0.2)


def _edge_jump(field: np.ndarray, edges: list[int]) -> float:
    """Mean |x-difference| across the given columns relative to the mean elsewhere."""
    d = np.abs(np.diff(field, axis=-1))  # d[..., j] = |f[j+1] - f[j]|
    at = np.zeros(d.shape[-1], bool)
    at[[e - 1 for e in edges]] = True
    return float(np.nanmean(d[..., at]) / np.nanmean(d[..., ~at]))


def _stitched(patch: dict) -> np.ndarray:
    """Patches of random constants, placed where the patch geometry puts them, stitched."""
    import torch

    from geodl.data import GriddedSource, PatchDataset, collate, stitch

    ds = make_field(nt=8, ny=32, nx=64, grid="projected", land=False)
    source = GriddedSource(ds, target="ssh")
    size, stride = methods.patch_geometry(validate(patch, methods.PatchSection))
    data = PatchDataset(source, size, stride, split=(0, 8))
    starts = collate([data[i] for i in range(len(data))]).starts
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(len(starts), 1, 1, 1, 1, generator=gen)
    patches = values.expand(-1, size["time"], 1, size["y"], size["x"])
    return stitch(patches, starts, source)["ssh"].values


def test_default_overlap_leaves_no_seams():
    """A model's patch-to-patch differences show as jumps along tile edges unless the patches
    overlap and are tapered (the default): then they blend over the overlap."""
    edges = [16, 32, 48]

    def worst_edge_jump(field):
        d = np.abs(np.diff(field, axis=-1))
        return float(d[..., [e - 1 for e in edges]].max() / np.abs(field).max())

    seamless = _stitched({"time": 4, "y": 32, "x": 16})
    tiled = _stitched({"time": 4, "y": 32, "x": 16, "stride_x": 16})
    assert worst_edge_jump(tiled) > 0.5  # non-overlapping tiles: a jump of order one
    assert worst_edge_jump(seamless) < 0.25 * worst_edge_jump(tiled)
    # the differences are spread over the overlap: no column has a jump of that size either
    d = np.abs(np.diff(seamless, axis=-1)).max() / np.abs(seamless).max()
    assert d < 0.5 * worst_edge_jump(tiled)


def _data(ds, patch, extra=()):
    from geodl.data import GriddedSource, compute_stats

    stats = compute_stats(ds, ["ssh"], time_range=(0, 20))
    stats["variables"]["ssh_obs"] = stats["variables"]["ssh"]
    return methods.MappingData(
        source=GriddedSource(ds, target="ssh", obs="ssh_obs"),
        splits={"train": (0, 20), "val": (24, 30)},
        normalizer=stats,
        patch=validate(patch, methods.PatchSection),
        noise_std=0.01,
        obs_std=float(ds["ssh_obs"].std()),
        obs_mean=0.0,
        extra=tuple(extra),
    )


def test_extra_realisations_are_training_data(tmp_path):
    from geodl.data import GriddedSource

    def twin(seed):
        ds = make_field(nt=30, ny=16, nx=16, grid="projected", land=False, seed=seed)
        rng = np.random.default_rng(seed)
        ds["ssh_obs"] = ds["ssh"].where(rng.random(ds["ssh"].shape) < 0.2)
        return ds

    patch = {"time": 4, "y": 16, "x": 16}
    section = validate(
        {"model": {"depth": 1, "width": 4}, "train": {"max_epochs": 1, "progress_bar": False}},
        methods.UNetSection,
    )
    fit = methods.METHODS["unet"].fit
    common = {"work_dir": tmp_path, "key": "k", "metadata": {}}
    alone = fit(section, _data(twin(0), patch), tmp_path / "a.ckpt", **common)
    other = GriddedSource(twin(1), target="ssh", obs="ssh_obs")
    more = fit(section, _data(twin(0), patch, [other]), tmp_path / "b.ckpt", **common)
    assert alone["realisations"] == 1 and more["realisations"] == 2
    fewer = validate({**section.model_dump(), "extra_members": 0}, methods.UNetSection)
    assert (
        fit(fewer, _data(twin(0), patch, [other]), tmp_path / "d.ckpt", **common)["train_windows"]
        == 17
    )
    # the other realisation's whole 30 days add 27 windows of 4 days to the 17 of the train split
    assert (alone["train_windows"], more["train_windows"]) == (17, 17 + 27)
    # a thinner training stride
    thin = fit(
        section, _data(twin(0), {**patch, "train_stride_time": 2}), tmp_path / "c.ckpt", **common
    )
    assert thin["train_windows"] == 9


def test_prior_term_needs_a_prior_and_is_known_to_fourdvarnet_only():
    from geodl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"loss term 'prior' needs a learned prior phi"):
        validate({"loss": {"prior": 1.0}}, methods.UNetSection)
    section = validate({}, methods.FourDVarNetSection)
    assert section.loss["prior"] > 0  # the default trains phi to be a prior


def test_twin_members_and_relative_noise(tmp_path):
    cfg = tmp_path / "twin.yaml"
    cfg.write_text(
        """experiment: {name: twin, task: mapping}
simulate: {nx: 32, days: 40, spinup_days: 20, members: 3}
obs: {kind: nadir, noise_fraction: 0.1, n_satellites: 2}
split: {train: [0, 19], val: [24, 31], test: [36, 39]}
patch: {time: 3, y: 32, x: 32}
methods: [oi]
oi: {tune: {lx_factors: [0.5, 1.0, 2.0], lt_factors: [0.5, 1.0, 2.0], expand: 0, every_days: 2}}
"""
    )
    from geodl.cli import main

    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    truth = xr.open_dataset(out / "truth.nc")["ssh"]
    assert xr.open_dataset(out / "members.nc")["ssh"].sizes["member"] == 2
    obs_m = xr.open_dataset(out / "obs_members.nc")["ssh_obs"]
    assert obs_m.sizes["member"] == 2 and np.isfinite(obs_m.values).any()
    prep = json.loads((out / "prepare.json").read_text())
    assert prep["noise_std"] == pytest.approx(0.1 * float(truth.std()), rel=1e-4)
    assert prep["periodic"] is True and prep["scales"]["lx"] > 0
    tuning = json.loads((out / "metrics.json").read_text())["oi_tuning"]
    assert len(tuning["tuning"]["grid"]) == 9 and tuning["params"]["std_scale"] > 0


FG = {"first_guess": "unet", "first_guess_depth": 1, "first_guess_width": 4}
TINY_4DVARNET = {"n_iter": 1, "prior_hidden": 4, "lstm_hidden": 4, **FG}


def test_warm_start_loads_the_unet_into_the_first_guess(tmp_path):
    import torch

    from geodl.training import load_checkpoint

    ds = make_field(nt=30, ny=16, nx=16, grid="projected", land=False, seed=0)
    ds["ssh_obs"] = ds["ssh"].where(np.random.default_rng(0).random(ds["ssh"].shape) < 0.2)
    data = _data(ds, {"time": 4, "y": 16, "x": 16})
    common = {"work_dir": tmp_path, "key": "k", "metadata": {}}
    train = {"max_epochs": 1, "progress_bar": False, "lr": 1e-9}
    unet = validate({"model": {"depth": 1, "width": 4}, "train": train}, methods.UNetSection)
    methods.METHODS["unet"].fit(unet, data, tmp_path / "unet.ckpt", **common)
    fit = methods.METHODS["fourdvarnet"].fit
    warm = validate(
        {"model": TINY_4DVARNET, "warm_start": "unet", "train": train}, methods.FourDVarNetSection
    )
    fit(warm, data, tmp_path / "w.ckpt", inputs={"unet": tmp_path / "unet.ckpt"}, **common)
    cold = validate({"model": TINY_4DVARNET, "train": train}, methods.FourDVarNetSection)
    fit(cold, data, tmp_path / "c.ckpt", **{**common, "work_dir": tmp_path / "cold"})

    def weights(path, prefix=""):
        state = load_checkpoint(path)["state_dict"]
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    ref = weights(tmp_path / "unet.ckpt", "model.")
    for name, prefix in (("w", True), ("c", False)):
        mine = weights(tmp_path / f"{name}.ckpt", "model.first_guess.")
        assert set(mine) == set(ref)
        same = all(torch.allclose(mine[k], ref[k], atol=1e-6) for k in ref)
        assert same is prefix  # warm: the UNet's weights (lr ~ 0); cold: a fresh start
    with pytest.raises(Exception, match="has no trained model here"):
        fit(warm, data, tmp_path / "x.ckpt", **common)


@pytest.mark.parametrize(
    ("methods_list", "fdv", "unet", "match"),
    [
        (["unet", "fourdvarnet"], {"warm_start": "unet"}, {}, "needs model.first_guess: unet"),
        (["unet", "fourdvarnet"], {"warm_start": "oi", "model": FG}, {}, "warm_start 'oi' invalid"),
        (["oi", "fourdvarnet"], {"warm_start": "unet", "model": FG}, {}, "not among the methods"),
        (
            ["fourdvarnet", "unet"],
            {"warm_start": "unet", "model": FG},
            {"model": {"depth": 1, "width": 4}},
            "list it before fourdvarnet",
        ),
        (
            ["unet", "fourdvarnet"],
            {"warm_start": "unet", "model": FG},
            {"model": {"depth": 2, "width": 4}},
            r"unet.model.depth is 2 but the first guess's is 1",
        ),
        (
            ["unet", "fourdvarnet"],
            {"warm_start": "unet", "model": FG},
            {"model": {"depth": 1, "width": 4, "use_mask": False}},
            r"sets \['use_mask'\]",
        ),
    ],
)
def test_warm_start_config_mistakes_are_one_line(methods_list, fdv, unet, match):
    from geodl.errors import ConfigError

    raw = {
        "experiment": {"name": "w", "task": "mapping"},
        "split": {"train": [0, 19], "val": [24, 31], "test": [36, 39]},
        "methods": methods_list,
        "fourdvarnet": fdv,
        "unet": unet,
    }
    with pytest.raises(ConfigError, match=match) as info:
        validate(raw, experiment().schema)
    assert "\n" not in str(info.value)


def test_warm_start_orders_the_stages_and_the_api_refuses_it():
    from geodl.errors import UserInputError

    raw = {
        "experiment": {"name": "w", "task": "mapping"},
        "split": {"train": [0, 19], "val": [24, 31], "test": [36, 39]},
        "methods": ["unet", "fourdvarnet"],
        "fourdvarnet": {"warm_start": "unet", "model": FG},
        "unet": {"model": {"depth": 1, "width": 4}},
    }
    exp = experiment()
    stages = {s.name: s for s in exp.stage_factory(validate(raw, exp.schema))}
    assert "train_unet" in stages["train_fourdvarnet"].needs
    ds = make_field(nt=30, ny=16, nx=16, grid="projected", land=False)
    obs = ds["ssh"].where(np.random.default_rng(0).random(ds["ssh"].shape) < 0.2)
    with pytest.raises(UserInputError, match="trains one method"):
        geodl.mapping.fit(obs, ds["ssh"], method="fourdvarnet", model=FG, warm_start="unet")


TWIN = {
    "experiment": {"name": "c", "task": "mapping"},
    "simulate": {"nx": 32},
    "split": {"train": [0, 19], "val": [24, 31], "test": [36, 39]},
    "patch": {"time": 5, "y": 32, "x": 32},
}


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (
            {"unet": {"model": {"depht": 2}}},
            r"model keys \['depht'\] invalid for unet; choose from",
        ),
        ({"unet": {"model": {"n_times": 3}}}, r"model keys \['n_times'\] invalid for unet"),
        (
            {"unet": {"loss": {"nll": 1.0}}},
            "section 'unet': loss term 'nll' needs a predicted variance",
        ),
        (
            {"unet": {"loss": {"kl": 1.0}}},
            "section 'unet': loss term 'kl' needs a latent distribution",
        ),
        ({"unet": {"loss": {"l7": 1.0}}}, "section 'unet': unknown loss term 'l7'"),
        (
            {"unet": {"adversarial": {"weight": 0.1, "n_layers": 6}}},
            r"unet.adversarial.n_layers=6: the discriminator halves the 32 x 32 fields 6 times",
        ),
        (
            {"unet": {"adversarial": {"weight": 0.1, "on": "spectra", "spectrum_bins": 17}}},
            r"unet.adversarial.spectrum_bins=17: 32 x 32 fields resolve at most 16 annuli",
        ),
        (
            {"split": {"train": ["2020-01-01", "2020-02-01"], "val": [24, 31], "test": [36, 39]}},
            "split.train .* gives dates, but the simulated twin's time axis is in days",
        ),
        ({"fourdvarnet": {"loss": {"nll": 1.0}}}, "'nll' needs model.variance: true"),
        ({"obs": {"kind": "file"}}, "kind 'file' needs path and variable"),
        ({"patch": {"time": 5, "y": 64, "x": 32}}, "larger than the simulated grid"),
        ({"patch": {"time": 9, "y": 32, "x": 32}}, r"split.val \[24, 31\] is shorter than"),
    ],
)
def test_config_mistakes_that_once_failed_late_fail_at_validation(extra, match):
    # each of these passed `geodl config validate` and failed only after other stages ran
    from geodl.errors import ConfigError

    with pytest.raises(ConfigError, match=match) as info:
        validate({**TWIN, **extra}, experiment().schema)
    assert "\n" not in str(info.value)


def test_valid_variants_still_pass():
    schema = experiment().schema
    validate({**TWIN, "fourdvarnet": {"model": {"variance": True}, "loss": {"nll": 1.0}}}, schema)
    validate({**TWIN, "methods": ["oi"], "patch": {"time": 40, "y": 64, "x": 64}}, schema)


def test_api_and_task_train_the_same_4dvarnet_by_default(monkeypatch):
    # once the API and the config defaults differed (loss terms, mask swap)
    import dataclasses

    seen = {}

    class Stop(Exception):
        pass

    def spy(section, *args, **kwargs):
        seen["section"] = section
        raise Stop

    entry = methods.METHODS["fourdvarnet"]
    monkeypatch.setitem(methods.METHODS, "fourdvarnet", dataclasses.replace(entry, fit=spy))
    ds = make_field(nt=30, ny=16, nx=16, grid="projected", land=False)
    obs = ds["ssh"].where(np.random.default_rng(0).random(ds["ssh"].shape) < 0.2)
    with pytest.raises(Stop):
        geodl.mapping.fit(obs, ds["ssh"], method="fourdvarnet", patch={"time": 4})
    task = validate(TWIN, experiment().schema).fourdvarnet
    api = seen["section"]
    assert api.loss == task.loss and api.mask_swap == task.mask_swap and api.model == task.model
    assert api.train.model_dump(exclude={"progress_bar"}) == task.train.model_dump(
        exclude={"progress_bar"}
    )


def test_the_experiment_seed_seeds_the_initial_weights_too(tmp_path):
    import torch

    from geodl.training import load_checkpoint

    ds = make_field(nt=30, ny=16, nx=16, grid="projected", land=False, seed=0)
    ds["ssh_obs"] = ds["ssh"].where(np.random.default_rng(0).random(ds["ssh"].shape) < 0.2)
    section = validate(
        {"model": {"depth": 1, "width": 4}, "train": {"max_steps": 1, "progress_bar": False}},
        methods.UNetSection,
    )
    data = _data(ds, {"time": 4, "y": 16, "x": 16})
    fit = methods.METHODS["unet"].fit

    def weights(run: str, seed: int) -> dict:
        torch.manual_seed(int(np.random.default_rng().integers(1 << 30)))  # any global state
        common = {"work_dir": tmp_path / run, "key": run, "metadata": {}, "seed": seed}
        fit(section, data, tmp_path / f"{run}.ckpt", **common)
        return load_checkpoint(tmp_path / f"{run}.ckpt")["state_dict"]

    a, b, c = weights("a", 0), weights("b", 0), weights("c", 1)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)  # reproducible
    assert not all(np.array_equal(a[k].numpy(), c[k].numpy()) for k in a)  # another init


@pytest.mark.parametrize("name", ["unet", "dincae"])
def test_the_streamed_prediction_file_is_the_in_memory_reconstruction(tmp_path, name):
    """The predict stage writes learned maps patch by patch (predict_to_file): same numbers as
    ``reconstruct`` in memory, and a std that does not claim the field's standard_name."""
    import xarray as xr

    ds = make_field(nt=30, ny=24, nx=24, grid="projected", land=True, seed=3)
    ds["ssh"].attrs.update(standard_name="sea_surface_height_above_geoid", units="m")
    ds["ssh_obs"] = ds["ssh"].where(np.random.default_rng(3).random(ds["ssh"].shape) < 0.2)
    section = validate(
        {"model": {"depth": 1, "width": 4}, "train": {"max_steps": 2, "progress_bar": False}},
        methods.METHODS[name].section,
    )
    data = _data(ds, {"time": 4, "y": 16, "x": 16})
    artifact = tmp_path / f"{name}.ckpt"
    common = {"work_dir": tmp_path / "work", "key": name, "metadata": {}}
    methods.METHODS[name].fit(section, data, artifact, **common)
    split = (20, 30)
    mean, std = methods.METHODS[name].reconstruct(section, data, artifact, split)
    out = methods.write_reconstruction(
        name, section, data, artifact, split, tmp_path / "p.nc", units="m", experiment="t"
    )
    assert methods.METHODS[name].stream is not None
    with xr.open_dataset(out) as got:
        assert np.isnan(got["ssh"].values).any()  # land stays NaN, as in memory
        np.testing.assert_allclose(got["ssh"].values, mean.values, rtol=1e-5, atol=1e-6)
        assert got["ssh"].attrs["units"] == "m" and got.attrs["Conventions"] == "CF-1.8"
        if name == "dincae":
            np.testing.assert_allclose(got["ssh_std"].values, std.values, rtol=1e-5, atol=1e-6)
            assert got["ssh_std"].attrs["standard_name"].endswith(" standard_error")
            assert got["ssh_std"].attrs["long_name"].startswith("standard deviation")
        else:
            assert std is None and "ssh_std" not in got


def test_value_gradient_wasserstein_compares_distributions_not_pairs():
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 1, 16, 16, generator=gen)
    m = torch.ones_like(x, dtype=torch.bool)
    sw = methods.value_gradient_wasserstein
    shuffled = x.flip(0).flip(1)  # the same fields in another order: same statistics
    smooth = (x + x.roll(1, -1) + x.roll(1, -2) + x.roll((1, 1), (-2, -1))) / 4
    assert float(sw(shuffled, x, m)) < 0.01 < float(sw(smooth, x, m))
    assert float(((shuffled - x) ** 2).mean()) > 1.0  # while point-wise it is far off


@pytest.mark.parametrize("on", ["fields", "spectra"])
def test_unet_trains_with_a_discriminator_and_the_wasserstein_term(tmp_path, on):
    """``unet.adversarial.weight > 0`` trains beside a patch discriminator (both losses logged);
    the artifact is the generator's, and it reconstructs like any unet."""
    import csv

    ds = make_field(nt=30, ny=16, nx=16, grid="projected", land=False, seed=0)
    ds["ssh_obs"] = ds["ssh"].where(np.random.default_rng(0).random(ds["ssh"].shape) < 0.2)
    data = _data(ds, {"time": 4, "y": 16, "x": 16})
    section = validate(
        {
            "model": {"depth": 1, "width": 4},
            "loss": {"mse": 1.0, "sliced_wasserstein": 0.1},
            "adversarial": {
                "weight": 0.05,
                "on": on,
                "width": 4,
                "n_layers": 2,
                "spectrum_bins": 4,
            },
            "train": {"max_epochs": 1, "progress_bar": False},
        },
        methods.UNetSection,
    )
    out = tmp_path / "unet.ckpt"
    methods.METHODS["unet"].fit(section, data, out, work_dir=tmp_path, key="k", metadata={})
    with open(tmp_path / "logs" / "unet" / "metrics.csv") as f:
        header = next(csv.reader(f))
    for name in ("train/adv_d_epoch", "train/adv_g_epoch", "train/sliced_wasserstein_epoch"):
        assert name in header, header
    mean, _ = methods.METHODS["unet"].reconstruct(section, data, out, data.splits["val"])
    assert np.isfinite(mean.values).all()
