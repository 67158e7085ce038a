"""Command-line options of ``geodl simulate`` and ``geodl observe``: (flag, type, help) tables.

Why a module of its own: the CLI builds its parser from these tables, and this module imports
nothing heavy, so ``geodl --help`` does not load torch or xarray (:mod:`geodl.tasks.simulate` does).
Each keyword argument of :func:`~geodl.tasks.simulate.simulate_to_file` and
:func:`~geodl.tasks.simulate.observe_to_file` is its flag without the dashes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OBSERVE_CLI_OPTIONS", "SIMULATE_CLI_OPTIONS", "cli_options"]


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


#: Options of ``geodl simulate``: (flag, type, help). The keyword is the flag without the dashes.
SIMULATE_CLI_OPTIONS: tuple[tuple[str, Any, str], ...] = (
    ("--preset", str, "qg: parameter set, eddy (default) or jet"),
    ("--nx", int, "qg: grid points per side (even, >= 8; default 64)"),
    ("--days", float, "qg: days saved after the spin-up (default 730)"),
    ("--spinup-days", float, "qg: days discarded first (default 1095)"),
    ("--initial-amplitude", float, "qg: std of the initial PV noise in s-1 (default 1e-6)"),
    ("--save-every-days", float, "qg: output interval in days (default 1)"),
    ("--members", int, "qg: ensemble members (default 1)"),
    ("--dt", float, "time step (qg: s, default 3600; lorenz: model units, default 0.01)"),
    ("--device", str, "qg: torch device, e.g. cpu or cuda"),
    ("--variables", _names, "qg: comma-separated subset of ssh,psi,q (default all)"),
    ("--threads", int, "qg: torch CPU threads (default 1 for nx <= 128)"),
    ("--n-trajectories", int, "lorenz: number of trajectories (default 1)"),
    ("--n-steps", int, "lorenz: steps saved after the spin-up (default 1000)"),
    ("--spinup-steps", int, "lorenz: steps discarded first (default 1000)"),
    ("--n-components", int, "lorenz96: number of variables (default 40)"),
    ("--forcing", float, "lorenz96: forcing F (default 8)"),
    ("--sigma", float, "lorenz63: sigma (default 10)"),
    ("--rho", float, "lorenz63: rho (default 28)"),
    ("--beta", float, "lorenz63: beta (default 8/3)"),
    ("--noise-std", float, "lorenz: model noise std per sqrt time unit (default 0)"),
    ("--seed", int, "random seed (default 0)"),
    ("--dtype", str, "float32 or float64 (default float64)"),
)

#: Options of ``geodl observe``: (flag, type, help).
OBSERVE_CLI_OPTIONS: tuple[tuple[str, Any, str], ...] = (
    ("--n-satellites", int, "nadir/swath: number of satellites (nadir default 4, swath 1)"),
    ("--repeat-days", float, "nadir/swath: repeat cycle in days (nadir 10, swath 21)"),
    ("--track-spacing-km", float, "nadir/swath: distance between one satellite's tracks"),
    ("--track-angle-deg", float, "nadir/swath: angle of ascending tracks from the x axis"),
    ("--along-track-km", float, "nadir: sample spacing along track (default 7)"),
    ("--swath-width-km", float, "swath: width of each of the two swaths (default 50)"),
    ("--gap-km", float, "swath: nadir gap between the swaths (default 20)"),
    ("--cover", float, "clouds: cloudy fraction in (0, 1) (default 0.5)"),
    ("--length-scale-km", float, "clouds: cloud size (default 100)"),
    ("--persistence", float, "clouds: day-to-day correlation in [0, 1) (default 0.8)"),
    ("--noise-std", float, "noise std in the field's units (nadir 0.03, swath 0.01, clouds 0)"),
    ("--seed", int, "random seed (default 0)"),
    ("--mask-from", str, "clouds: take cloud masks from the NaNs of this file's variable"),
    ("--mask-variable", str, "clouds: the variable of --mask-from"),
)


def cli_options(args: Any, table: tuple[tuple[str, Any, str], ...]) -> dict[str, Any]:
    """The options of ``table`` that were given on the command line, as keyword arguments."""
    out = {}
    for flag, _, _ in table:
        key = flag.lstrip("-").replace("-", "_")
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    return out
