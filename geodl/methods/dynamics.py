"""Dynamics learning: the model section, training, the checkpoint and the scores.

The dynamics task (:mod:`geodl.tasks.dynamics`) and the Python API (:mod:`geodl.dynamics`) both
call these functions, so that a model section gives the same model in either, and a model written
by one loads in the other. The method's parameters and their defaults are stated once, in
:class:`ModelSection`.

- trajectories: :func:`trajectory_array` (check a DataArray), :func:`read_trajectory_file`,
  :func:`simulate_trajectories`, :func:`split_trajectories` / :func:`split_train_val_test`;
- the model: :func:`build_dynamics_model`, :func:`step_function`, :func:`vector_field`,
  :func:`trajectory_windows`, :func:`rollout_loss`, :func:`train_dynamics` (Adam, then an optional
  float64 L-BFGS polish, with the clean states for noisy data);
- the checkpoint (``model.pt``): :func:`save_dynamics_model`, :func:`read_dynamics_checkpoint`,
  :func:`restore_dynamics_model`;
- the scores: :func:`score_dynamics` (forecast RMSE against lead time, leading Lyapunov exponent,
  statistics of a long free rollout through :func:`histogram_distance`, :func:`leave_step` and
  :func:`near_fraction`), :func:`denoise_scores`.

Everything runs in coordinates normalised by the training data's mean and standard deviation (the
statistics travel with the model) and in time units of one data step (see
:func:`build_dynamics_model`); exponents do not depend on that affine change of coordinates and are
converted back to 1 / time unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
import xarray as xr
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from geodl.config import Section
from geodl.data import open_dataset
from geodl.errors import ConfigError, DataError, UserInputError
from geodl.integrate import rollout, rollout_until_exit, trajectory_windows
from geodl.losses import ode_residual
from geodl.metrics import (
    denoise_scores,
    forecast_rmse,
    histogram_distance,
    leave_step,
    near_fraction,
)
from geodl.models import MLP, BilinearResNet, KnownPlusLearned, NeuralODE, build_model
from geodl.sim import (
    lorenz_linear_terms,
    lorenz_vector_field,
    lyapunov_exponents,
    simulate_lorenz,
)
from geodl.training import TaskModule, TrainSection, fit, torch_threads
from geodl.training.checkpoints import load_checkpoint, save_model

__all__ = [
    "LYAPUNOV_REFERENCE",
    "DynamicsScores",
    "ModelSection",
    "build_dynamics_model",
    "denoise_scores",
    "histogram_distance",
    "known_terms",
    "leave_step",
    "method_name",
    "near_fraction",
    "read_dynamics_checkpoint",
    "read_trajectory_file",
    "restore_dynamics_model",
    "rollout_loss",
    "save_dynamics_model",
    "score_dynamics",
    "simulate_trajectories",
    "split_train_val_test",
    "split_trajectories",
    "step_function",
    "train_dynamics",
    "trajectory_array",
    "trajectory_windows",
    "training_loss",
    "vector_field",
]

#: Leading Lyapunov exponents of the standard systems (1 / time unit): Lorenz-63 (sigma 10, rho 28,
#: beta 8/3) and Lorenz-96 (40 variables, F = 8).
LYAPUNOV_REFERENCE = {"lorenz63": 0.906, "lorenz96": 1.68}

Step = Callable[[Tensor], Tensor]


class ModelSection(Section):
    """The model of the dynamics and how it is fitted (the ``model`` section of the config)."""

    kind: Literal["bilinear_resnet", "neural_ode"] = "bilinear_resnet"
    n_bilinear: int = Field(3, gt=0, description="bilinear_resnet")
    hidden: list[int] = Field(default_factory=lambda: [64, 64], description="neural_ode MLP")
    act: str = "tanh"
    method: str = Field("rk4", description="neural_ode solver: rk4 or a torchdiffeq name")
    rollout: int = Field(4, gt=0, description="steps of the rollout loss")
    stride: int = Field(1, gt=0, description="between training windows")
    init_scale: float = Field(
        0.1, gt=0, description="scales the initial weights (neural_ode: of the output layer)"
    )
    lbfgs_iter: int = Field(0, ge=0, description="float64 L-BFGS iterations after Adam")
    estimate_states: bool = Field(
        False,
        description="noisy data: fit the clean training states jointly with the model (L-BFGS)",
    )
    state_weight: float = Field(
        0.1, gt=0, description="weight of the data misfit |states - data|^2 (estimate_states)"
    )
    physics: Literal["none", "lorenz63", "lorenz96"] = Field(
        "none",
        description="neural_ode: the linear terms of this system are known (a fixed part of the "
        "vector field); the network learns the rest",
    )
    physics_forcing: float = Field(8.0, description="lorenz96's forcing F of the known terms")
    residual_weight: float = Field(
        0.0,
        ge=0,
        description="weight of the physics residual |dx/dt - f(x)|^2 (central differences of the "
        "training windows, geodl.losses.ode_residual) beside the rollout loss",
    )


def method_name(m: ModelSection) -> str:
    """Name of the model in ``metrics.json``: its kind, with the solver for a neural ODE.

    Examples
    --------
    >>> method_name(ModelSection(kind="neural_ode", method="dopri5"))
    'neural_ode_dopri5'
    """
    return m.kind if m.kind != "neural_ode" else f"neural_ode_{m.method}"


# ----- trajectories ------------------------------------------------------------------------
def trajectory_array(
    da: xr.DataArray, dt: float | None = None, *, allow_nan: bool = False
) -> tuple[np.ndarray, float]:
    """Check a trajectory DataArray: ``(trajectory, time, component)`` float64 array and ``dt``.

    Parameters
    ----------
    da : ``(time, component)`` or ``(trajectory, time, component)``.
    dt : time step (default: ``da.attrs["dt"]``, else the spacing of a regular numeric ``time``
        coordinate).
    allow_nan : NaN allowed (observations); infinite values never are.

    Examples
    --------
    >>> da = xr.DataArray(np.zeros((5, 3)), dims=("time", "component"), attrs={"dt": 0.01})
    >>> a, dt = trajectory_array(da)
    >>> a.shape, dt
    ((1, 5, 3), 0.01)
    """
    what = "observations" if allow_nan else "trajectories"
    if not isinstance(da, xr.DataArray):
        raise UserInputError(f"{what} must be an xarray.DataArray, got {type(da).__name__}")
    dims = tuple(map(str, da.dims))
    if dims not in (("time", "component"), ("trajectory", "time", "component")):
        raise DataError(
            f"{what} have dims {dims}; expected (time, component) or (trajectory, time, "
            "component); rename or transpose the dims (e.g. da.rename(t='time'))"
        )
    if dt is None:
        dt = da.attrs.get("dt")
    if dt is None and "time" in da.coords and np.issubdtype(da["time"].dtype, np.number):
        steps = np.diff(np.asarray(da["time"].values, dtype=float))
        if steps.size and np.allclose(steps, steps[0], rtol=1e-6) and steps[0] > 0:
            dt = float(steps[0])
    if dt is None:
        raise DataError(
            f"{what}: no time step; set da.attrs['dt'], give a regular numeric time "
            "coordinate, or pass dt="
        )
    if not isinstance(dt, int | float | np.number) or not float(dt) > 0:
        raise DataError(f"{what}: dt={dt!r}; expected a positive number")
    values = np.asarray(da.values, dtype=np.float64)
    if values.ndim == 2:
        values = values[None]
    if np.isinf(values).any() or (not allow_nan and np.isnan(values).any()):
        raise DataError(
            "trajectories contain NaN or infinite values; a model of the dynamics needs complete "
            "states (fill or drop the gaps, or use geodl.assimilation to reconstruct them)"
        )
    return values, float(dt)


def read_trajectory_file(path: str | Path, variable: str) -> tuple[np.ndarray, float]:
    """Read and check a trajectory file: ``(trajectory, time, component)`` array and ``dt``.

    ``variable`` is ``(time, component)`` or ``(trajectory, time, component)``; its ``dt``
    attribute, else the file's, else a regular numeric ``time`` coordinate gives the step.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.path: trajectory file '{path}' not found")
    with open_dataset(path, dask=False) as ds:  # a one-line DataError if unreadable
        if variable not in ds.data_vars:
            raise DataError(
                f"{path}: no variable '{variable}' (found {sorted(map(str, ds.data_vars))}); set "
                "data.variable"
            )
        da = ds[variable].load()
        if "dt" not in da.attrs and "dt" in ds.attrs:
            da.attrs["dt"] = ds.attrs["dt"]
    try:
        return trajectory_array(da)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def check_setup(
    m: ModelSection | None,
    *,
    n_time: int | None,
    lead_steps: int | None = None,
    system: tuple[str, float] | None = None,
) -> None:
    """One :class:`ConfigError` line where model ``m`` or the evaluation cannot run on
    trajectories of ``n_time`` states (None: not known yet): a rollout or a forecast lead as long
    as the data, or state estimation without the L-BFGS that fits the states. The config validator
    calls it with the simulated trajectories' length, before any stage; training and scoring call
    it again with the data's. ``system`` (name, forcing) of simulated data: known physics
    (``m.physics``) must be that system's.

    Examples
    --------
    >>> check_setup(ModelSection(rollout=10), n_time=10)
    Traceback (most recent call last):
    ...
    geodl.errors.ConfigError: model.rollout=10 steps needs trajectories longer than 9 steps; lower the rollout or give longer trajectories
    """
    if m is not None and m.estimate_states and m.lbfgs_iter == 0:
        raise ConfigError(
            "model.estimate_states needs model.lbfgs_iter > 0 (the states are fitted by L-BFGS)"
        )
    if m is not None and m.physics != "none" and m.kind != "neural_ode":
        raise ConfigError(
            f"model.physics: {m.physics} needs model.kind: neural_ode (a known part plus a "
            f"learned field); {m.kind} has no separate vector field to add it to"
        )
    if m is not None and system is not None and m.physics not in ("none", system[0]):
        raise ConfigError(
            f"model.physics: {m.physics} is not the simulated system ({system[0]}); set "
            f"model.physics: {system[0]} or none"
        )
    lorenz96 = m is not None and system is not None and m.physics == "lorenz96"
    if lorenz96 and m.physics_forcing != system[1]:  # type: ignore[union-attr, index]
        raise ConfigError(
            f"model.physics_forcing={m.physics_forcing} is not simulate.forcing={system[1]}"  # type: ignore[union-attr, index]
        )
    if m is not None and m.residual_weight > 0 and m.rollout < 2:
        raise ConfigError(
            "model.residual_weight > 0 needs model.rollout >= 2 (central differences need three "
            "states per window)"
        )
    if n_time is None:
        return
    if m is not None and m.rollout >= n_time:
        raise ConfigError(
            f"model.rollout={m.rollout} steps needs trajectories longer than {n_time - 1} steps; "
            "lower the rollout or give longer trajectories"
        )
    if lead_steps is not None and lead_steps >= n_time:
        raise ConfigError(
            f"evaluate.lead_steps={lead_steps} is longer than the test trajectories "
            f"({n_time} steps); lower it, raise simulate.n_steps or give longer data"
        )


