"""Dynamics task: training, forecast/Lyapunov/rollout scores, divergence reporting, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

from geodl.cli import main
from geodl.methods.dynamics import histogram_distance, leave_step
from geodl.pipeline import run_experiment
from geodl.tasks import load_config

QUICK = "configs/l63_dynamics_quick.yaml"
TINY = [
    "simulate.n_steps=300",
    "simulate.n_train_trajectories=2",
    "train.max_epochs=3",
    "evaluate.lead_steps=100",
    "evaluate.n_forecasts=4",
    "evaluate.lyapunov_steps=100",
    "evaluate.lyapunov_transient=0",
    "evaluate.long_steps=400",
]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dyn") / "run"
    cfg, exp = load_config(QUICK, TINY)
    run_experiment(cfg, exp, out, echo=lambda s: None)
    return out


def test_quick_run_scores_and_report(quick_run):
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert metrics["task"] == "dynamics" and metrics["lyapunov_reference"] == 0.906
    m = metrics["methods"]["bilinear_resnet"]
    for key in ("rmse_step_1", "rmse_step_8", "lyapunov", "hist_distance_mean"):
        assert np.isfinite(m[key]), key
    assert m["rmse_step_1"] < m["rmse_step_8"]  # errors grow with lead time
    assert 0.0 <= m["on_attractor_fraction"] <= 1.0
    assert 0.0 <= m["on_attractor_fraction_truth"] <= 1.0
    with xr.open_dataset(quick_run / "forecast.nc") as f:
        assert f.sizes["lead"] == 101
        assert np.isfinite(f["rollout"].values).all()  # never NaN-filled
    page = (quick_run / "report" / "index.html").read_text()
    assert "attractor.png" in page and "error_growth.png" in page


def test_task_model_loads_in_the_python_api(quick_run):
    """The task's model.pt is a geodl.dynamics model: its forecast is the task's long rollout."""
    from geodl.dynamics import DynamicsModel

    model = DynamicsModel.load(quick_run / "model" / "model.pt")
    with (
        xr.open_dataset(quick_run / "forecast.nc") as f,
        xr.open_dataset(quick_run / "trajectories.nc") as t,
    ):
        fc = model.forecast(t["test"].values[0, -1], n_steps=50)
        np.testing.assert_allclose(fc.values, f["rollout"].values[:51], rtol=1e-10, atol=1e-10)


def test_divergent_model_is_cut_and_reported(quick_run, tmp_path):
    """Blow up the learned field: the rollout leaves the attractor; the step is reported and the
    saved rollout stops there, finite."""
    ckpt = torch.load(quick_run / "model" / "model.pt", weights_only=True)
    ckpt["state_dict"]["linear.bias"] = ckpt["state_dict"]["linear.bias"] + 1.0
    torch.save(ckpt, quick_run / "model" / "model.pt")
    assert (
        main(
            [
                "stage",
                "evaluate",
                QUICK,
                "--out",
                str(quick_run),
                *sum((["--set", o] for o in TINY), []),
            ]
        )
        == 0
    )
    m = json.loads((quick_run / "metrics.json").read_text())["methods"]["bilinear_resnet"]
    assert m["left_attractor"] == 1.0
    step = m["left_attractor_at_step"]
    assert 0 < step <= 400 and m["rollout_steps"] == step - 1
    with xr.open_dataset(quick_run / "forecast.nc") as f:
        assert f.attrs["left_attractor_at_step"] == step
        assert f.sizes["step"] == step and np.isfinite(f["rollout"].values).all()


def test_noisy_data_states_estimated_jointly(tmp_path):
    """From noisy trajectories, the joint state + model fit removes most of the noise from the
    training states and scores them against the clean ones; without it there are no states."""
    noisy = [*TINY, "simulate.noise_std=0.5", "model.lbfgs_iter=60"]
    runs = {}
    for flag in ("false", "true"):
        cfg, exp = load_config(QUICK, [*noisy, f"model.estimate_states={flag}"])
        run_experiment(cfg, exp, tmp_path / flag, echo=lambda s: None)
        runs[flag] = json.loads((tmp_path / flag / "metrics.json").read_text())["methods"]
    plain, joint = runs["false"]["bilinear_resnet"], runs["true"]["bilinear_resnet"]
    assert "train_states_rmse" not in plain and not (tmp_path / "false/model/states.nc").exists()
    assert joint["train_data_rmse"] == pytest.approx(0.5, rel=0.1)  # the noise that was added
    assert joint["train_states_rmse"] < 0.5 * joint["train_data_rmse"]
    with xr.open_dataset(tmp_path / "true" / "model" / "states.nc") as st:
        assert st["states"].shape == (2, 301, 3)
    assert joint["rmse_step_8"] < plain["rmse_step_8"]


def test_histogram_distance_and_leave_step():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20000, 1))
    assert histogram_distance(a, rng.normal(size=(20000, 1)), 20)[0] < 0.05
    assert histogram_distance(a, 2.0 + a, 20)[0] > 0.5
    assert leave_step(np.zeros((5, 2)), 1.0) is None
    assert leave_step(np.array([[0.0, 0.0], [0.0, -3.0]]), 1.0) == 1


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("evaluate.lead_steps=400", "evaluate.lead_steps=400 is longer than the test trajectories"),
        ("model.rollout=400", "model.rollout=400 steps needs trajectories longer"),
        ("model.estimate_states=true", "model.estimate_states needs model.lbfgs_iter > 0"),
    ],
)
def test_config_errors(tmp_path, capsys, override, match):
    args = ["run", QUICK, "--out", str(tmp_path / "r"), "--set", "simulate.n_steps=300"]
    args += ["--set", "train.max_epochs=1", "--set", "model.lbfgs_iter=0", "--set", override]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


@pytest.fixture(scope="module")
def trajectory_file(tmp_path_factory):
    from geodl.tasks.simulate import lorenz_dataset

    path = tmp_path_factory.mktemp("traj") / "l63.nc"
    lorenz_dataset("lorenz63", n_trajectories=4, n_steps=300, dt=0.01, seed=9).to_netcdf(path)
    return path


def test_trajectories_from_a_file(trajectory_file, tmp_path):
    """A user's trajectory file replaces the simulator: 2 train, 1 val, 1 test trajectory."""
    out = tmp_path / "run"
    assert (
        main(
            ["run", QUICK, "--out", str(out), "--set", f"data.path={trajectory_file}"]
            + [x for o in TINY[2:] for x in ("--set", o)]
        )
        == 0
    )
    with xr.open_dataset(out / "trajectories.nc") as t:
        assert t["train"].shape == (2, 301, 3) and t["test"].shape == (1, 301, 3)
    m = json.loads((out / "metrics.json").read_text())["methods"]["bilinear_resnet"]
    assert m["rmse_step_1"] < m["rmse_step_8"]


