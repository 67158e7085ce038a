"""Assimilation methods: one registry, ``name -> (settings section, run)``, and their numerics.

The assimilation task (:mod:`geodl.tasks.assimilation`) is stage wiring over this module, and the
Python API (:mod:`geodl.assimilation`) calls the same functions, so that a method name and its
options give the same estimate in either.

Every method of a twin experiment is a :class:`TwinMethod` of :data:`METHODS` (DAPPER's shape: its
parameters plus one verb): ``run(section, twin) -> (estimate, summary, tuning scores)`` on a
:class:`TwinExperiment` (truth, observations, true model), and :func:`assess` runs and scores a
list of them. The methods:

- ``linear`` and ``climatology`` (:data:`OBS_ONLY`: the observations alone; the floor every method
  must beat);
- ``threedvar``: cycled 3D-Var with the true model and a static background covariance, the
  climatological covariance (:func:`climatology_cov`) scaled by a factor tuned over
  :attr:`ThreeDVarSection.scale` (:func:`tune_3dvar`);
- ``enkf``: the ETKF with the true model (random mean-preserving rotations, Sakov & Oke 2008),
  its multiplicative inflation tuned over :attr:`EnKFSection.inflation` (:func:`tune_ensemble`
  over :func:`ensemble`); ``enkf_n``: the EnKF-N (Bocquet 2011), whose adaptive inflation needs
  no tuning; ``enks``: the ensemble smoother of the same run as ``enkf``, lag
  :attr:`EnKFSection.lag`; ``ienks``: the iterative ensemble Kalman smoother
  (:func:`geodl.baselines.ienks`, Bocquet & Sakov 2014), filter and smoother estimates of one
  run, its inflation tuned by ``rmse_s`` (:class:`IEnKSSection`);
- ``fourdvar``: weak-constraint 4D-Var by autograd with the true model (:class:`FourDVarSection`),
  over independent windows or cycled (overlapping windows, each with a background term from the
  previous one: a smoother, and a filter at window ends);
- ``fourdvarnet``: a learned prior and solver,
  :class:`geodl.models.fourdvarnet_state.StateFourDVarNet`, trained by :func:`train_fourdvarnet`
  on windows of separately simulated trajectories (the one function that writes its model file;
  :func:`apply_fourdvarnet`, :func:`learned_step` and :func:`fourdvarnet_info` read it). Its
  solver starts from the time interpolation of the observations or, with ``init: filter``, from
  cycled 3D-Var run with the learned prior as the model: no true model either way;
- ``fourdvar_learned``, ``enkf_learned`` and ``ienks_learned``: the same 4D-Var, ETKF (a learned
  filter: past observations only) and iEnKS (a learned smoother), with the dynamics learned as
  the 4DVarNet prior, from separately simulated trajectories, in place of the true model (the
  surrogate-model approach of Brajard et al. 2020).

Twin experiments: :func:`read_twin_file`, :func:`truth_dataset`, :func:`obs_dataset`,
:func:`analysis_dataset` and the DAPPER-style scores :func:`twin_scores`.

How to add a method: write ``run(section, twin)`` and, if it has settings, a :class:`Section`;
add a :class:`TwinMethod` to :data:`METHODS` (:data:`MethodName`, which the task's schema checks
``evaluate.methods`` against, is made from it). The task passes each method the section of its
``section`` type in the config, so a new type of section also needs a field in the task's schema.

Conventions (DAPPER's):

- ``enks`` with ``lag=0`` is the filter (its estimate is the ``enkf`` filter mean); with a lag of
  ``L > 0`` steps each analysis also updates the ``L`` previous steps, and a lag covering the
  record is the full (fixed-interval) smoother. The default lag, :data:`DEFAULT_LAG`, is the one
  of the task's ``evaluate.enkf.lag``.
- ``linear`` interpolates each component's observations in time, holds the first and last
  observed values constant before and after them, and gives a component never observed in a
  trajectory the mean of all that trajectory's observations. Why per trajectory: an estimate
  depends on its own trajectory's observations only, so assimilating a batch gives the same as
  assimilating each trajectory alone.
- Scores: :func:`~geodl.metrics.dapper_scores`, ``rmse_a`` for a filter analysis (past
  observations only) and ``rmse_s`` for a smoother estimate, each the time mean over analysis
  times of the instantaneous RMSE (the literature's figures); a method's run returns its
  :data:`Estimates` by kind, so that filters are compared with filters and smoothers with
  smoothers. The ETKS (``enks``) gives both: its filter is the ETKF of the same run.
- Tuned parameters (EnKF inflation, 3D-Var background scale) are chosen by the reported score
  (``rmse_s`` for a smoother, else ``rmse_a``) on :attr:`TwinExperiment.tuning`, a twin of its
  own truth observed the same way (:func:`tuning_twin`), not on the scored truth; a non-finite
  score counts as infinite.
- No simulated set shares a seed with the scored truth (:func:`check_setup`): the learned
  method's training, validation and climatology sets (:func:`training_sets`), 3D-Var's
  climatology and the tuning twin.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import xarray as xr
from pydantic import Field, PositiveFloat, model_validator
from torch import Tensor

from geodl.config import Section
from geodl.data.trajectories import trajectory_dataset
from geodl.errors import ConfigError, DataError, UserInputError
from geodl.integrate import in_units, trajectory_windows
from geodl.metrics import dapper_scores, twin_scores

if TYPE_CHECKING:
    from torch.utils.data import TensorDataset

    from geodl.training import TrainSection

__all__ = [
    "DEFAULT_LAG",
    "ENSEMBLE_METHODS",
    "METHODS",
    "OBS_ONLY",
    "EnKFSection",
    "EvaluateSection",
    "FourDVarNetSection",
    "FourDVarSection",
    "IEnKSSection",
    "MethodName",
    "ThreeDVarSection",
    "TwinExperiment",
    "Estimates",
    "Tuned",
    "TwinMethod",
    "analysis_dataset",
    "assess",
    "apply_fourdvarnet",
    "climatology",
    "climatology_cov",
    "ensemble",
    "fourdvarnet_info",
    "check_setup",
    "check_twin_config",
    "learned_step",
    "linear",
    "obs_dataset",
    "observed_background_cov",
    "read_twin_file",
    "train_fourdvarnet",
    "training_sets",
    "TRAINING_SEEDS",
    "true_step",
    "truth_dataset",
    "twin_observations",
    "twin_truth",
    "tune_3dvar",
    "tuning_twin",
    "tune_ensemble",
    "tune_ienks",
    "twin_scores",
]

ENSEMBLE_METHODS = ("enkf", "enkf_n", "enks")
DEFAULT_LAG = 100
Step = Callable[[Tensor], Tensor]
#: A method's estimates ``(B, T, D)`` by kind: ``"a"`` the filter analysis (past observations
#: only), ``"s"`` the smoother estimate (observations before and after); DAPPER's ``.a`` / ``.s``.
Estimates = dict[str, np.ndarray]
#: ``(estimates, summary for metrics.json, tuning scores {"name@value": score on the tuning twin})``
Tuned = tuple[Estimates, dict[str, Any], dict[str, float]]


# ----- sections ----------------------------------------------------------------------------
class TwinDataSection(Section):
    """An external twin experiment to score instead of the simulated one (:func:`read_twin_file`)."""

    path: str | None = Field(
        None, description="NetCDF with truth(time, component), obs(time, component), attr dt"
    )


class TwinSimulateSection(Section):
    """The simulated truth of a twin experiment: the options of :func:`twin_truth`."""

    system: Literal["lorenz63", "lorenz96"] = "lorenz63"
    n_trajectories: int = Field(1, gt=0)
    n_steps: int = Field(2000, gt=0)
    dt: float = Field(0.01, gt=0)
    spinup_steps: int = Field(1000, ge=0)
    n_components: int = Field(40, ge=4, description="lorenz96 only")
    forcing: float = 8.0
    noise_std: float = Field(0.0, ge=0)
    seed: int = 0


class TwinObserveSection(Section):
    """How the twin's truth is observed: the options of :func:`twin_observations`."""

    every: int = Field(8, gt=0)
    components: list[int] | None = None
    noise_std: float = Field(1.4142135623730951, ge=0)
    seed: int = 1


