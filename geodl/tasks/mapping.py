"""Mapping experiment: sparse satellite observations -> gridded field with uncertainty.

Stages: ``simulate`` (only without ``data.path``: the embedded QG twin truth) -> ``prepare``
(observations, splits, normalisation) -> ``train_<method>`` (each learned method) ->
``predict_<method>`` (every method, the whole test period, stitched mean and std) -> ``evaluate``
(``metrics.json``) -> ``report``. One stage per method, so that changing one method's settings
re-runs that method only.

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
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from pydantic import Field

from geodl.config import Section
from geodl.data import GriddedSource, Normalizer, PatchDataset, collate, make_splits, stitch
from geodl.errors import ConfigError, DataError
from geodl.pipeline import Experiment, Stage, StageContext
from geodl.tasks.registry import ExperimentSection, register
from geodl.training import TaskModule, TrainSection, fit, load_checkpoint, load_model_weights

__all__ = [
    "LEARNED",
    "METHODS",
    "MappingConfig",
    "grid_km",
    "mapping_loss",
    "reconstruct_learned",
    "reconstruct_oi",
    "train_model",
]

log = logging.getLogger("geodl.mapping")

LEARNED = ("unet", "dincae", "fourdvarnet")
METHODS = ("oi", *LEARNED)
LOSS_TERMS = ("mse", "grad", "nll")
EARTH_KM_PER_DEG = 111.195


# ----- configuration -----------------------------------------------------------------------
class DataSection(Section):
    path: str | None = Field(None, description="NetCDF/Zarr truth; null: embedded QG simulation")
    variable: str = "ssh"
    land_mask: str | None = None


class SimulateSection(Section):
    """Embedded QG twin truth (used when ``data.path`` is null)."""

    preset: Literal["eddy", "jet"] = "eddy"
    nx: int = Field(64, ge=8)
    days: float = Field(730.0, gt=0)
    spinup_days: float = Field(1460.0, ge=0)
    seed: int = 0
    threads: int | None = Field(None, gt=0)


class ObsSection(Section):
    kind: Literal["nadir", "swath", "clouds", "file"] = "nadir"
    noise_std: float = Field(0.01, ge=0, description="observation error std (field units)")
    seed: int = 0
    # nadir / swath
    n_satellites: int = Field(4, gt=0)
    repeat_days: float = Field(10.0, gt=0)
    track_spacing_km: float = Field(250.0, gt=0)
    track_angle_deg: float = 70.0
    along_track_km: float = Field(7.0, gt=0)
    swath_width_km: float = Field(50.0, gt=0)
    gap_km: float = Field(20.0, ge=0)
    # clouds
    cover: float = Field(0.5, gt=0, lt=1)
    length_scale_km: float = Field(100.0, gt=0)
    persistence: float = Field(0.8, ge=0, lt=1)
    # file: gridded obs on the truth grid, or a point table (time, y|lat, x|lon, variable)
    path: str | None = None
    variable: str | None = None


class SplitSection(Section):
    """Inclusive time ranges (days for numeric time axes, dates for calendar ones)."""

    train: list[float | str] = Field(min_length=2, max_length=2)
    val: list[float | str] = Field(min_length=2, max_length=2)
    test: list[float | str] = Field(min_length=2, max_length=2)


class PatchSection(Section):
    time: int = Field(5, gt=0)
    y: int = Field(64, gt=0)
    x: int = Field(64, gt=0)
    stride_time: int = Field(1, gt=0)
    stride_y: int | None = Field(None, gt=0)
    stride_x: int | None = Field(None, gt=0)
    max_land_fraction: float | None = Field(None, ge=0, le=1)


class OISection(Section):
    lx_km: float = Field(100.0, gt=0)
    ly_km: float = Field(100.0, gt=0)
    lt_days: float = Field(10.0, gt=0)
    signal_std: float | None = Field(None, gt=0, description="default: from training obs")
    noise_std: float | None = Field(None, gt=0, description="default: obs.noise_std")
    tile_time: int = Field(5, gt=0)
    tile_space: int = Field(32, gt=0)
    max_obs: int = Field(1000, gt=0)


class LearnedSection(Section):
    model: dict[str, Any] = Field(default_factory=dict)
    loss: dict[str, float] = Field(default_factory=lambda: {"mse": 1.0})
    mask_swap: float = Field(0.0, ge=0, le=1, description="probability of mask-swap augmentation")
    train: TrainSection = TrainSection()


class ReportSection(Section):
    days: list[int] = Field(default_factory=lambda: [0], description="test-period day indices")


class MappingConfig(Section):
    experiment: ExperimentSection
    data: DataSection = DataSection()
    simulate: SimulateSection = SimulateSection()
    obs: ObsSection = ObsSection()
    split: SplitSection
    patch: PatchSection = PatchSection()
    methods: list[Literal["oi", "unet", "dincae", "fourdvarnet"]] = Field(
        default_factory=lambda: list(METHODS), min_length=1
    )
    oi: OISection = OISection()
    unet: LearnedSection = LearnedSection()
    dincae: LearnedSection = LearnedSection(loss={"nll": 1.0})
    fourdvarnet: LearnedSection = LearnedSection(loss={"mse": 1.0, "grad": 0.1}, mask_swap=0.5)
    report: ReportSection = ReportSection()


# ----- grids and sources -------------------------------------------------------------------
def _days(time: np.ndarray) -> np.ndarray:
    if np.issubdtype(time.dtype, np.datetime64):
        return (time - time[0]) / np.timedelta64(1, "D")
    return np.asarray(time, dtype=np.float64)


def grid_km(ds: xr.Dataset | xr.DataArray, y: str, x: str) -> tuple[np.ndarray, np.ndarray, str]:
    """1-D y and x coordinates in km: projected (km or m) as they are, geographic (degrees)
    mapped with an equirectangular projection about the domain centre. Returns (y_km, x_km, kind).
    """
    yc, xc = ds[y], ds[x]
    units = (str(yc.attrs.get("units", "")) + str(xc.attrs.get("units", ""))).lower()
    geographic = "degree" in units or y.lower().startswith("lat") or x.lower().startswith("lon")
    yv, xv = yc.values.astype(np.float64), xc.values.astype(np.float64)
    if geographic:
        lat0 = math.radians(float(np.mean(yv)))
        return yv * EARTH_KM_PER_DEG, xv * EARTH_KM_PER_DEG * math.cos(lat0), "geographic"
    if "km" in units or units.strip() == "":
        return yv, xv, "projected"
    if units.strip() in ("mm", "m m", "metre", "metres", "meter", "meters") or "m" in units:
        return yv / 1000.0, xv / 1000.0, "projected"
    return yv, xv, "projected"


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


# ----- stages ------------------------------------------------------------------------------
def _simulate(ctx: StageContext) -> None:
    from geodl.tasks.simulate import qg_dataset

    s = ctx.cfg.simulate
    ds = qg_dataset(
        preset=s.preset,
        nx=s.nx,
        days=s.days,
        spinup_days=s.spinup_days,
        seed=s.seed,
        variables=("ssh",),
        threads=s.threads,
    )
    ds.to_netcdf(ctx.output("truth.nc"))


def _observe(ctx: StageContext, truth: xr.DataArray, axes: tuple[str, str, str]) -> np.ndarray:
    """Gridded observations ``(time, y, x)`` of ``truth`` according to ``obs``."""
    from geodl.obs import Grid, observe_clouds, observe_nadir, observe_swath

    o = ctx.cfg.obs
    t_dim, y_dim, x_dim = axes
    y_km, x_km, _ = grid_km(truth, y_dim, x_dim)
    grid = Grid(time=_days(truth[t_dim].values), y=y_km, x=x_km)
    field = truth.transpose(t_dim, y_dim, x_dim).values
    common = {"noise_std": o.noise_std, "seed": o.seed}
    orbits = {
        "n_satellites": o.n_satellites,
        "repeat_days": o.repeat_days,
        "track_spacing_km": o.track_spacing_km,
        "track_angle_deg": o.track_angle_deg,
    }
    if o.kind == "nadir":
        made = observe_nadir(field, grid, along_track_km=o.along_track_km, **orbits, **common)
    elif o.kind == "swath":
        made = observe_swath(
            field, grid, swath_width_km=o.swath_width_km, gap_km=o.gap_km, **orbits, **common
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
    tv = _days(np.concatenate(([t0], tv)))[1:] if np.issubdtype(tv.dtype, np.datetime64) else tv
    if "lat" in pick[1].lower():
        lat0 = math.radians(float(np.mean(truth[y_dim].values)))
        yv, xv = yv * EARTH_KM_PER_DEG, xv * EARTH_KM_PER_DEG * math.cos(lat0)
    binned, dropped = bin_points(tv, yv, xv, da.values, grid)
    if dropped:
        log.warning("%d observation points fall outside the truth's grid and were dropped", dropped)
    return binned.astype(np.float32)


def _prepare(ctx: StageContext) -> None:
    from geodl.data import compute_stats

    cfg = ctx.cfg
    var = cfg.data.variable
    src = GriddedSource(_truth_path(ctx), target=var, land_mask=cfg.data.land_mask)
    t_dim, y_dim, x_dim = src.dims
    truth = src.variable(var, dask=False).load()
    if not np.isfinite(truth.values).any():
        raise DataError(
            f"truth variable '{var}' in {_truth_path(ctx)} is NaN everywhere; check data.variable "
            "or the file's _FillValue"
        )
    obs = _observe(ctx, truth, src.dims)
    if not np.isfinite(obs).any():
        raise DataError(f"no observation at all of '{var}' (obs.kind {cfg.obs.kind})")
    coords = {d: truth[d] for d in (t_dim, y_dim, x_dim)}
    obs_da = xr.DataArray(
        obs,
        dims=(t_dim, y_dim, x_dim),
        coords=coords,
        attrs={
            "long_name": f"observations of {var} ({cfg.obs.kind}), NaN where unobserved",
            "units": truth.attrs.get("units", ""),
        },
    )
    xr.Dataset(
        {f"{var}_obs": obs_da},
        attrs={"Conventions": "CF-1.8", "source": f"geodl obs: {cfg.obs.model_dump_json()}"},
    ).to_netcdf(ctx.output("obs.nc"))

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
    if cfg.obs.kind != "file" and cfg.obs.noise_std > obs_std / math.sqrt(2):
        msg = (
            f"obs.noise_std {cfg.obs.noise_std:g} exceeds the std of the signal it observes "
            f"(observations' std {obs_std:.3g}): the observations are mostly noise"
        )
        log.warning(msg)
        warnings.append(msg)
    y_km, x_km, kind = grid_km(truth, y_dim, x_dim)
    prep = {
        "variable": var,
        "dims": [t_dim, y_dim, x_dim],
        "splits": {k: [s.start, s.stop] for k, s in splits.items()},
        "dropped_for_gaps": {k: s.dropped for k, s in splits.items()},
        "normalizer": stats,
        "coverage": coverage,
        "obs_std_train": obs_std,
        "obs_mean_train": float(np.nanmean(train_obs)),
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


def mapping_loss(
    weights: dict[str, float], *, mask_swap: float = 0.0, noise_std: float = 0.0
) -> Callable[[torch.nn.Module, Any], dict[str, torch.Tensor]]:
    """Loss function for :class:`~geodl.training.TaskModule` on mapping batches.

    ``weights`` maps term names (``mse``, ``grad``, ``nll``) to weights from the config. With
    probability ``mask_swap`` a training batch gets the observation masks of other windows
    (rolled along the batch) applied to its own truth plus noise of ``noise_std`` (normalised units):
    new observing patterns for the same fields, the 4DVarNet augmentation.
    """
    from geodl import losses

    unknown = sorted(set(weights) - set(LOSS_TERMS))
    if unknown or not weights:
        raise ConfigError(f"loss terms {unknown or '{}'} invalid; choose from {list(LOSS_TERMS)}")

    def loss_fn(model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        obs, mask = batch.obs, batch.obs_mask
        if (
            model.training
            and mask_swap > 0
            and batch.batch_size > 1
            and (torch.rand(()) < mask_swap)
        ):
            mask = torch.roll(batch.obs_mask, 1, 0) & batch.target_mask
            noisy = batch.target + noise_std * torch.randn_like(batch.target)
            obs = torch.where(mask, noisy, torch.zeros_like(noisy))
        out = model(obs, mask.to(obs.dtype))
        tm = batch.target_mask
        terms: dict[str, torch.Tensor] = {}
        if "mse" in weights:
            terms["mse"] = losses.mse(out.mean, batch.target, mask=tm)
        if "grad" in weights:
            terms["grad"] = losses.gradient_loss(out.mean, batch.target, mask=tm)
        if "nll" in weights:
            if out.log_var is None:
                raise ConfigError(
                    "loss term 'nll' needs a model that predicts a variance (dincae, or "
                    "fourdvarnet with model.variance: true)"
                )
            terms["nll"] = losses.gaussian_nll(out.mean, batch.target, log_var=out.log_var, mask=tm)
        terms["loss"] = sum(weights[k] * terms[k] for k in weights)
        if "mse" not in terms:
            with torch.no_grad():
                terms["mse"] = losses.mse(out.mean, batch.target, mask=tm)
        return terms

    return loss_fn


def _patch(p: PatchSection) -> tuple[dict[str, int], dict[str, int]]:
    size = {"time": p.time, "y": p.y, "x": p.x}
    stride = {"time": p.stride_time, "y": p.stride_y or p.y, "x": p.stride_x or p.x}
    return size, stride


def train_model(
    method: str,
    source: GriddedSource,
    splits: dict[str, tuple[int, int]],
    normalizer: dict[str, Any],
    *,
    patch: PatchSection,
    section: LearnedSection,
    noise_std: float,
    ckpt_dir: Path,
    log_dir: Path,
    key: str,
    metadata: dict[str, Any],
) -> tuple[torch.nn.Module, Path]:
    """Train one learned mapping method on the ``train`` split (validated on ``val``).

    ``noise_std`` is the observation noise in the target's units (used by mask-swap augmentation).
    Returns the trained model and its checkpoint (averaged, else best on validation, else last).
    """
    from geodl.models import build_model

    size, stride = _patch(patch)
    norm = Normalizer(normalizer)
    data = {
        name: PatchDataset(
            source,
            size,
            stride,
            split=tuple(splits[name]),
            normalizer=norm,
            max_land_fraction=patch.max_land_fraction,
        )
        for name in ("train", "val")
    }
    for name, ds in data.items():
        if len(ds) == 0:
            raise DataError(f"split '{name}' has no usable patch of size {size}")
    var = source.target[0]
    model = build_model(method, in_channels=1, n_times=patch.time, **section.model)
    times = source.times

    def describe(batch: Any) -> str:
        i0, i1 = int(batch.time_index.min()), int(batch.time_index.max()) + patch.time - 1
        return f"batch times {times[i0]} .. {times[min(i1, len(times) - 1)]}"

    module = TaskModule(
        model,
        mapping_loss(
            section.loss,
            mask_swap=section.mask_swap,
            noise_std=noise_std / normalizer["variables"][var]["std"],
        ),
        section.train,
        describe_batch=describe,
        metadata={**metadata, "method": method, "normalizer": normalizer},
    )
    result = fit(
        module,
        data["train"],
        data["val"],
        section.train,
        ckpt_dir=ckpt_dir,
        log_dir=log_dir,
        key=key,
        collate_fn=collate,
    )
    best = result.averaged_path or result.best_path or result.last_path
    log.info("%s trained: %d epochs, best val %s", method, result.epochs, result.best_score)
    return load_model_weights(model, load_checkpoint(best)).eval(), best


def reconstruct_learned(
    model: torch.nn.Module,
    source: GriddedSource,
    split: tuple[int, int],
    normalizer: dict[str, Any],
    patch: PatchSection,
    *,
    batch_size: int = 8,
) -> tuple[xr.DataArray, xr.DataArray | None]:
    """Mean (and std, for models with a variance head) over the time range ``split``, stitched
    from overlapping patches in the source's units."""
    var = source.target[0]
    size, stride = _patch(patch)
    norm = Normalizer(normalizer)
    data = PatchDataset(source, size, stride, split=split, normalizer=norm)
    means, stds, starts = [], [], []
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=collate)
    model = model.eval()
    with torch.no_grad():
        for batch in loader:
            out = model(batch.obs, batch.obs_mask.to(batch.obs.dtype))
            means.append(out.mean)
            if out.log_var is not None:
                stds.append(torch.exp(0.5 * out.log_var))
            starts.append(batch.starts)
    start = torch.cat(starts)
    mean = stitch(torch.cat(means), start, source, names=[var], normalizer=norm)[var]
    std = None
    if stds:
        scale = float(normalizer["variables"][var]["std"])
        std = stitch(torch.cat(stds), start, source, names=[var])[var] * scale
    return mean, std


