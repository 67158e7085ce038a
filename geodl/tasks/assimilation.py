"""Twin data-assimilation experiment on Lorenz systems: simulate -> observe -> evaluate -> report.

The truth is simulated, observed sparsely with noise, and each method reconstructs the whole state
trajectory from the observations alone; scores are computed against the truth. The methods here are
the reference floor (time interpolation, climatology) that every assimilation method must beat.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal

import numpy as np
import xarray as xr
from pydantic import Field

from geodl.config import Section
from geodl.pipeline import Experiment, Stage, StageContext
from geodl.tasks.registry import ExperimentSection, register

__all__ = ["AssimilationConfig", "METHODS"]


class SimulateSection(Section):
    system: Literal["lorenz63", "lorenz96"] = "lorenz63"
    n_trajectories: int = Field(1, gt=0)
    n_steps: int = Field(2000, gt=0)
    dt: float = Field(0.01, gt=0)
    spinup_steps: int = Field(1000, ge=0)
    n_components: int = Field(40, ge=4, description="lorenz96 only")
    forcing: float = 8.0
    noise_std: float = Field(0.0, ge=0)
    seed: int = 0


class ObserveSection(Section):
    every: int = Field(8, gt=0)
    components: list[int] | None = None
    noise_std: float = Field(1.4142135623730951, ge=0)
    seed: int = 1


MethodName = Literal["linear", "climatology"]


class EvaluateSection(Section):
    methods: list[MethodName] = Field(
        default_factory=lambda: ["linear", "climatology"], min_length=1
    )


class AssimilationConfig(Section):
    experiment: ExperimentSection
    simulate: SimulateSection = SimulateSection()
    observe: ObserveSection = ObserveSection()
    evaluate: EvaluateSection = EvaluateSection()


def _linear(obs: np.ndarray) -> np.ndarray:
    """Linear interpolation in time of each component; never-observed components get the obs mean."""
    out = np.empty_like(obs)
    steps = np.arange(obs.shape[-2])
    fallback = np.nanmean(obs)
    for idx in np.ndindex(obs.shape[:-2] + obs.shape[-1:]):
        *lead, comp = idx
        series = obs[(*lead, slice(None), comp)]
        ok = np.isfinite(series)
        out[(*lead, slice(None), comp)] = (
            np.interp(steps, steps[ok], series[ok]) if ok.any() else fallback
        )
    return out


def _climatology(obs: np.ndarray) -> np.ndarray:
    """Time mean of the observations of each component, broadcast over time."""
    mean = np.nanmean(obs, axis=-2, keepdims=True)
    mean = np.where(np.isfinite(mean), mean, np.nanmean(obs))
    return np.broadcast_to(mean, obs.shape).copy()


METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": _linear,
    "climatology": _climatology,
}


def _simulate(ctx: StageContext) -> None:
    from geodl.sim import simulate_lorenz

    s = ctx.cfg.simulate
    traj = simulate_lorenz(
        s.system,
        n_trajectories=s.n_trajectories,
        n_steps=s.n_steps,
        dt=s.dt,
        spinup_steps=s.spinup_steps,
        n_components=s.n_components,
        forcing=s.forcing,
        noise_std=s.noise_std,
        seed=s.seed,
    ).numpy()
    ds = xr.Dataset(
        {
            "truth": (
                ("trajectory", "time", "component"),
                traj,
                {"long_name": f"{s.system} true state", "units": "1"},
            )
        },
        coords={
            "time": ("time", np.arange(traj.shape[1]) * s.dt, {"units": "model time units"}),
            "component": np.arange(traj.shape[2]),
        },
        attrs={
            "title": f"{s.system} twin experiment truth",
            "source": f"geodl.sim {s.system}: {s.model_dump_json()}",
            "dt": s.dt,
            "Conventions": "CF-1.8",
        },
    )
    ds.to_netcdf(ctx.output("truth.nc"))


def _observe(ctx: StageContext) -> None:
    from geodl.obs import observe_state

    o = ctx.cfg.observe
    with xr.open_dataset(ctx.input("truth.nc")) as truth_ds:
        truth = truth_ds["truth"].load()
    obs = observe_state(
        truth.values, every=o.every, components=o.components, noise_std=o.noise_std, seed=o.seed
    )
    ds = xr.Dataset(
        {"obs": (truth.dims, obs, {"long_name": "observations (NaN where unobserved)"})},
        coords=truth.coords,
        attrs={"source": f"geodl.obs.observe_state: {o.model_dump_json()}", "dt": truth_ds.dt},
    )
    ds.to_netcdf(ctx.output("obs.nc"))


def _evaluate(ctx: StageContext) -> None:
    with xr.open_dataset(ctx.input("truth.nc")) as t, xr.open_dataset(ctx.input("obs.nc")) as o:
        truth, obs = t["truth"].values, o["obs"].values
    analysis_times = np.isfinite(obs).any(axis=(0, 2))
    results = {}
    estimates = {}
    for name in ctx.cfg.evaluate.methods:
        est = METHODS[name](obs)
        estimates[name] = est
        err = est - truth
        results[name] = {
            "rmse": float(np.sqrt(np.mean(err**2))),
            "rmse_analysis": float(np.sqrt(np.mean(err[:, analysis_times] ** 2))),
        }
        ctx.log.info("method %s: %s", name, results[name])
    metrics = {
        "task": "assimilation",
        "methods": results,
        "units": {"rmse": "1", "rmse_analysis": "1"},
    }
    ctx.output("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    ds = xr.Dataset(
        {n: (("trajectory", "time", "component"), e) for n, e in estimates.items()},
        attrs={"title": "state estimates of each method"},
    )
    ds.to_netcdf(ctx.output("analysis.nc"))


def _report(ctx: StageContext) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geodl.report import write_index

    report_dir = ctx.output("report")
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics = json.loads(ctx.input("metrics.json").read_text())
    with (
        xr.open_dataset(ctx.input("truth.nc")) as t,
        xr.open_dataset(ctx.input("obs.nc")) as o,
        xr.open_dataset(ctx.input("analysis.nc")) as a,
    ):
        time = t["time"].values
        n_show = min(len(time), 500)
        fig, axes = plt.subplots(3, 1, figsize=(9, 6), sharex=True)
        for comp, ax in enumerate(axes):
            if comp >= t.sizes["component"]:
                break
            ax.plot(time[:n_show], t["truth"][0, :n_show, comp], "k", lw=1.2, label="truth")
            ax.plot(time[:n_show], o["obs"][0, :n_show, comp], "r.", ms=4, label="obs")
            for name in a.data_vars:
                ax.plot(time[:n_show], a[name][0, :n_show, comp], lw=0.8, label=str(name))
            ax.set_ylabel(f"x{comp}")
        axes[0].legend(loc="upper right", fontsize=8, ncol=4)
        axes[-1].set_xlabel("time (model units)")
        fig.tight_layout()
        fig.savefig(report_dir / "trajectories.png", dpi=100)
        plt.close(fig)
    write_index(report_dir, ctx.cfg.experiment.name, metrics, ["trajectories.png"])


EXPERIMENT = register(
    Experiment(
        task="assimilation",
        schema=AssimilationConfig,
        stages=(
            Stage("simulate", _simulate, sections=("simulate",), outputs=("truth.nc",)),
            Stage(
                "observe", _observe, sections=("observe",), needs=("simulate",), outputs=("obs.nc",)
            ),
            Stage(
                "evaluate",
                _evaluate,
                sections=("evaluate",),
                needs=("simulate", "observe"),
                outputs=("metrics.json", "analysis.nc"),
            ),
            Stage(
                "report",
                _report,
                sections=(),
                needs=("simulate", "observe", "evaluate"),
                outputs=("report",),
            ),
        ),
    )
)
