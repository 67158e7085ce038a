"""Dynamics learning from Python: trajectories in (xarray), a model of the dynamics out.

Examples
--------
Learn Lorenz-63 from trajectories and forecast from a new state::

    import geodl.dynamics
    from geodl.tasks.simulate import lorenz_dataset

    traj = lorenz_dataset("lorenz63", n_trajectories=4, n_steps=2000)["state"]
    model = geodl.dynamics.fit(traj, model={"lbfgs_iter": 300}, train={"max_epochs": 30})
    fc = model.forecast(traj.isel(trajectory=0, time=-1), n_steps=500)  # (time, component)
    model.lyapunov()                       # leading exponent, 1 / time unit
    model.save("l63.pt"); geodl.dynamics.DynamicsModel.load("l63.pt")

``trajectories`` is a DataArray ``(time, component)`` or ``(trajectory, time, component)`` on a
regular time grid, with its step in the ``dt`` attribute or a numeric ``time`` coordinate. From
noisy trajectories pass ``model={"estimate_states": True, "lbfgs_iter": 300}``: the clean states
are fitted with the model (``model.states``). A model trained by the ``dynamics`` task loads with
``DynamicsModel.load("runs/NAME/model/model.pt")``, and :func:`geodl.assimilation.assimilate`
takes a :class:`DynamicsModel` as its model.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from geodl.config import validate
from geodl.errors import DataError, UserInputError
from geodl.integrate import in_units, rollout_until_exit
from geodl.methods.dynamics import (
    ModelSection,
    read_dynamics_checkpoint,
    restore_dynamics_model,
    save_dynamics_model,
    split_trajectories,
    step_function,
    train_dynamics,
    trajectory_array,
    vector_field,
)
from geodl.training import TrainSection

__all__ = ["DynamicsModel", "fit", "trajectory_array"]

#: A forecast is cut where a normalised component exceeds this (it left the attractor).
BOUND = 5.0


@dataclass
class DynamicsModel:
    """A learned model of the dynamics: one step of ``dt`` in the data's units.

    ``net`` works in coordinates normalised by ``mean`` / ``std`` and in time units of one step.
    """

    net: torch.nn.Module
    mean: np.ndarray
    std: np.ndarray
    dt: float
    model: ModelSection
    states: xr.DataArray | None = None

    @property
    def dim(self) -> int:
        return len(self.mean)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One step of ``dt``: ``(..., D) -> (..., D)`` in the data's units (differentiable).

        The step is computed in the network's dtype and on its device; the result comes back in
        ``x``'s dtype and on ``x``'s device.
        """
        # Why: the input is cast, never the network. ``nn.Module.to`` works in place, so casting
        # the net to a float32 input would round float64 weights for good; per-dtype copies of
        # the net would go stale when its weights change. Casts are differentiable, so gradients
        # still reach ``x``.
        param = next(self.net.parameters(), None)
        dtype = param.dtype if param is not None else x.dtype
        device = param.device if param is not None else x.device
        mean = torch.as_tensor(self.mean, dtype=dtype, device=device)
        std = torch.as_tensor(self.std, dtype=dtype, device=device)
        net = step_function(self.net)
        flat = x.to(dtype=dtype, device=device).reshape(-1, self.dim)  # (N, D)
        out = in_units(net, mean, std)(flat).reshape(x.shape)  # (..., D)
        return out.to(dtype=x.dtype, device=x.device)

    def forecast(self, x0: xr.DataArray | np.ndarray, n_steps: int) -> xr.DataArray:
        """Free rollout of ``n_steps`` from ``x0`` (``(component,)`` or ``(member, component)``).

        Returns ``(time, component)`` or ``(member, time, component)``, ``time`` from 0. A rollout
        that leaves the attractor (a normalised component beyond 5, or non-finite) is cut at the
        step where it left (``attrs["left_attractor_at_step"]``) with a warning, never NaN-filled.
        """
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise UserInputError(f"n_steps={n_steps!r}; expected a positive integer")
        dims = tuple(map(str, x0.dims)) if isinstance(x0, xr.DataArray) else None
        x = np.asarray(x0.values if isinstance(x0, xr.DataArray) else x0, dtype=np.float64)
        if x.ndim not in (1, 2) or x.shape[-1] != self.dim:
            raise DataError(
                f"x0 has shape {x.shape}; expected ({self.dim},) or (member, {self.dim}) states"
            )
        single = x.ndim == 1
        z = torch.as_tensor((np.atleast_2d(x) - self.mean) / self.std)
        if not (np.abs(z.numpy()) <= BOUND).all():
            raise DataError(
                f"x0 lies beyond {BOUND} standard deviations of the training data (or is not "
                "finite): off the attractor the model learned; start from a state on it"
            )
        step = step_function(self.net.double().eval())
        with torch.no_grad():
            traj, left = rollout_until_exit(step, z, n_steps, BOUND)  # (M, S, D)
        kept = traj.permute(1, 0, 2).numpy()  # (S, M, D)
        if left is not None:
            warnings.warn(
                f"the forecast left the attractor at step {left} (a state beyond {BOUND} "
                "standard deviations of the training data); it is cut there",
                RuntimeWarning,
                stacklevel=2,
            )
        values = kept * self.std + self.mean  # (T, M, D)
        time = np.arange(len(kept)) * self.dt
        attrs = {"dt": self.dt, "left_attractor_at_step": -1 if left is None else left}
        comp = "component" if dims is None else dims[-1]
        if single:
            return xr.DataArray(
                values[:, 0], dims=("time", comp), coords={"time": time}, attrs=attrs
            )
        member = "member" if dims is None else dims[0]
        return xr.DataArray(
            values.transpose(1, 0, 2),
            dims=(member, "time", comp),
            coords={"time": time},
            attrs=attrs,
        )

    def lyapunov(
        self,
        x0: xr.DataArray | np.ndarray | None = None,
        *,
        n_steps: int = 10000,
        n_transient: int = 1000,
    ) -> float:
        """Leading Lyapunov exponent of the learned dynamics (1 / time unit), by Benettin/QR from
        ``x0`` (default: the normalised origin's neighbourhood is avoided by starting from the
        mean plus one standard deviation)."""
        from geodl.sim import lyapunov_exponents

        x = self.mean + self.std if x0 is None else np.asarray(getattr(x0, "values", x0))
        z = torch.as_tensor((np.atleast_2d(x) - self.mean) / self.std, dtype=torch.float64)
        net = self.net.double().eval()
        # Field in units of one step (dt = 1), no analytic jvp: autograd tangents of the network.
        lam = lyapunov_exponents(
            vector_field(net), z, dt=1.0, n_steps=n_steps, n_transient=n_transient
        )  # (batch, 1)
        return float(lam.mean()) / self.dt

    def save(self, path: str | Path) -> Path:
        """Write the model (atomically) in the format of the ``dynamics`` task's ``model.pt``."""
        meta = {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "dt": self.dt,
            "dim": self.dim,
            "config": {"model": self.model.model_dump(mode="json")},
        }
        return save_dynamics_model(path, self.net, meta)

    @classmethod
    def load(cls, path: str | Path) -> DynamicsModel:
        """Read a model written by :meth:`save` or by the ``dynamics`` task."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"model file '{path}' not found")
        try:
            state_dict, meta = read_dynamics_checkpoint(path)
            m = validate(meta["config"]["model"], ModelSection, f"{path}: model")
        except (KeyError, TypeError, RuntimeError, OSError, UserInputError) as exc:
            raise DataError(f"{path} is not a geodl dynamics model ({exc})") from None
        net = restore_dynamics_model(m, int(meta["dim"]), state_dict)
        net.requires_grad_(False)
        return cls(net, np.asarray(meta["mean"]), np.asarray(meta["std"]), float(meta["dt"]), m)


def fit(
    trajectories: xr.DataArray,
    *,
    dt: float | None = None,
    val: xr.DataArray | None = None,
    model: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    work_dir: str | Path | None = None,
) -> DynamicsModel:
    """Learn the dynamics from ``trajectories`` (see the module docstring).

    Parameters
    ----------
    trajectories : ``(time, component)`` or ``(trajectory, time, component)``.
    dt : time step (default: ``attrs["dt"]`` or the spacing of the time coordinate).
    val : validation trajectories (default: the last trajectory, or the last 20% of time).
    model : options of the ``model`` section of the dynamics config (``kind``, ``rollout``,
        ``lbfgs_iter``, ``estimate_states``, ...).
    train : options of the ``train`` section (``max_epochs``, ``lr``, ...).
    work_dir : checkpoints and logs (default: a temporary directory, removed afterwards).
    """
    values, dt = trajectory_array(trajectories, dt)
    if val is None:
        values, val_values = split_trajectories(values)
    else:
        val_values, _ = trajectory_array(val, dt)
        if val_values.shape[-1] != values.shape[-1]:
            raise DataError(
                f"val has {val_values.shape[-1]} components, trajectories {values.shape[-1]}"
            )
    m = validate(model or {}, ModelSection, "model")
    tr = validate(
        {"max_epochs": 30, "batch_size": 128, "lr": 1e-2, "progress_bar": False, **(train or {})},
        TrainSection,
        "train",
    )
    with tempfile.TemporaryDirectory(prefix="geodl-dynamics-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        net, meta, states = train_dynamics(
            values,
            val_values,
            m,
            tr,
            ckpt_dir=root / "checkpoints",
            log_dir=root / "logs",
            key="api",
            dt=dt,
        )
    net.eval().requires_grad_(False)  # a fitted model: gradients flow through states only
    out = DynamicsModel(net, np.asarray(meta["mean"]), np.asarray(meta["std"]), dt, m)
    if states is not None:
        da = xr.DataArray(states, dims=("trajectory", "time", "component"), attrs={"dt": dt})
        out.states = da if trajectories.ndim == 3 else da.isel(trajectory=0, drop=True)
    return out
