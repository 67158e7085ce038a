"""Dynamics learning on Lorenz systems: simulate -> train -> evaluate -> report.

Trajectories of the true system (optionally noisy: "learning from noisy data") or from a file train
a model of the dynamics; it is scored on separate clean test trajectories (forecast RMSE against
lead, leading Lyapunov exponent, statistics of a long free rollout). The numerics are
:mod:`geodl.methods.dynamics` (shared with the Python API :mod:`geodl.dynamics`), the figures
:mod:`geodl.tasks.dynamics_report`: this module is wiring.

Python use::

    from geodl.pipeline import run_experiment
    from geodl.tasks import load_config

    cfg, exp = load_config("configs/l63_dynamics_quick.yaml", ["model.kind=neural_ode"])
    run_experiment(cfg, exp, "runs/l63_node")  # runs/l63_node/metrics.json, report/index.html
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
from pydantic import Field, model_validator

from geodl.config import Section
from geodl.methods.dynamics import (
    ModelSection,
    check_setup,
    denoise_scores,
    method_name,
    read_dynamics_checkpoint,
    read_trajectory_file,
    restore_dynamics_model,
    save_dynamics_model,
    score_dynamics,
    simulate_trajectories,
    split_train_val_test,
    train_dynamics,
)
from geodl.pipeline import Experiment, Stage, StageContext
from geodl.tasks.dynamics_report import write_dynamics_report
from geodl.tasks.registry import ExperimentSection, register
from geodl.training import TrainSection

__all__ = ["DynamicsConfig"]


# ----- configuration -----------------------------------------------------------------------
class DataSection(Section):
    """Trajectories from a file instead of the simulator (``simulate`` then only names the system
    whose true vector field scores the learned exponent)."""

    path: str | None = Field(
        None, description="NetCDF with VARIABLE(time, component) or (trajectory, time, component)"
    )
    variable: str = "state"


class SimulateSection(Section):
    system: Literal["lorenz63", "lorenz96"] = "lorenz63"
    n_components: int = Field(40, ge=4, description="lorenz96 only")
    forcing: float = 8.0
    dt: float = Field(0.01, gt=0)
    spinup_steps: int = Field(1000, ge=0)
    n_train_trajectories: int = Field(8, gt=0)
    n_val_trajectories: int = Field(2, gt=0)
    n_test_trajectories: int = Field(4, gt=0)
    n_steps: int = Field(2000, gt=0, description="steps of each train/val/test trajectory")
    noise_std: float = Field(0.0, ge=0, description="observation noise on train/val data")
    seed: int = 0


class EvaluateSection(Section):
    lead_steps: int = Field(300, gt=0)
    n_forecasts: int = Field(64, gt=0, description="initial conditions per test trajectory: spread")
    lyapunov_steps: int = Field(2000, gt=0)
    lyapunov_transient: int = Field(500, ge=0)
    lyapunov_trajectories: int = Field(2, gt=0)
    long_steps: int = Field(20000, gt=0)
    bins: int = Field(40, gt=1)
    bound: float = Field(
        5.0, gt=0, description="left the attractor: a normalised component beyond this"
    )
    near: float = Field(0.25, gt=0, description="normalised distance counted 'on the attractor'")


class DynamicsConfig(Section):
    experiment: ExperimentSection
    data: DataSection = DataSection()
    simulate: SimulateSection = SimulateSection()
    model: ModelSection = ModelSection()
    train: TrainSection = TrainSection(max_epochs=30, batch_size=128, lr=1e-2, progress_bar=False)
    evaluate: EvaluateSection = EvaluateSection()

    @model_validator(mode="after")
    def _runnable(self) -> DynamicsConfig:
        """What the config alone shows fails here, before any stage (simulated trajectories have
        ``n_steps + 1`` states; a file's length is known when the stages read it)."""
        n_time = None if self.data.path else self.simulate.n_steps + 1
        sim = None if self.data.path else (self.simulate.system, self.simulate.forcing)
        check_setup(self.model, n_time=n_time, lead_steps=self.evaluate.lead_steps, system=sim)
        return self


# ----- stages ------------------------------------------------------------------------------
def _external(cfg: Any) -> list[Path]:
    return [Path(cfg.data.path)] if cfg.data.path else []


def _simulate(ctx: StageContext) -> None:
    s, d = ctx.cfg.simulate, ctx.cfg.data
    if d.path:
        traj, dt = read_trajectory_file(d.path, d.variable)
        parts = {
            k: ((f"trajectory_{k}", f"time_{k}", "component"), v)
            for k, v in split_train_val_test(traj).items()
        }
        coords = {}
        title = f"trajectories for dynamics learning from {d.path}"
        source = f"file {d.path}, variable {d.variable}"
    else:
        runs = simulate_trajectories(
            s.system,
            dict(
                train=s.n_train_trajectories, val=s.n_val_trajectories, test=s.n_test_trajectories
            ),
            n_steps=s.n_steps,
            dt=s.dt,
            spinup_steps=s.spinup_steps,
            n_components=s.n_components,
            forcing=s.forcing,
            noise_std=s.noise_std,
            seed=s.seed,
        )
        parts = {
            k: ((f"trajectory_{k.removesuffix('_clean')}", "time", "component"), v)
            for k, v in runs.items()
        }
        dt, coords = s.dt, {"time": np.arange(s.n_steps + 1) * s.dt}
        title = f"{s.system} trajectories for dynamics learning"
        source = f"geodl.sim {s.system}: {s.model_dump_json()}"
    attrs = {"title": title, "source": source, "dt": dt, "Conventions": "CF-1.8"}
    xr.Dataset(parts, coords=coords, attrs=attrs).to_netcdf(ctx.output("trajectories.nc"))


def _train(ctx: StageContext) -> None:
    cfg = ctx.cfg
    dump = cfg.model_dump(mode="json")
    with xr.open_dataset(ctx.input("trajectories.nc")) as ds:
        train, val, dt = ds["train"].values, ds["val"].values, float(ds.attrs["dt"])
    model, meta, states = train_dynamics(
        train,
        val,
        cfg.model,
        cfg.train.model_copy(update={"seed": cfg.train.seed + cfg.experiment.seed}),
        ckpt_dir=ctx.run_dir / "checkpoints" / "dynamics",
        log_dir=ctx.run_dir / "logs" / "dynamics",
        key=json.dumps(
            {**{k: dump[k] for k in ("simulate", "model", "train")}, "seed": cfg.experiment.seed},
            sort_keys=True,
        ),
        dt=dt,
    )
    if states is not None:
        xr.Dataset(
            {"states": (("trajectory", "time", "component"), states)},
            attrs={"comment": "training states estimated jointly with the model (noisy data)"},
        ).to_netcdf(ctx.output("model/states.nc"))
    save_dynamics_model(ctx.output("model/model.pt"), model, {**meta, "dt": dt, "config": dump})


def _evaluate(ctx: StageContext) -> None:
    ev, s, m = ctx.cfg.evaluate, ctx.cfg.simulate, ctx.cfg.model
    state_dict, meta = read_dynamics_checkpoint(ctx.input("model/model.pt"))
    net = restore_dynamics_model(m, meta["dim"], state_dict)
    states_file = ctx.input("model/states.nc")
    denoise: dict[str, float] = {}
    with xr.open_dataset(ctx.input("trajectories.nc")) as ds:
        test = ds["test"].values  # (B, T, D), clean
        if "train_clean" in ds and states_file.exists():
            with xr.open_dataset(states_file) as st:
                denoise = denoise_scores(
                    ds["train"].values, st["states"].values, ds["train_clean"].values
                )
    t0 = time.perf_counter()
    res = score_dynamics(
        net,
        test,
        mean=np.asarray(meta["mean"]),
        std=np.asarray(meta["std"]),
        dt=meta["dt"],
        system=s.system,
        n_components=s.n_components,
        forcing=s.forcing,
        lead_steps=ev.lead_steps,
        n_forecasts=ev.n_forecasts,
        lyapunov_steps=ev.lyapunov_steps,
        lyapunov_transient=ev.lyapunov_transient,
        lyapunov_trajectories=ev.lyapunov_trajectories,
        long_steps=ev.long_steps,
        bins=ev.bins,
        bound=ev.bound,
        near=ev.near,
    )
    name = method_name(m)
    scores = {**res.scores, **denoise, "time_s": round(time.perf_counter() - t0, 2)}
    ctx.log.info("dynamics %s: %s", name, scores)
    metrics = {
        "task": "dynamics",
        "methods": {name: scores},
        "units": {"rmse_step_1": "1", "lyapunov": "1/time", "skill_horizon_lt": "Lyapunov times"},
        "lyapunov_reference": res.lyapunov_reference,
        "hist_distance_per_variable": res.hist_distance.tolist(),
    }
    ctx.output("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    res.forecast_dataset().to_netcdf(ctx.output("forecast.nc"))


EXPERIMENT = register(
    Experiment(
        task="dynamics",
        schema=DynamicsConfig,
        stages=(
            Stage(
                "simulate",
                _simulate,
                sections=("simulate", "data"),
                outputs=("trajectories.nc",),
                external_inputs=_external,
            ),
            Stage(
                "train",
                _train,
                sections=("model", "train", "experiment.seed"),
                needs=("simulate",),
                outputs=("model",),
            ),
            Stage(
                "evaluate",
                _evaluate,
                sections=(
                    "evaluate",
                    "model",  # rebuilds the network and names the method
                    "simulate.system",
                    "simulate.n_components",
                    "simulate.forcing",
                ),
                needs=("simulate", "train"),
                outputs=("metrics.json", "forecast.nc"),
            ),
            Stage(
                "report",
                write_dynamics_report,
                sections=("experiment.name",),
                needs=("simulate", "evaluate"),
                outputs=("report",),
            ),
        ),
    )
)
