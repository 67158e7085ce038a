"""Dynamics learning on Lorenz systems: simulate -> train -> evaluate -> report.

Trajectories of the true system (optionally with observation noise: "learning from noisy data") train
a model of the dynamics, a bilinear residual network (:class:`geodl.models.BilinearResNet`) or a
neural ODE (:class:`geodl.models.NeuralODE`: MLP vector field, geodl's fixed-step RK4 or any
torchdiffeq solver), with a multi-step rollout loss. The learned model is scored on separate clean
test trajectories:

- forecast RMSE against lead time, in steps and in Lyapunov times of the true system;
- the leading Lyapunov exponent of the learned vector field (and of the true one, same estimator);
- a long free rollout against the truth's statistics: per-variable histogram distance (total
  variation), the fraction of points near the true attractor, and where the rollout left the
  attractor if it did (the rollout is cut there; the step is reported, nothing is NaN-filled).

Everything runs in coordinates normalised by the training data's mean and standard deviation (the
statistics travel with the model); exponents do not depend on that affine change of coordinates.

Python use::

    from geodl.pipeline import run_experiment
    from geodl.tasks import load_config

    cfg, exp = load_config("configs/l63_dynamics_quick.yaml", ["model.kind=neural_ode"])
    run_experiment(cfg, exp, "runs/l63_node")  # runs/l63_node/metrics.json, report/index.html
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
from pydantic import Field

from geodl.config import Section
from geodl.errors import ConfigError, DataError, UserInputError
from geodl.pipeline import Experiment, Stage, StageContext
from geodl.tasks.registry import ExperimentSection, register
from geodl.training import TrainSection, torch_threads

__all__ = [
    "DynamicsConfig",
    "LYAPUNOV_REFERENCE",
    "ModelSection",
    "build_dynamics_model",
    "histogram_distance",
    "leave_step",
    "split_trajectories",
    "step_function",
    "train_dynamics",
    "trajectory_array",
]

#: Leading Lyapunov exponents of the standard systems (1 / time unit): Lorenz-63 (sigma 10, rho 28,
#: beta 8/3) and Lorenz-96 (40 variables, F = 8).
LYAPUNOV_REFERENCE = {"lorenz63": 0.906, "lorenz96": 1.68}


class DataSection(Section):
    """Trajectories from a file instead of the simulator (``simulate`` then only names the system
    whose true vector field scores the learned exponent)."""

    path: str | None = Field(
        None, description="NetCDF with VARIABLE(time, component) or (trajectory, time, component)"
    )
    variable: str = "state"


class SimulateSection(Section):
    system: Literal["lorenz63", "lorenz96"] = "lorenz63"
    n_components: int = Field(40, ge=4, description="lorenz96 only")
    forcing: float = 8.0
    dt: float = Field(0.01, gt=0)
    spinup_steps: int = Field(1000, ge=0)
    n_train_trajectories: int = Field(8, gt=0)
    n_val_trajectories: int = Field(2, gt=0)
    n_test_trajectories: int = Field(4, gt=0)
    n_steps: int = Field(2000, gt=0, description="steps of each train/val/test trajectory")
    noise_std: float = Field(0.0, ge=0, description="observation noise on train/val data")
    seed: int = 0


class ModelSection(Section):
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


class EvaluateSection(Section):
    lead_steps: int = Field(300, gt=0)
    n_forecasts: int = Field(64, gt=0, description="initial conditions per test trajectory: spread")
    lyapunov_steps: int = Field(2000, gt=0)
    lyapunov_transient: int = Field(500, ge=0)
    lyapunov_trajectories: int = Field(2, gt=0)
    long_steps: int = Field(20000, gt=0)
    bins: int = Field(40, gt=1)
    bound: float = Field(
        5.0, gt=0, description="left the attractor: a normalised component beyond this"
    )
    near: float = Field(0.25, gt=0, description="normalised distance counted 'on the attractor'")


class DynamicsConfig(Section):
    experiment: ExperimentSection
    data: DataSection = DataSection()
    simulate: SimulateSection = SimulateSection()
    model: ModelSection = ModelSection()
    train: TrainSection = TrainSection(max_epochs=30, batch_size=128, lr=1e-2, progress_bar=False)
    evaluate: EvaluateSection = EvaluateSection()


# --------------------------------------------------------------------------------------------
# pure helpers (tested alone)


def histogram_distance(a: np.ndarray, b: np.ndarray, bins: int) -> np.ndarray:
    """Total-variation distance between the histograms of each component of ``a`` and ``b``
    (``(N, D)`` and ``(M, D)``), on common bins spanning both: ``(D,)`` in [0, 1].

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(5000, 2))
    >>> d = histogram_distance(x, x + [0.0, 10.0], bins=20)
    >>> bool(d[0] == 0.0), bool(d[1] == 1.0)
    (True, True)
    """
    out = np.empty(a.shape[1])
    for j in range(a.shape[1]):
        lo = min(a[:, j].min(), b[:, j].min())
        hi = max(a[:, j].max(), b[:, j].max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        pa = np.histogram(a[:, j], edges)[0] / len(a)
        pb = np.histogram(b[:, j], edges)[0] / len(b)
        out[j] = 0.5 * np.abs(pa - pb).sum()
    return out


def leave_step(traj: np.ndarray, bound: float) -> int | None:
    """First step of ``traj`` ``(T, D)`` (normalised) that is non-finite or has a component beyond
    ``bound`` in absolute value; None if it never leaves.

    Examples
    --------
    >>> leave_step(np.array([[0.0], [1.0], [9.0], [np.nan]]), 5.0)
    2
    """
    bad = ~np.isfinite(traj).all(axis=1) | (np.abs(np.nan_to_num(traj, nan=np.inf)) > bound).any(
        axis=1
    )
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else None


def trajectory_array(
    da: xr.DataArray, dt: float | None = None, *, allow_nan: bool = False
) -> tuple[np.ndarray, float]:
    """Check a trajectory DataArray: ``(trajectory, time, component)`` float64 array and ``dt``
    (NaN allowed with ``allow_nan``: observations).

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