class EnKFSection(Section):
    """ETKF/ETKS/EnKF-N options; the inflation with the lowest score on the tuning twin is kept."""

    n_members: int = Field(10, ge=2)
    inflation: list[float] = Field(
        default_factory=lambda: [1.0, 1.01, 1.02, 1.04, 1.07, 1.1, 1.15, 1.2, 1.3],
        min_length=1,
        description="inflations tried (enkf, enks); enkf_n adapts its own and ignores them",
    )
    rotate: bool = Field(True, description="random mean-preserving rotation at each analysis")
    lag: int = Field(
        DEFAULT_LAG,
        ge=0,
        description="smoother lag in steps (method enks): 0 is the filter, a lag covering the "
        "record the full smoother",
    )
    init_std: float = Field(2.0, gt=0)
    seed: int = 0


class IEnKSSection(Section):
    """Iterative ensemble Kalman smoother (Bocquet & Sakov 2014) options; the inflation with the
    lowest ``rmse_s`` on the tuning twin is kept."""

    n_members: int = Field(10, ge=2)
    lag: int = Field(1, ge=1, description="window length in analysis cycles")
    shift: int = Field(1, ge=1, description="cycles the window moves per analysis (<= lag)")
    inflation: list[float] = Field(
        default_factory=lambda: [1.0, 1.01, 1.02, 1.04, 1.07, 1.1], min_length=1
    )
    n_iter: int = Field(10, gt=0, description="Gauss-Newton iterations at most")
    epsilon: float | None = Field(1e-4, gt=0, description="bundle scaling (None: transform)")
    rotate: bool = True
    init_std: float = Field(2.0, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _shift_within_lag(self) -> IEnKSSection:
        if self.shift > self.lag:
            raise ValueError(f"shift={self.shift} exceeds lag={self.lag}; use shift <= lag")
        return self


class ThreeDVarSection(Section):
    """Cycled 3D-Var; ``B`` = scale x the climatological covariance of a separate simulation, the
    scale with the lowest ``rmse_a`` on the tuning twin is kept (like the EnKF inflation)."""

    scale: list[PositiveFloat] = Field(
        default_factory=lambda: [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5], min_length=1
    )
    clim_steps: int = Field(20000, ge=100, description="steps simulated for the climatology")
    clim_seed: int = Field(12345, description="seed of that simulation (apart from the truth)")


class FourDVarSection(Section):
    """Weak-constraint 4D-Var: independent windows, or cycled (``shift``: overlapping windows, each
    with a background term from the previous one, :func:`geodl.baselines.cycled_4dvar`)."""

    window: int = Field(200, ge=2)
    model_std: float = Field(0.01, gt=0, description="model error std per step")
    n_iter: int = Field(50, gt=0)
    n_outer: int = Field(3, gt=0)
    shift: int | None = Field(
        None, ge=1, description="cycled: steps the window moves (None: independent windows)"
    )
    background_std: float = Field(
        0.5, gt=0, description="cycled: background error std of each window's initial state"
    )

    @model_validator(mode="after")
    def _shift_within_window(self) -> FourDVarSection:
        if self.shift is not None and self.shift > self.window:
            raise ValueError(
                f"shift={self.shift} exceeds window={self.window}; use shift <= window"
            )
        return self


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
    init: Literal["interp", "filter", "ienks"] = Field(
        "interp",
        description="solver first guess: time interpolation of the obs, cycled 3D-Var or the "
        "iEnKS (init_members, lag 1), each with the learned prior as the model",
    )
    init_inflation: float = Field(1.0, ge=1.0, description="init ienks: its inflation")
    init_members: int = Field(10, ge=2, description="init ienks: its ensemble size")
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


# ----- observation-only methods ------------------------------------------------------------
def linear(obs: Tensor) -> Tensor:
    """Linear interpolation in time of ``obs`` ``(B, T, D)`` (NaN where unobserved).

    Constant before the first and after the last observation of a component; a component never
    observed in a trajectory gets the mean of that trajectory's observations (see the module
    docstring). A trajectory without any observation is an error.

    Examples
    --------
    >>> nan = float("nan")
    >>> linear(torch.tensor([[[nan, 1.0], [0.0, nan], [nan, nan], [2.0, nan]]]))[0].tolist()
    [[0.0, 1.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]
    """
    from geodl.baselines import interpolate_obs

    if obs.ndim != 3:
        raise UserInputError(
            f"linear: obs has shape {tuple(obs.shape)}, expected (trajectory, time, component)"
        )
    empty = (~torch.isfinite(obs).any(dim=(1, 2))).nonzero()[:, 0].tolist()
    if empty:
        raise DataError(
            f"linear: trajectories {empty} have no observation; nothing to interpolate "
            "(drop them or add observations)"
        )
    return interpolate_obs(obs)


def _linear(obs: np.ndarray) -> np.ndarray:
    """:func:`linear` on ``(B, T, D)`` arrays."""
    return linear(torch.as_tensor(obs)).numpy()


def climatology(obs: np.ndarray) -> np.ndarray:
    """Time mean of the observations ``(B, T, D)`` of each component, broadcast over time.

    A component never observed in a trajectory gets the mean of all the observations.

    Examples
    --------
    >>> climatology(np.array([[[1.0, np.nan], [3.0, np.nan]]])).tolist()
    [[[2.0, 2.0], [2.0, 2.0]]]
    """
    mean = np.nanmean(obs, axis=-2, keepdims=True)
    mean = np.where(np.isfinite(mean), mean, np.nanmean(obs))
    return np.broadcast_to(mean, obs.shape).copy()


#: Methods that need the observations ``(B, T, D)`` only, no model: name -> estimate ``(B, T, D)``.
OBS_ONLY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": _linear,
    "climatology": climatology,
}


# ----- classical methods with the true model -----------------------------------------------
def true_step(system: str, forcing: float, dt: float) -> Step:
    """One RK4 step of ``dt`` of the Lorenz ``system``: the true model of a twin experiment.

    Examples
    --------
    >>> true_step("lorenz63", 8.0, 0.01)(torch.ones(2, 3)).shape
    torch.Size([2, 3])
    """
    from geodl.sim import lorenz_vector_field, rk4_step

    f = lorenz_vector_field(system, forcing=forcing)
    return lambda x: rk4_step(f, x, dt)


