"""Predictors of the mapping task: ``data.inputs`` / ``data.static``, ``land_channel``, the models'
``aux`` input, the checkpoint's record of it, and 4DVarNet's ``prior: conv_ae``.

The skill test runs the task twice on a tiny seeded twin (16 x 16 cells, 120 days, 5 % of the
cells observed): once with a predictor ``sst`` (the truth plus noise of 0.1 std, as SST maps the
fronts that SSH observations miss) and once without; the predictor must lower the test RMSE by a
stated margin. The whole file runs in well under a minute on one CPU thread.
"""

import hashlib
import json

import numpy as np
import pytest
import torch
import xarray as xr

from geodl.cli import main
from geodl.config import validate
from geodl.data.batch import Batch, build_aux
from geodl.errors import ConfigError, UserInputError
from geodl.methods.mapping import (
    FourDVarNetSection,
    MappingData,
    PatchSection,
    UNetSection,
    mapping_loss,
    write_reconstruction,
)
from geodl.models import DINCAE, FourDVarNet, UNet, build_model
from geodl.models.fourdvarnet import ConvAEPrior
from geodl.tasks.mapping import experiment
from geodl.testing import gaussian_twin

#: The predictor must bring the UNet's test RMSE below this fraction of the RMSE without it
#: (measured: 0.52, 0.344 against 0.666).
RMSE_RATIO = 0.7


def _yaml(tmp, extra=""):
    return f"""experiment: {{name: aux, task: mapping, seed: 0}}
data: {{path: {tmp / "truth.nc"}, variable: ssh}}
obs: {{kind: file, path: {tmp / "obs.nc"}, variable: ssh, noise_std: 0.05}}
split: {{train: [0, 89], val: [95, 104], test: [110, 119]}}
patch: {{time: 4, y: 16, x: 16}}
methods: [unet]
unet:
  model: {{depth: 2, width: 8}}
  train: {{max_epochs: 15, batch_size: 8, lr: 5.0e-3, progress_bar: false}}
report: {{days: [0]}}
{extra}"""


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("twin")
    truth, obs = gaussian_twin()
    truth.to_netcdf(tmp / "truth.nc")
    obs.to_netcdf(tmp / "obs.nc")
    cfg = tmp / "aux.yaml"
    cfg.write_text(_yaml(tmp))
    return tmp, cfg


@pytest.fixture(scope="module")
def runs(twin):
    tmp, cfg = twin
    out = {}
    for name, sets in (("with", ["--set", "data.inputs=[sst]"]), ("without", [])):
        assert main(["run", str(cfg), "--out", str(tmp / name), *sets]) == 0
        out[name] = tmp / name
    return out


# ----- config refusals -----------------------------------------------------------------------
def _raw(**over):
    raw = {
        "experiment": {"name": "aux", "task": "mapping"},
        "data": {"path": "truth.nc", "variable": "ssh"},
        "split": {"train": [0, 89], "val": [95, 104], "test": [110, 119]},
        "patch": {"time": 4, "y": 16, "x": 16},
        "methods": ["unet"],
    }
    raw.update(over)
    return raw


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"data": {"path": "t.nc", "inputs": ["ssh"]}}, "list the target 'ssh'"),
        ({"data": {"path": "t.nc", "inputs": ["sst"], "static": ["sst"]}}, "more than once"),
        ({"data": {"path": None, "static": ["depth"]}}, "need data.path"),
        (
            {"data": {"path": "t.nc", "inputs": ["sst"]}, "methods": ["fourdvarnet"]},
            "set fourdvarnet.model.first_guess: unet",
        ),
        ({"fourdvarnet": {"land_channel": True}}, "land_channel needs model.first_guess: unet"),
        ({"unet": {"model": {"aux_channels": 2}}}, "model keys ['aux_channels'] invalid"),
        (
            {
                "methods": ["unet", "fourdvarnet"],
                "unet": {"land_channel": True},
                "fourdvarnet": {"warm_start": "unet", "model": {"first_guess": "unet"}},
            },
            "unet.land_channel is True but fourdvarnet.land_channel is False",
        ),
    ],
)
def test_config_refusals_are_one_line(over, expected):
    with pytest.raises(ConfigError) as err:
        validate(_raw(**over), experiment().schema)
    msg = str(err.value)
    assert expected in msg and "\n" not in msg, msg


