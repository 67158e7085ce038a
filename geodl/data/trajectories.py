"""State trajectories ``(trajectory, time, component)`` as CF-annotated xarray datasets.

One builder for every file that holds Lorenz-type trajectories (``geodl simulate lorenz63``, a
twin experiment's ``truth.nc``), so that their coordinates and attributes cannot drift apart.

Examples
--------
>>> import numpy as np
>>> ds = trajectory_dataset(np.zeros((2, 5, 3)), 0.01, variable="truth",
...                         long_name="lorenz63 true state", title="t", source="s")
>>> ds["truth"].dims, float(ds["time"][-1]), ds.attrs["dt"]
(('trajectory', 'time', 'component'), 0.04, 0.01)
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from geodl.errors import UserInputError

__all__ = ["trajectory_dataset"]


def trajectory_dataset(
    traj: np.ndarray,
    dt: float,
    *,
    variable: str,
    long_name: str,
    title: str,
    source: str,
) -> xr.Dataset:
    """``traj (trajectory, time, component)`` on a regular time grid of step ``dt`` as a Dataset.

    The variable is named ``variable`` (units "1": the Lorenz systems are non-dimensional); time
    is in model time units from the first saved step; ``dt`` is kept as an attribute, which is where
    the readers of these files look for the step.
    """
    traj = np.asarray(traj)
    if traj.ndim != 3:
        raise UserInputError(
            f"trajectory_dataset: expected (trajectory, time, component), got shape {traj.shape}"
        )
    return xr.Dataset(
        {
            variable: (
                ("trajectory", "time", "component"),
                traj,
                {"long_name": long_name, "units": "1"},
            )
        },
        coords={
            "time": (
                "time",
                np.arange(traj.shape[1]) * dt,
                {"units": "model time units", "long_name": "time since the end of the spin-up"},
            ),
            "component": ("component", np.arange(traj.shape[2]), {"long_name": "state component"}),
        },
        attrs={"title": title, "source": source, "dt": dt, "Conventions": "CF-1.8"},
    )