def ensemble(
    method: str,
    step: Step,
    obs: Tensor,
    *,
    obs_std: float,
    n_members: int,
    inflation: float,
    lag: int,
    init_std: float,
    seed: int,
    rotate: bool = True,
    adaptive: bool = False,
) -> tuple[Tensor, Tensor]:
    """Estimate ``(B, T, D)`` and ensemble spread ``(B, T, D)`` of ``enkf``, ``enkf_n`` or ``enks``.

    Parameters
    ----------
    method : ``"enkf"`` (the ETKF: analysis at observed times, forecast between them) or
        ``"enks"`` (the ETKS of the same run: its smoother mean with ``lag > 0``, the filter mean
        with ``lag == 0``); ``"enkf_n"``: the EnKF-N, the ETKF with adaptive inflation.
    step : one model time step ``(M, D) -> (M, D)``.
    obs : observations ``(B, T, D)``, NaN where unobserved.
    lag : smoother lag in steps (``enks`` only; ``enkf`` ignores it). ``0``: the filter;
        ``>= T``: the full smoother over the record.
    obs_std, n_members, inflation, init_std, seed, rotate, adaptive : as in
        :func:`geodl.baselines.ensemble_smoother` (``adaptive``: the EnKF-N).

    Returns
    -------
    (estimate, spread)
        The spread is that of the filter ensemble.

    Examples
    --------
    >>> from geodl.sim import lorenz_vector_field, rk4_step, simulate_lorenz
    >>> f = lorenz_vector_field("lorenz63")
    >>> truth = simulate_lorenz("lorenz63", n_steps=50)
    >>> obs = torch.full_like(truth, float("nan"))
    >>> obs[:, ::5] = truth[:, ::5]
    >>> kw = dict(obs_std=1.0, n_members=5, inflation=1.0, init_std=1.0, seed=0)
    >>> filt, _ = ensemble("enkf", lambda x: rk4_step(f, x, 0.01), obs, lag=0, **kw)
    >>> lag0, _ = ensemble("enks", lambda x: rk4_step(f, x, 0.01), obs, lag=0, **kw)
    >>> torch.equal(filt, lag0)  # an EnKS of lag 0 is the filter
    True
    """
    if method not in ENSEMBLE_METHODS:
        raise UserInputError(f"method={method!r}: expected one of {list(ENSEMBLE_METHODS)}")
    res = _ensemble_run(
        step,
        obs,
        obs_std=obs_std,
        n_members=n_members,
        inflation=inflation,
        lag=lag if method == "enks" else 0,
        init_std=init_std,
        seed=seed,
        rotate=rotate,
        adaptive=adaptive or method == "enkf_n",
    )
    est = res.smoother_mean if res.smoother_mean is not None else res.filter_mean
    return est, res.spread


def _ensemble_run(step: Step, obs: Tensor, **options: Any) -> Any:
    """:func:`geodl.baselines.ensemble_smoother` (its ``EnsembleResult``)."""
    from geodl.baselines import ensemble_smoother

    return ensemble_smoother(step, obs, **options)


def _score(est: Estimates, twin: TwinExperiment) -> float:
    """The statistic a tuned method is chosen by: its reported one on ``twin``, ``rmse_s`` of the
    smoother estimate if it has one, else ``rmse_a`` (non-finite: infinite)."""
    kind = "s" if "s" in est else "a"
    score = dapper_scores(est[kind], twin.truth, twin.times, twin.burn_in, kind)[f"rmse_{kind}"]
    return score if math.isfinite(score) else math.inf


def _tune(
    label: str,
    values: Sequence[float],
    run: Callable[[float, TwinExperiment], tuple[Estimates, dict[str, Any]]],
    twin: TwinExperiment,
) -> tuple[Estimates, dict[str, Any], float, dict[str, float]]:
    """``run(value, tuning twin)`` for each of ``values``; the value of the lowest score
    (:func:`_score`) on ``twin.tuning`` (the scored twin itself when it has none), then
    ``run(value, twin)``. Returns the scored twin's estimates and extras, the value, and every
    score tried, ``{"label@value": score}``."""
    if not values:
        raise UserInputError(f"{label}: no value to try; give at least one")
    select = twin.tuning if twin.tuning is not None else twin
    best: tuple[float, float, tuple[Estimates, dict[str, Any]]] | None = None
    tried: dict[str, float] = {}
    for value in values:
        out = run(value, select)
        score = _score(out[0], select)
        tried[f"{label}@{value:g}"] = score
        if best is None or score < best[0]:
            best = (score, value, out)
    assert best is not None  # values is not empty
    est, extra = best[2] if select is twin else run(best[1], twin)
    return est, extra, best[1], tried


def tune_ensemble(
    method: str, twin: TwinExperiment, e: EnKFSection, label: str | None = None
) -> Tuned:
    """``enkf`` (the ETKF), ``enks`` (its smoother) or ``enkf_n`` (the EnKF-N) on ``twin``: the
    inflation of :attr:`EnKFSection.inflation` with the lowest score on ``twin.tuning``
    (:func:`_tune`; ``enkf_n`` tunes nothing).

    Returns
    -------
    (estimates, {"inflation", "n_members"} and the ``spread``, {"method@inflation": score})
        ``enks`` gives both the filter (``"a"``) and smoother (``"s"``) estimates of its run.
    """

    def run(infl: float, on: TwinExperiment) -> tuple[Estimates, dict[str, Any]]:
        res = _ensemble_run(
            on.step(),
            torch.as_tensor(on.obs, dtype=torch.float64),
            obs_std=on.obs_std,
            n_members=e.n_members,
            inflation=infl,
            lag=e.lag if method == "enks" else 0,
            init_std=e.init_std,
            seed=e.seed,
            rotate=e.rotate,
            adaptive=method == "enkf_n",
        )
        est = {"a": res.filter_mean.numpy()}
        if method == "enks" and res.smoother_mean is not None:
            est["s"] = res.smoother_mean.numpy()
        return est, {"spread": res.spread.numpy()}

    values = [1.0] if method == "enkf_n" else e.inflation
    est, extra, infl, tried = _tune(label or method, values, run, twin)
    tried = {} if method == "enkf_n" else tried
    return est, {"inflation": infl, "n_members": e.n_members, **extra}, tried


def tune_ienks(twin: TwinExperiment, e: IEnKSSection, label: str = "ienks") -> Tuned:
    """The iEnKS on ``twin``, its inflation chosen by ``rmse_s`` on ``twin.tuning`` (:func:`_tune`).

    Returns
    -------
    (estimates {"a": filter analysis, "s": smoother}, {"inflation", ...}, {"ienks@infl": score})
    """
    from geodl.baselines import ienks

    def run(infl: float, on: TwinExperiment) -> tuple[Estimates, dict[str, Any]]:
        res = ienks(
            on.step(),
            torch.as_tensor(on.obs, dtype=torch.float64),
            obs_std=on.obs_std,
            n_members=e.n_members,
            lag=e.lag,
            shift=e.shift,
            inflation=infl,
            n_iter=e.n_iter,
            epsilon=e.epsilon,
            init_std=e.init_std,
            rotation=e.rotate,
            seed=e.seed,
        )
        assert res.smoother_mean is not None  # the iEnKS always smooths
        est = {"a": res.filter_mean.numpy(), "s": res.smoother_mean.numpy()}
        return est, {"spread": res.spread.numpy()}

    est, extra, infl, tried = _tune(label, e.inflation, run, twin)
    summary = {"inflation": infl, "n_members": e.n_members, "lag": e.lag, "shift": e.shift}
    return est, {**summary, **extra}, tried


