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
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
from pydantic import Field, create_model, model_validator

from geodl.config import Section
from geodl.data import GriddedSource, make_splits
from geodl.errors import ConfigError, DataError
from geodl.grid import EARTH_KM_PER_DEG, days, grid_km
from geodl.methods.mapping import METHODS, MappingData, PatchSection, observed_scales
from geodl.pipeline import Experiment, Stage, StageContext
from geodl.tasks.registry import ExperimentSection, register

__all__ = ["MappingConfig", "build_schema", "experiment"]

log = logging.getLogger("geodl.mapping")


# ----- configuration -----------------------------------------------------------------------
class DataSection(Section):
    path: str | None = Field(None, description="NetCDF/Zarr truth; null: embedded QG simulation")
    variable: str = "ssh"
    land_mask: str | None = None


class SimulateSection(Section):
    """Embedded QG twin truth (used when ``data.path`` is null).

    ``members`` > 1 simulates that many independent realisations (batched, each from its own
    initial noise): member 0 is the experiment's truth (its splits, its test period); the others
    are observed the same way and every day of them is training data for the learned methods.
    """

    preset: Literal["eddy", "jet"] = "eddy"
    nx: int = Field(64, ge=8)
    days: float = Field(730.0, gt=0)
    spinup_days: float = Field(1460.0, ge=0)
    members: int = Field(1, ge=1)
    seed: int = 0
    threads: int | None = Field(None, gt=0)


class ObsSection(Section):
    kind: Literal["nadir", "swath", "clouds", "file"] = "nadir"
    noise_std: float = Field(0.01, ge=0, description="observation error std (field units)")
    noise_fraction: float | None = Field(
        None, gt=0, description="noise std as a fraction of the truth's std (replaces noise_std)"
    )
    seed: int = 0
    # nadir / swath: null takes the kind's own default (geodl.obs.observe_nadir / observe_swath,
    # as `geodl observe` does): 4 nadirs on a 10-day repeat, one swath on a 21-day repeat
    n_satellites: int | None = Field(None, gt=0)
    repeat_days: float | None = Field(None, gt=0)
    track_spacing_km: float | None = Field(None, gt=0)
    track_angle_deg: float | None = None
    along_track_km: float | None = Field(None, gt=0)
    swath_width_km: float | None = Field(None, gt=0)
    gap_km: float | None = Field(None, ge=0)
    # clouds
    cover: float = Field(0.5, gt=0, lt=1)
    length_scale_km: float = Field(100.0, gt=0)
    persistence: float = Field(0.8, ge=0, lt=1)
    # file: gridded obs on the truth grid, or a point table (time, y|lat, x|lon, variable)
    path: str | None = None
    variable: str | None = None

    @model_validator(mode="after")
    def _file_needs_path(self) -> ObsSection:
        if self.kind == "file" and (self.path is None or self.variable is None):
            raise ValueError("kind 'file' needs path and variable (the observation file and name)")
        return self


class SplitSection(Section):
    """Inclusive time ranges (days for numeric time axes, dates for calendar ones)."""

    train: list[float | str] = Field(min_length=2, max_length=2)
    val: list[float | str] = Field(min_length=2, max_length=2)
    test: list[float | str] = Field(min_length=2, max_length=2)