def simulate_trajectories(
    system: str,
    n_trajectories: Mapping[str, int],
    *,
    n_steps: int,
    dt: float,
    spinup_steps: int,
    n_components: int,
    forcing: float,
    noise_std: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Independent Lorenz trajectories ``(B, n_steps + 1, D)`` for each split of ``n_trajectories``.

    Split ``i`` (in the mapping's order) starts from seed ``seed + 1000 * i``. Every split but
    ``"test"`` gets Gaussian observation noise of std ``noise_std`` (from seed ``seed + 7``); the
    clean trajectories are then returned too, as ``NAME_clean`` before ``NAME``.

    Examples
    --------
    >>> parts = simulate_trajectories(
    ...     "lorenz63", {"train": 2, "test": 1}, n_steps=10, dt=0.01, spinup_steps=0,
    ...     n_components=40, forcing=8.0, noise_std=0.1, seed=0)
    >>> {k: v.shape for k, v in parts.items()}
    {'train_clean': (2, 11, 3), 'train': (2, 11, 3), 'test': (1, 11, 3)}
    """
    rng = np.random.default_rng(seed + 7)
    parts = {}
    for i, (name, n) in enumerate(n_trajectories.items()):
        traj = simulate_lorenz(
            system,
            n_trajectories=n,
            n_steps=n_steps,
            dt=dt,
            spinup_steps=spinup_steps,
            n_components=n_components,
            forcing=forcing,
            seed=seed + 1000 * i,
        ).numpy()
        if name != "test" and noise_std > 0:
            parts[name + "_clean"] = traj  # scores the states estimated from noisy data
            traj = traj + noise_std * rng.standard_normal(traj.shape)
        parts[name] = traj
    return parts


def split_trajectories(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation data of ``values`` ``(B, T, D)``: the last trajectory is the validation
    data when there are several, else the last 20% of time.

    Examples
    --------
    >>> [a.shape for a in split_trajectories(np.zeros((1, 10, 3)))]
    [(1, 8, 3), (1, 2, 3)]
    """
    if values.shape[0] > 1:
        return values[:-1], values[-1:]
    cut = int(0.8 * values.shape[1])
    return values[:, :cut], values[:, cut:]


def split_train_val_test(values: np.ndarray) -> dict[str, np.ndarray]:
    """``train`` / ``val`` / ``test`` parts of ``values`` ``(B, T, D)``: whole trajectories when
    there are 3 or more (the last two are ``val`` and ``test``), else 60/20/20% of time.

    Examples
    --------
    >>> {k: v.shape for k, v in split_train_val_test(np.zeros((1, 10, 3))).items()}
    {'train': (1, 6, 3), 'val': (1, 2, 3), 'test': (1, 2, 3)}
    """
    if values.shape[0] >= 3:
        return {"train": values[:-2], "val": values[-2:-1], "test": values[-1:]}
    n = values.shape[1]
    a, b = int(0.6 * n), int(0.8 * n)
    return {"train": values[:, :a], "val": values[:, a:b], "test": values[:, b:]}


# ----- the model and its training -----------------------------------------------------------
def build_dynamics_model(m: ModelSection, dim: int) -> nn.Module:
    """The model, in time units of one data step (see :func:`step_function`), initial weights scaled.

    Why one step as the time unit: the normalised Lorenz-63 field is of order 10 per model time
    unit, far from the order-one outputs of a freshly initialised network, and Adam then needs
    thousands of steps only to grow the weights (measured: one-step RMSE stalled at 0.67 after 1500
    steps, against 0.08 in step units with weights scaled by 0.1). Exponents are converted back.

    Examples
    --------
    >>> net = build_dynamics_model(ModelSection(), 3)
    >>> step_function(net)(torch.zeros(2, 3)).shape
    torch.Size([2, 3])
    """
    model: nn.Module
    if m.kind == "bilinear_resnet":
        model = BilinearResNet(dim, n_bilinear=m.n_bilinear, dt=1.0)
    elif m.physics != "none":  # the known part is set by train_dynamics (see known_terms)
        field = KnownPlusLearned(MLP(dim, dim, hidden=tuple(m.hidden), act=m.act), dim)
        model = build_model("neural_ode", vector_field=field, method=m.method, step_size=1.0)
    else:
        model = build_model(
            "neural_ode", dim=dim, hidden=tuple(m.hidden), act=m.act, method=m.method, step_size=1.0
        )
    with torch.no_grad():
        # The bilinear network is scaled whole (its products are quadratic in the weights); the
        # MLP field only in its output layer, which keeps its tanh units in their non-linear range
        # (L63, BENCHMARKS.md "Dynamics": every layer scaled, the Adam phase stalls).
        params = list(model.parameters())
        for p in params if m.kind == "bilinear_resnet" else params[-2:]:
            p.mul_(m.init_scale)
    return model


def step_function(model: nn.Module) -> Step:
    """One model step ``(B, D) -> (B, D)`` (one data time step) for either kind of model."""
    if isinstance(model, NeuralODE):
        times = torch.tensor([0.0, 1.0])
        return lambda z: model(z, times.to(z))[:, 1]
    return model


def known_terms(
    m: ModelSection, mean: np.ndarray, std: np.ndarray, dt: float
) -> tuple[Tensor, Tensor]:
    """The known linear terms of ``m.physics`` (:func:`geodl.sim.lorenz_linear_terms`) in the
    model's coordinates: ``z = (x - mean) / std`` and time in data steps ``dt``, so
    ``dz/dtau = M z + c`` with ``M = dt S^-1 A S`` and ``c = dt S^-1 (A mean + b)``.

    Examples
    --------
    >>> M, c = known_terms(ModelSection(kind="neural_ode", physics="lorenz96"),
    ...                    np.zeros(4), np.full(4, 2.0), 0.05)
    >>> M.diagonal().tolist(), c.tolist()
    ([-0.05, -0.05, -0.05, -0.05], [0.2, 0.2, 0.2, 0.2])
    """
    a, b = lorenz_linear_terms(m.physics, len(mean), forcing=m.physics_forcing)
    mu, s = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)
    matrix = dt * a * s[None, :] / s[:, None]
    offset = dt * (a @ mu + b) / s
    return matrix, offset


def vector_field(model: nn.Module) -> Step:
    """The learned vector field ``f(z)`` ``(B, D) -> (B, D)``, per data step, of either kind of
    model (a module for neural ODEs, a method for the bilinear net)."""
    return cast(Step, model.vector_field)


def training_loss(model: nn.Module, x: Tensor, m: ModelSection) -> Tensor:
    """The fit of :func:`train_dynamics` on windows ``x`` ``(B, K+1, D)``: :func:`rollout_loss`
    plus ``m.residual_weight`` times the physics residual of the model's vector field on the
    windows (:func:`geodl.losses.ode_residual`, central differences, one data step)."""
    loss = rollout_loss(model, x)
    if m.residual_weight > 0:
        res = ode_residual(x, vector_field(model), dt=1.0, scheme="central")
        loss = loss + m.residual_weight * res
    return loss


def rollout_loss(model: nn.Module, x: Tensor) -> Tensor:
    """Mean squared error of a rollout from ``x[:, 0]`` against ``x[:, 1:]`` (``(B, K+1, D)``).

    .. math:: L = \\frac{1}{K} \\sum_{k=1}^{K} \\operatorname{mean}\\,(M^k(x_0) - x_k)^2
    """
    step = step_function(model)
    z = x[:, 0]
    err = x.new_zeros(())
    for k in range(1, x.shape[1]):
        z = step(z)
        err = err + (z - x[:, k]).pow(2).mean()
    return err / (x.shape[1] - 1)


def _lbfgs(params: list[Tensor], loss: Callable[[], Tensor], n_iter: int) -> None:
    """Minimise ``loss()`` over ``params`` with float64-grade L-BFGS (strong Wolfe line search)."""
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=n_iter,
        history_size=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
    )

    def closure() -> Tensor:
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    opt.step(closure)