def _train_stage(method: str) -> Callable[[StageContext], None]:
    def run(ctx: StageContext) -> None:
        cfg = ctx.cfg
        prep = _prep(ctx)
        _, best = train_model(
            method,
            _source(ctx),
            prep["splits"],
            prep["normalizer"],
            patch=cfg.patch,
            section=getattr(cfg, method),
            noise_std=cfg.obs.noise_std,
            ckpt_dir=ctx.run_dir / "checkpoints" / method,
            log_dir=ctx.run_dir / "logs" / method,
            key=ctx.key,
            metadata={"config": cfg.model_dump(mode="json"), "grid": prep["grid"]},
        )
        shutil.copyfile(best, ctx.output(f"models/{method}.ckpt"))

    return run


def _write_prediction(
    ctx: StageContext, method: str, mean: xr.DataArray, std: xr.DataArray | None
) -> None:
    var = ctx.cfg.data.variable
    units = mean.attrs.get("units", "")
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


def reconstruct_oi(
    obs: xr.DataArray,
    dims: tuple[str, str, str],
    oi: OISection,
    *,
    noise_std: float,
    signal_std: float,
    mean: float,
) -> tuple[xr.DataArray, xr.DataArray]:
    """Optimal interpolation of gridded observations ``obs`` (NaN where unobserved)."""
    from geodl.baselines import OIParams, optimal_interpolation

    t_dim, y_dim, x_dim = dims
    obs = obs.transpose(t_dim, y_dim, x_dim)
    y_km, x_km, _ = grid_km(obs, y_dim, x_dim)
    params = OIParams(
        lx=oi.lx_km,
        ly=oi.ly_km,
        lt=oi.lt_days,
        signal_std=oi.signal_std or signal_std,
        # a floor keeps the system well conditioned when observations are given as exact
        noise_std=oi.noise_std or max(noise_std, 1e-3 * (oi.signal_std or signal_std)),
    )
    m, s = optimal_interpolation(
        torch.from_numpy(obs.values.astype(np.float64)),
        torch.from_numpy(_days(obs[t_dim].values)),
        torch.from_numpy(y_km),
        torch.from_numpy(x_km),
        params,
        tile=(oi.tile_time, oi.tile_space, oi.tile_space),
        max_obs=oi.max_obs,
        mean=mean,
    )
    attrs = {"units": obs.attrs.get("units", "")}
    return (
        xr.DataArray(m.numpy().astype(np.float32), dims=obs.dims, coords=obs.coords, attrs=attrs),
        xr.DataArray(s.numpy().astype(np.float32), dims=obs.dims, coords=obs.coords, attrs=attrs),
    )


