"""Emulation of gridded dynamics: the two-layer QG model -> learned emulators -> forecasts.

Stages: ``simulate`` (one spun-up run of :class:`geodl.sim.QGModel`, saved every
``save_every_days`` and split in time into train / val / test with gaps) -> ``train_cnn`` and
``train_latent_ode`` (one stage per method listed in ``methods``: a residual CNN one-step map with
circular padding, :class:`geodl.models.CNNEmulator`, and :class:`geodl.models.LatentODE`, both trained
with a multi-step rollout loss; the choices measured on the quick config are recorded in their
sections) -> ``evaluate`` -> ``report``.

``evaluate`` scores forecast RMSE against lead (emulators, persistence, the QG model with
``coarse_factor`` fewer points per side), KE spectra of ``long_days`` free rollouts, speed-ups over
the simulator and divergence (:func:`geodl.methods.emulation.score_emulators`). The numerics are
:mod:`geodl.methods.emulation`, the figures :mod:`geodl.tasks.emulation_report`: this is wiring.

Python use::

    from geodl.pipeline import run_experiment
    from geodl.tasks import load_config

    cfg, exp = load_config("configs/qg_emulation_quick.yaml")
    run_experiment(cfg, exp, "runs/qg_emulation_quick")  # metrics.json, forecast.nc, report/
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from geodl.config import Section
from geodl.errors import ConfigError
from geodl.methods.emulation import (
    EMULATORS,
    SPLITS,
    CNNSection,
    LatentODESection,
    build_qg,
    check_emulator,
    check_grids,
    load_emulator,
    n_saved,
    read_trajectories,
    save_emulator,
    score_emulators,
    simulate_qg_trajectories,
    steps_per_save,
    train_emulator,
)
from geodl.pipeline import Experiment, Stage, StageContext
from geodl.tasks.emulation_report import write_emulation_report
from geodl.tasks.registry import ExperimentSection, register

__all__ = ["EmulationConfig", "check_config"]


# ----- configuration -----------------------------------------------------------------------
class SimulateSection(Section):
    preset: Literal["eddy", "jet"] = "eddy"
    nx: int = Field(64, ge=8, description="grid points per side (even)")
    L_km: float = Field(1000.0, gt=0, description="domain side")
    dt: float = Field(3600.0, gt=0, description="simulator time step (s)")
    spinup_days: float = Field(1095.0, ge=0)
    save_every_days: float = Field(1.0, gt=0, description="saved interval = one emulator step")
    train_days: float = Field(600.0, gt=0)
    val_days: float = Field(60.0, gt=0)
    test_days: float = Field(120.0, gt=0)
    gap_days: float = Field(10.0, ge=0, description="unsaved-for-learning gap between splits")
    variable: Literal["psi", "q"] = "psi"
    initial_amplitude: float = Field(1e-6, gt=0)
    seed: int = 0


class EvaluateSection(Section):
    lead_days: float = Field(10.0, gt=0)
    n_forecasts: int = Field(32, gt=0, description="initial states spread over the test period")
    coarse_factor: int = Field(2, ge=2, description="the coarse simulator has nx / this points")
    coarse_filterfac: float | None = Field(
        None, ge=0, description="small-scale filter of the coarse simulator (None: the preset's)"
    )
    long_days: float = Field(365.0, gt=0, description="free rollout for the KE spectrum")
    bound: float = Field(10.0, gt=0, description="diverged: a normalised value beyond this")
    timing_repeats: int = Field(3, gt=0)
    timing_forecasts: int = Field(8, gt=0, description="forecasts timed together (one batch)")
    gpu_timing: bool = Field(True, description="also time on GPU when one is visible")
    threads: int = Field(1, gt=0, description="torch CPU threads for evaluation and timing")


class EmulationConfig(Section):
    experiment: ExperimentSection
    simulate: SimulateSection = SimulateSection()
    methods: list[Literal["cnn", "latent_ode"]] = Field(default_factory=lambda: list(EMULATORS))
    cnn: CNNSection = CNNSection()
    latent_ode: LatentODESection = LatentODESection()
    evaluate: EvaluateSection = EvaluateSection()


def _qg(s: SimulateSection, ev: EvaluateSection | None = None) -> Any:
    """The QG model of the data, or with ``ev`` the coarse one."""
    if ev is None:
        return build_qg(s.preset, nx=s.nx, length_km=s.L_km, dt=s.dt)
    nc, ff = s.nx // ev.coarse_factor, ev.coarse_filterfac
    return build_qg(s.preset, nx=nc, length_km=s.L_km, dt=s.dt, filterfac=ff)


def check_config(cfg: EmulationConfig) -> None:
    """Cross-section checks, before any stage runs: every error is one :class:`ConfigError` line."""
    s, ev = cfg.simulate, cfg.evaluate
    if not cfg.methods:
        raise ConfigError("methods is empty; list at least one of " + ", ".join(EMULATORS))
    if len(set(cfg.methods)) != len(cfg.methods):
        raise ConfigError(f"methods {cfg.methods} lists a method twice; list each once")
    check_grids(s.nx, ev.coarse_factor)
    steps_per_save(s.save_every_days, s.dt)
    every_days = s.save_every_days
    n = {k: n_saved(getattr(s, f"{k}_days"), every_days, f"simulate.{k}_days") for k in SPLITS}
    n_saved(s.gap_days, every_days, "simulate.gap_days")
    n_saved(s.spinup_days, every_days, "simulate.spinup_days")
    n_lead = n_saved(ev.lead_days, every_days, "evaluate.lead_days")
    n_saved(ev.long_days, every_days, "evaluate.long_days")
    for name, count in n.items():
        if count < 2:
            raise ConfigError(
                f"simulate.{name}_days={getattr(s, f'{name}_days'):g} gives {count} saved state(s); "
                "each split needs at least 2"
            )
    for m in cfg.methods:
        check_emulator(m, getattr(cfg, m), nx=s.nx, n_train=n["train"], n_val=n["val"])
    if n_lead >= n["test"]:
        raise ConfigError(
            f"evaluate.lead_days={ev.lead_days:g} is not shorter than the test period "
            f"({n['test']} saved states); lower it or raise simulate.test_days"
        )
    _qg(s)
    _qg(s, ev)


# ----- stages ------------------------------------------------------------------------------
def _simulate(ctx: StageContext) -> None:
    s = ctx.cfg.simulate
    every = steps_per_save(s.save_every_days, s.dt)
    days = [("train", s.train_days), ("gap", s.gap_days), ("val", s.val_days)]
    days += [("gap", s.gap_days), ("test", s.test_days)]
    ds = simulate_qg_trajectories(
        _qg(s),
        split_lengths=[(k, n_saved(d, s.save_every_days, f"simulate.{k}_days")) for k, d in days],
        every=every,
        spinup_days=s.spinup_days,
        save_every_days=s.save_every_days,
        initial_amplitude=s.initial_amplitude,
        seed=s.seed,
        preset=s.preset,
    )
    ds.to_netcdf(ctx.output("trajectories.nc"))


def _train_stage(method: str) -> Callable[[StageContext], None]:
    def run(ctx: StageContext) -> None:
        cfg = ctx.cfg
        data = read_trajectories(ctx.input("trajectories.nc"), cfg.simulate.variable)
        mean, std = data["mean"], data["std"]
        section = getattr(cfg, method)
        train = section.train.model_copy(update={"seed": section.train.seed + cfg.experiment.seed})
        model, summary = train_emulator(
            method,
            section.model_copy(update={"train": train}),
            data["train"],
            data["val"],
            mean,
            std,
            threads=cfg.evaluate.threads,
            ckpt_dir=ctx.run_dir / "checkpoints" / method,
            log_dir=ctx.run_dir / "logs" / method,
            key=ctx.key,
        )
        save_emulator(
            ctx.output(f"models/{method}.pt"),
            model,
            method=method,
            variable=cfg.simulate.variable,
            mean=mean,
            std=std,
            **summary,
            config=cfg.model_dump(mode="json"),
        )

    return run


def _evaluate(ctx: StageContext) -> None:
    cfg = ctx.cfg
    s, ev = cfg.simulate, cfg.evaluate
    data = read_trajectories(ctx.input("trajectories.nc"), s.variable)
    test = data["test"]  # (T, C, H, W)
    sections = {m: getattr(cfg, m) for m in cfg.methods}
    models = {
        m: load_emulator(ctx.input(f"models/{m}.pt"), m, sections[m], test.shape[1], test.shape[-1])
        for m in cfg.methods
    }
    scores = score_emulators(
        models,
        sections,
        test,
        data["q_test"],
        mean=data["mean"],
        std=data["std"],
        fine=_qg(s),
        coarse=_qg(s, ev),
        variable=s.variable,
        save_every_days=s.save_every_days,
        lead_days=ev.lead_days,
        long_days=ev.long_days,
        n_forecasts=ev.n_forecasts,
        bound=ev.bound,
        threads=ev.threads,
        timing_forecasts=ev.timing_forecasts,
        timing_repeats=ev.timing_repeats,
        gpu_timing=ev.gpu_timing,
    )
    for name in ("cnn", "latent_ode"):
        if name in scores.results:
            ctx.log.info("emulation %s: %s", name, scores.results[name])
    ctx.output("metrics.json").write_text(json.dumps(scores.metrics(), indent=2) + "\n")
    scores.forecast_dataset().to_netcdf(ctx.output("forecast.nc"))


def _stages(cfg: Any) -> tuple[Stage, ...]:
    check_config(cfg)
    trained = tuple(f"train_{m}" for m in cfg.methods)
    return (
        Stage("simulate", _simulate, sections=("simulate",), outputs=("trajectories.nc",)),
        *(
            # Not evaluate.threads: the thread count changes the speed, not the model.
            Stage(
                f"train_{m}",
                _train_stage(m),
                sections=(m, "simulate.variable", "experiment.seed"),
                needs=("simulate",),
                outputs=(f"models/{m}.pt",),
            )
            for m in cfg.methods
        ),
        Stage(
            "evaluate",
            _evaluate,
            sections=("evaluate", "methods", "simulate", *cfg.methods),
            needs=("simulate", *trained),
            outputs=("metrics.json", "forecast.nc"),
        ),
        Stage(
            "report",
            write_emulation_report,
            sections=("methods", "experiment.name"),
            needs=("evaluate",),
            outputs=("report",),
        ),
    )


EXPERIMENT = register(Experiment(task="emulation", schema=EmulationConfig, stage_factory=_stages))