def climatology_cov(
    system: str,
    *,
    n_steps: int,
    dt: float,
    spinup_steps: int,
    dim: int,
    forcing: float,
    seed: int,
) -> Tensor:
    """Covariance ``(D, D)`` of the states of one simulated trajectory of ``n_steps`` steps.

    Examples
    --------
    >>> kw = dict(dt=0.01, spinup_steps=100, dim=3, forcing=8.0, seed=0)
    >>> climatology_cov("lorenz63", n_steps=500, **kw).shape
    torch.Size([3, 3])
    """
    from geodl.sim import simulate_lorenz

    clim = simulate_lorenz(
        system,
        n_steps=n_steps,
        dt=dt,
        spinup_steps=spinup_steps,
        n_components=dim,
        forcing=forcing,
        seed=seed,
    )[0]  # (T, D)
    return torch.cov(clim.T).reshape(dim, dim)


def tune_3dvar(twin: TwinExperiment, background_cov: Tensor, scales: Sequence[float]) -> Tuned:
    """Cycled 3D-Var with ``B = scale x background_cov`` for each of ``scales``; keep the scale of
    lowest ``rmse_a`` on ``twin.tuning`` (:func:`_tune`).

    Returns
    -------
    (estimates {"a"}, {"background_scale"}, {"threedvar@scale": score})
    """
    from geodl.baselines import cycled_3dvar

    def run(scale: float, on: TwinExperiment) -> tuple[Estimates, dict[str, Any]]:
        y = torch.as_tensor(on.obs, dtype=torch.float64)
        cov = scale * background_cov
        return {"a": cycled_3dvar(on.step(), y, obs_std=on.obs_std, background_cov=cov).numpy()}, {}

    est, _, scale, tried = _tune("threedvar", scales, run, twin)
    return est, {"background_scale": scale}, tried


# ----- learned 4DVarNet of states ----------------------------------------------------------
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


def _pretrain_prior(model: Any, truth: Tensor, n_iter: int) -> None:
    """Fit the prior's one-step map to true windows ``(N, T, D)`` with float64 L-BFGS first: the
    solver can only learn to descend a cost whose prior already means something (measured on L63:
    test RMSE 0.95 after one epoch with a pre-fitted prior, 1.28 without)."""
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
    from geodl.baselines import cycled_3dvar

    m = torch.as_tensor(norm["mean"], dtype=torch.float64)
    s = torch.as_tensor(norm["std"], dtype=torch.float64)
    prior = copy.deepcopy(prior).double()
    cov = torch.as_tensor(background["cov"], dtype=torch.float64) * background["scale"]
    with torch.no_grad():
        est = cycled_3dvar(
            in_units(prior, m, s),
            torch.as_tensor(obs, dtype=torch.float64),
            obs_std=obs_std,
            background_cov=cov,
        )
    return est.numpy()


def _first_guess(
    n: FourDVarNetSection,
    prior: Any,
    obs: np.ndarray,
    norm: dict[str, list[float]],
    background: dict[str, Any],
    obs_std: float,
) -> np.ndarray | None:
    """The solver's first guess ``(B, T, D)`` (physical units) for ``n.init``: None for the time
    interpolation (made per window), else cycled 3D-Var (:func:`_learned_3dvar`) or the iEnKS
    smoother with the learned prior as the model. Why the iEnKS: with a prior as good as the
    true model, the solver then starts from a smoother at the classical reference level and
    learns the corrections left, instead of carrying information across observation gaps."""
    if n.init == "interp":
        return None
    if n.init == "filter":
        return _learned_3dvar(prior, obs, norm, background, obs_std)
    from geodl.baselines import ienks

    m = torch.as_tensor(norm["mean"], dtype=torch.float64)
    s = torch.as_tensor(norm["std"], dtype=torch.float64)
    step = in_units(copy.deepcopy(prior).double(), m, s)
    e = IEnKSSection()
    with torch.no_grad():
        res = ienks(
            step,
            torch.as_tensor(obs, dtype=torch.float64),
            obs_std=obs_std,
            n_members=n.init_members,
            lag=e.lag,
            inflation=n.init_inflation,
            n_iter=e.n_iter,
            epsilon=e.epsilon,
            init_std=e.init_std,
            seed=e.seed,
        )
    assert res.smoother_mean is not None
    return res.smoother_mean.numpy()


def _windows(
    traj: np.ndarray,
    obs: np.ndarray,
    window: int,
    stride: int,
    norm: dict[str, list[float]],
    first_guess: np.ndarray | None = None,
) -> TensorDataset:
    """Normalised training windows ``(y, mask, first guess, truth)``, each ``(N, window, D)``; the
    first guess is cut from ``first_guess`` (physical units) or, if None, the time interpolation
    of the observations."""
    from torch.utils.data import TensorDataset

    from geodl.baselines import interpolate_obs

    mean, std = np.asarray(norm["mean"]), np.asarray(norm["std"])

    def cut(a: np.ndarray) -> Tensor:  # (B, T, D) -> normalised (N, window, D)
        z = torch.as_tensor((a - mean) / std, dtype=torch.float32)
        return trajectory_windows(z, window - 1, stride)

    xt, yt = cut(traj), cut(obs)
    mask = torch.isfinite(yt).float()
    init = interpolate_obs(yt) if first_guess is None else cut(first_guess)
    return TensorDataset(torch.nan_to_num(yt), mask, init, xt)


#: Offsets of the seeds of the learned method's simulated sets from ``fourdvarnet.seed``.
TRAINING_SEEDS = {"train": 0, "val": 1000, "climatology": 2000}