def _signal_std(obs_std: float, noise_std: float) -> float:
    """Signal std from the observations' spread minus the noise variance."""
    return math.sqrt(max(obs_std**2 - noise_std**2, 1e-12))


def _predict_oi(ctx: StageContext) -> None:
    cfg, prep = ctx.cfg, _prep(ctx)
    var = cfg.data.variable
    t_dim = prep["dims"][0]
    a, b = prep["splits"]["test"]
    with xr.open_dataset(ctx.input("obs.nc")) as ds:
        obs = ds[f"{var}_obs"].isel({t_dim: slice(a, b)}).load()
    m, s = reconstruct_oi(
        obs,
        tuple(prep["dims"]),
        cfg.oi,
        noise_std=cfg.obs.noise_std,
        signal_std=_signal_std(prep["obs_std_train"], cfg.obs.noise_std),
        mean=prep["obs_mean_train"],
    )
    land = _land(ctx)
    m.attrs["units"] = s.attrs["units"] = prep["units"]
    _write_prediction(ctx, "oi", m.where(~land), s.where(~land))


def _land(ctx: StageContext) -> xr.DataArray:
    """True where the truth is NaN at every time (land)."""
    var, (t_dim, _, _) = ctx.cfg.data.variable, _prep(ctx)["dims"]
    with xr.open_dataset(_truth_path(ctx)) as ds:
        return ds[var].isnull().all(t_dim).load()


