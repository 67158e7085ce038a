"""Observations of gridded fields: where an xarray field ``(time, y, x)`` meets the observation
operators of :mod:`geodl.obs`, and where a user's observation file is read onto a grid.

``geodl observe`` (:func:`geodl.tasks.simulate.observe_dataset`) and the mapping experiment's
``prepare`` stage both go through :func:`observe_field`, so a swath or a nadir constellation is
the same orbit whichever way it is asked for; :class:`ObsSection` states the defaults once.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
from pydantic import Field, model_validator

from geodl.config import Section
from geodl.errors import ConfigError, DataError, UserInputError
from geodl.grid import EARTH_KM_PER_DEG, days, grid_km

__all__ = [
    "KIND_OPTIONS",
    "ObsSection",
    "noise_level",
    "observation_dataset",
    "observe",
    "observe_members",
    "observe_field",
    "obs_grid",
    "read_observations",
]

log = logging.getLogger("geodl.obs")

_TRACK = ("n_satellites", "repeat_days", "track_spacing_km", "track_angle_deg")
#: the :class:`ObsSection` keys each kind's operator reads (besides noise_std and seed)
KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "nadir": (*_TRACK, "along_track_km"),
    "swath": (*_TRACK, "swath_width_km", "gap_km"),
    "clouds": ("cover", "length_scale_km", "persistence"),
}


class ObsSection(Section):
    """How the truth is observed: a simulated constellation (nadir, swath), clouds, or a file."""

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


def obs_grid(da: xr.DataArray) -> Any:
    """The :class:`geodl.obs.Grid` (days, km) of ``da``, whose dims are ``(time, y, x)``."""
    from geodl.obs import Grid

    t_dim, y_dim, x_dim = da.dims
    y_km, x_km, _ = grid_km(da, str(y_dim), str(x_dim))
    return Grid(time=days(da[t_dim].values), y=y_km, x=x_km)


def observe_field(da: xr.DataArray, kind: str, **options: Any) -> Any:
    """Observe ``da`` ``(time, y, x)`` with the operator ``kind`` ("nadir", "swath", "clouds").

    ``options`` go to :func:`geodl.obs.observe_nadir`, :func:`~geodl.obs.observe_swath` or
    :func:`~geodl.obs.observe_clouds`; ``None`` values take the operator's default. Returns the
    operator's result (``.grid`` holds the gridded observations, NaN where unobserved).
    """
    from geodl import obs as ops

    funcs = {"nadir": ops.observe_nadir, "swath": ops.observe_swath, "clouds": ops.observe_clouds}
    if kind not in funcs:
        raise UserInputError(f"unknown observation kind '{kind}'; choose {', '.join(funcs)}")
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return funcs[kind](da.values, obs_grid(da), **options)
    except TypeError as exc:
        raise UserInputError(f"bad option for observe {kind}: {exc}") from None


def observe(
    truth: xr.DataArray, section: ObsSection, noise_std: float, seed: int | None = None
) -> np.ndarray:
    """Gridded observations ``(time, y, x)`` of ``truth`` (dims in that order) as ``section``
    says, with noise std ``noise_std`` (``seed`` overrides ``section.seed``); NaN where
    unobserved and wherever ``truth`` is NaN (land)."""
    if section.kind == "file":
        return read_observations(section.path, section.variable, truth)
    options = {k: getattr(section, k) for k in KIND_OPTIONS[section.kind]}
    made = observe_field(
        truth,
        section.kind,
        noise_std=noise_std,
        seed=section.seed if seed is None else seed,
        **options,
    )
    field = truth.values
    return np.where(np.isfinite(field), made.grid.astype(np.float32), np.nan)


def noise_level(section: ObsSection, truth: xr.DataArray) -> float:
    """The observation error std: ``noise_fraction`` of the truth's std where given, else
    ``noise_std``."""
    if section.noise_fraction is not None:
        return section.noise_fraction * float(np.nanstd(truth.values))
    return section.noise_std


def observe_members(members: xr.DataArray, section: ObsSection, noise_std: float) -> xr.DataArray:
    """Every realisation of ``members`` ``(member, time, y, x)`` observed by the same satellites
    as member 0 of the experiment, each with its own noise draw (seed ``section.seed + 1 + k``)."""
    made = np.stack(
        [
            observe(members.isel(member=k, drop=True), section, noise_std, section.seed + 1 + k)
            for k in range(members.sizes["member"])
        ]
    )
    return xr.DataArray(made, dims=members.dims, coords=members.coords)


def read_observations(
    path: str | Path | None, variable: str | None, truth: xr.DataArray
) -> np.ndarray:
    """A user's observations on the grid of ``truth`` ``(time, y, x)``: a gridded variable on
    the same axes, or a 1-d point table (time, y|lat, x|lon) binned onto the grid."""
    from geodl.data import find_axes, open_dataset
    from geodl.obs.binning import bin_points

    if not path or not variable:
        raise ConfigError("obs.kind is 'file' but obs.path or obs.variable is not set")
    ds = open_dataset(path)
    if variable not in ds.data_vars:
        raise DataError(
            f"variable '{variable}' not in {path}; variables: {sorted(map(str, ds.data_vars))}"
        )
    da = ds[variable]
    obs_axes = find_axes(ds)
    if da.ndim == 3 and obs_axes.time and obs_axes.y and obs_axes.x:
        for role, dim in zip(("time", "y", "x"), truth.dims, strict=True):
            theirs = ds[getattr(obs_axes, role)].values
            ours = truth[dim].values
            if theirs.shape != ours.shape or not np.array_equal(theirs, ours):
                raise DataError(
                    f"observation file {path}: its {role} axis ({theirs.size} values, "
                    f"{theirs[0]} .. {theirs[-1]}) differs from the truth's ({ours.size} values, "
                    f"{ours[0]} .. {ours[-1]}); regrid the observations or give a point table"
                )
        order = [getattr(obs_axes, r) for r in ("time", "y", "x")]
        return da.transpose(*order).values.astype(np.float32)
    if da.ndim != 1:
        raise DataError(
            f"observation file {path}: '{variable}' has dims {da.dims}; expected (time, y, x) "
            "gridded observations or a 1-d point table with time and y/lat, x/lon variables"
        )
    names = {str(k).lower(): str(k) for k in ds.variables}
    pick = [
        next((names[n] for n in cands if n in names), None)
        for cands in (("time", "t"), ("y", "lat", "latitude"), ("x", "lon", "longitude"))
    ]
    if None in pick:
        raise DataError(
            f"observation point table {path} needs time, y (or lat) and x (or lon) variables; "
            f"found {sorted(names.values())}"
        )
    tv, yv, xv = (ds[p].values for p in pick)
    t_dim, y_dim, _ = truth.dims
    t0 = truth[t_dim].values[0]
    tv = days(np.concatenate(([t0], tv)))[1:] if np.issubdtype(tv.dtype, np.datetime64) else tv
    if "lat" in str(pick[1]).lower():
        lat0 = math.radians(float(np.mean(truth[y_dim].values)))
        yv, xv = yv * EARTH_KM_PER_DEG, xv * EARTH_KM_PER_DEG * math.cos(lat0)
    binned, dropped = bin_points(tv, yv, xv, da.values, obs_grid(truth))
    if dropped:
        log.warning("%d observation points fall outside the truth's grid and were dropped", dropped)
    return binned.astype(np.float32)


def observation_dataset(
    obs: np.ndarray, like: xr.DataArray, var: str, kind: str, source: str
) -> xr.Dataset:
    """``{var}_obs`` on the grid of ``like``, with CF attributes."""
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
