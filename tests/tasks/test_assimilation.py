"""Assimilation task: methods, DAPPER-style scores, external twin files and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from geodl.cli import main
from geodl.errors import DataError
from geodl.methods.assimilation import _learned_3dvar, _load_net, read_twin_file
from geodl.pipeline import run_experiment
from geodl.tasks import load_config

QUICK = "configs/l63_assimilation_quick.yaml"
FAST = [
    "simulate.n_trajectories=2",
    "simulate.n_steps=300",
    "evaluate.methods=[linear, climatology, threedvar, enkf, enks, fourdvar]",
    "evaluate.threedvar.scale=[0.05, 0.1]",
    "evaluate.threedvar.clim_steps=2000",
    "evaluate.enkf.lag=50",
    "evaluate.fourdvar.n_iter=10",
    "evaluate.burn_in=50",
]


def run(tmp_path, name, overrides):
    cfg, exp = load_config(QUICK, [*FAST, *overrides])
    out = tmp_path / name
    run_experiment(cfg, exp, out, echo=lambda s: None)
    return json.loads((out / "metrics.json").read_text()), out


def write_twin(path, truth, obs, dt=0.01, **attrs):
    ds = xr.Dataset(
        {"truth": (("time", "component"), truth), "obs": (("time", "component"), obs)},
        coords={"time": np.arange(truth.shape[0]) * dt},
        attrs={"dt": dt, **attrs},
    )
    ds.to_netcdf(path)
    return path


def test_methods_table_and_external_file_give_the_same_scores(tmp_path):
    metrics, out = run(tmp_path, "sim", [])
    m = metrics["methods"]
    assert set(m) == {
        "linear",
        "climatology",
        "threedvar",
        "enkf",
        "enks",
        "fourdvar",
        "observations",
    }
    for name in ("threedvar", "enkf", "enks", "fourdvar"):
        # with the true model every DA method beats the raw observations at analysis times
        assert m[name]["rmse_analysis"] < 0.7 * m["observations"]["rmse_analysis"], name
        assert m[name]["rmse_std"] >= 0
    assert m["enks"]["rmse"] < m["enkf"]["rmse"]  # the smoother also sees later observations
    assert set(metrics["tuning"]) == {
        "enkf@1.02",
        "enkf@1.05",
        "enks@1.02",
        "enks@1.05",
        "threedvar@0.05",
        "threedvar@0.1",
    }
    assert metrics["tuned_on"].startswith("separate twin")
    # DAPPER's convention, filters and smoothers apart: the ETKS's filter is the ETKF's run
    assert m["enks"]["rmse_a"] == m["enkf"]["rmse_a"]
    assert m["enks"]["rmse_s"] < m["enkf"]["rmse_a"]
    assert "rmse_s" not in m["enkf"] and "rmse_a" not in m["fourdvar"]
    assert 0 < m["enkf"]["spread_a"] < 2
    assert m["enkf"]["inflation"] in (1.02, 1.05)
    assert m["threedvar"]["background_scale"] in (0.05, 0.1)
    assert m["enkf"]["rmse_analysis"] < m["threedvar"]["rmse_analysis"]  # flow-dependent B helps
    table = (out / "report" / "table.md").read_text()
    assert "| enkf |" in table and " ± " in table
    filters, smoothers = table.split("Smoothers")
    assert "| enkf |" in filters and "| enks |" in smoothers and "| fourdvar |" in smoothers
    assert "| fourdvar |" not in filters and "| threedvar |" not in smoothers
    # The same twin experiment as an external file (second trajectory) is scored the same way.
    with xr.open_dataset(out / "truth.nc") as t, xr.open_dataset(out / "obs.nc") as o:
        path = write_twin(tmp_path / "twin.nc", t["truth"].values[1], o["obs"].values[1])
    ext, _ = run(tmp_path, "ext", [f"data.path={path}", "evaluate.methods=[linear]"])
    linear = np.sqrt(
        np.mean(
            (
                xr.open_dataset(out / "analysis.nc")["linear"].values[1, 50:]
                - t["truth"].values[1, 50:]
            )
            ** 2
        )
    )
    assert ext["n_trajectories"] == 1
    assert ext["methods"]["linear"]["rmse"] == pytest.approx(linear, rel=1e-9)


def test_read_twin_file_accepts_2d_and_3d(tmp_path):
    truth = np.zeros((6, 3))
    obs = np.full((6, 3), np.nan)
    obs[::2] = 1.0
    t, o, dt = read_twin_file(write_twin(tmp_path / "a.nc", truth, obs, dt=0.05))
    assert t.shape == o.shape == (1, 6, 3) and dt == 0.05


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: None, "not found"),
        (
            lambda p: xr.Dataset(
                {
                    "truth": (("t", "component"), np.zeros((5, 3))),
                    "obs": (("t", "component"), np.zeros((5, 3))),
                },
                attrs={"dt": 0.01},
            ).to_netcdf(p),
            r"dims \('t', 'component'\); expected \(time, component\)",
        ),
        (
            lambda p: xr.Dataset(
                {
                    "truth": (("time", "x"), np.zeros((5, 3))),
                    "obs": (("time", "x"), np.zeros((5, 3))),
                },
                attrs={"dt": 0.01},
            ).to_netcdf(p),
            r"dims \('time', 'x'\)",
        ),
        (
            lambda p: xr.Dataset(
                {
                    "truth": (("trajectory", "time", "component"), np.zeros((2, 5, 3))),
                    "obs": (("time", "component"), np.zeros((5, 3))),
                },
                attrs={"dt": 0.01},
            ).to_netcdf(p),
            "is not on the grid of truth",
        ),
        (
            lambda p: xr.Dataset(
                {
                    "truth": (("time", "component"), np.zeros((5, 3))),
                    "obs": (("time", "component"), np.zeros((5, 3))),
                },
                coords={"time": [0.0, 0.01, 0.02, 0.05, 0.06]},
                attrs={"dt": 0.01},
            ).to_netcdf(p),
            "differ from dt=0.01",
        ),
        (
            lambda p: xr.Dataset(
                {
                    "truth": (("time", "component"), np.zeros((5, 3))),
                    "obs": (("time", "component"), np.zeros((5, 3))),
                },
            ).to_netcdf(p),
            "missing global attribute 'dt'",
        ),
        (
            lambda p: xr.Dataset(
                {"truth": (("time", "component"), np.zeros((5, 3)))}, attrs={"dt": 0.01}
            ).to_netcdf(p),
            "no variable 'obs'",
        ),
        (
            lambda p: xr.Dataset(
                {
                    "truth": (("time", "component"), np.zeros((5, 3))),
                    "obs": (("time", "component"), np.full((5, 3), np.nan)),
                },
                attrs={"dt": 0.01},
            ).to_netcdf(p),
            "obs is all NaN",
        ),
    ],
)
def test_bad_twin_files(tmp_path, make, match):
    path = tmp_path / "bad.nc"
    make(path)
    with pytest.raises(DataError, match=match):
        read_twin_file(path)


def test_bad_twin_file_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "bad.nc"
    xr.Dataset({"truth": (("time", "component"), np.zeros((5, 3)))}, attrs={"dt": 0.01}).to_netcdf(
        path
    )
    code = main(["run", QUICK, "--out", str(tmp_path / "r"), "--set", f"data.path={path}"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no variable 'obs'" in err[0]


def test_window_longer_than_the_data_is_a_clear_error(tmp_path, capsys):
    truth = np.random.default_rng(0).normal(size=(60, 3))
    obs = np.where(np.arange(60)[:, None] % 8 == 0, truth, np.nan)
    path = write_twin(tmp_path / "short.nc", truth, obs)
    args = ["run", QUICK, "--out", str(tmp_path / "r"), "--set", f"data.path={path}"]
    assert main([*args, "--set", "evaluate.methods=[fourdvar]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evaluate.fourdvar.window=200 is longer than the data (60" in err[0]
    assert main([*args, "--set", "evaluate.methods=[fourdvarnet]"]) == 2
    assert "fourdvarnet.window=200 is longer than the data (60" in capsys.readouterr().err
    assert main([*args, "--set", "evaluate.burn_in=60", "--set", "evaluate.methods=[linear]"]) == 2
    assert "leaves nothing to score" in capsys.readouterr().err


def test_learned_methods_train_and_learned_4dvar_beats_observations(tmp_path):
    metrics, out = run(
        tmp_path,
        "learned",
        [
            "evaluate.methods=[linear, enkf, fourdvarnet, fourdvar_learned, enkf_learned, "
            "ienks_learned]",
            "evaluate.ienks.inflation=[1.02]",
            "evaluate.ienks.n_iter=3",
            "fourdvarnet.window=100",
            "fourdvarnet.n_iter=2",
            "fourdvarnet.n_train_steps=300",
            "fourdvarnet.n_train_trajectories=1",
            "fourdvarnet.prior_pretrain_iter=100",
            "fourdvarnet.init=filter",
            "fourdvarnet.freeze_prior=true",
            "train.max_epochs=1",
            "evaluate.fourdvar.window=100",
        ],
    )
    m = metrics["methods"]
    assert (out / "model" / "fourdvarnet.pt").exists()
    assert np.isfinite(m["fourdvarnet"]["rmse"])
    # the solver's first guess, cycled 3D-Var with the learned prior, already beats the obs
    ckpt = torch.load(out / "model" / "fourdvarnet.pt", weights_only=True)
    model, mean, std = _load_net(out / "model" / "fourdvarnet.pt")
    with xr.open_dataset(out / "truth.nc") as t, xr.open_dataset(out / "obs.nc") as o:
        truth, obs = t["truth"].values, o["obs"].values
    norm = {"mean": mean.tolist(), "std": std.tolist()}
    guess = _learned_3dvar(model.prior, obs, norm, ckpt["geodl"]["background"], 2**0.5)
    at = np.isfinite(obs)
    assert np.sqrt(np.mean((guess - truth)[at] ** 2)) < 0.8 * np.sqrt(
        np.mean((obs - truth)[at] ** 2)
    )
    # the prior, fitted to true windows, is a good enough model for 4D-Var
    assert m["fourdvar_learned"]["rmse_analysis"] < 0.7 * m["observations"]["rmse_analysis"]
    # and for the ETKF (a learned filter: past observations only) and the iEnKS (a smoother)
    assert m["enkf_learned"]["rmse_a"] < 1.5 * m["enkf"]["rmse_a"]
    assert "rmse_s" not in m["enkf_learned"]
    assert m["ienks_learned"]["rmse_s"] < m["enkf_learned"]["rmse_a"]
    assert {"enkf@1.02", "enkf_learned@1.02", "ienks_learned@1.02"} <= set(metrics["tuning"])
    # the trained model file works in the Python API and scores as in the task
    import geodl.assimilation as da
    from geodl.errors import UserInputError

    model_file = out / "model" / "fourdvarnet.pt"
    obs_da = xr.DataArray(obs, dims=("trajectory", "time", "component"), attrs={"dt": 0.01})
    truth_da = xr.DataArray(truth, dims=("trajectory", "time", "component"))
    res = da.assimilate(obs_da, obs_std=2**0.5, method="fourdvarnet", model=model_file)
    api = da.score(res["analysis"], truth_da, obs=obs_da, burn_in=50)
    assert api["rmse"] == pytest.approx(m["fourdvarnet"]["rmse"], rel=1e-5)
    with pytest.raises(DataError, match="trained for observation noise std"):
        da.assimilate(obs_da, obs_std=0.5, method="fourdvarnet", model=model_file)
    with pytest.raises(DataError, match="fewer than the 4DVarNet's window of 100"):
        da.assimilate(
            obs_da.isel(time=slice(0, 50)), obs_std=2**0.5, method="fourdvarnet", model=model_file
        )
    with pytest.raises(UserInputError, match="needs model= the file of a trained 4DVarNet"):
        da.assimilate(obs_da, obs_std=2**0.5, method="fourdvarnet")


def test_l96_local_prior_makes_learned_4dvar_beat_3dvar(tmp_path):
    """The stencil prior, fitted to a few true windows, is as good a model as the truth's own."""
    cfg, exp = load_config(
        "configs/l96_assimilation_quick.yaml",
        [
            "simulate.n_steps=150",
            "evaluate.methods=[threedvar, fourdvarnet, fourdvar_learned]",
            "evaluate.threedvar.scale=[0.02]",
            "evaluate.threedvar.clim_steps=1000",
            "evaluate.fourdvar.n_iter=10",
            "fourdvarnet.n_iter=2",
            "fourdvarnet.n_train_steps=100",
            "fourdvarnet.n_train_trajectories=1",
            "train.max_epochs=1",
        ],
    )
    assert cfg.fourdvarnet.prior == "local"
    run_experiment(cfg, exp, tmp_path / "l96", echo=lambda s: None)
    m = json.loads((tmp_path / "l96" / "metrics.json").read_text())["methods"]
    assert m["fourdvar_learned"]["rmse_analysis"] < m["threedvar"]["rmse_analysis"]
    assert np.isfinite(m["fourdvarnet"]["rmse"])