def _file(tmp_path, trajectory_file, change):
    ds = xr.open_dataset(trajectory_file).load()
    ds = change(ds)
    path = tmp_path / "bad.nc"
    ds.to_netcdf(path)
    return path


@pytest.mark.parametrize(
    ("change", "extra", "match"),
    [
        (lambda ds: ds.rename(component="var"), [], "expected (time, component)"),
        (lambda ds: ds.rename(state="x"), [], "no variable 'state'"),
        # neither a time coordinate nor the ``dt`` attribute that geodl's own files carry
        (lambda ds: xr.Dataset(ds.drop_vars("time").data_vars), [], "no time step"),
        (lambda ds: ds.isel(time=slice(0, 60)), [], "evaluate.lead_steps=100 is longer"),
        (lambda ds: ds, ["model.rollout=400"], "model.rollout=400 steps needs trajectories"),
    ],
)
def test_bad_trajectory_files(tmp_path, capsys, trajectory_file, change, extra, match):
    path = _file(tmp_path, trajectory_file, change)
    args = ["run", QUICK, "--out", str(tmp_path / "r"), "--set", f"data.path={path}"]
    for o in [*TINY[2:], *extra]:
        args += ["--set", o]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


def test_missing_trajectory_file(tmp_path, capsys):
    args = ["run", QUICK, "--out", str(tmp_path / "r"), "--set", "data.path=nowhere.nc"]
    assert main(args) == 2
    assert "trajectory file 'nowhere.nc' not found" in capsys.readouterr().err