class ReportSection(Section):
    days: list[int] = Field(default_factory=lambda: [0], description="test-period day indices")


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
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods {unknown or '[]'} invalid; choose from {list(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods {self.methods} lists a method twice")
        learned = [m for m in self.methods if METHODS[m].learned]
        if learned and self.data.path is None:  # the twin's grid is known from the config
            nx = self.simulate.nx
            if self.patch.y > nx or self.patch.x > nx:
                raise ValueError(
                    f"patch {self.patch.y} x {self.patch.x} (y x) is larger than the simulated "
                    f"grid ({nx} x {nx}); lower patch.y / patch.x or raise simulate.nx"
                )
        for name in ("train", "val") if learned and self.data.path is None else ():  # daily
            a, b = getattr(self.split, name)
            numeric = isinstance(a, int | float) and isinstance(b, int | float)
            if numeric and b - a + 1 < self.patch.time:
                raise ValueError(
                    f"split.{name} [{a:g}, {b:g}] is shorter than patch.time "
                    f"({self.patch.time} days): no window fits; widen it or lower patch.time"
                )
        sections = {m: getattr(self, m) for m in self.methods}
        for i, m in enumerate(self.methods):
            for dep in METHODS[m].depends(sections[m], sections):
                if dep not in self.methods[:i]:
                    raise ValueError(f"methods: {m} needs {dep} trained first; list it before {m}")
        return self


def build_schema() -> type[Section]:
    """The mapping config schema: the common sections plus one section per registered method."""
    fields: dict[str, Any] = {name: (m.section, m.section()) for name, m in METHODS.items()}
    return create_model("MappingConfig", __base__=_MappingBase, **fields)


MappingConfig = build_schema()


# ----- grids and sources -------------------------------------------------------------------
def _truth_path(ctx: StageContext) -> Path:
    cfg = ctx.cfg
    return Path(cfg.data.path) if cfg.data.path else ctx.input("truth.nc")


def _source(ctx: StageContext) -> GriddedSource:
    """Truth (target) and observations (obs role) as one validated source."""
    var = ctx.cfg.data.variable
    return GriddedSource(
        _truth_path(ctx),
        target=var,
        obs=f"{var}_obs",
        extra=ctx.input("obs.nc"),
        land_mask=ctx.cfg.data.land_mask,
    )


def _prep(ctx: StageContext) -> dict[str, Any]:
    return json.loads(ctx.input("prepare.json").read_text())


def _members(ctx: StageContext) -> tuple[GriddedSource, ...]:
    """The extra training realisations (twin experiments with ``simulate.members > 1``)."""
    cfg = ctx.cfg
    if cfg.data.path is not None or cfg.simulate.members < 2:
        return ()
    var = cfg.data.variable
    out = []
    with (
        xr.open_dataset(ctx.input("members.nc")) as tds,
        xr.open_dataset(ctx.input("obs_members.nc")) as ods,
    ):
        for k in range(tds.sizes["member"]):
            ds = xr.Dataset(
                {
                    var: tds[var].isel(member=k).load(),
                    f"{var}_obs": ods[f"{var}_obs"].isel(member=k).load(),
                }
            )
            out.append(GriddedSource(ds, target=var, obs=f"{var}_obs"))
    return tuple(out)


def _data(ctx: StageContext) -> MappingData:
    cfg, prep = ctx.cfg, _prep(ctx)
    return MappingData(
        source=_source(ctx),
        splits={k: tuple(v) for k, v in prep["splits"].items()},
        normalizer=prep["normalizer"],
        patch=cfg.patch,
        noise_std=prep["noise_std"],
        obs_std=prep["obs_std_train"],
        obs_mean=prep["obs_mean_train"],
        scales=prep.get("scales"),
        periodic=bool(prep.get("periodic", False)),
        extra=_members(ctx),
    )


# ----- stages ------------------------------------------------------------------------------
def _simulate(ctx: StageContext) -> None:
    from geodl.tasks.simulate import qg_dataset

    s = ctx.cfg.simulate
    ds = qg_dataset(
        preset=s.preset,
        nx=s.nx,
        days=s.days,
        spinup_days=s.spinup_days,
        members=s.members,
        seed=s.seed,
        variables=("ssh",),
        threads=s.threads,
    )
    if s.members > 1:
        ds.isel(member=0, drop=True).to_netcdf(ctx.output("truth.nc"))
        ds.isel(member=slice(1, None)).to_netcdf(ctx.output("members.nc"))
    else:
        ds.to_netcdf(ctx.output("truth.nc"))


def _observe(
    ctx: StageContext,
    truth: xr.DataArray,
    axes: tuple[str, str, str],
    noise_std: float,
    seed: int | None = None,
) -> np.ndarray:
    """Gridded observations ``(time, y, x)`` of ``truth`` according to ``obs``."""
    from geodl.obs import Grid, observe_clouds, observe_nadir, observe_swath

    o = ctx.cfg.obs
    t_dim, y_dim, x_dim = axes
    y_km, x_km, _ = grid_km(truth, y_dim, x_dim)
    grid = Grid(time=days(truth[t_dim].values), y=y_km, x=x_km)
    field = truth.transpose(t_dim, y_dim, x_dim).values
    common = {"noise_std": noise_std, "seed": o.seed if seed is None else seed}
    track = ("n_satellites", "repeat_days", "track_spacing_km", "track_angle_deg")
    if o.kind == "nadir":
        given = {k: getattr(o, k) for k in (*track, "along_track_km")}
        made = observe_nadir(
            field, grid, **{k: v for k, v in given.items() if v is not None}, **common
        )
    elif o.kind == "swath":
        given = {k: getattr(o, k) for k in (*track, "swath_width_km", "gap_km")}
        made = observe_swath(
            field, grid, **{k: v for k, v in given.items() if v is not None}, **common
        )
    elif o.kind == "clouds":
        made = observe_clouds(
            field,
            grid,
            cover=o.cover,
            length_scale_km=o.length_scale_km,
            persistence=o.persistence,
            **common,
        )
    else:
        return _obs_from_file(ctx, truth, axes, grid)
    obs = made.grid.astype(np.float32)
    return np.where(np.isfinite(field), obs, np.nan)  # nothing observed on land


def _obs_from_file(
    ctx: StageContext, truth: xr.DataArray, axes: tuple[str, str, str], grid: Any
) -> np.ndarray:
    """A user's observations: gridded on the truth's grid, or a point table binned onto it."""
    from geodl.data import find_axes, open_dataset
    from geodl.obs.binning import bin_points

    o = ctx.cfg.obs
    if not o.path or not o.variable:
        raise ConfigError("obs.kind is 'file' but obs.path or obs.variable is not set")
    ds = open_dataset(o.path)
    if o.variable not in ds.data_vars:
        raise DataError(
            f"variable '{o.variable}' not in {o.path}; variables: {sorted(map(str, ds.data_vars))}"
        )
    da = ds[o.variable]
    t_dim, y_dim, x_dim = axes
    obs_axes = find_axes(ds)
    if da.ndim == 3 and obs_axes.time and obs_axes.y and obs_axes.x:
        for role, dim in (("time", t_dim), ("y", y_dim), ("x", x_dim)):
            theirs = ds[getattr(obs_axes, role)].values
            ours = truth[dim].values
            if theirs.shape != ours.shape or not np.array_equal(theirs, ours):
                raise DataError(
                    f"observation file {o.path}: its {role} axis ({theirs.size} values, "
                    f"{theirs[0]} .. {theirs[-1]}) differs from the truth's ({ours.size} values, "
                    f"{ours[0]} .. {ours[-1]}); regrid the observations or give a point table"
                )
        return da.transpose(*(getattr(obs_axes, r) for r in ("time", "y", "x"))).values.astype(
            np.float32
        )
    if da.ndim != 1:
        raise DataError(
            f"observation file {o.path}: '{o.variable}' has dims {da.dims}; expected (time, y, x) "
            "gridded observations or a 1-d point table with time and y/lat, x/lon variables"
        )
    names = {str(k).lower(): str(k) for k in ds.variables}
    pick = [
        next((names[n] for n in cands if n in names), None)
        for cands in (("time", "t"), ("y", "lat", "latitude"), ("x", "lon", "longitude"))
    ]
    if None in pick:
        raise DataError(
            f"observation point table {o.path} needs time, y (or lat) and x (or lon) variables; "
            f"found {sorted(names.values())}"
        )
    tv, yv, xv = (ds[p].values for p in pick)
    t0 = truth[t_dim].values[0]
    tv = days(np.concatenate(([t0], tv)))[1:] if np.issubdtype(tv.dtype, np.datetime64) else tv
    if "lat" in pick[1].lower():
        lat0 = math.radians(float(np.mean(truth[y_dim].values)))
        yv, xv = yv * EARTH_KM_PER_DEG, xv * EARTH_KM_PER_DEG * math.cos(lat0)
    binned, dropped = bin_points(tv, yv, xv, da.values, grid)
    if dropped:
        log.warning("%d observation points fall outside the truth's grid and were dropped", dropped)
    return binned.astype(np.float32)


def _obs_dataset(
    obs: np.ndarray, like: xr.DataArray, var: str, kind: str, source: str
) -> xr.Dataset:
    da = xr.DataArray(
        obs,
        dims=like.dims,
        coords={d: like[d] for d in like.dims},
        attrs={
            "long_name": f"observations of {var} ({kind}), NaN where unobserved",
            "units": like.attrs.get("units", ""),
        },
    )
    return xr.Dataset({f"{var}_obs": da}, attrs={"Conventions": "CF-1.8", "source": source})


def _prepare(ctx: StageContext) -> None:
    from geodl.data import compute_stats

    cfg = ctx.cfg
    var = cfg.data.variable
    src = GriddedSource(_truth_path(ctx), target=var, land_mask=cfg.data.land_mask)
    t_dim, y_dim, x_dim = src.dims
    truth = src.variable(var, dask=False).load().transpose(t_dim, y_dim, x_dim)
    if not np.isfinite(truth.values).any():
        raise DataError(
            f"truth variable '{var}' in {_truth_path(ctx)} is NaN everywhere; check data.variable "
            "or the file's _FillValue"
        )
    noise_std = cfg.obs.noise_std
    if cfg.obs.noise_fraction is not None:
        noise_std = cfg.obs.noise_fraction * float(np.nanstd(truth.values))
    obs = _observe(ctx, truth, src.dims, noise_std)
    if not np.isfinite(obs).any():
        raise DataError(f"no observation at all of '{var}' (obs.kind {cfg.obs.kind})")
    source = f"geodl obs: {cfg.obs.model_dump_json()}"
    _obs_dataset(obs, truth, var, cfg.obs.kind, source).to_netcdf(ctx.output("obs.nc"))
    if cfg.data.path is None and cfg.simulate.members > 1:
        # every extra realisation observed by the same satellites, with its own noise draw
        with xr.open_dataset(ctx.input("members.nc")) as mds:
            members = mds[var].load()
        made = np.stack(
            [
                _observe(
                    ctx,
                    members.isel(member=k, drop=True),
                    src.dims,
                    noise_std,
                    cfg.obs.seed + 1 + k,
                )
                for k in range(members.sizes["member"])
            ]
        )
        obs_m = xr.DataArray(made, dims=members.dims, coords=members.coords)
        xr.Dataset({f"{var}_obs": obs_m}, attrs={"source": source}).to_netcdf(
            ctx.output("obs_members.nc")
        )

    times = truth[t_dim].values
    splits = make_splits(times, _split_labels(cfg.split, times), window=cfg.patch.time)
    finite = np.isfinite(obs)
    coverage = {}
    for name, sp in splits.items():
        n = int(finite[sp.start : sp.stop].sum())
        if n == 0:
            raise DataError(
                f"split '{name}' (time steps {sp.start}..{sp.stop - 1}) holds no observation; "
                "move its range or observe more densely"
            )
        coverage[name] = float(finite[sp.start : sp.stop].mean())
    ds = xr.Dataset({var: truth})
    stats = compute_stats(ds, [var], time_range=splits["train"].range)
    stats["variables"][f"{var}_obs"] = stats["variables"][var]  # obs in the target's units
    train_obs = obs[splits["train"].start : splits["train"].stop]
    obs_std = float(np.nanstd(train_obs))
    warnings = []
    # the observations' variance is signal + noise: noise above half of it means a negative SNR
    if cfg.obs.kind != "file" and noise_std > obs_std / math.sqrt(2):
        msg = (
            f"obs.noise_std {noise_std:g} exceeds the std of the signal it observes "
            f"(observations' std {obs_std:.3g}): the observations are mostly noise"
        )
        log.warning(msg)
        warnings.append(msg)
    y_km, x_km, kind = grid_km(truth, y_dim, x_dim)
    periodic = cfg.data.path is None  # the embedded QG twin is doubly periodic
    train_da = truth.isel({t_dim: slice(splits["train"].start, splits["train"].stop)})
    scales, reason = observed_scales(train_da.copy(data=train_obs), noise_std, periodic=periodic)
    if scales is None:
        msg = f"no correlation scales from the training observations ({reason})"
        log.warning(msg)
        warnings.append(msg)
    else:
        log.info("training observations' correlation scales: %s", scales)
    prep = {
        "variable": var,
        "dims": [t_dim, y_dim, x_dim],
        "splits": {k: [s.start, s.stop] for k, s in splits.items()},
        "dropped_for_gaps": {k: s.dropped for k, s in splits.items()},
        "normalizer": stats,
        "coverage": coverage,
        "obs_std_train": obs_std,
        "noise_std": noise_std,
        "obs_mean_train": float(np.nanmean(train_obs)),
        "scales": scales,
        "periodic": periodic,
        "grid": {
            "kind": kind,
            "dy_km": float(np.diff(y_km).mean()),
            "dx_km": float(np.diff(x_km).mean()),
        },
        "units": truth.attrs.get("units", ""),
        "warnings": warnings,
    }
    ctx.output("prepare.json").write_text(json.dumps(prep, indent=2) + "\n")


def _split_labels(split: SplitSection, times: np.ndarray) -> dict[str, tuple[Any, Any]]:
    """Split bounds as time labels: on a calendar axis, numbers are days since the first time."""
    out = {}
    for name in ("train", "val", "test"):
        bounds = tuple(getattr(split, name))
        if np.issubdtype(times.dtype, np.datetime64) and all(
            isinstance(v, int | float) for v in bounds
        ):
            bounds = tuple(times[0] + np.timedelta64(round(float(v) * 86400), "s") for v in bounds)
        out[name] = bounds
    return out


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
            **({"inputs": {d: ctx.input(_artifact(d)) for d in deps}} if deps else {}),
        )

    return run


def _write_prediction(
    ctx: StageContext, method: str, mean: xr.DataArray, std: xr.DataArray | None
) -> None:
    var = ctx.cfg.data.variable
    units = _prep(ctx)["units"]
    out = {
        var: mean.assign_attrs(long_name=f"{var} reconstructed by {method}", units=units),
    }
    if std is not None:
        out[f"{var}_std"] = std.assign_attrs(
            long_name=f"standard deviation of the {method} reconstruction error", units=units
        )
    xr.Dataset(
        out,
        attrs={
            "Conventions": "CF-1.8",
            "title": f"geodl mapping: {method}",
            "source": f"geodl {method} ({ctx.cfg.experiment.name})",
        },
    ).to_netcdf(ctx.output(f"predictions/{method}.nc"))


def _predict_stage(method: str) -> Callable[[StageContext], None]:
    def run(ctx: StageContext) -> None:
        data = _data(ctx)
        mean, std = METHODS[method].reconstruct(
            getattr(ctx.cfg, method), data, ctx.input(_artifact(method)), data.splits["test"]
        )
        _write_prediction(ctx, method, mean, std)

    return run


def _evaluate(ctx: StageContext) -> None:
    from geodl.metrics import score, score_units

    cfg, prep = ctx.cfg, _prep(ctx)
    var = cfg.data.variable
    t_dim, y_dim, x_dim = prep["dims"]
    a, b = prep["splits"]["test"]
    with xr.open_dataset(_truth_path(ctx)) as ds:
        truth = ds[var].isel({t_dim: slice(a, b)}).load()
    dims = {"time_dim": t_dim, "y_dim": y_dim, "x_dim": x_dim}
    grid = {
        "dx": prep["grid"]["dx_km"] if prep["grid"]["kind"] == "projected" else None,
        "dt": None,
    }
    results = {}
    for method in cfg.methods:
        with xr.open_dataset(ctx.input(f"predictions/{method}.nc")) as ds:
            pred = ds[var].load().reindex_like(truth)
            std = ds[f"{var}_std"].load().reindex_like(truth) if f"{var}_std" in ds else None
        results[method] = score(pred, truth, std=std, **grid, **dims)
    if "oi" in results:
        # the comparison that matters: every other method against the tuned OI of this run
        ref = results["oi"]
        for method, r in results.items():
            if method != "oi":
                r["rmse_ratio_oi"] = r["rmse"] / ref["rmse"]
                r["lambda_x_ratio_oi"] = r["lambda_x"] / ref["lambda_x"]
                r["mu_gain_oi"] = r["mu"] - ref["mu"]
    for method, r in results.items():
        ctx.log.info("%s: %s", method, r)
    units = score_units(truth, **grid, **dims)
    if prep["grid"]["kind"] == "projected":
        units["lambda_x"] = "km"
    metrics: dict[str, Any] = {
        "task": "mapping",
        "methods": results,
        "units": units,
        "test_period": [a, b],
    }
    if "oi" in cfg.methods:
        metrics["oi_tuning"] = json.loads(ctx.input(_artifact("oi")).read_text())
    ctx.output("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def _report(ctx: StageContext) -> None:
    from geodl.tasks.mapping_report import write_mapping_report

    write_mapping_report(ctx)


def _stages(cfg: Any) -> tuple[Stage, ...]:
    stages: list[Stage] = []
    base: tuple[str, ...] = ()
    inputs = ("data", "obs", "split", "patch")
    if cfg.data.path is None:
        outputs = ("truth.nc", "members.nc") if cfg.simulate.members > 1 else ("truth.nc",)
        stages.append(Stage("simulate", _simulate, sections=("simulate",), outputs=outputs))
        base = ("simulate",)

    def external_obs(c: Any) -> list[Path]:
        paths = [Path(c.data.path)] if c.data.path else []
        return paths + ([Path(c.obs.path)] if c.obs.kind == "file" and c.obs.path else [])

    members = cfg.data.path is None and cfg.simulate.members > 1
    stages.append(
        Stage(
            "prepare",
            _prepare,
            sections=inputs,
            needs=base,
            outputs=("obs.nc", "prepare.json", *(("obs_members.nc",) if members else ())),
            external_inputs=external_obs,
        )
    )
    prep_needs = (*base, "prepare")
    sections = {m: getattr(cfg, m) for m in cfg.methods}
    for method in cfg.methods:
        deps = METHODS[method].depends(sections[method], sections)
        stages.append(
            Stage(
                f"train_{method}",
                _train_stage(method),
                sections=(method, *deps),
                needs=(*prep_needs, *(f"train_{d}" for d in deps)),
                outputs=(_artifact(method),),
            )
        )
    for method in cfg.methods:
        stages.append(
            Stage(
                f"predict_{method}",
                _predict_stage(method),
                sections=(),
                needs=(*prep_needs, f"train_{method}"),
                outputs=(f"predictions/{method}.nc",),
            )
        )
    predicted = tuple(f"predict_{m}" for m in cfg.methods)
    trained = tuple(f"train_{m}" for m in cfg.methods)
    stages.append(
        Stage(
            "evaluate",
            _evaluate,
            sections=("methods",),
            needs=(*prep_needs, *trained, *predicted),
            outputs=("metrics.json",),
        )
    )
    stages.append(
        Stage(
            "report",
            _report,
            sections=("report",),
            needs=(*prep_needs, *trained, *predicted, "evaluate"),
            outputs=("report",),
        )
    )
    return tuple(stages)


def experiment() -> Experiment:
    """The mapping experiment over the methods registered now (see :mod:`geodl.methods.mapping`)."""
    return Experiment(task="mapping", schema=build_schema(), stage_factory=_stages)


EXPERIMENT = register(experiment())