def training_sets(
    n: FourDVarNetSection,
    *,
    system: str,
    forcing: float,
    spinup_steps: int,
    dt: float,
    dim: int,
    every: int,
    components: list[int] | None,
    obs_std: float,
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Everything the learned method sees: ``{"train", "val": (truth, obs), "climatology":
    (states, None)}``, each ``(B, T, D)``, simulated with seeds ``n.seed +``
    :data:`TRAINING_SEEDS` (the climatology gives the normalisation and the first guess's
    background covariance). None shares a seed with the scored truth (:func:`check_setup`)."""
    from geodl.obs import observe_state
    from geodl.sim import simulate_lorenz

    def simulate(n_traj: int, n_steps: int, seed: int) -> np.ndarray:
        return simulate_lorenz(
            system,
            n_trajectories=n_traj,
            n_steps=n_steps,
            dt=dt,
            spinup_steps=spinup_steps,
            n_components=dim,
            forcing=forcing,
            seed=seed,
        ).numpy()

    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for name, count in (("train", n.n_train_trajectories), ("val", n.n_val_trajectories)):
        seed = n.seed + TRAINING_SEEDS[name]
        traj = simulate(count, n.n_train_steps, seed)
        obs = observe_state(
            traj, every=every, components=components, noise_std=obs_std, seed=seed + 1
        )
        out[name] = (traj, obs)
    out["climatology"] = (simulate(4, 5000, n.seed + TRAINING_SEEDS["climatology"]), None)
    return out


def train_fourdvarnet(
    section: FourDVarNetSection,
    train: TrainSection,
    model_file: Path,
    *,
    system: str,
    forcing: float,
    spinup_steps: int,
    dt: float,
    dim: int,
    every: int,
    components: list[int] | None,
    obs_std: float,
    ckpt_dir: Path,
    log_dir: Path,
    key: str,
    metadata: dict[str, Any],
) -> int:
    """Train the learned DA model on windows of twin experiments simulated for it; write
    ``model_file``.

    Parameters
    ----------
    section : the model, its solver and its training windows.
    train : the optimisation (:func:`geodl.training.fit`); ``train.seed`` seeds the weights.
    model_file : the file written: the weights of the best validation epoch and what applying
        them needs (normalisation, background covariance of the ``filter`` first guess, ``dt``).
    system, forcing, spinup_steps, dt, dim : the simulated Lorenz system (as
        :func:`geodl.sim.simulate_lorenz`); its training, validation and climatology sets are
        those of :func:`training_sets`.
    every, components, obs_std : how they are observed (as :func:`geodl.obs.observe_state`).
    ckpt_dir, log_dir, key, metadata : as in :func:`geodl.training.fit` and
        :class:`geodl.training.TaskModule`.

    Returns
    -------
    int
        The number of epochs trained.
    """
    from geodl.training import TaskModule, fit, load_model_weights, torch_threads
    from geodl.training.checkpoints import save_model

    n = section
    sets = training_sets(
        n,
        system=system,
        forcing=forcing,
        spinup_steps=spinup_steps,
        dt=dt,
        dim=dim,
        every=every,
        components=components,
        obs_std=obs_std,
    )
    clim = torch.as_tensor(sets["climatology"][0])
    norm = {"mean": clim.mean((0, 1)).tolist(), "std": clim.std((0, 1)).tolist()}
    if n.prior == "local":  # one scale for all components keeps the dynamics translation invariant
        norm = {"mean": [float(clim.mean())] * dim, "std": [float(clim.std())] * dim}
    cov = np.cov(clim.reshape(-1, dim).numpy().T).reshape(dim, dim)
    train_traj, train_obs = sets["train"]
    val_traj, val_obs = sets["val"]
    torch.manual_seed(train.seed)
    model = _build_net(n, dim)
    if n.prior_pretrain_iter > 0:
        wins = _windows(train_traj, train_obs, n.window, n.train_stride, norm).tensors[3]
        _pretrain_prior(model, wins, n.prior_pretrain_iter)
    if n.freeze_prior:
        model.prior.requires_grad_(False)
    background = {"cov": cov.tolist(), "scale": n.init_background_scale}

    def first_guess(obs: np.ndarray) -> np.ndarray | None:
        return _first_guess(n, model.prior, obs, norm, background, obs_std)

    train_set = _windows(
        train_traj, train_obs, n.window, n.train_stride, norm, first_guess(train_obs)
    )
    val_set = _windows(val_traj, val_obs, n.window, n.train_stride, norm, first_guess(val_obs))
    weight = 0.0 if n.freeze_prior else n.prior_loss_weight

    def loss_fn(net: Any, batch: Any) -> dict[str, Tensor]:  # net: the StateFourDVarNet
        y, m, init, x = batch
        est = net(y, m, init)
        rec = (est - x).pow(2).mean()
        prior = net.prior_loss(x)
        return {"loss": rec + weight * prior, "rec": rec, "prior": prior}

    module = TaskModule(model, loss_fn, train, metadata=metadata)
    with torch_threads(1):
        result = fit(module, train_set, val_set, train, ckpt_dir=ckpt_dir, log_dir=log_dir, key=key)
    if result.best_path is not None:  # the weights of the best validation epoch
        load_model_weights(
            module.model, torch.load(result.best_path, map_location="cpu", weights_only=True)
        )
    save_model(
        model_file,
        module.model.state_dict(),
        {
            "norm": norm,
            "background": background,
            "obs_std": obs_std,
            "dt": dt,
            "dim": dim,
            "epochs": result.epochs,
            "fourdvarnet": n.model_dump(mode="json"),
        },
    )
    return int(result.epochs)


def _load_net(model_file: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    """The trained learned-DA model (eval mode) and its normalisation ``(mean, std)``."""
    from geodl.training.checkpoints import load_checkpoint

    ckpt = load_checkpoint(model_file)
    meta = ckpt["geodl"]
    model = _build_net(FourDVarNetSection(**meta["fourdvarnet"]), meta["dim"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, np.asarray(meta["norm"]["mean"]), np.asarray(meta["norm"]["std"])


def fourdvarnet_info(model_file: str | Path) -> dict[str, Any]:
    """What a 4DVarNet model file was trained for: ``window``, ``dim``, ``dt`` and ``obs_std``.

    Raises
    ------
    DataError
        If ``model_file`` is not a model file written by :func:`train_fourdvarnet`.
    """
    from geodl.training.checkpoints import load_checkpoint

    try:
        meta = load_checkpoint(model_file)["geodl"]
        return {
            "window": int(meta["fourdvarnet"]["window"]),
            "dim": int(meta["dim"]),
            "dt": float(meta["dt"]),
            "obs_std": float(meta["obs_std"]),
        }
    except (KeyError, TypeError, RuntimeError, OSError, UserInputError) as exc:
        raise DataError(f"{model_file} is not a geodl 4DVarNet model file ({exc})") from None


def learned_step(model_file: Path) -> Step:
    """One step of the learned prior in physical units, float64: the model of ``fourdvar_learned``
    (weak-constraint 4D-Var solved by L-BFGS with the dynamics learned by
    :func:`train_fourdvarnet`)."""
    model, mean, std = _load_net(model_file)
    prior = model.prior.double()
    return in_units(prior, torch.as_tensor(mean), torch.as_tensor(std))


def apply_fourdvarnet(model_file: Path, obs: np.ndarray, window: int) -> np.ndarray:
    """Analysis of ``obs`` ``(B, T, D)`` by overlapping windows (stride window/2), blended with
    triangular weights so that window edges, which see observations on one side only, count less.

    ``model_file`` is written by :func:`train_fourdvarnet`; ``T >= window``.
    """
    from geodl.baselines import interpolate_obs

    model, mean, std = _load_net(model_file)
    from geodl.training.checkpoints import load_checkpoint

    meta = load_checkpoint(model_file)["geodl"]
    b, t, d = obs.shape
    y = torch.as_tensor((obs - mean) / std, dtype=torch.float32)
    guess = None
    norm = {"mean": mean.tolist(), "std": std.tolist()}
    section = FourDVarNetSection(**meta["fourdvarnet"])
    phys = _first_guess(section, model.prior, obs, norm, meta["background"], meta["obs_std"])
    if phys is not None:
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


# ----- twin experiments: files and scores --------------------------------------------------
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


def truth_dataset(traj: np.ndarray, dt: float, system: str, source: str) -> xr.Dataset:
    """The truth ``(trajectory, time, component)`` of a twin experiment of ``system`` as a CF
    Dataset (``truth`` variable, ``dt`` and ``source`` attributes).

    Examples
    --------
    >>> truth_dataset(np.zeros((1, 4, 3)), 0.01, "lorenz63", "test")["truth"].dims
    ('trajectory', 'time', 'component')
    """
    return trajectory_dataset(
        traj,
        dt,
        variable="truth",
        long_name=f"{system} true state",
        title=f"{system} twin experiment truth",
        source=source,
    )


def twin_truth(data_path: str | None, system: str, **simulate: Any) -> xr.Dataset:
    """The truth of a twin experiment as :func:`truth_dataset`: read from a DA tool's twin file
    ``data_path`` (:func:`read_twin_file`), or else simulated by
    :func:`geodl.sim.simulate_lorenz` of ``system`` with the options ``simulate``.

    Examples
    --------
    >>> twin_truth(None, "lorenz63", n_steps=10, dt=0.01, spinup_steps=0)["truth"].shape
    (1, 11, 3)
    """
    if data_path:
        traj, _, dt = read_twin_file(data_path)
        return truth_dataset(traj, dt, system, f"external twin file {data_path}")
    from geodl.sim import simulate_lorenz

    traj = simulate_lorenz(system, **simulate).numpy()
    options = json.dumps({"system": system, **simulate}, separators=(",", ":"))
    return truth_dataset(
        traj, float(simulate.get("dt", 0.01)), system, f"geodl.sim {system}: {options}"
    )


def twin_observations(truth: xr.Dataset, data_path: str | None, **observe: Any) -> xr.Dataset:
    """The observations of ``truth`` (a :func:`twin_truth` dataset) as :func:`obs_dataset`: the
    twin file's own when ``data_path`` is given, else :func:`geodl.obs.observe_state` with the
    options ``observe`` (``every``, ``components``, ``noise_std``, ``seed``)."""
    state = truth["truth"].load()
    if data_path:
        obs = read_twin_file(data_path)[1]
        source = f"external twin file {data_path}"
    else:
        from geodl.obs import observe_state

        obs = observe_state(state.values, **observe)
        source = f"geodl.obs.observe_state: {json.dumps(observe, separators=(',', ':'))}"
    return obs_dataset(obs, state, truth.attrs["dt"], source)


def obs_dataset(obs: np.ndarray, truth: xr.DataArray, dt: float, source: str) -> xr.Dataset:
    """The observations ``obs`` (NaN where unobserved) of ``truth`` as a Dataset on its grid."""
    return xr.Dataset(
        {"obs": (truth.dims, obs, {"long_name": "observations (NaN where unobserved)"})},
        coords=truth.coords,
        attrs={"source": source, "dt": dt},
    )


def analysis_dataset(estimates: dict[str, np.ndarray]) -> xr.Dataset:
    """The state estimates ``(trajectory, time, component)`` of each method, one variable each."""
    return xr.Dataset(
        {n: (("trajectory", "time", "component"), e) for n, e in estimates.items()},
        attrs={"title": "state estimates of each method"},
    )


# ----- the registry: every method of a twin experiment -------------------------------------
@dataclass(frozen=True)
class TwinExperiment:
    """One twin experiment: DAPPER's ``HMM`` (the true model, the observation noise) with its
    truth ``xx`` and observations ``yy``, as every method of :data:`METHODS` reads it.

    Attributes
    ----------
    truth, obs : ``(B, T, D)``; ``obs`` NaN where unobserved.
    times : ``(T,)`` booleans, the analysis (observed) times.
    dt, system, forcing : the true model (:func:`true_step`).
    spinup_steps : spin-up of the climatology simulations (3D-Var's background covariance).
    obs_std : observation error standard deviation.
    burn_in : first steps left out of the scores (and of the tuning).
    model_file : the model file of :func:`train_fourdvarnet` (learned methods only).
    tuning : the twin on which tuned methods choose their parameter (:func:`tuning_twin`: a truth
        of its own, observed the same way); None: the scored twin itself.
    model : the forecast model of the model-based methods (None: the true model of ``system``).
    """

    truth: np.ndarray
    obs: np.ndarray | Tensor
    times: np.ndarray
    dt: float
    system: str
    forcing: float
    spinup_steps: int
    obs_std: float
    burn_in: int = 0
    model_file: Path | None = None
    tuning: TwinExperiment | None = None
    model: Step | None = None

    def step(self) -> Step:
        """The forecast model, one step of ``dt``: :attr:`model`, else the true model."""
        return self.model or true_step(self.system, self.forcing, self.dt)

    def with_learned_model(self) -> TwinExperiment:
        """This twin (and its tuning twin) with the learned prior of :attr:`model_file` as the
        forecast model (:func:`learned_step`) in place of the true one."""
        learned = learned_step(self.learned_file())

        def step(x: Tensor) -> Tensor:  # ensemble forecasts need no gradient
            with torch.no_grad():
                return learned(x)

        tuning = None if self.tuning is None else dataclasses.replace(self.tuning, model=step)
        return dataclasses.replace(self, model=step, tuning=tuning)

    def learned_file(self) -> Path:
        """:attr:`model_file`, which the learned methods need."""
        if self.model_file is None:
            raise UserInputError("a learned method needs model_file= (train_fourdvarnet's file)")
        return self.model_file


def twin_experiment(
    truth: np.ndarray,
    obs: np.ndarray | Tensor,
    dt: float,
    simulate: TwinSimulateSection,
    *,
    obs_std: float,
    burn_in: int = 0,
    model_file: Path | None = None,
    tuning: tuple[int, int] | None = None,
) -> TwinExperiment:
    """The :class:`TwinExperiment` of a truth and its observations, the true model of
    ``simulate``; with ``tuning = (n_trajectories, seed)`` its tuning twin is :func:`tuning_twin`
    of those (None: tuned on the scored twin itself). Analysis times are the observed ones."""
    times = np.isfinite(np.asarray(obs)).any(axis=(0, 2))
    twin = TwinExperiment(
        truth=truth,
        obs=obs,
        times=times,
        dt=dt,
        system=simulate.system,
        forcing=simulate.forcing,
        spinup_steps=simulate.spinup_steps,
        obs_std=obs_std,
        burn_in=burn_in,
        model_file=model_file,
    )
    if tuning is None:
        return twin
    return dataclasses.replace(twin, tuning=tuning_twin(twin, *tuning))


def tuning_twin(twin: TwinExperiment, n_trajectories: int, seed: int) -> TwinExperiment:
    """A twin experiment to tune on, apart from the scored one: ``n_trajectories`` new truths of
    the same system and length (simulated with ``seed``), observed where the scored observations
    are (the masks of its trajectories in turn) with noise of std ``twin.obs_std``.

    Why: a parameter chosen on the scored truth is fitted to it (DAPPER-style tuning reports the
    best of a grid on the test itself); tuned on a truth of its own, a baseline's score is one a
    user would get.

    Examples
    --------
    >>> obs = np.full((1, 51, 3), np.nan); obs[:, ::5] = 1.0
    >>> twin = TwinExperiment(truth=np.zeros((1, 51, 3)), obs=obs, times=np.isfinite(obs).any((0, 2)),
    ...                       dt=0.01, system="lorenz63", forcing=8.0, spinup_steps=100, obs_std=1.0)
    >>> tune = tuning_twin(twin, 2, seed=7)
    >>> tune.truth.shape, bool((np.isfinite(tune.obs) == np.isfinite(obs[[0, 0]])).all())
    ((2, 51, 3), True)
    """
    from geodl.sim import simulate_lorenz

    _, t, d = twin.truth.shape
    truth = simulate_lorenz(
        twin.system,
        n_trajectories=n_trajectories,
        n_steps=t - 1,
        dt=twin.dt,
        spinup_steps=twin.spinup_steps,
        n_components=d,
        forcing=twin.forcing,
        seed=seed,
    ).numpy()
    mask = np.isfinite(np.asarray(twin.obs))
    mask = mask[np.arange(n_trajectories) % len(mask)]
    noise = np.random.default_rng(seed).standard_normal(truth.shape)
    obs = np.where(mask, truth + twin.obs_std * noise, np.nan)
    return dataclasses.replace(twin, truth=truth, obs=obs, times=mask.any(axis=(0, 2)), tuning=None)


@dataclass(frozen=True)
class TwinMethod:
    """A method of a twin experiment: its settings and its one verb (DAPPER's shape).

    Attributes
    ----------
    name : the name in ``evaluate.methods``.
    section : the type of the settings ``run`` takes (None: no settings).
    run : ``(settings, twin) -> (estimate (B, T, D), summary, tuning scores)``.
    learned : needs the 4DVarNet trained by :func:`train_fourdvarnet` (``twin.model_file``).
    needs_obs_std : uses ``twin.obs_std`` (which must then be > 0).
    """

    name: str
    section: type[Section] | None
    run: Callable[[Any, TwinExperiment], Tuned]
    learned: bool = False
    needs_obs_std: bool = True


def _run_obs_only(name: str) -> Callable[[Any, TwinExperiment], Tuned]:
    def run(_: Any, twin: TwinExperiment) -> Tuned:
        est = OBS_ONLY[name](np.asarray(twin.obs))
        # a floor for both tables: linear interpolation and the time mean use later observations
        return {"s": est} if name == "linear" else {"a": est, "s": est}, {}, {}

    return run


def _run_ensemble(name: str, learned: bool = False) -> Callable[[Any, TwinExperiment], Tuned]:
    def run(e: EnKFSection, twin: TwinExperiment) -> Tuned:
        from geodl.training import torch_threads

        with torch_threads(1):
            if learned:  # its scores tried are labelled enkf_learned@..., apart from enkf's
                return tune_ensemble(name, twin.with_learned_model(), e, f"{name}_learned")
            return tune_ensemble(name, twin, e)

    return run


def _run_ienks(learned: bool) -> Callable[[Any, TwinExperiment], Tuned]:
    def run(e: IEnKSSection, twin: TwinExperiment) -> Tuned:
        from geodl.training import torch_threads

        with torch_threads(1):
            if learned:
                return tune_ienks(twin.with_learned_model(), e, "ienks_learned")
            return tune_ienks(twin, e)

    return run


def _run_3dvar(v: ThreeDVarSection, twin: TwinExperiment) -> Tuned:
    from geodl.training import torch_threads

    cov = climatology_cov(
        twin.system,
        n_steps=v.clim_steps,
        dt=twin.dt,
        spinup_steps=twin.spinup_steps,
        dim=twin.truth.shape[2],
        forcing=twin.forcing,
        seed=v.clim_seed,
    )
    with torch_threads(1):
        return tune_3dvar(twin, cov, v.scale)


def _run_4dvar(learned: bool) -> Callable[[Any, TwinExperiment], Tuned]:
    def run(fv: FourDVarSection, twin: TwinExperiment) -> Tuned:
        from geodl.baselines import cycled_4dvar, weak_4dvar
        from geodl.training import torch_threads

        step = learned_step(twin.learned_file()) if learned else twin.step()
        if fv.shift is not None:  # cycled: a smoother and, at window ends, a filter
            with torch_threads(1):
                smooth, filt = cycled_4dvar(
                    step,
                    torch.as_tensor(twin.obs, dtype=torch.float64),
                    obs_std=twin.obs_std,
                    model_std=fv.model_std,
                    background_std=fv.background_std,
                    window=fv.window,
                    shift=fv.shift,
                    n_iter=fv.n_iter,
                    n_outer=fv.n_outer,
                )
            return {"s": smooth.detach().numpy(), "a": filt.detach().numpy()}, {}, {}
        with torch_threads(1):
            est = weak_4dvar(
                step,
                torch.as_tensor(twin.obs, dtype=torch.float64),
                obs_std=twin.obs_std,
                model_std=fv.model_std,
                window=fv.window,
                n_iter=fv.n_iter,
                n_outer=fv.n_outer,
            )
        return {"s": est.numpy()}, {}, {}

    return run


def _run_fourdvarnet(n: FourDVarNetSection, twin: TwinExperiment) -> Tuned:
    from geodl.training import torch_threads

    with torch_threads(1):
        est = apply_fourdvarnet(twin.learned_file(), np.asarray(twin.obs), n.window)
    return {"s": est}, {}, {}


#: Every method of a twin experiment (the assimilation task's ``evaluate.methods``).
METHODS: dict[str, TwinMethod] = {
    m.name: m
    for m in (
        TwinMethod("linear", None, _run_obs_only("linear"), needs_obs_std=False),
        TwinMethod("climatology", None, _run_obs_only("climatology"), needs_obs_std=False),
        TwinMethod("threedvar", ThreeDVarSection, _run_3dvar),
        TwinMethod("enkf", EnKFSection, _run_ensemble("enkf")),
        TwinMethod("enkf_n", EnKFSection, _run_ensemble("enkf_n")),
        TwinMethod("enks", EnKFSection, _run_ensemble("enks")),
        TwinMethod("ienks", IEnKSSection, _run_ienks(learned=False)),
        TwinMethod("fourdvar", FourDVarSection, _run_4dvar(learned=False)),
        TwinMethod(
            "fourdvarnet", FourDVarNetSection, _run_fourdvarnet, learned=True, needs_obs_std=False
        ),
        TwinMethod("fourdvar_learned", FourDVarSection, _run_4dvar(learned=True), learned=True),
        TwinMethod("enkf_learned", EnKFSection, _run_ensemble("enkf", True), learned=True),
        TwinMethod("ienks_learned", IEnKSSection, _run_ienks(learned=True), learned=True),
    )
}


def assess(
    twin: TwinExperiment, runs: Sequence[tuple[str, Any]], log: logging.Logger
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray], dict[str, float]]:
    """Run each ``(name, settings)`` of ``runs`` (:data:`METHODS`) on ``twin``; score them all.

    Parameters
    ----------
    twin : the twin experiment.
    runs : method names and the settings (their :attr:`TwinMethod.section`, or None) to run with.
    log : where each method's scores are logged.

    Returns
    -------
    (scores, estimates, tuning)
        ``scores[name]``: :func:`~geodl.metrics.dapper_scores` of each of its estimates
        (``rmse_a`` of a filter analysis, ``rmse_s`` and ``rmse_u`` of a smoother estimate,
        ``spread_a`` of an ensemble), :func:`twin_scores` of its main estimate (the smoother's
        if it has one), its summary and its wall time ``time_s``; plus ``scores["observations"]``
        (the observations where they exist, at analysis times). ``estimates[name]``: the main
        estimate ``(B, T, D)``; ``tuning``: every tuned method's scores tried.
    """
    results: dict[str, dict[str, Any]] = {}
    estimates: dict[str, np.ndarray] = {}
    tuning: dict[str, float] = {}
    for name, settings in runs:
        t0 = time.perf_counter()
        est, extra, tried = METHODS[name].run(settings, twin)
        tuning.update(tried)
        spread = extra.pop("spread", None)
        if not all(np.isfinite(e).all() for e in est.values()):
            raise RuntimeError(f"method {name} produced non-finite values")  # a bug, not input
        main = est["s"] if "s" in est else est["a"]
        estimates[name] = main
        scores: dict[str, Any] = {}
        for kind, e in sorted(est.items()):
            sp = spread if kind == "a" else None
            scores.update(dapper_scores(e, twin.truth, twin.times, twin.burn_in, kind, sp))
        results[name] = {
            **scores,
            **twin_scores(main, twin.truth, twin.times, twin.burn_in),
            **extra,
            "time_s": round(time.perf_counter() - t0, 3),
        }
        log.info("method %s: %s", name, results[name])
    obs, truth = np.asarray(twin.obs), twin.truth
    scores = twin_scores(np.where(np.isfinite(obs), obs, truth), truth, twin.times, twin.burn_in)
    results["observations"] = {k: v for k, v in scores.items() if "analysis" in k}
    return results, estimates, tuning


def check_setup(
    methods: Sequence[str],
    *,
    n_time: int | None,
    dim: int | None,
    burn_in: int,
    fourdvar_window: int,
    net: FourDVarNetSection,
    obs_std: float,
    components: Sequence[int] | None,
    truth_seed: int | None = None,
    seeds: dict[str, int] | None = None,
) -> None:
    """Refuse, in one :class:`~geodl.errors.ConfigError` line naming the key, a twin experiment
    that ``methods`` cannot run: windows longer than the ``n_time`` steps of the data or than the
    training trajectories, a burn-in that leaves nothing to score, a local prior whose stencil is
    even or wider than the ``dim`` components (None for either size: not known yet, that check
    waits), observed components outside
    the state, no observation error where a method needs it, or a simulated set that would be
    the truth: a seed of ``seeds`` (config key -> seed; ``fourdvarnet.seed`` stands for its
    :data:`TRAINING_SEEDS`) equal to the ``truth_seed`` of a simulated truth.

    The config validator calls it with the simulated twin's sizes, so that these mistakes fail
    before any stage runs; the stages call it again with an external file's sizes.

    Examples
    --------
    >>> check_setup(["linear"], n_time=10, dim=3, burn_in=12, fourdvar_window=5,
    ...             net=FourDVarNetSection(), obs_std=1.0, components=None)
    Traceback (most recent call last):
    ...
    geodl.errors.ConfigError: evaluate.burn_in=12 leaves nothing to score in 10 time steps; lower it
    """

    def too_long(key: str, window: int) -> ConfigError:
        return ConfigError(
            f"{key}={window} is longer than the data ({n_time} time steps); lower the window"
        )

    if n_time is None:
        n_time = sys.maxsize  # an external file's length is known when its stage reads it
    if burn_in >= n_time:
        raise ConfigError(
            f"evaluate.burn_in={burn_in} leaves nothing to score in {n_time} time steps; lower it"
        )
    if {"fourdvar", "fourdvar_learned"} & set(methods) and fourdvar_window > n_time:
        raise too_long("evaluate.fourdvar.window", fourdvar_window)
    if any(METHODS[m].learned for m in methods):
        if net.window > n_time:
            raise too_long("fourdvarnet.window", net.window)
        if net.window > net.n_train_steps + 1:
            raise ConfigError(
                f"fourdvarnet.window={net.window} is longer than the training trajectories "
                f"(fourdvarnet.n_train_steps + 1 = {net.n_train_steps + 1}); lower the window "
                "or raise n_train_steps"
            )
        if net.prior == "local" and (
            net.stencil % 2 == 0 or (dim is not None and net.stencil > dim)
        ):
            raise ConfigError(
                f"fourdvarnet.stencil={net.stencil}: the local prior needs an odd stencil no "
                f"wider than the state ({dim} components)"
            )
    if components is not None and dim is not None:
        bad = [c for c in components if not 0 <= c < dim]
        if bad:
            raise ConfigError(
                f"observe.components {bad} are outside the state's {dim} components (0..{dim - 1})"
            )
    for key, seed in (seeds or {}).items() if truth_seed is not None else ():
        used = [seed + k for k in TRAINING_SEEDS.values()] if key == "fourdvarnet.seed" else [seed]
        if truth_seed in used:
            raise ConfigError(
                f"{key}={seed} makes the simulated set of seed {truth_seed}, the scored truth's "
                f"(simulate.seed={truth_seed}); choose another seed"
            )
    need = [m for m in methods if METHODS[m].needs_obs_std or METHODS[m].learned]
    if not obs_std > 0 and need:
        raise ConfigError(
            f"observe.noise_std is 0; {', '.join(need)} need the observation error standard "
            "deviation > 0 (set it to the noise of the twin file's obs)"
        )


#: The names of :data:`METHODS`, as the config schema checks them (made from the registry, so
#: that a new entry is accepted by the schema without a second list to keep in step).
MethodName = Literal[tuple(METHODS)]  # type: ignore[valid-type]


def _floor() -> list[MethodName]:
    return ["linear", "climatology"]


class EvaluateSection(Section):
    """Which methods a twin experiment scores, how (burn-in, tuning twin), and their settings."""

    methods: list[MethodName] = Field(default_factory=_floor, min_length=1)
    burn_in: int = Field(0, ge=0, description="first steps left out of every score")
    tune_on: Literal["separate", "scored"] = Field(
        "separate",
        description="tuned parameters are chosen on a separately simulated twin (a truth of its "
        "own, observed where the scored one is) or on the scored twin itself (DAPPER-style)",
    )
    tuning_trajectories: int = Field(2, gt=0, description="trajectories of the tuning twin")
    tuning_seed: int = Field(777, description="seed of the tuning twin (apart from the truth)")
    enkf: EnKFSection = EnKFSection()
    ienks: IEnKSSection = IEnKSSection()
    threedvar: ThreeDVarSection = ThreeDVarSection()
    fourdvar: FourDVarSection = FourDVarSection()


def check_twin_config(cfg: Any, n_time: int | None, dim: int | None) -> None:
    """:func:`check_setup` of a twin-experiment config (sections ``evaluate``, ``fourdvarnet``,
    ``observe``, ``simulate``, ``data``) for a truth of ``n_time`` steps and ``dim`` components
    (None where not known yet: an external file before its stage reads it)."""
    ev = cfg.evaluate
    check_setup(
        ev.methods,
        n_time=n_time,
        dim=dim,
        burn_in=ev.burn_in,
        fourdvar_window=ev.fourdvar.window,
        net=cfg.fourdvarnet,
        obs_std=cfg.observe.noise_std,
        components=cfg.observe.components,
        truth_seed=None if cfg.data.path else cfg.simulate.seed,
        seeds={
            "fourdvarnet.seed": cfg.fourdvarnet.seed,
            "evaluate.threedvar.clim_seed": ev.threedvar.clim_seed,
            "evaluate.tuning_seed": ev.tuning_seed,
        },
    )


def observed_background_cov(obs: Tensor, obs_std: float, scale: float) -> Tensor:
    """Static background covariance without a climatology: ``scale`` x the covariance of the
    completely observed states of ``obs`` ``(B, T, D)``, less the observation noise on the
    diagonal (floored at 10% of the smallest variance).

    Examples
    --------
    >>> obs = torch.randn(1, 50, 2, dtype=torch.float64)
    >>> observed_background_cov(obs, 0.1, 0.5).shape
    torch.Size([2, 2])
    """
    rows = obs.reshape(-1, obs.shape[-1])
    rows = rows[torch.isfinite(rows).all(dim=1)]
    if len(rows) < obs.shape[-1] + 1:
        raise DataError(
            "threedvar: too few fully observed times to estimate a background covariance; "
            "pass background_cov= (a (component, component) array)"
        )
    cov = torch.cov(rows.T).reshape(obs.shape[-1], obs.shape[-1])
    diag = torch.clamp(cov.diagonal() - obs_std**2, min=0.1 * cov.diagonal().min())
    cov = cov - torch.diag(cov.diagonal()) + torch.diag(diag)
    return scale * cov