def _predict_learned(method: str) -> Callable[[StageContext], None]:
    def run(ctx: StageContext) -> None:
        from geodl.models import build_model

        cfg, prep = ctx.cfg, _prep(ctx)
        ckpt = load_checkpoint(ctx.input(f"models/{method}.ckpt"))
        model = build_model(
            method, in_channels=1, n_times=cfg.patch.time, **getattr(cfg, method).model
        )
        model = load_model_weights(model, ckpt)
        mean, std = reconstruct_learned(
            model,
            _source(ctx),
            tuple(prep["splits"]["test"]),
            ckpt["geodl"]["normalizer"],
            cfg.patch,
        )
        mean.attrs["units"] = prep["units"]
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
    grid = _grid_spacing(truth, prep)
    results = {}
    for method in cfg.methods:
        with xr.open_dataset(ctx.input(f"predictions/{method}.nc")) as ds:
            pred = ds[var].load().reindex_like(truth)
            std = ds[f"{var}_std"].load().reindex_like(truth) if f"{var}_std" in ds else None
        results[method] = score(pred, truth, std=std, **grid, **dims)
        ctx.log.info("%s: %s", method, results[method])
    units = score_units(truth, **grid, **dims)
    if prep["grid"]["kind"] == "projected":
        units["lambda_x"] = "km"
    metrics = {"task": "mapping", "methods": results, "units": units, "test_period": [a, b]}
    ctx.output("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def _grid_spacing(truth: xr.DataArray, prep: dict[str, Any]) -> dict[str, float | None]:
    """Spacings given to the metrics: km for projected grids, the grid's own degrees otherwise."""
    if prep["grid"]["kind"] == "projected":
        return {"dx": prep["grid"]["dx_km"], "dt": None}
    return {"dx": None, "dt": None}


def _report(ctx: StageContext) -> None:
    from geodl.tasks.mapping_report import write_mapping_report

    write_mapping_report(ctx)


def _stages(cfg: Any) -> tuple[Stage, ...]:
    stages: list[Stage] = []
    base: tuple[str, ...] = ()
    inputs = ("data", "obs", "split", "patch")
    if cfg.data.path is None:
        stages.append(Stage("simulate", _simulate, sections=("simulate",), outputs=("truth.nc",)))
        base = ("simulate",)

    def external_obs(c: Any) -> list[Path]:
        paths = [Path(c.data.path)] if c.data.path else []
        return paths + ([Path(c.obs.path)] if c.obs.kind == "file" and c.obs.path else [])

    stages.append(
        Stage(
            "prepare",
            _prepare,
            sections=inputs,
            needs=base,
            outputs=("obs.nc", "prepare.json"),
            external_inputs=external_obs,
        )
    )
    prep_needs = (*base, "prepare")
    for method in cfg.methods:
        if method in LEARNED:
            stages.append(
                Stage(
                    f"train_{method}",
                    _train_stage(method),
                    sections=(method,),
                    needs=prep_needs,
                    outputs=(f"models/{method}.ckpt",),
                )
            )
    for method in cfg.methods:
        learned = method in LEARNED
        stages.append(
            Stage(
                f"predict_{method}",
                _predict_learned(method) if learned else _predict_oi,
                sections=(method,) if not learned else (),
                needs=(*prep_needs, f"train_{method}") if learned else prep_needs,
                outputs=(f"predictions/{method}.nc",),
            )
        )
    predicted = tuple(f"predict_{m}" for m in cfg.methods)
    stages.append(
        Stage(
            "evaluate",
            _evaluate,
            sections=("methods",),
            needs=(*prep_needs, *predicted),
            outputs=("metrics.json",),
        )
    )
    trained = tuple(f"train_{m}" for m in cfg.methods if m in LEARNED)
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


EXPERIMENT = register(Experiment(task="mapping", schema=MappingConfig, stage_factory=_stages))
