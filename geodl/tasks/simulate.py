"""``geodl simulate`` and ``geodl observe``: embedded simulators and observation operators to files.

The simulators (:mod:`geodl.sim`) and observation operators (:mod:`geodl.obs`) know nothing about
files; this module turns their arrays into CF-annotated xarray datasets and writes them atomically
as NetCDF (``.nc``) or Zarr (``.zarr``).

Examples
--------
>>> import tempfile, pathlib, xarray as xr
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = simulate_to_file("qg", d / "qg.nc", nx=16, days=3, spinup_days=1)
>>> _ = observe_to_file("nadir", d / "qg.nc", "ssh", d / "obs.nc")
>>> sorted(xr.open_dataset(d / "obs.nc").data_vars)
['obs_time', 'obs_value', 'obs_x', 'obs_y', 'ssh_obs']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from geodl import __version__
from geodl.atomic import atomic_path
from geodl.data.open import consolidate_zarr
from geodl.data.trajectories import trajectory_dataset
from geodl.errors import DataError, UserInputError
from geodl.tasks.simulate_options import OBSERVE_CLI_OPTIONS, SIMULATE_CLI_OPTIONS, cli_options

__all__ = [
    "OBSERVE_CLI_OPTIONS",
    "SIMULATE_CLI_OPTIONS",
    "cli_options",
    "observe_dataset",
    "observe_to_file",
    "qg_dataset",
    "lorenz_dataset",
    "simulate_to_file",
    "write_dataset",
]

SYSTEMS = ("lorenz63", "lorenz96", "qg")
OBSERVERS = ("nadir", "swath", "clouds")
TIME_UNITS = "days since 2000-01-01 00:00:00"
_LORENZ_OPTIONS = {
    "n_trajectories",
    "n_steps",
    "dt",
    "spinup_steps",
    "n_components",
    "forcing",
    "sigma",
    "rho",
    "beta",
    "noise_std",
    "seed",
    "dtype",
}
_QG_OPTIONS = {
    "preset",
    "nx",
    "days",
    "spinup_days",
    "save_every_days",
    "members",
    "dt",
    "seed",
    "dtype",
    "device",
    "variables",
    "threads",
    "initial_amplitude",
}


def _dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name not in ("float32", "float64"):
        raise UserInputError(f"dtype must be float32 or float64, got '{name}'")
    return getattr(torch, name)


def _xy_coords_pair(y_km: np.ndarray, x_km: np.ndarray) -> dict[str, tuple]:
    """CF projected y/x coordinates in km."""
    coords = {}
    for name, km in (("y", y_km), ("x", x_km)):
        attrs = {
            "units": "km",
            "standard_name": f"projection_{name}_coordinate",
            "axis": name.upper(),
            "long_name": f"{name} (cell centre)",
        }
        coords[name] = (name, km, attrs)
    return coords


def lorenz_dataset(system: str, **options: Any) -> xr.Dataset:
    """Lorenz-63/96 trajectories as a dataset ``state (trajectory, time, component)``.

    ``options`` are those of :func:`geodl.sim.simulate_lorenz` (``dtype`` may be a string).
    """
    from geodl.sim import simulate_lorenz

    options = dict(options)
    if "dtype" in options:
        options["dtype"] = _dtype(options["dtype"])
    traj = simulate_lorenz(system, **options).numpy()
    dt = options.get("dt", 0.01)
    params = {k: (str(v) if isinstance(v, torch.dtype) else v) for k, v in options.items()}
    return trajectory_dataset(
        traj,
        dt,
        variable="state",
        long_name=f"{system} state",
        title=f"{system} trajectories (geodl embedded simulator)",
        source=f"geodl {__version__} geodl.sim.simulate_lorenz('{system}', "
        f"{json.dumps(params, sort_keys=True)}); RK4",
    )


def qg_dataset(
    *,
    preset: str = "eddy",
    nx: int = 64,
    days: float = 730.0,
    spinup_days: float = 1095.0,
    save_every_days: float = 1.0,
    members: int = 1,
    dt: float | None = None,
    seed: int = 0,
    dtype: str | torch.dtype = "float64",
    device: str = "cpu",
    variables: tuple[str, ...] = ("ssh", "psi", "q"),
    threads: int | None = None,
    initial_amplitude: float = 1e-6,
) -> xr.Dataset:
    """Two-layer QG run as a dataset: ``ssh (time, y, x)``, ``psi``/``q (time, layer, y, x)``.

    The model (:class:`geodl.sim.QGModel`, ``preset`` "eddy" or "jet") starts from white-noise PV
    of std ``initial_amplitude`` (s^-1), is spun up for ``spinup_days`` (not saved; from 1e-6 the
    eddy regime's KE levels off after about 3 years at nx=64, see BENCHMARKS.md; the jet regime
    takes longer), then saved every ``save_every_days`` for ``days``. ``dtype`` is the compute
    precision; files hold float32. With ``members > 1`` each member
    starts from its own noise and every variable gets a leading ``member`` dimension. On CPU,
    ``threads`` defaults to 1 for nx <= 128 (small FFTs are fastest on one thread).
    """
    from geodl.sim import QGModel

    unknown = sorted(set(variables) - {"ssh", "psi", "q"})
    if unknown or not variables:
        raise UserInputError(f"qg variables {unknown or '[]'} invalid; choose from ssh, psi, q")
    for name, value in (("days", days), ("save_every_days", save_every_days)):
        if not value > 0:
            raise UserInputError(f"qg {name} must be > 0, got {value}")
    if spinup_days < 0:
        raise UserInputError(f"qg spinup_days must be >= 0, got {spinup_days}")
    if members < 1:
        raise UserInputError(f"qg members must be >= 1, got {members}")
    overrides: dict[str, Any] = {"nx": nx}
    if dt is not None:
        overrides["dt"] = dt
    model = QGModel(preset, dtype=_dtype(dtype), device=device, **overrides)
    p = model.params
    every = 86400.0 * save_every_days / p.dt
    if abs(every - round(every)) > 1e-6 or round(every) < 1:
        raise UserInputError(
            f"save_every_days={save_every_days} is not a whole number of time steps of "
            f"dt={p.dt:g} s; choose dt dividing {86400.0 * save_every_days:g} s"
        )
    every = round(every)
    n_saved = max(1, round(days / save_every_days))
    n_spin = round(86400.0 * spinup_days / p.dt)
    if threads is None and model.device.type == "cpu" and nx <= 128:
        threads = 1
    from geodl.training import torch_threads

    with torch_threads(threads), torch.no_grad():
        state = model.start(model.initial_pv(members, seed=seed, amplitude=initial_amplitude))
        state = model.advance(state, n_spin)
        snaps = [model.to_physical(s.qh) for s in model.trajectory(state, n_saved * every, every)]
        q = torch.stack(snaps, 1)  # (member, time, layer, y, x)
        psi = model.psi(q)
    # Stored as float32 whatever the compute dtype: 7 significant digits are plenty for learning.
    q_np = q.cpu().numpy().astype(np.float32)
    psi_np = psi.cpu().numpy().astype(np.float32)
    ssh_np = model.ssh(q).cpu().numpy().astype(np.float32)
    lead: tuple[str, ...] = ("member",) if members > 1 else ()

    def squeeze(a: np.ndarray) -> np.ndarray:
        return a if members > 1 else a[0]

    data_vars: dict[str, tuple] = {}
    if "ssh" in variables:
        data_vars["ssh"] = (
            (*lead, "time", "y", "x"),
            squeeze(ssh_np),
            {
                "units": "m",
                "standard_name": "sea_surface_height_above_sea_level",
                "long_name": "sea surface height proxy eta = (f0 / g) psi_upper",
            },
        )
    if "psi" in variables:
        data_vars["psi"] = (
            (*lead, "time", "layer", "y", "x"),
            squeeze(psi_np),
            {"units": "m2 s-1", "long_name": "quasi-geostrophic streamfunction"},
        )
    if "q" in variables:
        data_vars["q"] = (
            (*lead, "time", "layer", "y", "x"),
            squeeze(q_np),
            {"units": "s-1", "long_name": "quasi-geostrophic potential vorticity anomaly"},
        )
    time_days = spinup_days + save_every_days * np.arange(1, n_saved + 1)
    coords: dict[str, tuple] = {
        "time": (
            "time",
            time_days,
            {"units": TIME_UNITS, "standard_name": "time", "axis": "T", "calendar": "standard"},
        ),
        "layer": ("layer", np.array([1, 2]), {"long_name": "layer (1 = upper)"}),
        **_xy_coords_pair(model.coords_km().numpy(), model.coords_km().numpy()),
    }
    if members > 1:
        coords["member"] = ("member", np.arange(members), {"long_name": "ensemble member"})
    settings = {
        "preset": preset,
        "days": days,
        "spinup_days": spinup_days,
        "save_every_days": save_every_days,
        "members": members,
        "seed": seed,
        "initial_amplitude": initial_amplitude,
        "dtype": str(_dtype(dtype)),
    }
    return xr.Dataset(
        data_vars,
        coords=coords,
        attrs={
            "title": f"two-layer quasi-geostrophic model, {preset} regime (geodl embedded simulator)",
            "source": f"geodl {__version__} geodl.sim.QGModel: {p.describe()}, "
            f"{', '.join(f'{k}={v!r}' for k, v in settings.items())}; pyqg QGModel formulation, "
            "AB3, exponential filter; f0=1e-4 s-1, g=9.81 m s-2",
            "Conventions": "CF-1.8",
        },
    )


def write_dataset(ds: xr.Dataset, out: str | Path) -> Path:
    """Write ``ds`` atomically to NetCDF (``.nc``) or Zarr (``.zarr``), chosen by the suffix."""
    out = Path(out)
    if out.suffix not in (".nc", ".zarr"):
        raise UserInputError(f"output '{out}' must end in .nc (NetCDF) or .zarr (Zarr)")
    with atomic_path(out) as tmp:
        if out.suffix == ".nc":
            ds.to_netcdf(tmp)
        else:
            ds.to_zarr(tmp, mode="w", consolidated=False)
            consolidate_zarr(tmp)
    return out


def _check_output(out: str | Path, overwrite: bool) -> None:
    """Refuse, before any work, an output of the wrong kind or one that would replace a file."""
    if Path(out).suffix not in (".nc", ".zarr"):
        raise UserInputError(f"output '{out}' must end in .nc (NetCDF) or .zarr (Zarr)")
    if Path(out).exists() and not overwrite:
        raise UserInputError(
            f"output '{out}' exists; choose another --out, or pass --overwrite to replace it"
        )


def simulate_to_file(
    system: str, out: str | Path, *, overwrite: bool = False, **options: Any
) -> Path:
    """Run ``system`` ("lorenz63", "lorenz96" or "qg") and write it to ``out`` (.nc or .zarr).

    ``options`` go to :func:`lorenz_dataset` or :func:`qg_dataset`; ``None`` values are ignored.
    An existing ``out`` is replaced only with ``overwrite``.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if system not in SYSTEMS:
        raise UserInputError(f"unknown system '{system}'; choose one of {', '.join(SYSTEMS)}")
    valid = _QG_OPTIONS if system == "qg" else _LORENZ_OPTIONS
    bad = sorted(set(options) - valid)
    if bad:
        raise UserInputError(
            f"option(s) {', '.join(bad)} do not apply to {system}; valid: {', '.join(sorted(valid))}"
        )
    _check_output(out, overwrite)
    ds = qg_dataset(**options) if system == "qg" else lorenz_dataset(system, **options)
    return write_dataset(ds, out)