def test_aux_with_a_first_guess_validates():
    cfg = validate(
        _raw(
            data={"path": "t.nc", "inputs": ["sst"], "static": ["depth"]},
            methods=["fourdvarnet"],
            fourdvarnet={"land_channel": True, "model": {"first_guess": "unet"}},
        ),
        experiment().schema,
    )
    assert cfg.data.inputs == ["sst"] and cfg.fourdvarnet.land_channel
    assert cfg.unet.land_channel is False  # the default


def _cli_error(twin, capsys, *sets):
    tmp, cfg = twin
    code = main(["run", str(cfg), "--out", str(tmp / "refused"), *sets])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, (code, err)
    assert not (tmp / "refused" / "prepare.json").exists()
    return err[0]


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["data.inputs=[ssh]"], "list the target 'ssh'"),  # config: before any stage
        (["data.inputs=[salinity]"], "variable 'salinity' not found"),
        (["data.static=[depth_t]"], "a static variable needs exactly"),
        (["data.inputs=[depth]"], "a dynamic variable needs exactly"),
        (["data.inputs=[dead]"], "predictor 'dead' is NaN everywhere in the training split"),
    ],
)
def test_bad_predictors_exit_2_with_one_line(twin, capsys, sets, expected):
    line = _cli_error(twin, capsys, *(x for s in sets for x in ("--set", s)))
    assert expected in line, line


# ----- models ------------------------------------------------------------------------------
def _models(aux):
    fdv = {"n_iter": 1, "prior_hidden": 4, "lstm_hidden": 4, "first_guess": "unet"}
    return {
        "unet": UNet(1, 4, depth=1, width=4, aux_channels=aux),
        "unet3d": UNet(1, 4, depth=1, width=4, time_mode="conv3d", aux_channels=aux),
        "dincae": DINCAE(1, 4, depth=1, width=4, aux_channels=aux),
        "fourdvarnet": FourDVarNet(
            1, 4, **fdv, first_guess_depth=1, first_guess_width=4, aux_channels=aux
        ),
    }


@pytest.mark.parametrize("name", ["unet", "unet3d", "dincae", "fourdvarnet"])
def test_aux_shapes_and_refusals(name):
    torch.manual_seed(0)
    model = _models(2)[name]
    obs = torch.randn(3, 4, 1, 8, 8)
    mask = (torch.rand_like(obs) > 0.5).float()
    aux = torch.randn(3, 4, 2, 8, 8)
    out = model(obs, mask, aux)
    assert out.mean.shape == obs.shape
    # the aux channels are read: changing them changes the map
    assert not torch.allclose(model(obs, mask, aux + 1).mean, out.mean)
    with pytest.raises(UserInputError, match="no aux was given"):
        model(obs, mask)
    with pytest.raises(UserInputError, match=r"expected \(3, 4, 2, 8, 8\)"):
        model(obs, mask, aux[:, :, :1])
    with pytest.raises(UserInputError, match="aux_channels=0"):
        _models(0)[name](obs, mask, aux)


#: state dicts of the default models (aux_channels=0), as before the option existed:
#: sha256 of "key:shape;..." (first 16 hex digits) and number of entries.
GOLDEN = {
    "unet": (20, "3a2f0e9ba396bd0b"),
    "unet3d": (20, "edcd1c64ef0257b8"),
    "dincae": (22, "5b91f58e739c336c"),
    "fourdvarnet": (35, "bf4b332344f56f64"),
}


def _digest(model):
    sd = model.state_dict()
    text = ";".join(f"{k}:{tuple(v.shape)}" for k, v in sd.items())
    return len(sd), hashlib.sha256(text.encode()).hexdigest()[:16]


