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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from geodl.config import validate
from geodl.data import GriddedSource, compute_stats, find_axes
from geodl.errors import DataError, UserInputError
from geodl.tasks.mapping import (
    METHODS,
    LearnedSection,
    OISection,
    PatchSection,
    reconstruct_learned,
    reconstruct_oi,
    train_model,
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
    """A fitted mapping method: call :meth:`reconstruct` on observations of other times."""

    method: str
    name: str
    patch: PatchSection
    normalizer: dict[str, Any]
    model: torch.nn.Module | None = None
    oi: OISection | None = None
    noise_std: float = 0.0
    signal_std: float = 1.0
    mean: float = 0.0
    checkpoint: Path | None = None
    land: np.ndarray | None = None  # (y, x) True on land: where the truth was always NaN

    def reconstruct(self, obs: xr.DataArray) -> xr.Dataset:
        """Complete field ``mean`` and, where the method gives one, ``std``, on ``obs``'s grid."""
        ds = _dataset(obs, None, self.name)
        dims = _dims(obs, "obs")
        if self.method == "oi":
            if self.oi is None:
                raise UserInputError("this OI model has no OI settings; build it with fit(...)")
            mean, std = reconstruct_oi(
                ds[f"{self.name}_obs"],
                dims,
                self.oi,
                noise_std=self.noise_std,
                signal_std=self.signal_std,
                mean=self.mean,
            )
        else:
            if ds.sizes[dims[0]] < self.patch.time:
                raise DataError(
                    f"obs has {ds.sizes[dims[0]]} time steps; the model needs at least "
                    f"{self.patch.time}"
                )
            # the observations stand in for the target here: land must come from the fit
            land = self.land if self.land is not None else np.zeros(ds[self.name].shape[1:], bool)
            if land.shape != ds[self.name].shape[1:]:
                raise DataError(
                    f"obs grid {ds[self.name].shape[1:]} differs from the fitted grid {land.shape}"
                )
            ds["land_mask"] = (dims[1:], land.astype("int8"))
            source = GriddedSource(
                ds, target=self.name, obs=f"{self.name}_obs", land_mask="land_mask"
            )
            mean, std = reconstruct_learned(
                self.model, source, (0, ds.sizes[dims[0]]), self.normalizer, self.patch
            )
        out = {"mean": mean.rename("mean")}
        if std is not None:
            out["std"] = std.rename("std")
        return xr.Dataset(out, attrs={"source": f"geodl.mapping {self.method}"})


def fit(
    obs: xr.DataArray,
    truth: xr.DataArray,
    *,
    method: str = "unet",
    noise_std: float = 0.0,
    val_fraction: float = 0.2,
    patch: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    loss: dict[str, float] | None = None,
    mask_swap: float = 0.0,
    train: dict[str, Any] | None = None,
    oi: dict[str, Any] | None = None,
    work_dir: str | Path | None = None,
) -> MappingModel:
    """Fit ``method`` ("oi", "unet", "dincae", "fourdvarnet") to map ``obs`` onto ``truth``.

    The last ``val_fraction`` of the time axis (after a gap of one window) validates the learned
    methods; normalisation statistics come from the training part. ``patch``, ``model``, ``loss``,
    ``train`` and ``oi`` take the keys of the experiment config sections of the same names.
    Checkpoints and logs go to ``work_dir`` (a temporary directory by default).
    """
    if method not in METHODS:
        raise UserInputError(f"unknown mapping method '{method}'; choose one of {list(METHODS)}")
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
    obs_std = float(np.nanstd(values))
    stats = compute_stats(ds, [name], time_range=splits["train"])
    stats["variables"][f"{name}_obs"] = stats["variables"][name]
    fitted = MappingModel(
        method=method,
        name=name,
        patch=patch_cfg,
        normalizer=stats,
        noise_std=noise_std,
        signal_std=float(np.sqrt(max(obs_std**2 - noise_std**2, 1e-12))),
        mean=float(np.nanmean(values)),
        land=np.isnan(ds[name].values).all(0),
    )
    if method == "oi":
        fitted.oi = validate(oi or {}, OISection, "oi")
        return fitted
    section = validate(
        {
            "model": model or {},
            "loss": loss or ({"nll": 1.0} if method == "dincae" else {"mse": 1.0}),
            "mask_swap": mask_swap,
            "train": {"progress_bar": False, **(train or {})},
        },
        LearnedSection,
        "fit",
    )
    root = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="geodl-mapping-"))
    source = GriddedSource(ds, target=name, obs=f"{name}_obs")
    fitted.model, fitted.checkpoint = train_model(
        method,
        source,
        splits,
        stats,
        patch=patch_cfg,
        section=section,
        noise_std=noise_std,
        ckpt_dir=root / "checkpoints" / method,
        log_dir=root / "logs" / method,
        key=f"api:{method}",
        metadata={"config": section.model_dump(mode="json")},
    )
    return fitted
