"""Twin data-assimilation experiment on Lorenz systems: simulate -> observe -> train -> evaluate -> report.

The truth is simulated (or read from any DA tool's twin-experiment file, ``data.path``), observed
sparsely with noise, and each method reconstructs the whole state trajectory from the observations
alone; scores are computed against the truth, DAPPER-style (RMSE mean and standard deviation over
trajectories, at analysis times and over whole windows, after ``evaluate.burn_in`` steps).

Methods: ``linear`` and ``climatology`` (the floor every method must beat), ``threedvar`` (cycled
3D-Var with the true model and a static background covariance: the climatological covariance
scaled by a factor tuned over ``evaluate.threedvar.scale``), ``enkf`` (ETKF with the
true model; its multiplicative inflation is tuned over ``evaluate.enkf.inflation``), ``enks``
(the ensemble smoother of the same run, lag ``evaluate.enkf.lag``; 0 is the filter, DAPPER's
convention), ``fourdvar`` (weak-constraint 4D-Var by autograd with the true model),
``fourdvarnet`` (a learned prior and solver,
:class:`geodl.models.fourdvarnet_state.StateFourDVarNet`, trained in the ``train`` stage on windows
of separately simulated trajectories; its solver starts from the time interpolation of the
observations or, with ``fourdvarnet.init: filter``, from cycled 3D-Var run with the learned prior
as the model: no true model either way) and ``fourdvar_learned`` (the same weak-constraint 4D-Var,
with the dynamics learned as the 4DVarNet prior instead of the true model).

An external twin file is a NetCDF with ``truth(time, component)`` and ``obs(time, component)``
(NaN where unobserved; an optional leading ``trajectory`` dim) and a ``dt`` attribute; the true
model of ``enkf``/``fourdvar`` and the training data of ``fourdvarnet`` come from the ``simulate``
section (system, forcing), so it must describe the same system.

Python use::

    from geodl.pipeline import run_experiment
    from geodl.tasks import load_config

    cfg, exp = load_config("configs/l63_assimilation_quick.yaml", ["data.path=twin.nc"])
    result = run_experiment(cfg, exp, "runs/my_twin")  # metrics in runs/my_twin/metrics.json
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr
from pydantic import Field, PositiveFloat

from geodl.config import Section
from geodl.errors import ConfigError, DataError
from geodl.methods.assimilation import DEFAULT_LAG, ensemble, linear
from geodl.pipeline import Experiment, Stage, StageContext
from geodl.tasks.registry import ExperimentSection, register
from geodl.training import TrainSection, torch_threads

__all__ = ["AssimilationConfig", "METHODS", "apply_fourdvarnet", "read_twin_file", "twin_scores"]


class DataSection(Section):
    """An external twin experiment to score instead of the simulated one."""

    path: str | None = Field(
        None, description="NetCDF with truth(time, component), obs(time, component), attr dt"
    )


class SimulateSection(Section):
    system: Literal["lorenz63", "lorenz96"] = "lorenz63"
    n_trajectories: int = Field(1, gt=0)
    n_steps: int = Field(2000, gt=0)
    dt: float = Field(0.01, gt=0)
    spinup_steps: int = Field(1000, ge=0)
    n_components: int = Field(40, ge=4, description="lorenz96 only")
    forcing: float = 8.0
    noise_std: float = Field(0.0, ge=0)
    seed: int = 0


class ObserveSection(Section):
    every: int = Field(8, gt=0)
    components: list[int] | None = None
    noise_std: float = Field(1.4142135623730951, ge=0)
    seed: int = 1


MethodName = Literal[
    "linear",
    "climatology",
    "threedvar",
    "enkf",
    "enks",
    "fourdvar",
    "fourdvarnet",
    "fourdvar_learned",
]
LEARNED = ("fourdvarnet", "fourdvar_learned")


class EnKFSection(Section):
    """ETKF/ETKS options; the inflation with the lowest analysis RMSE is kept (DAPPER-style tuning)."""

    n_members: int = Field(10, ge=2)
    inflation: list[float] = Field(default_factory=lambda: [1.0, 1.02, 1.05, 1.1], min_length=1)
    lag: int = Field(
        DEFAULT_LAG,
        ge=0,
        description="smoother lag in steps (method enks): 0 is the filter, a lag covering the "
        "record the full smoother",
    )
    init_std: float = Field(2.0, gt=0)
    seed: int = 0


class ThreeDVarSection(Section):
    """Cycled 3D-Var; ``B`` = scale x the climatological covariance of a separate simulation, the
    scale with the lowest analysis RMSE is kept (DAPPER-style tuning, like the EnKF inflation)."""

    scale: list[PositiveFloat] = Field(
        default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.2], min_length=1
    )
    clim_steps: int = Field(20000, ge=100, description="steps simulated for the climatology")
    clim_seed: int = Field(12345, description="seed of that simulation (apart from the truth)")


class FourDVarSection(Section):
    window: int = Field(200, ge=2)
    model_std: float = Field(0.01, gt=0, description="model error std per step")
    n_iter: int = Field(50, gt=0)
    n_outer: int = Field(3, gt=0)


class FourDVarNetSection(Section):
    """Learned DA model and its training windows (simulated apart from the evaluated truth)."""

    window: int = Field(200, ge=4)
    n_iter: int = Field(10, gt=0)
    grad_iters: int | None = Field(
        None, gt=0, description="training backpropagates through the last solver iterations only"
    )
    grad_norm: Literal["each", "first"] = Field(
        "each", description="gradient normalised by its RMS at every iteration or the first"
    )
    lstm_hidden: int = Field(32, gt=0)
    kernel: int = Field(5, gt=0)
    n_bilinear: int = Field(6, gt=0)
    prior: Literal["dense", "local"] = Field(
        "dense", description="local: one bilinear stencil for every component (Lorenz-96)"
    )
    stencil: int = Field(5, gt=0, description="stencil width of the local prior (odd)")
    freeze_prior: bool = Field(False, description="keep the pre-fitted prior fixed in training")
    init: Literal["interp", "filter"] = Field(
        "interp",
        description="solver first guess: time interpolation of the obs, or cycled 3D-Var with "
        "the learned prior as the model",
    )
    init_background_scale: float = Field(
        0.1, gt=0, description="init filter: B = this x the climatological covariance"
    )
    grad_step: float = Field(0.2, ge=0)
    prior_weight: float = Field(100.0, gt=0, description="initial weight (learned)")
    prior_pretrain_iter: int = Field(200, ge=0, description="L-BFGS iterations on the prior")
    prior_loss_weight: float = Field(1.0, ge=0)
    n_train_trajectories: int = Field(8, gt=0)
    n_train_steps: int = Field(4000, gt=0)
    n_val_trajectories: int = Field(2, gt=0)
    train_stride: int = Field(17, gt=0, description="odd strides vary the phase of observations")
    seed: int = 100


class EvaluateSection(Section):
    methods: list[MethodName] = Field(
        default_factory=lambda: ["linear", "climatology"], min_length=1
    )
    burn_in: int = Field(0, ge=0, description="first steps left out of every score")
    enkf: EnKFSection = EnKFSection()
    threedvar: ThreeDVarSection = ThreeDVarSection()
    fourdvar: FourDVarSection = FourDVarSection()


class AssimilationConfig(Section):
    experiment: ExperimentSection
    data: DataSection = DataSection()
    simulate: SimulateSection = SimulateSection()
    observe: ObserveSection = ObserveSection()
    fourdvarnet: FourDVarNetSection = FourDVarNetSection()
    train: TrainSection = TrainSection(max_epochs=20, batch_size=32, lr=5e-3, progress_bar=False)
    evaluate: EvaluateSection = EvaluateSection()


# --------------------------------------------------------------------------------------------
# reference methods (numpy)


def _linear(obs: np.ndarray) -> np.ndarray:
    """:func:`geodl.methods.assimilation.linear` (the API's ``linear``) on ``(B, T, D)`` arrays."""
    import torch

    return linear(torch.as_tensor(obs)).numpy()


def _climatology(obs: np.ndarray) -> np.ndarray:
    """Time mean of the observations of each component, broadcast over time."""
    mean = np.nanmean(obs, axis=-2, keepdims=True)
    mean = np.where(np.isfinite(mean), mean, np.nanmean(obs))
    return np.broadcast_to(mean, obs.shape).copy()


METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": _linear,
    "climatology": _climatology,
}