def test_bad_local_prior_stencil_exits_2(tmp_path, capsys):
    args = ["run", "configs/l96_assimilation_quick.yaml", "--out", str(tmp_path / "r")]
    assert main([*args, "--set", "fourdvarnet.stencil=4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fourdvarnet.stencil=4: the local prior needs an odd stencil" in err[0]


def _stage_keys(overrides):
    """Cache key of every stage for ``overrides`` of the quick config, computed without running."""
    from geodl.pipeline import stage_key

    cfg, exp = load_config(QUICK, overrides)
    stages = exp.resolve(cfg).stages
    upstream = {s.name: "same upstream" for s in stages}
    return {s.name: stage_key(s, cfg, Path("unused"), upstream) for s in stages}


def test_train_key_holds_what_train_reads_only():
    base = _stage_keys([])
    tuned = _stage_keys(["evaluate.enkf.inflation=[1.1]"])
    assert tuned["train"] == base["train"]  # tuning the EnKF does not retrain 4DVarNet
    assert tuned["evaluate"] != base["evaluate"]
    for change in ("fourdvarnet.n_iter=3", "train.lr=0.01", "observe.every=4"):
        assert _stage_keys([change])["train"] != base["train"], change
    assert _stage_keys(["evaluate.burn_in=10"])["train"] == base["train"]
    assert _stage_keys(["observe.seed=5"])["train"] == base["train"]  # train draws its own obs


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("fourdvarnet.stencil=4", "fourdvarnet.stencil=4: the local prior needs an odd stencil"),
        ("fourdvarnet.stencil=41", "no wider than the state (40 components)"),
        ("fourdvarnet.n_train_steps=20", "fourdvarnet.window=40 is longer than the training"),
        ("evaluate.burn_in=301", "evaluate.burn_in=301 leaves nothing to score in 301 time steps"),
        ("observe.noise_std=0", "observe.noise_std is 0; threedvar, enkf"),
        ("observe.components=[3,40]", "observe.components [40] are outside the state's 40"),
        ("evaluate.fourdvar.window=302", "evaluate.fourdvar.window=302 is longer than the data"),
        ("fourdvarnet.seed=-1000", "fourdvarnet.seed=-1000 makes the simulated set of seed 0"),
        ("evaluate.tuning_seed=0", "evaluate.tuning_seed=0 makes the simulated set of seed 0"),
        ("evaluate.threedvar.clim_seed=0", "clim_seed=0 makes the simulated set of seed 0, the"),
        ("evaluate.fourdvar.shift=41", "shift=41 exceeds window=40; use shift <= window"),
    ],
)
def test_config_mistakes_fail_at_validation_before_any_stage(capsys, override, message):
    """Before, each of these passed ``geodl config validate`` and failed stages later (after
    the simulation, some after training)."""
    assert (
        main(["config", "validate", "configs/l96_assimilation_quick.yaml", "--set", override]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert "got a mapping" not in err[0]


def test_the_scored_truth_shares_no_state_with_what_the_methods_learn_or_tune_on():
    """The learned method's training, validation and climatology sets, 3D-Var's climatology and
    the tuning twin are simulated apart from the scored truth: no state of the truth appears in
    any of them (before, the learned method's climatology was the truth's own simulation)."""
    from geodl.methods import assimilation as da
    from geodl.tasks.assimilation import _twin

    cfg, _ = load_config(QUICK, [])
    s, o, n = cfg.simulate, cfg.observe, cfg.fourdvarnet
    truth = da.twin_truth(None, s.system, **s.model_dump(exclude={"system"}))["truth"].values
    obs = da.twin_observations(
        xr.Dataset({"truth": (("trajectory", "time", "component"), truth)}, attrs={"dt": s.dt}),
        None,
        **o.model_dump(),
    )["obs"].values
    sets = da.training_sets(
        n,
        system=s.system,
        forcing=s.forcing,
        spinup_steps=s.spinup_steps,
        dt=s.dt,
        dim=3,
        every=o.every,
        components=o.components,
        obs_std=o.noise_std,
    )
    seen = {name: states for name, (states, _) in sets.items()}
    twin = _twin(cfg, truth, obs, s.dt, None)
    seen["tuning"] = twin.tuning.truth
    th = cfg.evaluate.threedvar
    seen["threedvar climatology"] = simulate_lorenz_states(s, th.clim_steps, th.clim_seed)

    def cells(states):
        return set(map(tuple, np.round(states.reshape(-1, 3), 4).tolist()))

    scored = cells(truth)
    for name, states in seen.items():
        assert not scored & cells(states), name
    # and the check can fail: the truth's own simulation shares every state with it
    assert scored <= cells(simulate_lorenz_states(s, s.n_steps, s.seed, s.n_trajectories))


def simulate_lorenz_states(s, n_steps, seed, n_trajectories=1):
    from geodl.sim import simulate_lorenz

    return simulate_lorenz(
        s.system,
        n_trajectories=n_trajectories,
        n_steps=n_steps,
        dt=s.dt,
        spinup_steps=s.spinup_steps,
        seed=seed,
    ).numpy()


def test_ienks_and_enkf_n_in_the_task(tmp_path):
    """The iEnKS gives a filter and a smoother estimate, each in its own table, tuned by rmse_s on
    the tuning twin; the EnKF-N needs no inflation grid."""
    metrics, out = run(
        tmp_path,
        "ienks",
        [
            "evaluate.methods=[enkf, enkf_n, ienks]",
            "evaluate.ienks.inflation=[1.0, 1.02]",
            "evaluate.ienks.n_iter=3",
        ],
    )
    m = metrics["methods"]
    assert m["ienks"]["rmse_s"] < m["ienks"]["rmse_a"] < 1.2 * m["enkf"]["rmse_a"]
    assert {"ienks@1", "ienks@1.02"} <= set(metrics["tuning"])
    assert not any(k.startswith("enkf_n@") for k in metrics["tuning"])
    assert m["enkf_n"]["rmse_a"] < 0.7 * m["observations"]["rmse_analysis_dapper"]
    table = (out / "report" / "table.md").read_text()
    filters, smoothers = table.split("Smoothers")
    assert "| ienks |" in filters and "| ienks |" in smoothers and "| enkf_n |" in filters


def test_ienks_shift_beyond_lag_is_a_config_error(capsys):
    args = ["config", "validate", QUICK, "--set", "evaluate.ienks.lag=2"]
    assert main([*args, "--set", "evaluate.ienks.shift=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shift=3 exceeds lag=2" in err[0], err


def test_cycled_fourdvar_in_the_task_is_a_smoother_and_a_filter(tmp_path):
    """Overlapping windows with a background from the previous one beat independent windows."""
    base = ["evaluate.fourdvar.window=101", "evaluate.fourdvar.n_iter=30"]
    cyc, _ = run(
        tmp_path,
        "cyc",
        [*base, "evaluate.methods=[fourdvar]", "evaluate.fourdvar.shift=25"],
    )
    ind, _ = run(tmp_path, "ind", [*base, "evaluate.methods=[fourdvar]"])
    c, i = cyc["methods"]["fourdvar"], ind["methods"]["fourdvar"]
    assert c["rmse_s"] < i["rmse_s"] and "rmse_a" in c and "rmse_a" not in i
    assert c["rmse_a"] < 0.7 * cyc["methods"]["observations"]["rmse_analysis_dapper"]


def test_fourdvarnet_from_the_learned_ienks_first_guess(tmp_path):
    """init: ienks starts the learned solver from the iEnKS smoother run with the learned prior:
    the first guess is exactly ienks_learned's estimate (same prior, inflation, members)."""
    from geodl.methods.assimilation import FourDVarNetSection, _first_guess

    metrics, out = run(
        tmp_path,
        "init_ienks",
        [
            "evaluate.methods=[fourdvarnet, ienks_learned]",
            "evaluate.ienks.inflation=[1.0]",
            "fourdvarnet.init=ienks",
            "fourdvarnet.window=100",
            "fourdvarnet.n_iter=2",
            "fourdvarnet.n_train_steps=300",
            "fourdvarnet.n_train_trajectories=1",
            "fourdvarnet.prior_pretrain_iter=100",
            "fourdvarnet.freeze_prior=true",
            "train.max_epochs=1",
        ],
    )
    model_file = out / "model" / "fourdvarnet.pt"
    model, mean, std = _load_net(model_file)
    meta = torch.load(model_file, weights_only=True)["geodl"]
    with xr.open_dataset(out / "obs.nc") as o, xr.open_dataset(out / "analysis.nc") as a:
        obs, smoother = o["obs"].values, a["ienks_learned"].values
    norm = {"mean": mean.tolist(), "std": std.tolist()}
    section = FourDVarNetSection(**meta["fourdvarnet"])
    guess = _first_guess(section, model.prior, obs, norm, meta["background"], 2**0.5)
    np.testing.assert_allclose(guess, smoother, rtol=0, atol=1e-5)
    assert np.isfinite(metrics["methods"]["fourdvarnet"]["rmse_s"])