def _polish(model: nn.Module, data: Tensor, m: ModelSection) -> tuple[nn.Module, Tensor | None]:
    """Refine in float64 with L-BFGS on the training trajectories ``data`` ``(B, T, D)``.

    Adam's noise floor (one-step RMSE ~1e-2 on L63) is far above what a model that can represent
    the dynamics exactly reaches. With ``estimate_states`` the clean states ``X`` are fitted too
    (a weak-constraint variational fit, as in 4D-Var but over the whole training set):

    ``J(theta, X) = rollout_error(theta; X) + state_weight * mean((X - Y)^2)``.

    Fitting a map to noisy states alone is biased towards damping (the best one-step predictor
    from a noisy state regresses to the mean: measured on L63 with noise std 1, the learned model
    collapses to a fixed point); fitting states that the model can follow removes the noise
    instead. Returns the model and the estimated states (None without ``estimate_states``).
    """
    model = model.double()
    y = data.double()
    if not m.estimate_states:
        x = trajectory_windows(y, m.rollout, m.stride)
        _lbfgs(list(model.parameters()), lambda: training_loss(model, x, m), m.lbfgs_iter)
        return model, None
    states = torch.nn.Parameter(y.clone())

    def loss() -> Tensor:
        fit = training_loss(model, trajectory_windows(states, m.rollout, 1), m)
        return fit + m.state_weight * (states - y).pow(2).mean()

    _lbfgs([*model.parameters(), states], loss, m.lbfgs_iter)
    return model, states.detach()


