"""Observations of gridded fields: where an xarray field ``(time, y, x)`` meets the observation
operators of :mod:`geodl.obs`, and where a user's observation file is read onto a grid.

``geodl observe`` (:func:`geodl.tasks.simulate.observe_dataset`) and the mapping experiment's
``prepare`` stage both go through :func:`observe_field`, so a swath or a nadir constellation is
the same orbit whichever way it is asked for; :class:`ObsSection` states the defaults once.
"""

from __future__ import annotations

import glob
import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
from pydantic import Field, field_validator, model_validator

from geodl.config import Section
from geodl.errors import ConfigError, DataError, UserInputError
from geodl.grid import EARTH_KM_PER_DEG, days, grid_km, wrap_longitude

__all__ = [
    "KIND_OPTIONS",
    "ObsSection",
    "noise_level",
    "observation_dataset",
    "observe",
    "observe_blocks",
    "observe_members",
    "observe_field",
    "obs_files",
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
    # file: gridded obs on the truth grid, or point tables (time, y|lat|latitude, x|lon|longitude,
    # variable); one file, a glob pattern or a list (e.g. daily along-track L3 files per mission)
    path: str | list[str] | None = Field(None, description="file, glob pattern or list of them")
    variable: str | None = None

    @field_validator("path", mode="before")
    @classmethod
    def _path_type(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value
        raise ValueError("expected a file, a glob pattern or a non-empty list of them")

    @model_validator(mode="after")
    def _file_needs_path(self) -> ObsSection:
        if self.kind == "file" and (self.path is None or self.variable is None):
            raise ValueError("kind 'file' needs path and variable (the observation file and name)")
        return self

    def check_files(self) -> None:
        """For ``kind: file``: every file and glob pattern of ``path`` is there (the stage runner
        calls this before the stages that read this section; validation does not, as a config
        may be validated before its observation files exist)."""
        if self.kind == "file" and self.path is not None:
            obs_files(self.path)


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
    return _operate(da.values, obs_grid(da), kind, **options)


def _operate(values: np.ndarray, grid: Any, kind: str, **options: Any) -> Any:
    """The operator ``kind`` on ``values`` over the :class:`geodl.obs.Grid` ``grid``."""
    from geodl import obs as ops

    funcs = {"nadir": ops.observe_nadir, "swath": ops.observe_swath, "clouds": ops.observe_clouds}
    if kind not in funcs:
        raise UserInputError(f"unknown observation kind '{kind}'; choose {', '.join(funcs)}")
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return funcs[kind](values, grid, **options)
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


def observe_blocks(
    truth: xr.DataArray,
    section: ObsSection,
    noise_std: float,
    *,
    steps: int,
    seed: int | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """:func:`observe` of ``truth`` ``(time, y, x)`` (NumPy- or Dask-backed) by blocks of
    ``steps`` time steps: yields ``(t0, t1, observations of steps t0 .. t1 - 1)``, the values of
    :func:`observe` bit for bit, holding one block of the truth at a time.

    Nadir and swath observations are made per block: where the instruments look is found on the
    block widened by one step on each side (so that a pass halfway between two steps goes to the
    same step as on the whole axis), and the noise is drawn from one generator in the order
    :func:`observe` draws it (time, then y, then x). Clouds (correlated in time) and files are
    made in one block: their memory is not bounded.
    """
    n = truth.shape[0]
    if section.kind not in ("nadir", "swath") or steps >= n:
        yield 0, n, observe(truth, section, noise_std, seed)
        return
    from geodl.data.blocks import MEMORY_BUDGET

    options = {k: getattr(section, k) for k in KIND_OPTIONS[section.kind]}
    rng = np.random.default_rng(section.seed if seed is None else seed)
    t_dim, y_dim = truth.dims[:2]
    whole = obs_grid(truth)  # days from the first step of the whole axis, not of a block
    ny, nx = truth.shape[1:]
    # The truth is read by spans of whole storage chunks in time (one step of a 30-step chunk
    # would decode all 30: a 30x read of a large grid) and bands of rows, keeping only the
    # observed cells (a few percent); the observations are then given back by blocks of steps.
    chunks = truth.chunks  # None unless Dask-backed (a lazy backend array is not read here)
    span = int(chunks[0][0]) * max(1, steps // int(chunks[0][0])) if chunks else steps
    rows = int(chunks[1][0]) if chunks else ny
    size = truth.dtype.itemsize
    band = max(rows, (MEMORY_BUDGET // 2) // max(1, size * nx * span) // rows * rows)
    for c0 in range(0, n, span):
        c1 = min(n, c0 + span)
        cells = [np.flatnonzero(m) for m in _looks(whole, section.kind, options, c0, c1, steps)]
        values = [np.empty(len(i), truth.dtype) for i in cells]  # rounded once, as observe
        for y0 in range(0, ny, band):
            y1 = min(ny, y0 + band)
            part = np.asarray(truth.isel({t_dim: slice(c0, c1), y_dim: slice(y0, y1)}).values)
            for k, i in enumerate(cells):
                lo, hi = np.searchsorted(i, (y0 * nx, y1 * nx))
                values[k][lo:hi] = part[k].ravel()[i[lo:hi] - y0 * nx]
            del part
        for t0 in range(c0, c1, steps):
            t1 = min(c1, t0 + steps)
            out = np.full((t1 - t0, ny, nx), np.nan, dtype=np.float32)
            for k in range(t0 - c0, t1 - c0):  # the noise in observe's order: time, y, x
                noise = rng.standard_normal(len(cells[k]))
                out[k - (t0 - c0)].ravel()[cells[k]] = values[k] + noise_std * noise
            yield t0, t1, out  # NaN where unobserved, and where the truth is NaN (land)


def _looks(
    whole: Any, kind: str, options: dict[str, Any], c0: int, c1: int, steps: int
) -> Iterator[np.ndarray]:
    """Where the instrument looks at each step ``c0 .. c1 - 1`` (boolean ``(y, x)`` per step),
    found by blocks of ``steps`` widened by one step on each side (so that a pass halfway
    between two steps goes to the same step as on the whole axis)."""
    from geodl.obs import Grid

    n = len(whole.time)
    for t0 in range(c0, c1, steps):
        t1 = min(c1, t0 + steps)
        lo, hi = max(0, t0 - 1), min(n, t1 + 1)
        grid = Grid(time=whole.time[lo:hi], y=whole.y, x=whole.x)
        zeros = np.zeros((hi - lo, len(whole.y), len(whole.x)), np.float32)
        # the operator on zeros without noise: 0 where it looks, NaN elsewhere
        made = _operate(zeros, grid, kind, noise_std=0.0, seed=0, **options)
        mask = np.isfinite(made.grid[t0 - lo : t0 - lo + t1 - t0])
        del made, zeros
        yield from mask


def noise_level(section: ObsSection, truth: xr.DataArray, *, steps: int | None = None) -> float:
    """The observation error std: ``noise_fraction`` of the truth's std where given, else
    ``noise_std``. With ``steps``, the std is computed by blocks of that many time steps
    (:func:`geodl.data.blocks.nan_moments`)."""
    if section.noise_fraction is None:
        return section.noise_std
    if steps is None or steps >= truth.shape[0]:
        return section.noise_fraction * float(np.nanstd(truth.values))
    from geodl.data.blocks import block_ranges, nan_moments

    t_dim = truth.dims[0]
    blocks = (
        truth.isel({t_dim: slice(a, b)}).values for a, b in block_ranges(0, truth.shape[0], steps)
    )
    return section.noise_fraction * nan_moments(blocks)[2]


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


def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def obs_files(path: str | Path | Sequence[str | Path], *, strict: bool = True) -> list[Path]:
    """The files that ``obs.path`` names, sorted: a file, a glob pattern or a list of them.

    With ``strict``, a pattern that matches nothing or a missing file is one :class:`DataError`
    line naming it; without, they are returned as given (what the cache key fingerprints: absent
    until they appear), so that only the stage that reads them fails.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for name in ("b_2019.nc", "a_2019.nc", "a_2020.nc"):
    ...     _ = (d / name).write_bytes(b"")
    >>> [p.name for p in obs_files(str(d / "*_2019.nc"))]
    ['a_2019.nc', 'b_2019.nc']
    """
    items = [path] if isinstance(path, str | Path) else list(path)
    found: set[Path] = set()
    for item in items:
        text = str(item)
        matches = [Path(m) for m in glob.glob(text)] if _is_pattern(text) else [Path(text)]
        missing = not matches or not matches[0].exists()
        if missing and strict:
            what = f"no file matches '{text}'" if _is_pattern(text) else f"file not found: {text}"
            raise DataError(f"obs.path: {what}; check the path or glob pattern")
        found.update(matches or [Path(text)])
    return sorted(found)


def _missing_variable(variable: str, path: Path, present: Any) -> str:
    """The error line for an ``obs.variable`` that the observation file ``path`` lacks."""
    return (
        f"obs.variable: variable '{variable}' not in the observation file {path}; its "
        f"variables: {sorted(map(str, present))}; set obs.variable to one of them"
    )


def _point_names(ds: xr.Dataset, where: Path) -> tuple[str, str, str]:
    """The time, y (or latitude) and x (or longitude) variables of a point table."""
    names = {str(k).lower(): str(k) for k in ds.variables}
    pick = []
    for cands in (("time", "t"), ("y", "lat", "latitude"), ("x", "lon", "longitude")):
        found = next((names[n] for n in cands if n in names), None)
        if found is None:
            raise DataError(
                f"observation point table {where} needs time, y (or lat/latitude) and x (or "
                f"lon/longitude) variables; found {sorted(names.values())}"
            )
        pick.append(found)
    return pick[0], pick[1], pick[2]


def read_points(
    files: Sequence[Path], variable: str
) -> tuple[dict[str, np.ndarray], bool, dict[str, int]]:
    """The point tables of ``files`` (one 1-d dim each, whatever its name) concatenated.

    Returns ``({"time", "y", "x", "value"}, geographic, points per platform)``: ``geographic``
    when the positions are latitude/longitude (degrees), else y/x (km); the counts are of the
    finite values per file's global attribute ``platform`` (or ``mission``), empty without one.
    Values stay CF-decoded (``scale_factor``, ``add_offset``, ``_FillValue`` as NaN).
    """
    columns: list[list[np.ndarray]] = []
    geographic: bool | None = None
    platforms: Counter[str] = Counter()
    for path in files:
        with xr.open_dataset(path) as ds:
            if variable not in ds.variables:
                raise DataError(_missing_variable(variable, path, ds.variables))
            da = ds[variable]
            names = _point_names(ds, path)
            odd = [n for n in names if ds[n].dims != da.dims]
            if da.ndim != 1 or odd:
                raise DataError(
                    f"observation point table {path}: '{variable}' {da.dims} and "
                    f"{', '.join(f'{n!r} {ds[n].dims}' for n in names)} must share one 1-d "
                    "dimension (or give gridded (time, y, x) observations on the truth's axes)"
                )
            geo = "lat" in names[1].lower()
            if geographic is not None and geo != geographic:
                raise DataError(
                    f"observation point table {path} gives positions as {names[1]}/{names[2]} "
                    "but the files before it do not; use latitude/longitude or y/x in all files"
                )
            geographic = geo
            columns.append([ds[n].values for n in names] + [da.values])
            label = ds.attrs.get("platform") or ds.attrs.get("mission")
            if label:
                platforms[str(label)] += int(np.isfinite(columns[-1][3]).sum())
    try:
        table = {
            k: np.concatenate([c[i] for c in columns])
            for i, k in enumerate(("time", "y", "x", "value"))
        }
    except (TypeError, ValueError) as exc:  # e.g. dates in some files, numbers in others
        raise DataError(
            f"observation point tables {files[0]} .. {files[-1]}: a column holds dates in some "
            f"files and numbers in others ({exc}); give them the same kind in every file"
        ) from None
    return table, bool(geographic), dict(platforms)


def _point_days(tv: np.ndarray, truth_time: np.ndarray, where: str) -> np.ndarray:
    """Point times ``tv`` in days on the axis of :func:`obs_grid` (days since the truth's first
    time for calendar axes, the numbers themselves for numeric ones)."""
    dates = (np.issubdtype(tv.dtype, np.datetime64), np.issubdtype(truth_time.dtype, np.datetime64))
    if dates[0] != dates[1]:
        kinds = ["dates" if d else "numbers" for d in dates]
        raise DataError(
            f"observation times in {where} are {kinds[0]} but the truth's time axis holds "
            f"{kinds[1]}; give both as CF-decoded dates or both in days"
        )
    if dates[0] or tv.dtype == object:
        return days(np.concatenate(([truth_time[0]], tv)))[1:]
    return tv


def read_observations(
    path: str | Path | Sequence[str | Path] | None, variable: str | None, truth: xr.DataArray
) -> np.ndarray:
    """A user's observations on the grid of ``truth`` ``(time, y, x)``: a gridded variable on
    the same axes, or 1-d point tables (time, y|lat|latitude, x|lon|longitude) binned onto it.

    ``path`` is a file, a glob pattern or a list of them (:func:`obs_files`), such as the daily
    files of several along-track altimetry missions, concatenated (see :func:`read_points`).
    Longitudes are wrapped to the truth's convention (0..360 or -180..180); points with a NaN
    value are dropped, as are points outside the grid (counted in a warning).
    """
    from geodl.data import find_axes, open_dataset

    if not path or not variable:
        raise ConfigError("obs.kind is 'file' but obs.path or obs.variable is not set")
    files = obs_files(path)
    where = str(files[0]) if len(files) == 1 else f"{files[0]} (and {len(files) - 1} more)"
    ds = open_dataset(files[0])
    if variable not in ds.data_vars:
        raise DataError(_missing_variable(variable, files[0], ds.data_vars))
    if ds[variable].ndim == 1:
        ds.close()
        return _bin_tables(files, variable, truth, where)
    ds = open_dataset(files) if len(files) > 1 else ds
    da = ds[variable]
    obs_axes = find_axes(ds)
    if da.ndim == 3 and obs_axes.time and obs_axes.y and obs_axes.x:
        for role, dim in zip(("time", "y", "x"), truth.dims, strict=True):
            theirs = ds[getattr(obs_axes, role)].values
            ours = truth[dim].values
            if theirs.shape != ours.shape or not np.array_equal(theirs, ours):
                raise DataError(
                    f"observation file {where}: its {role} axis ({theirs.size} values, "
                    f"{theirs[0]} .. {theirs[-1]}) differs from the truth's ({ours.size} values, "
                    f"{ours[0]} .. {ours[-1]}); regrid the observations or give a point table"
                )
        order = [getattr(obs_axes, r) for r in ("time", "y", "x")]
        return da.transpose(*order).values.astype(np.float32)
    raise DataError(
        f"observation file {where}: '{variable}' has dims {da.dims}; expected (time, y, x) "
        "gridded observations or a 1-d point table with time and y/lat, x/lon variables"
    )


def _bin_tables(files: list[Path], variable: str, truth: xr.DataArray, where: str) -> np.ndarray:
    """:func:`read_points` of ``files`` binned onto the grid of ``truth``."""
    from geodl.obs.binning import bin_points

    table, geographic, platforms = read_points(files, variable)
    t_dim, y_dim, x_dim = truth.dims
    tv, yv, xv = table["time"], table["y"], table["x"]
    tv = _point_days(tv, truth[t_dim].values, where)
    if geographic:
        if grid_km(truth, str(y_dim), str(x_dim))[2] != "geographic":
            raise DataError(
                f"observation points in {where} are latitude/longitude but the truth's grid "
                f"({y_dim}, {x_dim}) is projected; give the points' y/x in km of that projection"
            )
        lon = truth[x_dim].values.astype(np.float64)
        xv = wrap_longitude(xv, 0.5 * (lon.min() + lon.max()))  # 0..360 <-> -180..180
        lat0 = math.radians(float(np.mean(truth[y_dim].values)))
        yv, xv = yv * EARTH_KM_PER_DEG, xv * EARTH_KM_PER_DEG * math.cos(lat0)
    value = table["value"]
    n_nan = int((~np.isfinite(value)).sum())
    by = ", ".join(f"{k} {n}" for k, n in sorted(platforms.items()))
    log.info(
        "observations: %d points from %d file(s)%s, %d NaN values dropped",
        value.size - n_nan,
        len(files),
        f" ({by})" if by else "",
        n_nan,
    )
    binned, dropped = bin_points(tv, yv, xv, value, obs_grid(truth))
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