def split_trajectories(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validation data: the last trajectory when there are several, else the last 20% of time."""
    if values.shape[0] > 1:
        return values[:-1], values[-1:]
    cut = int(0.8 * values.shape[1])
    return values[:, :cut], values[:, cut:]


# --------------------------------------------------------------------------------------------
# models


def build_dynamics_model(m: ModelSection, dim: int) -> Any:
    """The model, in time units of one data step (see :func:`step_function`), initial weights scaled.

    Why one step as the time unit: the normalised Lorenz-63 field is of order 10 per model time
    unit, far from the order-one outputs of a freshly initialised network, and Adam then needs
    thousands of steps only to grow the weights (measured: one-step RMSE stalled at 0.67 after 1500
    steps, against 0.08 in step units with weights scaled by 0.1). Exponents are converted back.
    """
    import torch

    from geodl.models import BilinearResNet, build_model

    if m.kind == "bilinear_resnet":
        model = BilinearResNet(dim, n_bilinear=m.n_bilinear, dt=1.0)
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


def step_function(model: Any) -> Any:
    """One model step ``(B, D) -> (B, D)`` (one data time step) for either kind of model."""
    import torch

    from geodl.models import NeuralODE

    if isinstance(model, NeuralODE):
        times = torch.tensor([0.0, 1.0])
        return lambda z: model(z, times.to(z))[:, 1]
    return model


def _rollout_loss(model: Any, x: Any) -> Any:
    """Mean squared error of a rollout from ``x[:, 0]`` against ``x[:, 1:]`` (``(B, K+1, D)``)."""
    step = step_function(model)
    z = x[:, 0]
    err = x.new_zeros(())
    for k in range(1, x.shape[1]):
        z = step(z)
        err = err + (z - x[:, k]).pow(2).mean()
    return err / (x.shape[1] - 1)


def _lbfgs(params: list[Any], loss: Any, n_iter: int) -> None:
    """Minimise ``loss()`` over ``params`` with float64-grade L-BFGS (strong Wolfe line search)."""
    import torch

    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=n_iter,
        history_size=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
    )

    def closure() -> Any:
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    opt.step(closure)


def _windows(z: Any, rollout: int, stride: int) -> Any:
    """Every ``rollout + 1``-step window of ``z`` ``(B, T, D)``: ``(B * nW, rollout + 1, D)``."""
    w = z.unfold(1, rollout + 1, stride)  # (B, nW, D, K+1)
    return w.permute(0, 1, 3, 2).reshape(-1, rollout + 1, z.shape[-1])


def _polish(model: Any, data: Any, m: ModelSection) -> tuple[Any, Any]:
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
    import torch

    model = model.double()
    y = data.double()
    if not m.estimate_states:
        x = _windows(y, m.rollout, m.stride)
        _lbfgs(list(model.parameters()), lambda: _rollout_loss(model, x), m.lbfgs_iter)
        return model, None
    states = torch.nn.Parameter(y.clone())

    def loss() -> Any:
        fit = _rollout_loss(model, _windows(states, m.rollout, 1))
        return fit + m.state_weight * (states - y).pow(2).mean()

    _lbfgs([*model.parameters(), states], loss, m.lbfgs_iter)
    return model, states.detach()


def _field(model: Any) -> Any:
    """The learned vector field ``f(z)`` (a module for neural ODEs, a method for the bilinear net)."""
    return model.vector_field


# --------------------------------------------------------------------------------------------
# stages


def _external(cfg: Any) -> list[Path]:
    return [Path(cfg.data.path)] if cfg.data.path else []


def read_trajectory_file(path: str | Path, variable: str) -> tuple[np.ndarray, float]:
    """Read and check a trajectory file: ``(trajectory, time, component)`` array and ``dt``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.path: trajectory file '{path}' not found")
    from geodl.data import open_dataset

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


def _split_three(traj: np.ndarray) -> dict[str, np.ndarray]:
    """train / val / test: whole trajectories when there are 3 or more, else 60/20/20% of time."""
    if traj.shape[0] >= 3:
        return {"train": traj[:-2], "val": traj[-2:-1], "test": traj[-1:]}
    n = traj.shape[1]
    a, b = int(0.6 * n), int(0.8 * n)
    return {"train": traj[:, :a], "val": traj[:, a:b], "test": traj[:, b:]}


def _simulate(ctx: StageContext) -> None:
    from geodl.sim import simulate_lorenz

    s = ctx.cfg.simulate
    if ctx.cfg.data.path:
        traj, dt = read_trajectory_file(ctx.cfg.data.path, ctx.cfg.data.variable)
        parts_ = _split_three(traj)
        ds = xr.Dataset(
            {k: ((f"trajectory_{k}", f"time_{k}", "component"), v) for k, v in parts_.items()},
            attrs={
                "title": f"trajectories for dynamics learning from {ctx.cfg.data.path}",
                "source": f"file {ctx.cfg.data.path}, variable {ctx.cfg.data.variable}",
                "dt": dt,
                "Conventions": "CF-1.8",
            },
        )
        ds.to_netcdf(ctx.output("trajectories.nc"))
        return
    rng = np.random.default_rng(s.seed + 7)
    parts = {}
    for i, (name, n) in enumerate(
        (
            ("train", s.n_train_trajectories),
            ("val", s.n_val_trajectories),
            ("test", s.n_test_trajectories),
        )
    ):
        traj = simulate_lorenz(
            s.system,
            n_trajectories=n,
            n_steps=s.n_steps,
            dt=s.dt,
            spinup_steps=s.spinup_steps,
            n_components=s.n_components,
            forcing=s.forcing,
            seed=s.seed + 1000 * i,
        ).numpy()
        dims = ("trajectory_" + name, "time", "component")
        if name != "test" and s.noise_std > 0:
            parts[name + "_clean"] = (dims, traj)  # scores the states estimated from noisy data
            traj = traj + s.noise_std * rng.standard_normal(traj.shape)
        parts[name] = (dims, traj)
    ds = xr.Dataset(
        parts,
        coords={"time": np.arange(s.n_steps + 1) * s.dt},
        attrs={
            "title": f"{s.system} trajectories for dynamics learning",
            "source": f"geodl.sim {s.system}: {s.model_dump_json()}",
            "dt": s.dt,
            "Conventions": "CF-1.8",
        },
    )
    ds.to_netcdf(ctx.output("trajectories.nc"))


def train_dynamics(
    train: np.ndarray,
    val: np.ndarray,
    m: ModelSection,
    tr: TrainSection,
    *,
    ckpt_dir: Path,
    log_dir: Path,
    key: str,
) -> tuple[Any, dict[str, Any], np.ndarray | None]:
    """Train a model of the dynamics on trajectories ``(B, T, D)`` (one row per time step).

    Adam (through :func:`geodl.training.fit`: checkpoints, resume, logs) on the multi-step rollout
    loss, then ``m.lbfgs_iter`` float64 L-BFGS iterations (with the states when
    ``m.estimate_states``). Returns the model (in normalised coordinates and one-step time units),
    its metadata (``mean``, ``std``, ``dim``, ``epochs``) and the estimated training states in the
    data's units (None unless ``m.estimate_states``).
    """
    import torch
    from torch.utils.data import TensorDataset

    from geodl.training import TaskModule, fit

    if m.estimate_states and m.lbfgs_iter == 0:
        raise ConfigError(
            "model.estimate_states needs model.lbfgs_iter > 0 (the states are fitted by L-BFGS)"
        )
    n_time = min(train.shape[1], val.shape[1])
    if m.rollout >= n_time:
        raise ConfigError(
            f"model.rollout={m.rollout} steps needs trajectories longer than {n_time - 1} steps; "
            "lower the rollout or give longer trajectories"
        )
    mean, std = train.mean(axis=(0, 1)), train.std(axis=(0, 1))
    if not (std > 0).all():
        raise DataError("a component of the training trajectories is constant; drop it")

    def windows(traj: np.ndarray) -> TensorDataset:
        z = torch.as_tensor((traj - mean) / std, dtype=torch.float32)  # (B, T, D)
        return TensorDataset(_windows(z, m.rollout, m.stride))

    dim = train.shape[-1]
    torch.manual_seed(tr.seed)
    model = build_dynamics_model(m, dim)

    def loss_fn(net: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        (x,) = batch  # (B, K+1, D)
        return {"loss": _rollout_loss(net, x)}

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


def _train(ctx: StageContext) -> None:
    import torch

    cfg = ctx.cfg
    with xr.open_dataset(ctx.input("trajectories.nc")) as ds:
        train, val, dt = ds["train"].values, ds["val"].values, float(ds.attrs["dt"])
    model, meta, states = train_dynamics(
        train,
        val,
        cfg.model,
        cfg.train,
        ckpt_dir=ctx.run_dir / "checkpoints" / "dynamics",
        log_dir=ctx.run_dir / "logs" / "dynamics",
        key=json.dumps(
            {k: cfg.model_dump(mode="json")[k] for k in ("simulate", "model", "train")},
            sort_keys=True,
        ),
    )
    out = ctx.output("model")
    out.mkdir(parents=True, exist_ok=True)
    if states is not None:
        xr.Dataset(
            {"states": (("trajectory", "time", "component"), states)},
            attrs={"comment": "training states estimated jointly with the model (noisy data)"},
        ).to_netcdf(out / "states.nc")
    meta = {**meta, "dt": dt, "config": cfg.model_dump(mode="json")}
    torch.save({"state_dict": model.state_dict(), "geodl": meta}, out / "model.pt")


def _evaluate(ctx: StageContext) -> None:
    import time

    import torch

    from geodl.metrics import forecast_rmse
    from geodl.sim import lorenz_vector_field, lyapunov_exponents

    cfg = ctx.cfg
    ev, s = cfg.evaluate, cfg.simulate
    ckpt = torch.load(ctx.input("model/model.pt"), map_location="cpu", weights_only=True)
    meta = ckpt["geodl"]
    mean, std, dt, dim = np.asarray(meta["mean"]), np.asarray(meta["std"]), meta["dt"], meta["dim"]
    model = build_dynamics_model(
        cfg.model, dim
    ).double()  # float64 before loading: keeps polished weights exact
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    step = step_function(model)
    with xr.open_dataset(ctx.input("trajectories.nc")) as ds:
        test = ds["test"].values  # (B, T, D), clean
        states_file = ctx.input("model/states.nc")
        denoise = {}
        if "train_clean" in ds and states_file.exists():
            with xr.open_dataset(states_file) as st:
                clean = ds["train_clean"].values
                # How much of the noise the joint state estimate removed (original units).
                denoise = {
                    "train_data_rmse": float(np.sqrt(((ds["train"].values - clean) ** 2).mean())),
                    "train_states_rmse": float(
                        np.sqrt(((st["states"].values - clean) ** 2).mean())
                    ),
                }
    n_time = test.shape[1]
    if ev.lead_steps >= n_time:
        raise ConfigError(
            f"evaluate.lead_steps={ev.lead_steps} is longer than the test trajectories "
            f"({n_time} steps); lower it, raise simulate.n_steps or give longer data"
        )
    z_test = (test - mean) / std
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    with torch_threads(1), torch.no_grad():
        # Forecasts from n_forecasts evenly spaced initial conditions on each test trajectory.
        starts = np.linspace(0, n_time - 1 - ev.lead_steps, ev.n_forecasts).astype(int)
        z0 = torch.as_tensor(z_test[:, starts].reshape(-1, dim))
        preds = [z0]
        for _ in range(ev.lead_steps):
            preds.append(step(preds[-1]))
        pred = torch.stack(preds, 1).numpy() * std + mean  # (B*n, L+1, D)
        target = np.stack([test[:, i : i + ev.lead_steps + 1] for i in starts], 1).reshape(
            pred.shape
        )
        curve = forecast_rmse(pred, target)  # (L+1,)
        standard = s.system == "lorenz63" or (s.n_components == 40 and s.forcing == 8.0)
        lam_ref = LYAPUNOV_REFERENCE[s.system] if standard else None
        # Long rollout from the end of the first test trajectory.
        z = torch.as_tensor(z_test[:1, -1])
        long = np.empty((ev.long_steps + 1, dim))
        long[0] = z.numpy()[0]
        left = None
        for i in range(1, ev.long_steps + 1):
            z = step(z)
            long[i] = z.numpy()[0]
            if (i % 100 == 0 or i == ev.long_steps) and (
                left := leave_step(long[: i + 1], ev.bound)
            ) is not None:
                break
    kept = long[: left if left is not None else ev.long_steps + 1]
    ref = z_test.reshape(-1, dim)
    hist = histogram_distance(kept, ref, ev.bins) if len(kept) > 1 else np.ones(dim)
    # Scale of the sampling noise: the same distance between two halves of the test truth.
    half = z_test.shape[0] // 2
    hist_truth = (
        histogram_distance(z_test[:half].reshape(-1, dim), z_test[half:].reshape(-1, dim), ev.bins)
        if half > 0
        else None
    )
    sample = ref[:: max(1, len(ref) // 4000)]
    near = _near_fraction(kept, sample, ev.near)
    # The same fraction for true states (second half of the test set against a sample of the
    # first): near 1 in low dimension, near 0 where a few thousand points cannot cover the
    # attractor (Lorenz-96), which tells whether the criterion means anything.
    near_truth = None
    if half > 0:
        first = z_test[:half].reshape(-1, dim)
        near_truth = _near_fraction(
            z_test[half:].reshape(-1, dim), first[:: max(1, len(first) // 4000)], ev.near
        )
    x0 = torch.as_tensor(z_test[: ev.lyapunov_trajectories, 0])
    # Fields in units of one step (dt = 1): exponents per step, divided by dt to 1 / time unit.
    # Leading exponent averaged over the trajectories; tangents by autograd (no analytic jvp).
    lam = (
        float(
            lyapunov_exponents(
                _field(model),
                x0,
                dt=1.0,
                n_steps=ev.lyapunov_steps,
                n_transient=ev.lyapunov_transient,
            )[:, 0].mean()
        )
        / dt
    )
    true_f = lorenz_vector_field(s.system, forcing=s.forcing)
    mean_t, std_t = torch.as_tensor(mean), torch.as_tensor(std)
    lam_true = (
        float(
            lyapunov_exponents(
                lambda zz: true_f(zz * std_t + mean_t) / std_t * dt,
                x0,
                dt=1.0,
                n_steps=ev.lyapunov_steps,
                n_transient=ev.lyapunov_transient,
            )[:, 0].mean()
        )
        / dt
    )
    lt = lam_ref if lam_ref is not None else float(lam_true)
    leads = np.arange(len(curve))
    clim_std = float(np.sqrt((std**2).mean()))
    above = np.flatnonzero(curve > 0.5 * clim_std)
    name = cfg.model.kind if cfg.model.kind != "neural_ode" else f"neural_ode_{cfg.model.method}"
    results[name] = {
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
        "on_attractor_fraction": near,
        **({"on_attractor_fraction_truth": near_truth} if near_truth is not None else {}),
        "rollout_steps": int(len(kept) - 1),
        "left_attractor": float(left is not None),
        **({"left_attractor_at_step": left} if left is not None else {}),
        **denoise,
        "time_s": round(time.perf_counter() - t0, 2),
    }
    ctx.log.info("dynamics %s: %s", name, results[name])
    metrics = {
        "task": "dynamics",
        "methods": results,
        "units": {"rmse_step_1": "1", "lyapunov": "1/time", "skill_horizon_lt": "Lyapunov times"},
        "lyapunov_reference": lt,
        "hist_distance_per_variable": hist.tolist(),
    }
    ctx.output("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    xr.Dataset(
        {
            "forecast_rmse": (("lead",), curve),
            "rollout": (("step", "component"), kept * std + mean),
        },
        coords={"lead": leads, "lead_lyapunov_times": ("lead", leads * dt * lt)},
        attrs={
            "left_attractor_at_step": -1 if left is None else left,
            "comment": "rollout is cut where it left the attractor (-1: never)",
        },
    ).to_netcdf(ctx.output("forecast.nc"))


def _near_fraction(points: np.ndarray, attractor: np.ndarray, radius: float) -> float:
    """Fraction of ``points`` within ``radius`` of a point of ``attractor`` (both normalised)."""
    import torch

    if len(points) == 0:
        return 0.0
    pts = torch.as_tensor(points[:: max(1, len(points) // 5000)])
    ref = torch.as_tensor(attractor)
    hits = 0
    for i in range(0, len(pts), 1000):
        d = torch.cdist(pts[i : i + 1000], ref).min(dim=1).values
        hits += int((d <= radius).sum())
    return hits / len(pts)


def _report(ctx: StageContext) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geodl.report import plot_learning_curves, write_index

    report_dir = ctx.output("report")
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics = json.loads(ctx.input("metrics.json").read_text())
    figures = ["attractor.png", "error_growth.png"]
    with (
        xr.open_dataset(ctx.input("trajectories.nc")) as t,
        xr.open_dataset(ctx.input("forecast.nc")) as f,
    ):
        test = t["test"].values[0]
        roll = f["rollout"].values
        j = 2 if test.shape[1] > 2 else 1
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharex=True, sharey=True)
        axes[0].plot(test[:, 0], test[:, j], "k", lw=0.3)
        axes[0].set_title("truth (test trajectory)")
        axes[1].plot(roll[:, 0], roll[:, j], "C1", lw=0.3)
        left = int(f.attrs["left_attractor_at_step"])
        axes[1].set_title(
            "learned model, long rollout" + (f" (left at step {left})" if left >= 0 else "")
        )
        for ax in axes:
            ax.set_xlabel("x0")
        axes[0].set_ylabel(f"x{j}")
        fig.tight_layout()
        fig.savefig(report_dir / "attractor.png", dpi=100)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.semilogy(f["lead_lyapunov_times"].values[1:], f["forecast_rmse"].values[1:])
        ax.set_xlabel("lead time (Lyapunov times)")
        ax.set_ylabel("forecast RMSE")
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(report_dir / "error_growth.png", dpi=100)
        plt.close(fig)
    logs = ctx.run_dir / "logs" / "dynamics"
    if logs.exists() and any(logs.rglob("metrics.csv")):
        plot_learning_curves(logs, report_dir / "learning_curves.png", "dynamics training")
        figures.append("learning_curves.png")
    write_index(report_dir, ctx.cfg.experiment.name, metrics, figures)


EXPERIMENT = register(
    Experiment(
        task="dynamics",
        schema=DynamicsConfig,
        stages=(
            Stage(
                "simulate",
                _simulate,
                sections=("simulate", "data"),
                outputs=("trajectories.nc",),
                external_inputs=_external,
            ),
            Stage(
                "train",
                _train,
                sections=("model", "train"),
                needs=("simulate",),
                outputs=("model",),
            ),
            Stage(
                "evaluate",
                _evaluate,
                sections=(
                    "evaluate",
                    "model",  # rebuilds the network and names the method
                    "simulate.system",
                    "simulate.n_components",
                    "simulate.forcing",
                ),
                needs=("simulate", "train"),
                outputs=("metrics.json", "forecast.nc"),
            ),
            Stage(
                "report",
                _report,
                sections=("experiment.name",),
                needs=("simulate", "evaluate"),
                outputs=("report",),
            ),
        ),
    )
)