def test_default_state_dicts_are_unchanged():
    golden = {
        "unet": UNet(1, 3, depth=1, width=4),
        "unet3d": UNet(1, 3, depth=1, width=4, time_mode="conv3d"),
        "dincae": DINCAE(1, 3, depth=1, width=4),
        "fourdvarnet": FourDVarNet(
            1,
            4,
            n_iter=1,
            prior_hidden=4,
            lstm_hidden=4,
            first_guess="unet",
            first_guess_depth=1,
            first_guess_width=4,
        ),
    }
    assert {k: _digest(m) for k, m in golden.items()} == GOLDEN
    # aux channels widen the first convolution only: same keys
    for name, with_aux in _models(2).items():
        assert list(with_aux.state_dict()) == list(_models(0)[name].state_dict()), name


def test_fourdvarnet_aux_needs_a_first_guess():
    with pytest.raises(UserInputError, match="aux_channels=2 needs first_guess='unet'"):
        FourDVarNet(1, 4, aux_channels=2)


def _batch(b=2, t=4, h=8, w=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(b, t, 1, h, w, generator=gen)
    obs_mask = torch.rand(b, t, 1, h, w, generator=gen) > 0.7
    land = torch.zeros(b, 1, 1, h, w, dtype=torch.bool)
    land[..., :2, :2] = True
    return Batch(
        target=target,
        obs=torch.where(obs_mask, target, torch.zeros_like(target)),
        obs_mask=obs_mask,
        target_mask=torch.ones_like(obs_mask),
        land_mask=land,
        time_index=torch.arange(b),
        y0=torch.zeros(b, dtype=torch.long),
        x0=torch.zeros(b, dtype=torch.long),
        inputs=torch.randn(b, t, 2, h, w, generator=gen),
        static=torch.randn(b, 1, 1, h, w, generator=gen),
    )


def test_build_aux_stacks_inputs_static_and_land():
    batch = _batch()
    aux = build_aux(batch, land_channel=True)
    assert aux.shape == (2, 4, 4, 8, 8)
    torch.testing.assert_close(aux[:, :, :2], batch.inputs)
    torch.testing.assert_close(aux[:, :, 2:3], batch.static.expand(2, 4, 1, 8, 8))
    assert aux[:, :, 3, :2, :2].eq(1).all() and aux[:, :, 3].sum() == 2 * 4 * 4
    assert build_aux(batch).shape == (2, 4, 3, 8, 8)


# ----- conv_ae prior -----------------------------------------------------------------------
def test_conv_ae_prior_trains_a_step():
    section = validate(
        {"model": {"prior": "conv_ae", "n_iter": 2, "prior_hidden": 4, "lstm_hidden": 4,
                   "first_guess": "unet", "first_guess_depth": 1, "first_guess_width": 4},
         "land_channel": True},
        FourDVarNetSection,
        "fourdvarnet",
    )  # fmt: skip
    torch.manual_seed(0)
    net = build_model("fourdvarnet", in_channels=1, n_times=4, aux_channels=4, **section.model)
    assert isinstance(net.prior, ConvAEPrior)
    loss_fn = mapping_loss(section.loss, land_channel=True)
    batch = _batch()
    before = {n: p.detach().clone() for n, p in net.prior.named_parameters()}
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    terms = loss_fn(net.train(), batch)
    assert torch.isfinite(terms["loss"]) and terms["prior"] > 0
    terms["loss"].backward()
    for name, p in net.prior.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    opt.step()
    moved = [n for n, p in net.prior.named_parameters() if not torch.equal(p, before[n])]
    assert moved, "no parameter of the conv_ae prior changed"


# ----- end to end --------------------------------------------------------------------------
def test_informative_predictor_lowers_the_test_rmse(runs):
    rmse = {}
    for name, out in runs.items():
        rmse[name] = json.loads((out / "metrics.json").read_text())["methods"]["unet"]["rmse"]
    prep = json.loads((runs["with"] / "prepare.json").read_text())
    assert prep["predictors"] == {"inputs": ["sst"], "static": []}
    assert "sst" in prep["normalizer"]["variables"]  # training-split statistics
    assert rmse["with"] < RMSE_RATIO * rmse["without"], rmse


def _data(twin, run):
    tmp, _ = twin
    return MappingData.from_prepare(
        json.loads((run / "prepare.json").read_text()),
        tmp / "truth.nc",
        run / "obs.nc",
        variable="ssh",
        patch=PatchSection(time=4, y=16, x=16),
    )


def test_predict_refuses_other_aux_than_trained(twin, runs, tmp_path):
    section = validate({"model": {"depth": 2, "width": 8}}, UNetSection, "unet")
    ckpt = torch.load(runs["with"] / "models" / "unet.ckpt", weights_only=True)
    assert ckpt["geodl"]["aux"] == ["sst"]
    cases = [
        (_data(twin, runs["without"]), section, runs["with"], r"trained with auxiliary channels \['sst'\], this run gives \[\]"),
        (_data(twin, runs["with"]), section.model_copy(update={"land_channel": True}), runs["with"], r"gives \['sst', 'land_mask'\]"),
        (_data(twin, runs["with"]), section, runs["without"], r"trained with auxiliary channels \[\], this run gives \['sst'\]"),
    ]  # fmt: skip
    for data, sec, run, expected in cases:
        with pytest.raises(ConfigError, match=expected) as err:
            write_reconstruction(
                "unet",
                sec,
                data,
                run / "models" / "unet.ckpt",
                data.splits["test"],
                tmp_path / "p.nc",
                units="m",
                experiment="aux",
            )
        assert "\n" not in str(err.value)
    # the matching data predict
    data = _data(twin, runs["with"])
    path = write_reconstruction(
        "unet",
        section,
        data,
        runs["with"] / "models" / "unet.ckpt",
        data.splits["test"],
        tmp_path / "ok.nc",
        units="m",
        experiment="aux",
    )
    with xr.open_dataset(path) as ds:
        assert np.isfinite(ds["ssh"].values).all()


def test_static_land_channel_and_conv_ae_through_the_task(twin):
    tmp, _ = twin
    cfg = tmp / "fdv.yaml"
    cfg.write_text(
        _yaml(tmp).replace("methods: [unet]", "methods: [fourdvarnet]")
        + """fourdvarnet:
  land_channel: true
  loss: {mse: 1.0, prior: 0.1}
  model: {n_iter: 2, prior: conv_ae, prior_hidden: 4, lstm_hidden: 4, first_guess: unet,
          first_guess_depth: 1, first_guess_width: 4}
  train: {max_epochs: 1, batch_size: 8, progress_bar: false}
"""
    )
    out = tmp / "fdv"
    assert main(["run", str(cfg), "--out", str(out), "--set", "data.static=[depth]"]) == 0
    ckpt = torch.load(out / "models" / "fourdvarnet.ckpt", weights_only=True)
    assert ckpt["geodl"]["aux"] == ["depth", "land_mask"]
    assert "depth" in json.loads((out / "prepare.json").read_text())["normalizer"]["variables"]
    rmse = json.loads((out / "metrics.json").read_text())["methods"]["fourdvarnet"]["rmse"]
    assert np.isfinite(rmse)


def test_land_channel_through_the_python_api():
    import geodl.mapping
    from geodl.testing import make_field

    ds = make_field(nt=40, land=True)
    obs = ds["ssh"].where(np.random.default_rng(0).random(ds["ssh"].shape) < 0.2)
    model = geodl.mapping.fit(
        obs,
        ds["ssh"],
        method="dincae",
        land_channel=True,
        patch={"time": 4, "y": 16, "x": 24},
        model={"depth": 1, "width": 4},
        train={"max_epochs": 1, "batch_size": 4},
    )
    ckpt = torch.load(model.artifact, weights_only=True)
    assert ckpt["geodl"]["aux"] == ["land_mask"]
    out = model.reconstruct(obs[:8])
    assert out["mean"].shape == obs[:8].shape and "std" in out