# --------------------------------------------------------------------------------------------
# external twin files


def read_twin_file(path: str | Path) -> tuple[np.ndarray, np.ndarray, float]:
    """Read and check a twin-experiment file: ``(truth, obs, dt)`` with arrays
    ``(trajectory, time, component)``.

    Examples
    --------
    >>> import tempfile, os
    >>> ds = xr.Dataset({"truth": (("time", "component"), np.zeros((5, 3))),
    ...                  "obs": (("time", "component"), np.ones((5, 3)))}, attrs={"dt": 0.01})
    >>> path = os.path.join(tempfile.mkdtemp(), "twin.nc"); ds.to_netcdf(path)
    >>> truth, obs, dt = read_twin_file(path)
    >>> truth.shape, dt
    ((1, 5, 3), 0.01)
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.path: twin file '{path}' not found; give an existing NetCDF file")
    from geodl.data import open_dataset

    with open_dataset(path, dask=False) as ds:  # a one-line DataError if unreadable
        for name in ("truth", "obs"):
            if name not in ds.data_vars:
                raise DataError(
                    f"{path}: no variable '{name}' (found {sorted(map(str, ds.data_vars))}); a twin "
                    "file needs truth(time, component) and obs(time, component)"
                )
        truth, obs = ds["truth"], ds["obs"]
        for var in (truth, obs):
            dims = tuple(map(str, var.dims))
            if dims not in (("time", "component"), ("trajectory", "time", "component")):
                raise DataError(
                    f"{path}: variable '{var.name}' has dims {dims}; expected (time, component) or "
                    "(trajectory, time, component); rename the dims (e.g. ds.rename(t='time'))"
                )
        if truth.dims != obs.dims or truth.shape != obs.shape:
            raise DataError(
                f"{path}: obs {dict(obs.sizes)} is not on the grid of truth {dict(truth.sizes)}; "
                "interpolate or pad obs (NaN where unobserved) onto the time steps of truth"
            )
        if "time" in ds.coords and not np.array_equal(
            truth["time"].values, obs["time"].values
        ):  # pragma: no cover - xarray aligns variables of one dataset on a shared coordinate
            raise DataError(f"{path}: obs and truth have different time coordinates")
        if "dt" not in ds.attrs:
            raise DataError(
                f"{path}: missing global attribute 'dt' (the model time step between rows of "
                "'time'); add it, e.g. ds.attrs['dt'] = 0.01"
            )
        dt = ds.attrs["dt"]
        if not isinstance(dt, int | float | np.number) or not float(dt) > 0:
            raise DataError(f"{path}: attribute dt={dt!r}; expected a positive number")
        if "time" in truth.coords and truth.sizes["time"] > 1:
            steps = np.diff(np.asarray(truth["time"].values, dtype=float))
            if not np.allclose(steps, float(dt), rtol=1e-6, atol=0):
                raise DataError(
                    f"{path}: time steps {steps.min():g}..{steps.max():g} differ from dt={dt}; "
                    "the truth must be on a regular grid of step dt"
                )
        t = truth.values.astype(np.float64)
        o = obs.values.astype(np.float64)
    if t.ndim == 2:
        t, o = t[None], o[None]
    if not np.isfinite(t).all():
        raise DataError(f"{path}: truth holds NaN or infinite values; the truth must be complete")
    if not np.isfinite(o).any():
        raise DataError(f"{path}: obs is all NaN; nothing to assimilate")
    return t, o, float(dt)


def _external(cfg: Any) -> list[Path]:
    return [Path(cfg.data.path)] if cfg.data.path else []


# --------------------------------------------------------------------------------------------
# stages


def _simulate(ctx: StageContext) -> None:
    from geodl.sim import simulate_lorenz

    s = ctx.cfg.simulate
    if ctx.cfg.data.path:
        traj, _, dt = read_twin_file(ctx.cfg.data.path)
        source = f"external twin file {ctx.cfg.data.path}"
    else:
        traj = simulate_lorenz(
            s.system,
            n_trajectories=s.n_trajectories,
            n_steps=s.n_steps,
            dt=s.dt,
            spinup_steps=s.spinup_steps,
            n_components=s.n_components,
            forcing=s.forcing,
            noise_std=s.noise_std,
            seed=s.seed,
        ).numpy()
        dt = s.dt
        source = f"geodl.sim {s.system}: {s.model_dump_json()}"
    ds = xr.Dataset(
        {
            "truth": (
                ("trajectory", "time", "component"),
                traj,
                {"long_name": f"{s.system} true state", "units": "1"},
            )
        },
        coords={
            "time": ("time", np.arange(traj.shape[1]) * dt, {"units": "model time units"}),
            "component": np.arange(traj.shape[2]),
        },
        attrs={
            "title": f"{s.system} twin experiment truth",
            "source": source,
            "dt": dt,
            "Conventions": "CF-1.8",
        },
    )
    ds.to_netcdf(ctx.output("truth.nc"))


def _observe(ctx: StageContext) -> None:
    from geodl.obs import observe_state

    o = ctx.cfg.observe
    with xr.open_dataset(ctx.input("truth.nc")) as truth_ds:
        truth = truth_ds["truth"].load()
    if ctx.cfg.data.path:
        obs = read_twin_file(ctx.cfg.data.path)[1]
        source = f"external twin file {ctx.cfg.data.path}"
    else:
        obs = observe_state(
            truth.values, every=o.every, components=o.components, noise_std=o.noise_std, seed=o.seed
        )
        source = f"geodl.obs.observe_state: {o.model_dump_json()}"
    ds = xr.Dataset(
        {"obs": (truth.dims, obs, {"long_name": "observations (NaN where unobserved)"})},
        coords=truth.coords,
        attrs={"source": source, "dt": truth_ds.dt},
    )
    ds.to_netcdf(ctx.output("obs.nc"))


def _obs_std(cfg: Any) -> float:
    std = cfg.observe.noise_std
    if not std > 0:
        raise ConfigError(
            "observe.noise_std is 0; enkf, enks, fourdvar and fourdvarnet need the observation "
            "error standard deviation > 0 (set it to the noise of the twin file's obs)"
        )
    return float(std)


def _train(ctx: StageContext) -> None:
    """Train the learned DA model on windows of trajectories simulated apart from the truth."""
    import torch

    from geodl.obs import observe_state
    from geodl.sim import simulate_lorenz
    from geodl.training import TaskModule, fit, load_model_weights

    cfg = ctx.cfg
    out = ctx.output("model")
    out.mkdir(parents=True, exist_ok=True)
    if not set(LEARNED) & set(cfg.evaluate.methods):
        (out / "README.txt").write_text("no learned method in evaluate.methods: nothing trained\n")
        return
    n = cfg.fourdvarnet
    s, o = cfg.simulate, cfg.observe
    with xr.open_dataset(ctx.input("truth.nc")) as t:
        dt, dim, n_time = float(t.attrs["dt"]), int(t.sizes["component"]), int(t.sizes["time"])
    if n.window > n_time:  # checked before training: the window could never be applied
        raise ConfigError(
            f"fourdvarnet.window={n.window} is longer than the data ({n_time} time steps); lower "
            "the window"
        )
    if s.system == "lorenz63" and dim != 3:
        raise DataError(f"truth has {dim} components but simulate.system is lorenz63 (3)")
    if n.prior == "local" and (n.stencil % 2 == 0 or n.stencil > dim):
        raise ConfigError(
            f"fourdvarnet.stencil={n.stencil}: the local prior needs an odd stencil no wider than "
            f"the state ({dim} components)"
        )

    def make(n_traj: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        traj = simulate_lorenz(
            s.system,
            n_trajectories=n_traj,
            n_steps=n.n_train_steps,
            dt=dt,
            spinup_steps=s.spinup_steps,
            n_components=dim,
            forcing=s.forcing,
            seed=seed,
        ).numpy()
        obs = observe_state(
            traj, every=o.every, components=o.components, noise_std=_obs_std(cfg), seed=seed + 1
        )
        return traj, obs

    if n.window > n.n_train_steps + 1:
        raise ConfigError(
            f"fourdvarnet.window={n.window} is longer than the training trajectories "
            f"(fourdvarnet.n_train_steps + 1 = {n.n_train_steps + 1}); lower the window or "
            "raise n_train_steps"
        )
    clim = simulate_lorenz(
        s.system, n_trajectories=4, n_steps=5000, dt=dt, n_components=dim, forcing=s.forcing
    )
    norm = {"mean": clim.mean((0, 1)).tolist(), "std": clim.std((0, 1)).tolist()}
    if n.prior == "local":  # one scale for all components keeps the dynamics translation invariant
        norm = {"mean": [float(clim.mean())] * dim, "std": [float(clim.std())] * dim}
    cov = np.cov(clim.reshape(-1, dim).numpy().T).reshape(dim, dim)
    train_traj, train_obs = make(n.n_train_trajectories, n.seed)
    val_traj, val_obs = make(n.n_val_trajectories, n.seed + 1000)
    torch.manual_seed(cfg.train.seed)
    model = _build_net(n, dim)
    if n.prior_pretrain_iter > 0:
        wins = _windows(train_traj, train_obs, n.window, n.train_stride, norm).tensors[3]
        _pretrain_prior(model, wins, n.prior_pretrain_iter)
    if n.freeze_prior:
        model.prior.requires_grad_(False)
    background = {"cov": cov.tolist(), "scale": n.init_background_scale}

    def first_guess(obs: np.ndarray) -> np.ndarray | None:
        if n.init == "interp":
            return None
        return _learned_3dvar(model.prior, obs, norm, background, _obs_std(cfg))

    train = _windows(train_traj, train_obs, n.window, n.train_stride, norm, first_guess(train_obs))
    val = _windows(val_traj, val_obs, n.window, n.train_stride, norm, first_guess(val_obs))
    weight = 0.0 if n.freeze_prior else n.prior_loss_weight

    def loss_fn(net: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        y, m, init, x = batch
        est = net(y, m, init)
        rec = (est - x).pow(2).mean()
        prior = net.prior_loss(x)
        return {"loss": rec + weight * prior, "rec": rec, "prior": prior}

    spec = cfg.train
    module = TaskModule(model, loss_fn, spec, metadata={"config": cfg.model_dump(mode="json")})
    run_dir = ctx.run_dir
    with torch_threads(1):
        result = fit(
            module,
            train,
            val,
            spec,
            ckpt_dir=run_dir / "checkpoints" / "fourdvarnet",
            log_dir=run_dir / "logs" / "fourdvarnet",
            key=json.dumps(
                {k: cfg.model_dump(mode="json")[k] for k in ("simulate", "observe", "fourdvarnet")}
                | {"train": spec.model_dump(mode="json")},
                sort_keys=True,
            ),
        )
    if result.best_path is not None:  # the weights of the best validation epoch
        load_model_weights(
            module.model, torch.load(result.best_path, map_location="cpu", weights_only=True)
        )
    torch.save(
        {
            "state_dict": module.model.state_dict(),
            "geodl": {
                "norm": norm,
                "background": background,
                "obs_std": _obs_std(cfg),
                "dt": dt,
                "dim": dim,
                "epochs": result.epochs,
                "fourdvarnet": n.model_dump(mode="json"),
            },
        },
        out / "fourdvarnet.pt",
    )


def _build_net(n: FourDVarNetSection, dim: int) -> Any:
    """The learned DA model; its prior steps in time units of one data step (dt = 1), where the
    normalised Lorenz increments are small and a fresh network is of the right size."""
    from geodl.models.fourdvarnet_state import StateFourDVarNet

    return StateFourDVarNet(
        dim,
        dt=1.0,
        n_iter=n.n_iter,
        n_bilinear=n.n_bilinear,
        lstm_hidden=n.lstm_hidden,
        kernel=n.kernel,
        grad_step=n.grad_step,
        prior_weight=n.prior_weight,
        prior=n.prior,
        stencil=n.stencil,
        grad_iters=n.grad_iters,
        grad_norm=n.grad_norm,
    )


def _pretrain_prior(model: Any, truth: Any, n_iter: int) -> None:
    """Fit the prior's one-step map to true windows ``(N, T, D)`` with float64 L-BFGS first: the
    solver can only learn to descend a cost whose prior already means something (measured on L63:
    test RMSE 0.95 after one epoch with a pre-fitted prior, 1.28 without)."""
    import torch

    prior = model.prior.double()
    x = truth[:64].double()
    opt = torch.optim.LBFGS(
        prior.parameters(), lr=1.0, max_iter=n_iter, history_size=50, line_search_fn="strong_wolfe"
    )

    def closure() -> Any:
        opt.zero_grad()
        loss = model.prior_loss(x)
        loss.backward()
        return loss

    with torch.no_grad():
        for p in prior.parameters():
            p.mul_(0.1)  # start small: increments per step are small in normalised units
    opt.step(closure)
    prior.float()


def _learned_3dvar(
    prior: Any,
    obs: np.ndarray,
    norm: dict[str, list[float]],
    background: dict[str, Any],
    obs_std: float,
) -> np.ndarray:
    """First guess ``(B, T, D)`` (physical units) of ``fourdvarnet.init: filter``: cycled 3D-Var
    with the learned prior as the model and B = scale x the climatological covariance. Why: a
    trajectory that follows the (learned) dynamics between observations leaves the solver only
    the jumps at analysis times to smooth, where the time interpolation is off the dynamics
    everywhere and a few solver iterations cannot propagate the information across the gaps."""
    import torch

    from geodl.baselines import cycled_3dvar

    m = torch.as_tensor(norm["mean"], dtype=torch.float64)
    s = torch.as_tensor(norm["std"], dtype=torch.float64)
    prior = copy.deepcopy(prior).double()
    cov = torch.as_tensor(background["cov"], dtype=torch.float64) * background["scale"]
    with torch.no_grad():
        est = cycled_3dvar(
            lambda x: prior((x - m) / s) * s + m,
            torch.as_tensor(obs, dtype=torch.float64),
            obs_std=obs_std,
            background_cov=cov,
        )
    return est.numpy()


def _windows(
    traj: np.ndarray,
    obs: np.ndarray,
    window: int,
    stride: int,
    norm: dict[str, list[float]],
    first_guess: np.ndarray | None = None,
) -> Any:
    """Normalised training windows ``(y, mask, first guess, truth)``, each ``(N, window, D)``; the
    first guess is cut from ``first_guess`` (physical units) or, if None, the time interpolation
    of the observations."""
    import torch
    from torch.utils.data import TensorDataset

    from geodl.baselines import interpolate_obs

    mean, std = np.asarray(norm["mean"]), np.asarray(norm["std"])
    starts = range(0, traj.shape[1] - window + 1, stride)
    x = np.stack([traj[:, i : i + window] for i in starts], 1).reshape(-1, window, traj.shape[2])
    y = np.stack([obs[:, i : i + window] for i in starts], 1).reshape(-1, window, traj.shape[2])
    x = torch.as_tensor((x - mean) / std, dtype=torch.float32)
    y = torch.as_tensor((y - mean) / std, dtype=torch.float32)
    mask = torch.isfinite(y).float()
    if first_guess is None:
        init = interpolate_obs(y)
    else:
        g = np.stack([first_guess[:, i : i + window] for i in starts], 1).reshape(x.shape)
        init = torch.as_tensor((g - mean) / std, dtype=torch.float32)
    return TensorDataset(torch.nan_to_num(y), mask, init, x)


def _load_net(model_file: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    """The trained learned-DA model (eval mode) and its normalisation ``(mean, std)``."""
    import torch

    ckpt = torch.load(model_file, map_location="cpu", weights_only=True)
    meta = ckpt["geodl"]
    model = _build_net(FourDVarNetSection(**meta["fourdvarnet"]), meta["dim"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, np.asarray(meta["norm"]["mean"]), np.asarray(meta["norm"]["std"])


def _learned_step(model_file: Path) -> Callable[[Any], Any]:
    """One step of the learned prior in physical units, float64: the model of ``fourdvar_learned``
    (weak-constraint 4D-Var solved by L-BFGS with the dynamics learned by the ``train`` stage)."""
    import torch

    model, mean, std = _load_net(model_file)
    prior = model.prior.double()
    m, s = torch.as_tensor(mean), torch.as_tensor(std)
    return lambda x: prior((x - m) / s) * s + m


def apply_fourdvarnet(model_file: Path, obs: np.ndarray, window: int) -> np.ndarray:
    """Analysis of ``obs`` ``(B, T, D)`` by overlapping windows (stride window/2), blended with
    triangular weights so that window edges, which see observations on one side only, count less."""
    import torch

    from geodl.baselines import interpolate_obs

    model, mean, std = _load_net(model_file)
    meta = torch.load(model_file, map_location="cpu", weights_only=True)["geodl"]
    b, t, d = obs.shape
    y = torch.as_tensor((obs - mean) / std, dtype=torch.float32)
    guess = None
    if meta["fourdvarnet"].get("init", "interp") == "filter":
        norm = {"mean": mean.tolist(), "std": std.tolist()}
        phys = _learned_3dvar(model.prior, obs, norm, meta["background"], meta["obs_std"])
        guess = torch.as_tensor((phys - mean) / std, dtype=torch.float32)
    stride = max(1, window // 2)
    starts = list(range(0, t - window + 1, stride))
    if starts[-1] != t - window:
        starts.append(t - window)
    wins = torch.stack([y[:, i : i + window] for i in starts], 1).reshape(-1, window, d)
    mask = torch.isfinite(wins).float()
    if guess is None:
        init = interpolate_obs(wins)
    else:
        init = torch.stack([guess[:, i : i + window] for i in starts], 1).reshape(-1, window, d)
    with torch.no_grad():
        est = torch.cat(
            [
                model(torch.nan_to_num(wins[i : i + 256]), mask[i : i + 256], init[i : i + 256])
                for i in range(0, len(wins), 256)
            ]
        ).reshape(b, len(starts), window, d)
    ramp = torch.minimum(torch.arange(1, window + 1), torch.arange(window, 0, -1)).float()
    acc = torch.zeros(b, t, d)
    wsum = torch.zeros(t)
    for k, i in enumerate(starts):
        acc[:, i : i + window] += ramp[None, :, None] * est[:, k]
        wsum[i : i + window] += ramp
    return (acc / wsum[None, :, None]).double().numpy() * std + mean


def _true_step(cfg: Any, dt: float) -> Callable[[Any], Any]:
    from geodl.sim import lorenz_vector_field, rk4_step

    f = lorenz_vector_field(cfg.simulate.system, forcing=cfg.simulate.forcing)
    return lambda x: rk4_step(f, x, dt)


def twin_scores(
    est: np.ndarray, truth: np.ndarray, times: np.ndarray, burn_in: int
) -> dict[str, float]:
    """RMSE over components and times per trajectory, then mean and std over trajectories."""
    keep = np.arange(truth.shape[1]) >= burn_in
    err2 = (est - truth) ** 2
    whole = np.sqrt(err2[:, keep].mean(axis=(1, 2)))
    at = np.sqrt(err2[:, keep & times].mean(axis=(1, 2)))
    return {
        "rmse": float(np.sqrt(err2[:, keep].mean())),
        "rmse_std": float(whole.std()),
        "rmse_analysis": float(np.sqrt(err2[:, keep & times].mean())),
        "rmse_analysis_std": float(at.std()),
        # DAPPER's convention: the time mean of the instantaneous RMSE over components (smaller
        # than the root of the overall mean square when errors vary in time).
        "rmse_analysis_dapper": float(np.sqrt(err2[:, keep & times].mean(axis=2)).mean()),
    }


def _evaluate(ctx: StageContext) -> None:
    import torch

    cfg = ctx.cfg
    ev = cfg.evaluate
    with xr.open_dataset(ctx.input("truth.nc")) as t, xr.open_dataset(ctx.input("obs.nc")) as o:
        truth, obs, dt = t["truth"].values, o["obs"].values, float(t.attrs["dt"])
    n_time = truth.shape[1]
    if ev.burn_in >= n_time:
        raise ConfigError(
            f"evaluate.burn_in={ev.burn_in} leaves nothing to score in {n_time} time steps; lower it"
        )
    if {"fourdvar", "fourdvar_learned"} & set(ev.methods) and ev.fourdvar.window > n_time:
        raise ConfigError(
            f"evaluate.fourdvar.window={ev.fourdvar.window} is longer than the data ({n_time} "
            "time steps); lower the window"
        )
    if "fourdvarnet" in ev.methods and cfg.fourdvarnet.window > n_time:
        raise ConfigError(
            f"fourdvarnet.window={cfg.fourdvarnet.window} is longer than the data ({n_time} time "
            "steps); lower the window"
        )
    analysis_times = np.isfinite(obs).any(axis=(0, 2))
    if not analysis_times[ev.burn_in :].any():
        raise DataError("no observation after evaluate.burn_in: nothing to score at analysis times")
    results: dict[str, dict[str, Any]] = {}
    estimates: dict[str, np.ndarray] = {}
    tuning: dict[str, float] = {}
    obs_t = torch.as_tensor(obs, dtype=torch.float64)
    for name in ev.methods:
        t0 = time.perf_counter()
        extra: dict[str, Any] = {}
        if name in METHODS:
            est = METHODS[name](obs)
        elif name in ("enkf", "enks"):
            est, extra, tried = _run_enkf(cfg, obs_t, truth, analysis_times, dt, name)
            tuning.update(tried)
        elif name == "threedvar":
            est, extra, tried = _run_3dvar(cfg, obs_t, truth, analysis_times, dt)
            tuning.update(tried)
        elif name in ("fourdvar", "fourdvar_learned"):
            from geodl.baselines import weak_4dvar

            fv = ev.fourdvar
            step = (
                _true_step(cfg, dt)
                if name == "fourdvar"
                else _learned_step(ctx.input("model/fourdvarnet.pt"))
            )
            with torch_threads(1):
                est = weak_4dvar(
                    step,
                    obs_t,
                    obs_std=_obs_std(cfg),
                    model_std=fv.model_std,
                    window=fv.window,
                    n_iter=fv.n_iter,
                    n_outer=fv.n_outer,
                ).numpy()
        else:  # fourdvarnet
            with torch_threads(1):
                est = apply_fourdvarnet(
                    ctx.input("model/fourdvarnet.pt"), obs, cfg.fourdvarnet.window
                )
        if not np.isfinite(est).all():
            raise RuntimeError(f"method {name} produced non-finite values")  # a bug, not input
        estimates[name] = est
        results[name] = {
            **twin_scores(est, truth, analysis_times, ev.burn_in),
            **extra,
            "time_s": round(time.perf_counter() - t0, 3),
        }
        ctx.log.info("method %s: %s", name, results[name])
    # The observations themselves, scored where they exist (analysis times only).
    obs_scores = twin_scores(
        np.where(np.isfinite(obs), obs, truth), truth, analysis_times, ev.burn_in
    )
    results["observations"] = {k: v for k, v in obs_scores.items() if "analysis" in k}
    metrics = {
        "task": "assimilation",
        "methods": results,
        "units": {"rmse": "1", "rmse_analysis": "1", "time_s": "s"},
        "n_trajectories": int(truth.shape[0]),
        "burn_in": ev.burn_in,
        "enkf_tuning": tuning,
    }
    ctx.output("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    ds = xr.Dataset(
        {n: (("trajectory", "time", "component"), e) for n, e in estimates.items()},
        attrs={"title": "state estimates of each method"},
    )
    ds.to_netcdf(ctx.output("analysis.nc"))


def _run_enkf(
    cfg: Any, obs_t: Any, truth: np.ndarray, times: np.ndarray, dt: float, name: str
) -> tuple[np.ndarray, dict[str, Any], dict[str, float]]:
    """Run ``enkf``/``enks`` (:func:`geodl.methods.assimilation.ensemble`) for each inflation;
    keep the one with the lowest analysis RMSE of its estimate."""
    e = cfg.evaluate.enkf
    burn = cfg.evaluate.burn_in
    best: tuple[float, float, Any] | None = None
    tuning: dict[str, float] = {}
    with torch_threads(1):
        for infl in e.inflation:
            est = ensemble(
                name,
                _true_step(cfg, dt),
                obs_t,
                obs_std=_obs_std(cfg),
                n_members=e.n_members,
                inflation=infl,
                lag=e.lag,
                init_std=e.init_std,
                seed=e.seed,
            )[0].numpy()
            score = twin_scores(est, truth, times, burn)["rmse_analysis"]
            if not math.isfinite(score):
                score = math.inf
            tuning[f"{name}@{infl:g}"] = score
            if best is None or score < best[0]:
                best = (score, infl, est)
    assert best is not None  # inflation has min_length=1 in the schema
    return best[2], {"inflation": best[1], "n_members": e.n_members}, tuning


def _run_3dvar(
    cfg: Any, obs_t: Any, truth: np.ndarray, times: np.ndarray, dt: float
) -> tuple[np.ndarray, dict[str, Any], dict[str, float]]:
    """Run cycled 3D-Var for each background scale; keep the one with the lowest analysis RMSE."""
    import torch

    from geodl.baselines import cycled_3dvar
    from geodl.sim import simulate_lorenz

    v, s = cfg.evaluate.threedvar, cfg.simulate
    dim = truth.shape[2]
    clim = simulate_lorenz(
        s.system,
        n_steps=v.clim_steps,
        dt=dt,
        spinup_steps=s.spinup_steps,
        n_components=dim,
        forcing=s.forcing,
        seed=v.clim_seed,
    )[0]  # (T, D)
    cov = torch.cov(clim.T).reshape(dim, dim)
    best: tuple[float, float, Any] | None = None
    tuning: dict[str, float] = {}
    with torch_threads(1):
        for scale in v.scale:
            est = cycled_3dvar(
                _true_step(cfg, dt), obs_t, obs_std=_obs_std(cfg), background_cov=scale * cov
            ).numpy()
            score = twin_scores(est, truth, times, cfg.evaluate.burn_in)["rmse_analysis"]
            if not math.isfinite(score):
                score = math.inf
            tuning[f"threedvar@{scale:g}"] = score
            if best is None or score < best[0]:
                best = (score, scale, est)
    assert best is not None  # scale has min_length=1 in the schema
    return best[2], {"background_scale": best[1]}, tuning


def _report(ctx: StageContext) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geodl.report import plot_learning_curves, write_index

    report_dir = ctx.output("report")
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics = json.loads(ctx.input("metrics.json").read_text())
    figures = ["trajectories.png"]
    with (
        xr.open_dataset(ctx.input("truth.nc")) as t,
        xr.open_dataset(ctx.input("obs.nc")) as o,
        xr.open_dataset(ctx.input("analysis.nc")) as a,
    ):
        time_ = t["time"].values
        n_show = min(len(time_), 500)
        fig, axes = plt.subplots(3, 1, figsize=(9, 6), sharex=True)
        for comp, ax in enumerate(axes):
            if comp >= t.sizes["component"]:
                break
            ax.plot(time_[:n_show], t["truth"][0, :n_show, comp], "k", lw=1.2, label="truth")
            ax.plot(time_[:n_show], o["obs"][0, :n_show, comp], "r.", ms=4, label="obs")
            for name in a.data_vars:
                ax.plot(time_[:n_show], a[name][0, :n_show, comp], lw=0.8, label=str(name))
            ax.set_ylabel(f"x{comp}")
        axes[0].legend(loc="upper right", fontsize=8, ncol=4)
        axes[-1].set_xlabel("time (model units)")
        fig.tight_layout()
        fig.savefig(report_dir / "trajectories.png", dpi=100)
        plt.close(fig)
    logs = ctx.run_dir / "logs" / "fourdvarnet"
    if logs.exists() and any(logs.rglob("metrics.csv")):
        plot_learning_curves(logs, report_dir / "learning_curves.png", "fourdvarnet training")
        figures.append("learning_curves.png")
    (report_dir / "table.md").write_text(dapper_table(metrics))
    write_index(report_dir, ctx.cfg.experiment.name, metrics, figures)


def dapper_table(metrics: dict[str, Any]) -> str:
    """Markdown table ``method | rmse_a | rmse`` with mean ± std over trajectories.

    Examples
    --------
    >>> m = {"methods": {"enkf": {"rmse": 0.7, "rmse_std": 0.1, "rmse_analysis": 0.6,
    ...                           "rmse_analysis_std": 0.05}}}
    >>> print(dapper_table(m).splitlines()[2])
    | enkf | 0.600 ± 0.050 | - | 0.700 ± 0.100 |
    """
    lines = [
        "| method | RMSE at analysis times | time-mean RMSE (DAPPER) | RMSE over the window |",
        "|---|---|---|---|",
    ]

    def cell(m: dict[str, float], key: str) -> str:
        return f"{m[key]:.3f} ± {m[key + '_std']:.3f}" if key in m else "-"

    for name, m in metrics["methods"].items():
        dapper = f"{m['rmse_analysis_dapper']:.3f}" if "rmse_analysis_dapper" in m else "-"
        lines.append(f"| {name} | {cell(m, 'rmse_analysis')} | {dapper} | {cell(m, 'rmse')} |")
    return "\n".join(lines) + "\n"


EXPERIMENT = register(
    Experiment(
        task="assimilation",
        schema=AssimilationConfig,
        stages=(
            Stage(
                "simulate",
                _simulate,
                sections=("simulate", "data"),
                outputs=("truth.nc",),
                external_inputs=_external,
                version=2,
            ),
            Stage(
                "observe",
                _observe,
                sections=("observe", "data"),
                needs=("simulate",),
                outputs=("obs.nc",),
                external_inputs=_external,
                version=2,
            ),
            # Each stage is keyed on the settings it reads, no more: tuning the EnKF does not
            # retrain 4DVarNet. (The checkpoint's config copy and fit's resume key are records,
            # not inputs.)
            Stage(
                "train",
                _train,
                sections=(
                    "fourdvarnet",
                    "train",
                    "evaluate.methods",  # whether a learned method is listed
                    "simulate.system",
                    "simulate.spinup_steps",
                    "simulate.forcing",
                    "observe.every",
                    "observe.components",
                    "observe.noise_std",
                ),
                needs=("simulate",),
                outputs=("model",),
            ),
            Stage(
                "evaluate",
                _evaluate,
                sections=(
                    "evaluate",
                    "fourdvarnet.window",
                    "simulate.system",
                    "simulate.spinup_steps",
                    "simulate.forcing",
                    "observe.noise_std",
                ),
                needs=("simulate", "observe", "train"),
                outputs=("metrics.json", "analysis.nc"),
                version=3,  # 3: linear's never-observed components get their trajectory's mean
            ),
            Stage(
                "report",
                _report,
                sections=("experiment.name",),
                needs=("simulate", "observe", "train", "evaluate"),
                outputs=("report",),
            ),
        ),
    )
)