def train_dynamics(
    train: np.ndarray,
    val: np.ndarray,
    m: ModelSection,
    tr: TrainSection,
    *,
    ckpt_dir: Path,
    log_dir: Path,
    key: str,
    dt: float | None = None,
) -> tuple[nn.Module, dict[str, Any], np.ndarray | None]:
    """Train a model of the dynamics on trajectories ``(B, T, D)`` (one row per time step).

    Adam (through :func:`geodl.training.fit`: checkpoints, resume, logs) on the multi-step rollout
    loss, then ``m.lbfgs_iter`` float64 L-BFGS iterations (with the states when
    ``m.estimate_states``).

    Parameters
    ----------
    train, val : training and validation trajectories ``(B, T, D)``.
    m, tr : the model and the training settings.
    ckpt_dir, log_dir, key : of :func:`geodl.training.fit` (``key`` identifies a resumable run).
    dt : the data's time step (needed with ``m.physics``: the known terms are in physical time).

    Returns
    -------
    (model, metadata, states)
        The model (in normalised coordinates and one-step time units), its metadata (``mean``,
        ``std``, ``dim``, ``epochs``) and the estimated training states in the data's units (None
        unless ``m.estimate_states``).
    """
    check_setup(m, n_time=min(train.shape[1], val.shape[1]))
    mean, std = train.mean(axis=(0, 1)), train.std(axis=(0, 1))
    if not (std > 0).all():
        raise DataError("a component of the training trajectories is constant; drop it")

    def windows(traj: np.ndarray) -> TensorDataset:
        z = torch.as_tensor((traj - mean) / std, dtype=torch.float32)  # (B, T, D)
        return TensorDataset(trajectory_windows(z, m.rollout, m.stride))

    dim = train.shape[-1]
    torch.manual_seed(tr.seed)
    model = build_dynamics_model(m, dim)
    if m.physics != "none":
        if dt is None:
            raise UserInputError("train_dynamics: model.physics needs dt= (the data's time step)")
        model.vector_field.set_known(*known_terms(m, mean, std, dt))

    def loss_fn(net: nn.Module, batch: Any) -> dict[str, Tensor]:
        (x,) = batch  # (B, K+1, D)
        return {"loss": training_loss(net, x, m)}

    config = {"model": m.model_dump(mode="json"), "train": tr.model_dump(mode="json")}
    module = TaskModule(model, loss_fn, tr, metadata={"config": config})
    with torch_threads(1):
        result = fit(
            module,
            windows(train),
            windows(val),
            tr,
            ckpt_dir=ckpt_dir,
            log_dir=log_dir,
            key=key,
        )
        states = None
        if m.lbfgs_iter > 0:
            module.model, states = _polish(module.model, torch.as_tensor((train - mean) / std), m)
    meta = {"mean": mean.tolist(), "std": std.tolist(), "dim": dim, "epochs": result.epochs}
    return module.model, meta, None if states is None else states.numpy() * std + mean


