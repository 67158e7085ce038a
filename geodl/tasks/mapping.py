"""Mapping experiment: sparse satellite observations -> gridded field with uncertainty.

Stages: ``simulate`` (only without ``data.path``: the embedded QG twin truth, and with
``simulate.members > 1`` more independent realisations to train on) -> ``prepare`` (observations,
splits, normalisation, the observations' correlation scales) -> ``train_<method>`` (every method:
the learned ones train, OI tunes its scales on the validation period) -> ``predict_<method>``
(the whole test period, stitched mean and std) -> ``evaluate`` (``metrics.json``, with each
method's RMSE and lambda_x as ratios to the tuned OI of the same run) -> ``report``. One stage per
method, so that changing one method's settings re-runs that method only.

The methods come from the registry :data:`geodl.methods.mapping.METHODS`; this module is wiring.

From Python::

    import geodl
    cfg, exp = geodl.load_config("configs/ssh_mapping_quick.yaml")
    geodl.run_experiment(cfg, exp, "runs/ssh_mapping_quick")

or, on xarray objects, :func:`geodl.mapping.fit` and ``MappingModel.reconstruct``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xarray as xr
from pydantic import Field, create_model, model_validator

from geodl.config import Section
from geodl.data.index import check_patch_fits
from geodl.errors import DataError
from geodl.methods.mapping import (
    METHODS,
    DataSection,
    MappingData,
    PatchSection,
    SimulateSection,
    SplitSection,
    check_methods,
    prepare_inputs,
    read_predictors,
    read_truth,
    score_reconstructions,
    write_reconstruction,
)
from geodl.methods.observing import ObsSection, obs_files
from geodl.pipeline import Experiment, Stage, StageContext
from geodl.tasks.registry import ExperimentSection, register

__all__ = ["MappingConfig", "build_schema", "experiment"]

log = logging.getLogger("geodl.mapping")


# ----- configuration (data, simulate, split, patch: geodl.methods.mapping) ----------------
class ReportSection(Section):
    days: list[int] = Field(default_factory=lambda: [0], description="test-period day indices")

    @model_validator(mode="after")
    def _not_negative(self) -> ReportSection:
        if any(d < 0 for d in self.days):
            raise ValueError(f"report.days {self.days}: indices into the test period are >= 0")
        return self


class _MappingBase(Section):
    experiment: ExperimentSection
    data: DataSection = DataSection()
    simulate: SimulateSection = SimulateSection()
    obs: ObsSection = ObsSection()
    split: SplitSection
    patch: PatchSection = PatchSection()
    methods: list[str] = Field(default_factory=lambda: ["oi", "unet", "dincae", "fourdvarnet"])
    report: ReportSection = ReportSection()

    @model_validator(mode="after")
    def _known_methods(self) -> _MappingBase:
        nx = self.simulate.nx if self.data.path is None else None  # the twin's grid is known
        check_methods(self.methods, self, self.patch, self.split, twin_nx=nx)
        if nx is not None:
            last = max(1, round(self.simulate.days)) - 1  # the twin saves one field a day
            for name in ("train", "val", "test"):
                lo, hi = getattr(self.split, name)
                numeric = isinstance(lo, int | float) and isinstance(hi, int | float)
                if numeric and (lo < 0 or hi > last):
                    raise ValueError(
                        f"split.{name} [{lo:g}, {hi:g}] lies outside the simulated twin's days "
                        f"0 .. {last} (simulate.days {self.simulate.days:g}); move it inside or "
                        "raise simulate.days"
                    )
        a, b = self.split.test
        if nx is not None and isinstance(a, int | float) and isinstance(b, int | float):
            n = int(b - a) + 1  # the twin saves one field a day
            late = [d for d in self.report.days if d >= n]
            if late:
                raise ValueError(
                    f"report.days {late} lie beyond the test period split.test [{a:g}, {b:g}] "
                    f"({n} days: indices 0 .. {n - 1})"
                )
        return self


def build_schema() -> type[Section]:
    """The mapping config schema: the common sections plus one section per registered method."""
    fields: dict[str, Any] = {name: (m.section, m.section()) for name, m in METHODS.items()}
    return create_model("MappingConfig", __base__=_MappingBase, **fields)


MappingConfig = build_schema()


# ----- the run's files ---------------------------------------------------------------------
def _truth_path(ctx: StageContext) -> Path:
    cfg = ctx.cfg
    return Path(cfg.data.path) if cfg.data.path else ctx.input("truth.nc")


def _prep(ctx: StageContext) -> dict[str, Any]:
    return json.loads(ctx.input("prepare.json").read_text())


def _twin_members(cfg: Any) -> bool:
    """Whether the run simulates extra training realisations (twin, ``simulate.members > 1``)."""
    return cfg.data.path is None and cfg.simulate.members > 1


def _data(ctx: StageContext) -> MappingData:
    cfg = ctx.cfg
    twin = _twin_members(cfg)
    members = (ctx.input("members.nc"), ctx.input("obs_members.nc")) if twin else None
    return MappingData.from_prepare(
        _prep(ctx),
        _truth_path(ctx),
        ctx.input("obs.nc"),
        variable=cfg.data.variable,
        patch=cfg.patch,
        land_mask=cfg.data.land_mask,
        members=members,
        grid_spacing_km=cfg.data.grid_spacing_km,
    )


# ----- stages ------------------------------------------------------------------------------
def _simulate(ctx: StageContext) -> None:
    from geodl.tasks.simulate import qg_dataset

    s = ctx.cfg.simulate
    ds = qg_dataset(**s.model_dump(), variables=("ssh",))
    if s.members > 1:
        ds.isel(member=0, drop=True).to_netcdf(ctx.output("truth.nc"))
        ds.isel(member=slice(1, None)).to_netcdf(ctx.output("members.nc"))
    else:
        ds.to_netcdf(ctx.output("truth.nc"))


def _prepare(ctx: StageContext) -> None:
    cfg, d = ctx.cfg, ctx.cfg.data
    var, path = d.variable, _truth_path(ctx)
    try:
        truth = read_truth(path, var, d.land_mask, grid_spacing_km=d.grid_spacing_km)
    except DataError as exc:
        if d.path is None:
            raise
        where = "data.path" if str(path) in str(exc) else f"data.path {path}"
        raise DataError(f"{where}: {exc}") from None
    if any(METHODS[m].learned for m in cfg.methods):  # now, not once the training stages start
        check_patch_fits({"y": cfg.patch.y, "x": cfg.patch.x}, truth.shape[1:], str(path))
    members = None
    if _twin_members(cfg):
        with xr.open_dataset(ctx.input("members.nc")) as mds:
            members = mds[var].load()
    obs, obs_members, prep = prepare_inputs(
        truth,
        cfg.obs,
        {k: tuple(getattr(cfg.split, k)) for k in ("train", "val", "test")},
        window=cfg.patch.time,
        periodic=d.path is None,  # the embedded QG twin is doubly periodic
        members=members,
        predictors=read_predictors(
            path, var, d.inputs, d.static, d.land_mask, grid_spacing_km=d.grid_spacing_km
        ),
        obs_path=ctx.output("obs.nc"),  # written block by block: bounded memory on any grid
    )
    obs.close()
    if obs_members is not None:
        obs_members.to_netcdf(ctx.output("obs_members.nc"))
    ctx.output("prepare.json").write_text(json.dumps(prep, indent=2) + "\n")


def _artifact(method: str) -> str:
    return f"models/{method}{METHODS[method].artifact}"


def _train_stage(method: str) -> Callable[[StageContext], None]:
    def run(ctx: StageContext) -> None:
        cfg, prep = ctx.cfg, _prep(ctx)
        entry = METHODS[method]
        sections = {m: getattr(cfg, m) for m in cfg.methods}
        deps = entry.depends(sections[method], sections)
        entry.fit(
            sections[method],
            _data(ctx),
            ctx.output(_artifact(method)),
            work_dir=ctx.run_dir,
            key=ctx.key,
            metadata={"config": cfg.model_dump(mode="json"), "grid": prep["grid"]},
            seed=cfg.experiment.seed,
            **({"inputs": {d: ctx.input(_artifact(d)) for d in deps}} if deps else {}),
        )

    return run


def _predict_stage(method: str) -> Callable[[StageContext], None]:
    def run(ctx: StageContext) -> None:
        data = _data(ctx)
        write_reconstruction(
            method,
            getattr(ctx.cfg, method),
            data,
            ctx.input(_artifact(method)),
            data.splits["test"],
            ctx.output(f"predictions/{method}.nc"),
            units=_prep(ctx)["units"],
            experiment=ctx.cfg.experiment.name,
        )

    return run


def _evaluate(ctx: StageContext) -> None:
    cfg, prep = ctx.cfg, _prep(ctx)
    preds = {m: ctx.input(f"predictions/{m}.nc") for m in cfg.methods}
    metrics = score_reconstructions(_truth_path(ctx), preds, prep, reference="oi")
    for method, r in metrics["methods"].items():
        ctx.log.info("%s: %s", method, r)
    if "oi" in cfg.methods:
        metrics["oi_tuning"] = json.loads(ctx.input(_artifact("oi")).read_text())
    ctx.output("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def _report(ctx: StageContext) -> None:
    from geodl.tasks.mapping_report import write_mapping_report

    write_mapping_report(ctx)


def _external(c: Any) -> list[Path]:
    """The user files ``prepare`` reads, globs expanded: the cache key follows the files."""
    paths = obs_files(c.data.path, strict=False) if c.data.path else []
    file_obs = c.obs.kind == "file" and c.obs.path
    return paths + (obs_files(c.obs.path, strict=False) if file_obs else [])


def _stages(cfg: Any) -> tuple[Stage, ...]:
    twin, members = cfg.data.path is None, _twin_members(cfg)
    base = ("simulate",) if twin else ()
    simulated = ("truth.nc", *(("members.nc",) if members else ()))
    prep = (*base, "prepare")
    sections = {m: getattr(cfg, m) for m in cfg.methods}
    deps = {m: METHODS[m].depends(sections[m], sections) for m in cfg.methods}
    seed = {m: ("experiment.seed",) if METHODS[m].learned else () for m in cfg.methods}
    trained = tuple(f"train_{m}" for m in cfg.methods)
    predicted = tuple(f"predict_{m}" for m in cfg.methods)
    return (
        *(
            (Stage("simulate", _simulate, sections=("simulate",), outputs=simulated),)
            if twin
            else ()
        ),
        Stage(
            "prepare",
            _prepare,
            sections=("data", "obs", "split", "patch"),
            needs=base,
            outputs=("obs.nc", "prepare.json", *(("obs_members.nc",) if members else ())),
            external_inputs=_external,
        ),
        *(
            Stage(
                f"train_{m}",
                _train_stage(m),
                sections=(m, *deps[m], *seed[m]),
                needs=(*prep, *(f"train_{d}" for d in deps[m])),
                outputs=(_artifact(m),),
            )
            for m in cfg.methods
        ),
        *(
            Stage(
                f"predict_{m}",
                _predict_stage(m),
                sections=(),
                needs=(*prep, f"train_{m}"),
                outputs=(f"predictions/{m}.nc",),
            )
            for m in cfg.methods
        ),
        Stage(
            "evaluate",
            _evaluate,
            sections=("methods",),
            needs=(*prep, *trained, *predicted),
            outputs=("metrics.json",),
        ),
        Stage(
            "report",
            _report,
            sections=("report",),
            needs=(*prep, *trained, *predicted, "evaluate"),
            outputs=("report",),
        ),
    )


def experiment() -> Experiment:
    """The mapping experiment over the methods registered now (see :mod:`geodl.methods.mapping`)."""
    return Experiment(task="mapping", schema=build_schema(), stage_factory=_stages)


EXPERIMENT = register(experiment())
