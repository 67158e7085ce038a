"""Twin data-assimilation experiment on Lorenz systems: simulate -> observe -> train -> evaluate -> report.

The truth is simulated (or read from any DA tool's twin-experiment file, ``data.path``), observed
sparsely with noise, and each method reconstructs the whole state trajectory from the observations
alone; scores are computed against the truth in DAPPER's convention (``rmse_a`` of the filters,
``rmse_s`` of the smoothers: the time mean of the instantaneous RMSE at analysis times after
``evaluate.burn_in`` steps, mean and std over trajectories), with tuned parameters chosen on a
separately simulated twin (``evaluate.tune_on``).

The methods (``evaluate.methods``), their settings (``evaluate.enkf``, ``evaluate.threedvar``,
``evaluate.fourdvar``, ``fourdvarnet``) and the learned 4DVarNet trained in the ``train`` stage
are those of :data:`geodl.methods.assimilation.METHODS`; this module only wires them into stages.

An external twin file is a NetCDF with ``truth(time, component)`` and ``obs(time, component)``
(NaN where unobserved; an optional leading ``trajectory`` dim) and a ``dt`` attribute; the true
model of ``enkf``/``fourdvar`` and the training data of ``fourdvarnet`` come from the ``simulate``
section (system, forcing), so it must describe the same system.

Python use::

    from geodl.pipeline import run_experiment
    from geodl.tasks import load_config

    cfg, exp = load_config("configs/l63_assimilation_quick.yaml", ["data.path=twin.nc"])
    result = run_experiment(cfg, exp, "runs/my_twin")  # metrics in runs/my_twin/metrics.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from pydantic import model_validator

from geodl.config import Section
from geodl.errors import DataError
from geodl.methods import assimilation as da
from geodl.methods.assimilation import (
    EvaluateSection,
    FourDVarNetSection,
    TwinDataSection,
    TwinObserveSection,
    TwinSimulateSection,
)
from geodl.pipeline import Experiment, Stage, StageContext
from geodl.tasks.registry import ExperimentSection, register
from geodl.training import TrainSection

__all__ = ["AssimilationConfig"]


class AssimilationConfig(Section):
    experiment: ExperimentSection
    data: TwinDataSection = TwinDataSection()
    simulate: TwinSimulateSection = TwinSimulateSection()
    observe: TwinObserveSection = TwinObserveSection()
    fourdvarnet: FourDVarNetSection = FourDVarNetSection()
    train: TrainSection = TrainSection(max_epochs=20, batch_size=32, lr=5e-3, progress_bar=False)
    evaluate: EvaluateSection = EvaluateSection()

    @model_validator(mode="after")
    def _runnable(self) -> AssimilationConfig:
        """What the config alone shows fails here, before any stage (a simulated twin's length
        and size are known now; an external file's when its stage reads it)."""
        s = self.simulate
        if self.data.path is None:
            _check(self, s.n_steps + 1, 3 if s.system == "lorenz63" else s.n_components)
        else:
            _check(self, None, None)
        return self


_check = da.check_twin_config


# the settings of the true model, and of the observations, that the train / evaluate stages read
_MODEL = ("simulate.system", "simulate.spinup_steps", "simulate.forcing")
_OBSERVED = ("observe.every", "observe.components", "observe.noise_std")


def _external(cfg: Any) -> list[Path]:
    return [Path(cfg.data.path)] if cfg.data.path else []


# ----- stages ------------------------------------------------------------------------------
def _simulate(ctx: StageContext) -> None:
    s = ctx.cfg.simulate
    options = s.model_dump(exclude={"system"})
    da.twin_truth(ctx.cfg.data.path, s.system, **options).to_netcdf(ctx.output("truth.nc"))


def _observe(ctx: StageContext) -> None:
    with xr.open_dataset(ctx.input("truth.nc")) as truth:
        obs = da.twin_observations(truth, ctx.cfg.data.path, **ctx.cfg.observe.model_dump())
    obs.to_netcdf(ctx.output("obs.nc"))


def _train(ctx: StageContext) -> None:
    """Train the learned DA model on windows of trajectories simulated apart from the truth."""
    cfg, n, s, o = ctx.cfg, ctx.cfg.fourdvarnet, ctx.cfg.simulate, ctx.cfg.observe
    out = ctx.output("model")
    out.mkdir(parents=True, exist_ok=True)
    if not any(da.METHODS[m].learned for m in cfg.evaluate.methods):
        (out / "README.txt").write_text("no learned method in evaluate.methods: nothing trained\n")
        return
    with xr.open_dataset(ctx.input("truth.nc")) as t:
        dt, dim, n_time = float(t.attrs["dt"]), int(t.sizes["component"]), int(t.sizes["time"])
    if s.system == "lorenz63" and dim != 3:
        raise DataError(f"truth has {dim} components but simulate.system is lorenz63 (3)")
    _check(cfg, n_time, dim)  # before training: an external file's sizes are known only now
    dumped = cfg.model_dump(mode="json")
    # fit's resume key: a record of what the training read, not a stage input
    key = {k: dumped[k] for k in ("simulate", "observe", "fourdvarnet", "train")}
    key["seed"] = cfg.experiment.seed
    da.train_fourdvarnet(
        n,
        cfg.train.model_copy(update={"seed": cfg.train.seed + cfg.experiment.seed}),
        out / "fourdvarnet.pt",
        system=s.system,
        forcing=s.forcing,
        spinup_steps=s.spinup_steps,
        dt=dt,
        dim=dim,
        every=o.every,
        components=o.components,
        obs_std=float(o.noise_std),
        ckpt_dir=ctx.run_dir / "checkpoints" / "fourdvarnet",
        log_dir=ctx.run_dir / "logs" / "fourdvarnet",
        key=json.dumps(key, sort_keys=True),
        metadata={"config": dumped},
    )


def _twin(
    cfg: Any, truth: np.ndarray, obs: Any, dt: float, model: Path | None
) -> da.TwinExperiment:
    """The scored twin of ``cfg``, with its tuning twin (``evaluate.tune_on``)."""
    ev = cfg.evaluate
    return da.twin_experiment(
        truth,
        obs,
        dt,
        cfg.simulate,
        obs_std=cfg.observe.noise_std,
        burn_in=ev.burn_in,
        model_file=model,
        tuning=None if ev.tune_on == "scored" else (ev.tuning_trajectories, ev.tuning_seed),
    )


def _evaluate(ctx: StageContext) -> None:
    cfg, ev = ctx.cfg, ctx.cfg.evaluate
    with xr.open_dataset(ctx.input("truth.nc")) as t, xr.open_dataset(ctx.input("obs.nc")) as o:
        truth, obs, dt = t["truth"].values, o["obs"].values, float(t.attrs["dt"])
    _check(cfg, truth.shape[1], truth.shape[2])
    if not np.isfinite(obs[:, ev.burn_in :]).any():
        raise DataError("no observation after evaluate.burn_in: nothing to score at analysis times")
    # each method runs with the section of its type: evaluate.enkf for enkf and enks, and so on
    by_type: dict[Any, Section] = {
        type(v): v for v in (ev.enkf, ev.ienks, ev.threedvar, ev.fourdvar, cfg.fourdvarnet)
    }
    runs = [(m, by_type.get(da.METHODS[m].section)) for m in ev.methods]
    twin = _twin(cfg, truth, obs, dt, ctx.input("model/fourdvarnet.pt"))
    results, estimates, tuning = da.assess(twin, runs, ctx.log)
    metrics = {
        "task": "assimilation",
        "methods": results,
        "units": {"rmse": "1", "rmse_analysis": "1", "time_s": "s"},
        "n_trajectories": int(truth.shape[0]),
        "burn_in": ev.burn_in,
        "tuning": tuning,
        "tuned_on": "scored twin"
        if ev.tune_on == "scored"
        else f"separate twin ({ev.tuning_trajectories} trajectories, seed {ev.tuning_seed})",
    }
    ctx.output("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    da.analysis_dataset(estimates).to_netcdf(ctx.output("analysis.nc"))


def _report(ctx: StageContext) -> None:
    from geodl.tasks.assimilation_report import write_assimilation_report

    write_assimilation_report(ctx)


EXPERIMENT = register(
    Experiment(
        task="assimilation",
        schema=AssimilationConfig,
        stages=(
            Stage(
                "simulate",
                _simulate,
                sections=("simulate", "data"),
                outputs=("truth.nc",),
                external_inputs=_external,
                version=2,
            ),
            Stage(
                "observe",
                _observe,
                sections=("observe", "data"),
                needs=("simulate",),
                outputs=("obs.nc",),
                external_inputs=_external,
                version=2,
            ),
            # Each stage is keyed on the settings it reads, no more: tuning the EnKF does not
            # retrain 4DVarNet. (The checkpoint's config copy and fit's resume key are records,
            # not inputs.)
            Stage(
                "train",
                _train,
                # evaluate.methods: whether a learned method is listed
                sections=(
                    "fourdvarnet",
                    "train",
                    "experiment.seed",
                    "evaluate.methods",
                    *_MODEL,
                    *_OBSERVED,
                ),
                needs=("simulate",),
                outputs=("model",),
            ),
            Stage(
                "evaluate",
                _evaluate,
                sections=(
                    "evaluate",
                    "fourdvarnet.window",
                    *_MODEL,
                    "observe.noise_std",
                ),
                needs=("simulate", "observe", "train"),
                outputs=("metrics.json", "analysis.nc"),
                version=4,  # 4: DAPPER's rmse_a / rmse_s, tuning on a separate twin
            ),
            Stage(
                "report",
                _report,
                sections=("experiment.name",),
                needs=("simulate", "observe", "train", "evaluate"),
                outputs=("report",),
            ),
        ),
    )
)