# ----- observations ---------------------------------------------------------------------------
def observe_dataset(
    kind: str,
    truth: xr.Dataset,
    variable: str,
    *,
    mask_from: xr.DataArray | None = None,
    **options: Any,
) -> xr.Dataset:
    """Observe ``truth[variable]`` ``(time, y, x)`` with ``kind`` ("nadir", "swath", "clouds").

    Returns ``{variable}_obs (time, y, x)`` (NaN where unobserved) and the point table
    ``obs_time, obs_y, obs_x, obs_value (obs)``. ``options`` go to :func:`geodl.obs.observe_nadir`,
    :func:`geodl.obs.observe_swath` or :func:`geodl.obs.observe_clouds`; for "clouds",
    ``mask_from`` (a field on the same grid, NaN = cloudy) switches to
    :func:`geodl.obs.transplant_clouds`.
    """
    from geodl import obs as obs_ops
    from geodl.data import find_axes
    from geodl.grid import grid_km
    from geodl.methods.observing import obs_grid, observe_field

    if kind not in OBSERVERS:
        raise UserInputError(f"unknown observation kind '{kind}'; choose {', '.join(OBSERVERS)}")
    if variable not in truth.data_vars:
        raise DataError(
            f"variable '{variable}' not in the truth file; available: "
            f"{', '.join(map(str, truth.data_vars)) or 'none'}"
        )
    da = truth[variable]
    axes = find_axes(da)
    if axes.time is None or axes.y is None or axes.x is None or da.ndim != 3:
        raise DataError(
            f"variable '{variable}' has dims {da.dims}; observation operators need exactly (time, "
            "y, x) (select a layer or member first)"
        )
    da = da.transpose(axes.time, axes.y, axes.x)
    for name in (axes.y, axes.x):
        units = str(da[name].attrs.get("units", "km")).strip().lower()
        if grid_km(da, name, name)[2] != "projected":
            raise DataError(
                f"coordinate '{name}' has units '{units}'; observation operators need a projected "
                "grid in km or m (regrid geographic lat/lon fields first)"
            )
    grid = obs_grid(da)
    options = {k: v for k, v in options.items() if v is not None}
    if kind == "clouds" and mask_from is not None:
        keep = {k: v for k, v in options.items() if k in ("noise_std", "seed")}
        if set(options) - set(keep):
            raise UserInputError(
                f"option(s) {', '.join(sorted(set(options) - set(keep)))} do not apply when "
                "transplanting cloud masks (--mask-from); use --noise-std and --seed only"
            )
        donor = np.isnan(np.asarray(mask_from.values))
        result = obs_ops.transplant_clouds(da.values, grid, donor, **keep)
        options = {**keep, "mask_from": mask_from.name}
    else:
        result = observe_field(da, kind, **options)
    units = da.attrs.get("units", "1")
    return xr.Dataset(
        {
            f"{variable}_obs": (
                ("time", "y", "x"),
                result.grid,
                {
                    "units": units,
                    "long_name": f"{kind} observations of {variable} (NaN where unobserved)",
                    **(
                        {"standard_name": da.attrs["standard_name"]}
                        if "standard_name" in da.attrs
                        else {}
                    ),
                },
            ),
            "obs_time": (
                "obs",
                result.time,
                {"units": "days", "long_name": "time since the first time step"},
            ),
            "obs_y": (
                "obs",
                result.y,
                {"units": "km", "long_name": "y of the observed cell centre"},
            ),
            "obs_x": (
                "obs",
                result.x,
                {"units": "km", "long_name": "x of the observed cell centre"},
            ),
            "obs_value": (
                "obs",
                result.value,
                {"units": units, "long_name": f"observed {variable}"},
            ),
        },
        coords={
            "time": ("time", da[axes.time].values, dict(da[axes.time].attrs)),
            **_xy_coords_pair(grid.y, grid.x),
        },
        attrs={
            "title": f"{kind} observations of {variable}",
            "source": f"geodl {__version__} geodl.obs {kind}: "
            f"{json.dumps(options, sort_keys=True, default=str)}",
            "coverage": result.coverage,
            "Conventions": "CF-1.8",
        },
    )


def observe_to_file(
    kind: str,
    truth: str | Path,
    variable: str,
    out: str | Path,
    *,
    mask_from: str | Path | None = None,
    mask_variable: str | None = None,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Observe ``variable`` of the file ``truth`` and write the observations to ``out`` (an
    existing ``out`` is replaced only with ``overwrite``)."""
    from geodl.data import open_dataset

    _check_output(out, overwrite)
    if (mask_from is None) != (mask_variable is None) or (mask_from and kind != "clouds"):
        raise UserInputError(
            "--mask-from FILE and --mask-variable NAME go together, with 'observe clouds' only"
        )
    ds = open_dataset(truth)
    donor = None
    if mask_from is not None:
        mds = open_dataset(mask_from)
        if mask_variable not in mds.data_vars:
            raise DataError(
                f"variable '{mask_variable}' not in {mask_from}; available: "
                f"{', '.join(map(str, mds.data_vars))}"
            )
        donor = mds[mask_variable].load()
    result = observe_dataset(kind, ds, variable, mask_from=donor, **options)
    return write_dataset(result, out)