# ----- the checkpoint -----------------------------------------------------------------------
def save_dynamics_model(path: str | Path, net: nn.Module, meta: Mapping[str, Any]) -> Path:
    """Write ``net`` and its metadata atomically to ``path`` (``model.pt``).

    The file is geodl's model envelope (:func:`geodl.training.checkpoints.save_model`); ``meta``
    holds at least ``mean``, ``std``, ``dt``, ``dim`` and ``config`` (whose ``model`` entry
    rebuilds the network).
    """
    return save_model(path, net.state_dict(), meta)


def read_dynamics_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state_dict, metadata)`` of a file written by :func:`save_dynamics_model`.

    Raises :class:`~geodl.errors.UserInputError` (one line) for a missing, corrupt or foreign
    file or one without a geodl version, and ``KeyError`` for a geodl file of another kind.
    """
    ckpt = load_checkpoint(path)
    return ckpt["state_dict"], ckpt["geodl"]


def restore_dynamics_model(m: ModelSection, dim: int, state_dict: Mapping[str, Any]) -> nn.Module:
    """The float64 network of section ``m`` with the weights ``state_dict``, in eval mode."""
    net = build_dynamics_model(m, dim).double()  # float64 before loading: keeps polished weights
    net.load_state_dict(state_dict)
    return net.eval()


# ----- scores -------------------------------------------------------------------------------
@dataclass
class DynamicsScores:
    """What :func:`score_dynamics` measured.

    ``scores`` is the model's entry of ``metrics.json``; ``forecast_rmse`` ``(L+1,)`` the RMSE
    against lead (in steps, from 0); ``rollout`` ``(S, D)`` the long free rollout in the data's
    units, cut where it left the attractor (``left_attractor_at_step``, None if it never did).
    """

    scores: dict[str, float | int]
    forecast_rmse: np.ndarray
    rollout: np.ndarray
    left_attractor_at_step: int | None
    lyapunov_reference: float
    hist_distance: np.ndarray
    dt: float

    def forecast_dataset(self) -> xr.Dataset:
        """``forecast.nc``: the RMSE against lead (in steps and Lyapunov times) and the rollout."""
        leads = np.arange(len(self.forecast_rmse))
        left = self.left_attractor_at_step
        return xr.Dataset(
            {
                "forecast_rmse": (("lead",), self.forecast_rmse),
                "rollout": (("step", "component"), self.rollout),
            },
            coords={
                "lead": leads,
                "lead_lyapunov_times": ("lead", leads * self.dt * self.lyapunov_reference),
            },
            attrs={
                "left_attractor_at_step": -1 if left is None else left,
                "comment": "rollout is cut where it left the attractor (-1: never)",
            },
        )


def _forecast_curve(
    step: Step,
    test: np.ndarray,
    z_test: np.ndarray,
    std: np.ndarray,
    mean: np.ndarray,
    *,
    lead_steps: int,
    n_forecasts: int,
) -> np.ndarray:
    """RMSE ``(L+1,)`` of forecasts from ``n_forecasts`` evenly spaced initial conditions on each
    test trajectory ``(B, T, D)`` (``z_test``: normalised), in the data's units."""
    n_time, dim = test.shape[1], test.shape[2]
    starts = np.linspace(0, n_time - 1 - lead_steps, n_forecasts).astype(int)
    z0 = torch.as_tensor(z_test[:, starts].reshape(-1, dim))
    pred = rollout(step, z0, lead_steps).numpy() * std + mean  # (B*n, L+1, D)
    target = np.stack([test[:, i : i + lead_steps + 1] for i in starts], 1).reshape(pred.shape)
    return np.asarray(forecast_rmse(pred, target))  # (L+1,)


