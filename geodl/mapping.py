"""Mapping from Python: xarray in, xarray out.

Examples
--------
Fit a method on a twin experiment (observations of a known truth) and reconstruct other days::

    import geodl.mapping
    model = geodl.mapping.fit(obs, truth=truth, method="dincae",
                              train={"max_epochs": 20}, model={"depth": 2, "width": 16})
    out = model.reconstruct(obs_test)          # xr.Dataset with mean and std
    geodl.metrics.score(out["mean"], truth_test, std=out["std"])

``obs`` and ``truth`` are DataArrays ``(time, y, x)`` on the same grid (NaN where unobserved / on
land); y and x in km or m (projected) or degrees (lat/lon).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geodl.config import validate
from geodl.data import GriddedSource, compute_stats, find_axes
from geodl.errors import DataError, UserInputError
from geodl.methods.mapping import (
    METHODS,
    MappingData,
    PatchSection,
    get_method,
    observed_scales,
)

__all__ = ["MappingModel", "fit"]


def _dims(da: xr.DataArray, what: str) -> tuple[str, str, str]:
    if not isinstance(da, xr.DataArray):
        raise UserInputError(f"{what} must be an xarray.DataArray, got {type(da).__name__}")
    axes = find_axes(da)
    if axes.time is None or axes.y is None or axes.x is None or da.ndim != 3:
        raise DataError(
            f"{what} must have dims (time, y, x) (or lat/lon), got {da.dims}; select or "
            "squeeze the other dims first"
        )
    return (axes.time, axes.y, axes.x)


def _dataset(obs: xr.DataArray, truth: xr.DataArray | None, name: str) -> xr.Dataset:
    dims = _dims(obs, "obs")
    obs = obs.transpose(*dims)
    target = obs if truth is None else truth.transpose(*_dims(truth, "truth"))
    if target.shape != obs.shape:
        raise DataError(f"obs {obs.shape} and truth {target.shape} are not on the same grid")
    return xr.Dataset({name: target.variable, f"{name}_obs": obs.variable}, coords=obs.coords)


@dataclass
class MappingModel:
    """A fitted mapping method: call :meth:`reconstruct` on observations of other times.

    ``artifact`` is the file the method's ``fit`` wrote (a checkpoint, or the tuned OI's JSON).
    """

    method: str
    name: str
    section: Any
    data: MappingData
    artifact: Path
    summary: dict[str, Any]
    land: np.ndarray  # (y, x) True on land: where the truth was always NaN

    def reconstruct(self, obs: xr.DataArray) -> xr.Dataset:
        """Complete field ``mean`` and, where the method gives one, ``std``, on ``obs``'s grid."""
        ds = _dataset(obs, None, self.name)
        dims = _dims(obs, "obs")
        n = ds.sizes[dims[0]]
        if METHODS[self.method].learned and n < self.data.patch.time:
            raise DataError(
                f"obs has {n} time steps; the model needs at least {self.data.patch.time}"
            )
        # the observations stand in for the target here: land must come from the fit
        if self.land.shape != ds[self.name].shape[1:]:
            raise DataError(
                f"obs grid {ds[self.name].shape[1:]} differs from the fitted grid {self.land.shape}"
            )
        ds["land_mask"] = (dims[1:], self.land.astype("int8"))
        source = GriddedSource(ds, target=self.name, obs=f"{self.name}_obs", land_mask="land_mask")
        data = replace(self.data, source=source, splits={"test": (0, n)}, extra=())
        mean, std = METHODS[self.method].reconstruct(self.section, data, self.artifact, (0, n))
        out = {"mean": mean.rename("mean")}
        if std is not None:
            out["std"] = std.rename("std")
        result = xr.Dataset(out, attrs={"source": f"geodl.mapping {self.method}"})
        return source.restore_order(result)  # on obs's grid, in its order (e.g. lat descending)


def fit(
    obs: xr.DataArray,
    truth: xr.DataArray,
    *,
    method: str = "unet",
    noise_std: float = 0.0,
    val_fraction: float = 0.2,
    patch: dict[str, Any] | None = None,
    periodic: bool = False,
    work_dir: str | Path | None = None,
    **settings: Any,
) -> MappingModel:
    """Fit ``method`` (a name of :data:`geodl.methods.mapping.METHODS`: "oi", "unet", "dincae",
    "fourdvarnet", ...) to map ``obs`` onto ``truth``.

    The last ``val_fraction`` of the time axis (after a gap of one window) validates the learned
    methods and tunes OI; normalisation statistics and the observations' correlation scales come
    from the training part. ``patch`` takes the keys of the experiment's ``patch`` section,
    ``settings`` those of the method's section (e.g. ``model``, ``loss``, ``mask_swap``, ``train``
    for a learned method; ``lx_km``, ``tune`` for OI). ``periodic``: the grid is doubly periodic
    (OI distances wrap). Checkpoints and logs go to ``work_dir`` (a temporary directory by
    default).
    """
    entry = get_method(method)
    if not 0 < val_fraction < 1:
        raise UserInputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    name = str(truth.name or "field")
    ds = _dataset(obs, truth, name)
    dims = _dims(truth, "truth")
    patch_cfg = validate(patch or {}, PatchSection, "patch")
    n = ds.sizes[dims[0]]
    n_val = max(patch_cfg.time, int(round(n * val_fraction)))
    train_stop = n - n_val - patch_cfg.time
    if train_stop < patch_cfg.time:
        raise DataError(
            f"{n} time steps are too few for a training and a validation part with windows of "
            f"{patch_cfg.time} (and a gap of one window between them)"
        )
    splits = {"train": (0, train_stop), "val": (n - n_val, n)}
    values = ds[f"{name}_obs"].values[:train_stop]
    if not np.isfinite(values).any():
        raise DataError("no observation in the training part of obs")
    stats = compute_stats(ds, [name], time_range=splits["train"])
    stats["variables"][f"{name}_obs"] = stats["variables"][name]
    if entry.learned:
        settings.setdefault("train", {})
        settings["train"] = {"progress_bar": False, **settings["train"]}
    section = validate(settings, entry.section, method)
    try:
        entry.depends(section, {method: section})
    except ValueError as exc:  # e.g. a warm start from another method: a task-only setting
        raise UserInputError(f"{exc} (geodl.mapping.fit trains one method)") from None
    train_obs = ds[f"{name}_obs"].isel({dims[0]: slice(0, train_stop)})
    scales, _ = observed_scales(train_obs, noise_std, periodic=periodic)
    data = MappingData(
        source=GriddedSource(ds, target=name, obs=f"{name}_obs"),
        splits=splits,
        normalizer=stats,
        patch=patch_cfg,
        noise_std=noise_std,
        obs_std=float(np.nanstd(values)),
        obs_mean=float(np.nanmean(values)),
        scales=scales,
        periodic=periodic,
    )
    root = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="geodl-mapping-"))
    artifact = root / "models" / f"{method}{entry.artifact}"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    summary = entry.fit(
        section,
        data,
        artifact,
        work_dir=root,
        key=f"api:{method}",
        metadata={"config": section.model_dump(mode="json")},
    )
    return MappingModel(
        method=method,
        name=name,
        section=section,
        data=data,
        artifact=artifact,
        summary=summary,
        land=np.isnan(ds[name].values).all(0),
    )