def _long_rollout(
    step: Step, z0: Tensor, n_steps: int, bound: float
) -> tuple[np.ndarray, int | None]:
    """Free rollout ``(S, D)`` (float64) from ``z0`` ``(1, D)``, cut where it left the attractor
    (checked every 100 steps), and that step (None if it never left)."""
    kept, left = rollout_until_exit(step, z0, n_steps, bound, check_every=100)
    return kept[0].numpy().astype(np.float64), left


def _leading_exponent(f: Step, x0: Tensor, *, dt: float, n_steps: int, n_transient: int) -> float:
    """Leading Lyapunov exponent (1 / time unit) of a field ``f`` in units of one step, averaged
    over the initial states ``x0``; tangents by autograd (no analytic jvp)."""
    lam = lyapunov_exponents(f, x0, dt=1.0, n_steps=n_steps, n_transient=n_transient)
    return float(lam[:, 0].mean()) / dt


def score_dynamics(
    net: nn.Module,
    test: np.ndarray,
    *,
    mean: np.ndarray,
    std: np.ndarray,
    dt: float,
    system: str,
    n_components: int,
    forcing: float,
    lead_steps: int,
    n_forecasts: int,
    lyapunov_steps: int,
    lyapunov_transient: int,
    lyapunov_trajectories: int,
    long_steps: int,
    bins: int,
    bound: float,
    near: float,
) -> DynamicsScores:
    """Score a learned model ``net`` (normalised, one-step units) on clean test trajectories.

    Parameters
    ----------
    net : the model (float64, as :func:`restore_dynamics_model` gives it).
    test : clean test trajectories ``(B, T, D)`` in the data's units.
    mean, std : the training statistics ``(D,)`` that normalise the data for ``net``.
    dt : the data's time step.
    system, n_components, forcing : the true system (``lorenz63`` / ``lorenz96``), whose vector
        field gives the same estimator's exponent; for the standard systems the Lyapunov time is
        that of :data:`LYAPUNOV_REFERENCE`, else the estimate on the true field.
    lead_steps, n_forecasts : forecasts of ``lead_steps`` steps from ``n_forecasts`` initial
        conditions on each test trajectory.
    lyapunov_steps, lyapunov_transient, lyapunov_trajectories : the exponent estimates (from the
        first state of that many test trajectories).
    long_steps, bins, bound, near : the long free rollout from the end of the first test
        trajectory: histogram ``bins``, the normalised ``bound`` beyond which it left the
        attractor (it is cut there), the normalised distance counted "on the attractor".

    Returns
    -------
    DynamicsScores
        ``scores``: forecast RMSE at 1 and 8 steps and at 0.5/1/2 Lyapunov times, the skill
        horizon, the learned and true exponents, histogram distances (with the sampling noise
        scale: the same distance between two halves of the test truth), the fractions on the
        attractor (of the rollout and of true states) and where the rollout left the attractor.
    """
    n_time, dim = test.shape[1], test.shape[2]
    check_setup(None, n_time=n_time, lead_steps=lead_steps)
    step = step_function(net)
    z_test = (test - mean) / std
    with torch_threads(1), torch.no_grad():
        curve = _forecast_curve(
            step, test, z_test, std, mean, lead_steps=lead_steps, n_forecasts=n_forecasts
        )
        kept, left = _long_rollout(step, torch.as_tensor(z_test[:1, -1]), long_steps, bound)
    standard = system == "lorenz63" or (n_components == 40 and forcing == 8.0)
    lam_ref = LYAPUNOV_REFERENCE[system] if standard else None
    ref = z_test.reshape(-1, dim)
    hist = histogram_distance(kept, ref, bins) if len(kept) > 1 else np.ones(dim)
    half = z_test.shape[0] // 2
    first, second = z_test[:half].reshape(-1, dim), z_test[half:].reshape(-1, dim)
    hist_truth = histogram_distance(first, second, bins) if half > 0 else None
    on_attractor = near_fraction(kept, ref[:: max(1, len(ref) // 4000)], near)
    # The same fraction for true states (second half of the test set against a sample of the
    # first): near 1 in low dimension, near 0 where a few thousand points cannot cover the
    # attractor (Lorenz-96), which tells whether the criterion means anything.
    near_truth = (
        near_fraction(second, first[:: max(1, len(first) // 4000)], near) if half > 0 else None
    )
    # Fields in units of one step (dt = 1): exponents per step, divided by dt to 1 / time unit.
    x0 = torch.as_tensor(z_test[:lyapunov_trajectories, 0])
    true_f = lorenz_vector_field(system, forcing=forcing)
    mean_t, std_t = torch.as_tensor(mean), torch.as_tensor(std)
    n_lyap, n_transient = lyapunov_steps, lyapunov_transient
    lam = _leading_exponent(vector_field(net), x0, dt=dt, n_steps=n_lyap, n_transient=n_transient)
    lam_true = _leading_exponent(
        lambda zz: true_f(zz * std_t + mean_t) / std_t * dt,
        x0,
        dt=dt,
        n_steps=n_lyap,
        n_transient=n_transient,
    )
    lt = lam_ref if lam_ref is not None else float(lam_true)
    leads = np.arange(len(curve))
    above = np.flatnonzero(curve > 0.5 * float(np.sqrt((std**2).mean())))
    scores = {
        "rmse_step_1": float(curve[1]),
        "rmse_step_8": float(curve[min(8, len(curve) - 1)]),
        **{
            f"rmse_{q}lt": float(np.interp(q / (lt * dt), leads, curve))
            for q in (0.5, 1, 2)
            if q / (lt * dt) <= leads[-1]
        },
        "skill_horizon_lt": float(above[0] * dt * lt) if above.size else math.inf,
        # A model that leaves the attractor has no meaningful exponent: reported as such, not NaN.
        **(
            {"lyapunov": float(lam), "lyapunov_rel_error": float(abs(lam - lt) / lt)}
            if np.isfinite(lam)
            else {"lyapunov_undefined": 1.0}
        ),
        "lyapunov_true_estimate": float(lam_true),
        "hist_distance_mean": float(hist.mean()),
        "hist_distance_max": float(hist.max()),
        **(
            {"hist_distance_truth_halves": float(hist_truth.mean())}
            if hist_truth is not None
            else {}
        ),
        "on_attractor_fraction": on_attractor,
        **({"on_attractor_fraction_truth": near_truth} if near_truth is not None else {}),
        "rollout_steps": int(len(kept) - 1),
        "left_attractor": float(left is not None),
        **({"left_attractor_at_step": left} if left is not None else {}),
    }
    return DynamicsScores(scores, curve, kept * std + mean, left, lt, hist, dt)
