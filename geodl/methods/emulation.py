"""Emulation of the two-layer QG model: the emulators, their training, checkpoint and scores.

The emulation task (:mod:`geodl.tasks.emulation`) and the benchmark (``benchmarks/emulation.py``)
call these functions; a method's parameters and their defaults are stated once, in its section of
:data:`EMULATORS` (:class:`CNNSection`, :class:`LatentODESection`).

- time and grids: :func:`steps_per_save`, :func:`n_saved`, :func:`build_qg`,
  :func:`spectral_resample`, :func:`coarse_forecast`;
- data: :func:`simulate_qg_trajectories` (the ``trajectories.nc`` dataset),
  :func:`read_trajectories` (the chosen variable per split and the training statistics);
- the emulators: :func:`build_emulator`, :func:`forecast_fn`, :func:`rollout_loss`,
  :func:`train_emulator`; the checkpoint: :func:`save_emulator`, :func:`load_emulator`;
- the scores: :func:`score_emulators` (forecast RMSE against lead, KE spectra of long rollouts
  through :func:`ke_spectrum`, divergence through :func:`first_bad_step`, wall-clock time through
  :func:`forecast_timings`), returned as :class:`EmulationScores` (``metrics.json`` and
  ``forecast.nc``).

One emulator step is one saved interval. The state is the streamfunction ``psi`` (or the PV ``q``)
of both layers as two channels, normalised per layer by the training split's mean and standard
deviation (the statistics travel with each model).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from pydantic import Field
from torch import nn
from torch.utils.data import TensorDataset

from geodl import ranks
from geodl.config import Section
from geodl.errors import ConfigError, DataError, UserInputError
from geodl.integrate import rollout, trajectory_windows
from geodl.metrics import first_bad_step, forecast_rmse, ke_spectrum
from geodl.metrics import spectrum_log10_error as _log_error
from geodl.models import CNNEmulator, LatentODE
from geodl.sim import QGModel
from geodl.training import (
    AdversarialSection,
    TrainSection,
    fit,
    generator_module,
    load_checkpoint,
    load_model_weights,
    torch_threads,
)
from geodl.training.checkpoints import save_model

__all__ = [
    "EMULATORS",
    "SPLITS",
    "CNNSection",
    "EmulationScores",
    "LatentODESection",
    "build_emulator",
    "build_qg",
    "check_emulator",
    "check_grids",
    "coarse_forecast",
    "first_bad_step",
    "forecast_fn",
    "forecast_timings",
    "ke_spectrum",
    "load_emulator",
    "n_saved",
    "read_trajectories",
    "rollout_loss",
    "save_emulator",
    "score_emulators",
    "simulate_qg_trajectories",
    "spectral_resample",
    "steps_per_save",
    "train_emulator",
]

#: Codes of the time splits in ``trajectories.nc`` (``-1``: a gap between splits).
SPLITS = {"train": 0, "val": 1, "test": 2}

Forecast = Callable[[torch.Tensor, int], torch.Tensor]


class CNNSection(Section):
    """A residual CNN one-step map with circular padding (:class:`geodl.models.CNNEmulator`).

    Why ``input_noise``: measured on the quick config (BENCHMARKS.md), without noise on each
    training window's start the year-long rollout left the bound at day 223.
    """

    width: int = Field(32, gt=0)
    n_layers: int = Field(4, gt=0)
    kernel_size: int = Field(3, gt=0)
    act: str = "gelu"
    rollout: int = Field(4, gt=0, description="steps of the rollout loss")
    stride: int = Field(1, gt=0, description="between training windows")
    input_noise: float = Field(
        0.0, ge=0, description="std of noise added to each training window's start (normalised)"
    )
    adversarial: AdversarialSection = Field(
        AdversarialSection(),
        description="a patch discriminator judges the rollout's states against the truth's",
    )
    train: TrainSection = TrainSection(max_epochs=20, batch_size=16, lr=1e-3, progress_bar=False)


class LatentODESection(Section):
    """An autoencoder with a neural ODE in its latent space (:class:`geodl.models.LatentODE`).

    Why ``residual`` (forecast ``x0 + D(z_t) - D(z_0)``): measured on the quick config
    (BENCHMARKS.md), decoding ``D(z_t)`` alone lost to persistence at short leads, the
    autoencoder's reconstruction error being larger than one day's change.
    """

    latent_channels: int = Field(8, gt=0)
    width: int = Field(32, gt=0)
    depth: int = Field(1, ge=0, description="halvings of the grid into the latent grid")
    method: str = "rk4"
    step_size: float = Field(0.5, gt=0, description="solver step, in emulator steps")
    residual: bool = Field(True, description="forecast x0 + D(z_t) - D(z_0), not D(z_t)")
    act: str = "gelu"
    rollout: int = Field(4, gt=0, description="steps of the rollout loss")
    stride: int = Field(1, gt=0)
    train: TrainSection = TrainSection(max_epochs=20, batch_size=16, lr=1e-3, progress_bar=False)


EmulatorSection = CNNSection | LatentODESection

#: The emulators: method name -> its config section.
EMULATORS: dict[str, type[Section]] = {"cnn": CNNSection, "latent_ode": LatentODESection}


# ----- time and grids ----------------------------------------------------------------------
def steps_per_save(save_every_days: float, dt: float) -> int:
    """Simulator time steps of ``dt`` seconds in one saved interval of ``save_every_days``.

    Examples
    --------
    >>> steps_per_save(1.0, 3600.0)
    24
    """
    every = 86400.0 * save_every_days / dt
    if abs(every - round(every)) > 1e-6 or round(every) < 1:
        raise ConfigError(
            f"simulate.save_every_days={save_every_days:g} is not a whole number of time steps of "
            f"simulate.dt={dt:g} s; choose dt dividing {86400.0 * save_every_days:g} s"
        )
    return round(every)


def n_saved(days: float, save_every_days: float, key: str) -> int:
    """Saved intervals in ``days``; a :class:`ConfigError` naming the config ``key`` if that is not
    a whole number.

    Examples
    --------
    >>> n_saved(10.0, 0.5, "evaluate.lead_days")
    20
    """
    n = days / save_every_days
    if abs(n - round(n)) > 1e-6:
        raise ConfigError(
            f"{key}={days:g} is not a whole number of saved intervals "
            f"(simulate.save_every_days={save_every_days}); use a multiple of it"
        )
    return round(n)


def _check_even(nx: int) -> None:
    if nx % 2:
        raise ConfigError(f"simulate.nx={nx} must be even (the spectral grid needs a Nyquist mode)")


def check_grids(nx: int, coarse_factor: int) -> None:
    """Check the QG grids: ``nx`` even, and the coarse grid ``nx / coarse_factor`` an even integer
    of at least 8 points; otherwise a :class:`ConfigError` line."""
    _check_even(nx)
    nc = nx // coarse_factor
    if nx % coarse_factor or nc < 8 or nc % 2:
        raise ConfigError(
            f"evaluate.coarse_factor={coarse_factor}: the coarse grid nx / factor = "
            f"{nx / coarse_factor:g} must be an even integer >= 8; use a divisor of "
            f"simulate.nx={nx}"
        )


def build_qg(
    preset: str,
    *,
    nx: int,
    length_km: float,
    dt: float,
    device: str = "cpu",
    filterfac: float | None = None,
) -> QGModel:
    """The QG model ``preset`` on an ``nx x nx`` grid of side ``length_km`` with step ``dt`` (s);
    ``filterfac`` None keeps the preset's small-scale filter. Errors are one :class:`ConfigError`.
    """
    extra = {} if filterfac is None else {"filterfac": filterfac}
    try:
        return QGModel(preset, nx=nx, L=length_km * 1e3, dt=dt, device=device, **extra)
    except UserInputError as exc:
        raise ConfigError(f"simulate: {exc}") from None


def spectral_resample(x: torch.Tensor, m: int) -> torch.Tensor:
    """Resample doubly periodic fields ``(..., n, n)`` to ``(..., m, m)`` in Fourier space.

    Keeps the wavenumbers ``|k|, |l| < min(n, m) / 2`` (the Nyquist modes are dropped) and pads
    with zeros: a truncation when ``m < n``, an exact band-limited interpolation when ``m > n``.
    A field made only of kept wavenumbers survives ``n -> m -> n`` unchanged.

    Examples
    --------
    >>> x = torch.cos(2 * torch.pi * torch.arange(16.0) / 16).expand(16, 16)
    >>> torch.allclose(spectral_resample(spectral_resample(x, 8), 16), x, atol=1e-6)
    True
    """
    n = x.shape[-1]
    if x.shape[-2] != n or m < 2:
        raise ValueError(f"spectral_resample needs square (..., n, n) fields, got {tuple(x.shape)}")
    fh = torch.fft.rfft2(x)  # (..., n, n//2+1)
    keep = min(n, m) // 2  # kept: 0 .. keep-1 and -(keep-1) .. -1
    out = fh.new_zeros((*fh.shape[:-2], m, m // 2 + 1))
    out[..., :keep, :keep] = fh[..., :keep, :keep]
    if keep > 1:
        out[..., m - keep + 1 :, :keep] = fh[..., n - keep + 1 :, :keep]
    return torch.fft.irfft2(out * (m / n) ** 2, s=(m, m))


def coarse_forecast(q0: torch.Tensor, coarse: Any, n_saves: int, every: int) -> torch.Tensor:
    """Forecast of fine-grid PV ``q0`` ``(B, 2, n, n)`` by the QG model ``coarse`` on a coarser grid.

    The initial PV is spectrally truncated to the coarse grid (:func:`spectral_resample`), the coarse
    model runs ``n_saves * every`` steps saving every ``every``, and each saved PV is spectrally
    interpolated back to the fine grid: ``(B, n_saves + 1, 2, n, n)``, the start included.
    """
    qc = coarse.run(spectral_resample(q0, coarse.nx), n_saves * every, every)
    return spectral_resample(qc, q0.shape[-1])


# ----- data --------------------------------------------------------------------------------
def simulate_qg_trajectories(
    model: QGModel,
    *,
    split_lengths: Sequence[tuple[str, int]],
    every: int,
    spinup_days: float,
    save_every_days: float,
    initial_amplitude: float,
    seed: int,
    preset: str,
) -> xr.Dataset:
    """One spun-up run of ``model`` saved every ``every`` steps, labelled by time split.

    Parameters
    ----------
    model : the QG model (its ``dt`` converts ``spinup_days`` into steps).
    split_lengths : ``(name, saved states)`` in time order; names of :data:`SPLITS` are labelled
        with their code, any other (a gap) with ``-1``.
    every, save_every_days : the saved interval in steps and in days.
    spinup_days : run before the first saved state (from random PV of ``initial_amplitude``,
        drawn with ``seed``).
    preset : the preset's name, for the title.

    Returns
    -------
    xr.Dataset
        ``trajectories.nc``: ``q`` and ``psi`` ``(time, layer, y, x)`` (float32), ``split``
        ``(time,)``, time in days since the spin-up start.
    """
    _check_even(model.nx)
    labels = np.concatenate(
        [np.full(n, SPLITS.get(name, -1), dtype=np.int8) for name, n in split_lengths]
    )
    with torch_threads(1), torch.no_grad():
        state = model.start(model.initial_pv(1, seed=seed, amplitude=initial_amplitude))
        state = model.advance(state, round(86400.0 * spinup_days / model.params.dt))
        snaps = [
            model.to_physical(st.qh) for st in model.trajectory(state, len(labels) * every, every)
        ]
        q = torch.cat(snaps, 0)  # (T, 2, y, x)
        psi = model.psi(q)
    km = model.coords_km().numpy()
    days = spinup_days + save_every_days * np.arange(1, len(labels) + 1)
    return xr.Dataset(
        {
            "q": (("time", "layer", "y", "x"), q.numpy().astype(np.float32), {"units": "s-1"}),
            "psi": (
                ("time", "layer", "y", "x"),
                psi.numpy().astype(np.float32),
                {"units": "m2 s-1"},
            ),
            "split": (
                ("time",),
                labels,
                {
                    "flag_values": np.array([-1, 0, 1, 2], np.int8),
                    "flag_meanings": "gap train val test",
                },
            ),
        },
        coords={
            "time": (
                "time",
                days,
                {
                    "units": "days since 2000-01-01 00:00:00",
                    "axis": "T",
                    "comment": "day 0 = spin-up start",
                },
            ),
            "layer": ("layer", np.array([1, 2])),
            "y": ("y", km, {"units": "km", "axis": "Y"}),
            "x": ("x", km, {"units": "km", "axis": "X"}),
        },
        attrs={
            "title": f"two-layer QG ({preset}) trajectories for emulation",
            "source": f"geodl.sim.QGModel: {model.params.describe()}",
            "qg_params": json.dumps(asdict(model.params)),
            "steps_per_save": every,
            "save_every_days": save_every_days,
            "Conventions": "CF-1.8",
        },
    )


def read_trajectories(path: str | Path, variable: str) -> dict[str, np.ndarray]:
    """The chosen ``variable`` of a ``trajectories.nc`` per split, with the test PV and the
    training statistics.

    Returns
    -------
    dict
        ``train``, ``val``, ``test``: ``(T, C, y, x)`` float32 in physical units; ``q_test``: the
        test PV; ``mean``, ``std``: ``(C, 1, 1)`` per-layer statistics of the training split.
    """
    path = Path(path)
    with xr.open_dataset(path) as ds:
        split = ds["split"].values
        x = ds[variable].values.astype(np.float32)  # (T, C, y, x)
        q = ds["q"].values
        out = {name: x[split == code] for name, code in SPLITS.items()}
        out["q_test"] = q[split == SPLITS["test"]]
    for name in SPLITS:
        if len(out[name]) < 2:
            raise DataError(
                f"{path.name}: the {name} split has {len(out[name])} saved states; "
                f"simulate.{name}_days must cover at least 2 saved intervals"
            )
    if not np.isfinite(out["train"]).all():
        raise DataError(f"{path.name}: non-finite values in the training split; re-simulate")
    out["mean"] = out["train"].mean(axis=(0, 2, 3), keepdims=True)[0]  # (C, 1, 1)
    out["std"] = out["train"].std(axis=(0, 2, 3), keepdims=True)[0]
    return out


# ----- the emulators -----------------------------------------------------------------------
def _check_depth(depth: int, nx: int) -> None:
    if nx % 2**depth:
        raise ConfigError(
            f"latent_ode.depth={depth}: simulate.nx={nx} is not divisible by "
            f"2**depth={2**depth}; lower the depth or change nx"
        )


def check_emulator(
    method: str, section: EmulatorSection, *, nx: int, n_train: int, n_val: int
) -> None:
    """Check that the emulator ``method`` of ``section`` can be trained on ``n_train`` / ``n_val``
    saved states of an ``nx x nx`` grid (its rollout is shorter, the latent grid divides it);
    otherwise a :class:`ConfigError` line."""
    for name, count in (("train", n_train), ("val", n_val)):
        if section.rollout >= count:
            raise ConfigError(
                f"{method}.rollout={section.rollout} steps needs more than the {count} saved "
                f"states of the {name} split; lower the rollout or raise simulate.{name}_days"
            )
    if isinstance(section, LatentODESection):
        _check_depth(section.depth, nx)
    adv = getattr(section, "adversarial", None)
    problem = adv.grid_problem(method, nx, nx) if adv is not None else None
    if problem:
        raise ConfigError(f"{problem} (the grid is simulate.nx={nx})")


def build_emulator(method: str, section: EmulatorSection, channels: int, nx: int) -> nn.Module:
    """The untrained emulator ``method`` ("cnn" or "latent_ode") of ``section``, for ``channels``
    fields of ``nx x nx``.

    Examples
    --------
    >>> net = build_emulator("cnn", CNNSection(width=4, n_layers=2), 2, 16)
    >>> tuple(net(torch.zeros(1, 2, 16, 16)).shape)
    (1, 2, 16, 16)
    """
    try:
        if method == "cnn" and isinstance(section, CNNSection):
            c = section
            return CNNEmulator(
                channels,
                width=c.width,
                n_layers=c.n_layers,
                kernel_size=c.kernel_size,
                mode="map",
                padding="circular",
                act=c.act,
            )
        if method != "latent_ode" or not isinstance(section, LatentODESection):
            raise ConfigError(
                f"unknown emulator '{method}' with a {type(section).__name__}; choose one of "
                + ", ".join(f"{k} ({v.__name__})" for k, v in EMULATORS.items())
            )
        d = section
        _check_depth(d.depth, nx)
        return LatentODE(
            channels,
            latent_channels=d.latent_channels,
            width=d.width,
            depth=d.depth,
            method=d.method,
            step_size=d.step_size,
            padding="circular",
            act=d.act,
        )
    except ConfigError:
        raise
    except UserInputError as exc:
        raise ConfigError(f"{method}: {exc}") from None


def _residual(method: str, section: EmulatorSection) -> bool:
    return method == "latent_ode" and isinstance(section, LatentODESection) and section.residual


def forecast_fn(model: nn.Module, method: str, residual: bool = False) -> Forecast:
    """``(x0 (B, C, H, W), n_steps) -> (B, n_steps + 1, C, H, W)``, normalised units.

    The CNN map is iterated. The latent ODE encodes ``x0`` once and decodes every step; with
    ``residual`` the forecast is ``x0 + D(z_t) - D(z_0)`` (the decoded change since the start), so
    that lead 0 is ``x0`` itself and the autoencoder need not reproduce the scales that persist.
    """
    if method == "cnn":
        return lambda x0, n: rollout(model, x0, n)

    def latent(x0: torch.Tensor, n: int) -> torch.Tensor:
        out = model(x0, torch.arange(n + 1, dtype=x0.dtype, device=x0.device))  # (B, n+1, C, H, W)
        return x0[:, None] + out - out[:, :1] if residual else out

    return latent


def rollout_loss(
    model: nn.Module, method: str, x: torch.Tensor, residual: bool = False
) -> torch.Tensor:
    """MSE of a rollout from ``x[:, 0]`` against ``x[:, 1:]`` (``(B, K+1, C, H, W)``); for the
    plain latent ODE the lead-0 reconstruction is scored too (the autoencoder's training signal).

    .. math:: L = \\operatorname{mean}_{k \\ge k_0} (M^k(x_0) - x_k)^2, \\quad
        k_0 = 0 \\text{ (plain latent ODE) or } 1
    """
    pred = forecast_fn(model, method, residual)(x[:, 0], x.shape[1] - 1)
    if method == "cnn" or residual:
        return (pred[:, 1:] - x[:, 1:]).pow(2).mean()
    return (pred - x).pow(2).mean()


def train_emulator(
    method: str,
    section: EmulatorSection,
    train: np.ndarray,
    val: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    threads: int,
    ckpt_dir: Path,
    log_dir: Path,
    key: str,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the emulator ``method`` of ``section`` with its multi-step rollout loss.

    Parameters
    ----------
    method, section : the emulator and its settings (``rollout``, ``stride``, ``train``, and for
        the CNN ``input_noise`` on each window's start).
    train, val : ``(T, C, H, W)`` in physical units, each longer than ``section.rollout`` steps.
    mean, std : ``(C, 1, 1)`` training statistics that normalise them.
    threads : torch CPU threads.
    ckpt_dir, log_dir, key : of :func:`geodl.training.fit` (``key`` identifies a resumable run).

    Returns
    -------
    (model, summary)
        The model with the best validation weights, and ``{"epochs", "best_val_loss"}``.
    """
    k = section.rollout
    residual = _residual(method, section)

    def windows(x: np.ndarray) -> TensorDataset:
        z = torch.as_tensor((x - mean) / std)  # (T, C, H, W)
        return TensorDataset(trajectory_windows(z[None], k, section.stride))  # (nW, K+1, C, H, W)

    torch.manual_seed(section.train.seed)
    model = build_emulator(method, section, train.shape[1], train.shape[-1])

    def noisy(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        noise = getattr(section, "input_noise", 0.0)
        if noise and net.training:
            # Why: a rollout feeds the map its own imperfect states; noisy starts teach it to
            # pull such states back rather than amplify them (long-rollout stability).
            x = torch.cat((x[:, :1] + noise * ranks.randn_like(x[:, :1]), x[:, 1:]), 1)
        return x

    def loss_fn(net: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        (x,) = batch  # (B, K+1, C, H, W)
        return {"loss": rollout_loss(net, method, noisy(net, x), residual)}

    def fields(net: nn.Module, batch: Any) -> tuple[dict[str, torch.Tensor], Any, Any]:
        """The rollout loss, and the K rolled-out states against the truth's (the
        discriminator judges them with time as channels: their temporal evolution too)."""
        x = noisy(net, batch[0])
        pred = forecast_fn(net, method, residual)(x[:, 0], x.shape[1] - 1)
        return {"loss": (pred[:, 1:] - x[:, 1:]).pow(2).mean()}, x[:, 1:], pred[:, 1:]

    adversarial = getattr(section, "adversarial", AdversarialSection())
    module = generator_module(
        model,
        loss_fn,
        fields,
        section.train,
        adversarial,
        channels=train.shape[1],
        n_times=k,
    )
    with torch_threads(threads):
        result = fit(
            module,
            windows(train),
            windows(val),
            section.train,
            ckpt_dir=ckpt_dir,
            log_dir=log_dir,
            key=key,
        )
    if result.best_path is not None:
        best = torch.load(result.best_path, map_location="cpu", weights_only=True)
        load_model_weights(module.model, best)
    return module.model, {"epochs": result.epochs, "best_val_loss": result.best_score}


# ----- the checkpoint ----------------------------------------------------------------------
def save_emulator(
    path: str | Path,
    model: nn.Module,
    *,
    method: str,
    variable: str,
    mean: np.ndarray,
    std: np.ndarray,
    epochs: int,
    best_val_loss: float | None,
    config: Mapping[str, Any],
) -> Path:
    """Write ``model`` to ``path`` as ``{"state_dict": ..., "geodl": metadata}``: the geodl
    version, ``method``, the ``variable`` and its training ``mean`` / ``std`` per layer, the
    training summary and the experiment's ``config``."""
    meta = {"method": method, "variable": variable, "mean": mean.ravel().tolist()}
    meta |= {"std": std.ravel().tolist(), "epochs": epochs, "best_val_loss": best_val_loss}
    return save_model(path, model.state_dict(), {**meta, "config": dict(config)})


def load_emulator(
    path: str | Path, method: str, section: EmulatorSection, channels: int, nx: int
) -> nn.Module:
    """The emulator of ``section`` with the weights of the file ``path`` (:func:`save_emulator`),
    in eval mode; a corrupt, foreign or mismatching file is one :class:`UserInputError` line."""
    ckpt = load_checkpoint(path)  # one-line UserInputError for a corrupt or foreign file
    model = build_emulator(method, section, channels, nx)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise UserInputError(
            f"model checkpoint '{path}' does not fit the config ({str(exc).splitlines()[0]}); "
            f"re-run the train_{method} stage"
        ) from None
    return model.eval()


# ----- scores ------------------------------------------------------------------------------
def _unfiltered(n_bins: int) -> int:
    """Annuli ``1 .. n`` below the QG filter's cut-off (0.65 of the grid's Nyquist wavenumber):
    above it the simulator's own filter removes energy by orders of magnitude per step, and log
    ratios there would swamp the comparison of the energetic scales."""
    return max(1, int(0.65 * n_bins))


def _best_time(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Best wall time of ``fn`` over ``repeats`` runs after one warm-up run (GPU synchronised)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _rollout_checked(
    fn: Forecast, x0: torch.Tensor, n: int, bound: float
) -> tuple[np.ndarray, int | None]:
    """A rollout ``(B, n+1, C, H, W)`` cut before its first bad step, and that step (or None)."""
    with torch.no_grad():
        z = fn(x0, n).cpu().numpy()
    bad = first_bad_step(z, bound)
    return (z if bad is None else z[:, :bad]), bad


def forecast_timings(
    models: Mapping[str, nn.Module],
    sections: Mapping[str, EmulatorSection],
    q0: torch.Tensor,
    x0: torch.Tensor,
    *,
    fine: QGModel,
    coarse: QGModel,
    n_lead: int,
    every: int,
    repeats: int,
    threads: int,
    gpu: bool,
) -> dict[str, dict[str, float]]:
    """Best wall time (s) of the same forecast by each method: ``{device: {method: seconds}}``.

    Parameters
    ----------
    models, sections : the emulators and their sections, by method name.
    q0 : fine PV ``(B, 2, n, n)``, the start of the simulators.
    x0 : the same states as normalised model input ``(B, C, n, n)``, the start of the emulators.
    fine, coarse : the QG models at the data's and at the coarse resolution (rebuilt, with the
        same parameters, on each device).
    n_lead, every : forecasts of ``n_lead`` saved outputs of ``every`` simulator steps each.
    repeats, threads : best of ``repeats`` after one warm-up run, on CPU with ``threads``.
    gpu : also time on the GPU when one is visible.

    Notes
    -----
    ``simulator`` is the fine QG model (float64, as it made the data), ``coarse_sim`` truncation,
    coarse run and interpolation back, each model in ``models`` runs in float32 without
    gradients. The cost of a forecast does not depend on the weights' values: untrained models
    time the same.
    """
    devices = [torch.device("cpu")]
    if gpu and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    timing: dict[str, dict[str, float]] = {}
    with torch_threads(threads), torch.no_grad():
        for dev in devices:
            t: dict[str, float] = {}
            fine_d = QGModel(fine.params, dealias=fine.dealias, device=dev)
            coarse_d = QGModel(coarse.params, dealias=coarse.dealias, device=dev)
            q_t = q0.to(dev)
            t["simulator"] = _best_time(
                lambda f=fine_d, q=q_t: f.run(q, n_lead * every, every), repeats, dev
            )
            t["coarse_sim"] = _best_time(
                lambda c=coarse_d, q=q_t: coarse_forecast(q, c, n_lead, every), repeats, dev
            )
            for m, model in models.items():
                fn = forecast_fn(model.to(dev), m, _residual(m, sections[m]))
                x_t = x0.to(dev)
                t[m] = _best_time(lambda f=fn, x=x_t: f(x, n_lead), repeats, dev)
                model.cpu()
            timing[dev.type] = t
    return timing


@dataclass
class EmulationScores:
    """What :func:`score_emulators` measured.

    ``results`` holds each method's entry of ``metrics.json``; ``curves`` the RMSE against lead
    (``lead_days``, cut where a method diverged); ``spectra`` ``(k, E(k))`` per method and for the
    truth; ``rollouts`` each emulator's long free rollout ``(T', C, H, W)`` and ``preds`` each
    method's forecasts ``(N, L', C, H, W)`` (normalised); ``truth`` ``(N, L+1, C, H, W)``; ``mean``
    / ``std`` the training statistics; ``timing`` that of :func:`forecast_timings`.
    """

    results: dict[str, dict[str, float]]
    curves: dict[str, np.ndarray]
    lead_days: np.ndarray
    spectra: dict[str, tuple[np.ndarray, np.ndarray]]
    rollouts: dict[str, np.ndarray]
    preds: dict[str, np.ndarray]
    truth: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    timing: dict[str, dict[str, float]]
    timing_setup: dict[str, Any]
    spectrum_floor: float
    variable: str
    save_every_days: float
    coarse_nx: int
    coarse_filterfac: float

    def metrics(self) -> dict[str, Any]:
        """``metrics.json``."""
        return {
            "task": "emulation",
            "methods": self.results,
            "units": {
                "rmse_day_1": "normalised",
                "time_cpu_s": "s",
                "speedup_cpu": "simulator time / method time",
            },
            "variable": self.variable,
            "lead_days": self.lead_days.tolist(),
            "rmse_vs_lead": {k: v.tolist() for k, v in self.curves.items()},
            "timing_s": self.timing,
            "timing_setup": self.timing_setup,
            "spectrum_log10_error_truth_halves": self.spectrum_floor,
            "coarse_nx": self.coarse_nx,
            "coarse_filterfac": self.coarse_filterfac,
            "coarse_comparison": "coarse forecast spectrally interpolated to the fine grid",
        }

    def forecast_dataset(self) -> xr.Dataset:
        """``forecast.nc``: every curve on its own lead / wavenumber axis (cut where a method
        left), the first forecast's last lead per method, and thinned long rollouts (physical
        units)."""
        truth, std, mean = self.truth, self.std, self.mean
        data: dict[str, Any] = {}
        coords: dict[str, Any] = {}
        for name, curve in self.curves.items():
            coords[f"lead_{name}"] = (
                f"lead_{name}",
                self.lead_days[: len(curve)],
                {"units": "days"},
            )
            data[f"rmse_{name}"] = ((f"lead_{name}",), curve, {"units": "1 (normalised)"})
        for name, (k, e) in self.spectra.items():
            coords[f"k_{name}"] = (f"k_{name}", k, {"units": "rad m-1"})
            data[f"ke_spectrum_{name}"] = ((f"k_{name}",), e, {"units": "m3 s-2"})
        last = truth.shape[1] - 1
        data["snapshot_truth"] = (("layer", "y", "x"), truth[0, last] * std + mean)
        data["snapshot_initial"] = (("layer", "y", "x"), truth[0, 0] * std + mean)
        for name, pred in self.preds.items():
            if pred.shape[1] == truth.shape[1] and name != "persistence":
                data[f"snapshot_{name}"] = (("layer", "y", "x"), pred[0, last] * std + mean)
        for name, roll in self.rollouts.items():
            step = max(1, len(roll) // 50)
            idx = np.arange(0, len(roll), step)
            coords[f"day_{name}"] = (f"day_{name}", idx * self.save_every_days, {"units": "days"})
            data[f"rollout_{name}"] = ((f"day_{name}", "layer", "y", "x"), roll[idx] * std + mean)
        attrs: dict[str, Any] = {
            "title": "QG emulation: forecast RMSE, KE spectra, snapshots, long rollouts",
            "variable": self.variable,
            "comment": "curves and rollouts stop where a method diverged; nothing is NaN-filled",
            "Conventions": "CF-1.8",
        }
        for name, r in self.results.items():
            attrs[f"diverged_at_day_{name}"] = r.get("diverged_at_day", -1.0)
        return xr.Dataset(data, coords=coords, attrs=attrs)


def score_emulators(
    models: Mapping[str, nn.Module],
    sections: Mapping[str, EmulatorSection],
    test: np.ndarray,
    q_test: np.ndarray,
    *,
    mean: np.ndarray,
    std: np.ndarray,
    fine: QGModel,
    coarse: QGModel,
    variable: str,
    save_every_days: float,
    lead_days: float,
    long_days: float,
    n_forecasts: int,
    bound: float,
    threads: int,
    timing_forecasts: int,
    timing_repeats: int,
    gpu_timing: bool,
) -> EmulationScores:
    """Score the trained emulators against persistence and the coarse simulator on the test period.

    Parameters
    ----------
    models, sections : the emulators (eval mode) and their sections, by method name.
    test : the test states ``(T, C, H, W)`` of ``variable`` ("psi" or "q"), physical units.
    q_test : the test PV ``(T, 2, H, W)``, the start of the simulators.
    mean, std : ``(C, 1, 1)`` training statistics (the emulators' normalisation).
    fine, coarse : the QG model of the data, and the one at the coarse resolution.
    save_every_days : one emulator step, one saved interval (days).
    lead_days, n_forecasts : forecasts of ``lead_days`` from ``n_forecasts`` evenly spaced
        initial states.
    long_days : the free rollout for the KE spectrum (from the first initial state).
    bound : diverged: a normalised value beyond this (the rollout is cut there).
    threads : torch CPU threads for the forecasts and the timing.
    timing_forecasts, timing_repeats, gpu_timing : of :func:`forecast_timings`.

    Returns
    -------
    EmulationScores
        Per method: forecast RMSE against lead (days), in normalised units (1 = one training
        standard deviation), for each emulator, for persistence, and for the coarse QG model (its
        initial PV is the true PV spectrally truncated to the coarse grid, its forecast spectrally
        interpolated back and scored on the fine grid, so its error at lead 0 is the energy of
        the scales the coarse grid cannot hold); the isotropic kinetic-energy spectrum of the
        second half of each long free rollout against that of the test truth, as the mean
        absolute log10 ratio over the annuli below the QG filter's cut-off of each grid (0.65 of
        its Nyquist wavenumber), with the same error between the two halves of the test truth as
        the sampling floor; wall-clock time and speed-up over the fine simulator; where a rollout
        became non-finite or left ``bound`` (``diverged_at_step`` / ``diverged_at_day``; nothing
        is NaN).
    """
    every = steps_per_save(save_every_days, fine.params.dt)
    n_lead = n_saved(lead_days, save_every_days, "evaluate.lead_days")
    n_long = n_saved(long_days, save_every_days, "evaluate.long_days")
    nc = coarse.nx
    z_test = (test - mean) / std
    starts = np.unique(np.linspace(0, len(test) - 1 - n_lead, n_forecasts).astype(int))
    truth = np.stack([z_test[i : i + n_lead + 1] for i in starts])  # (N, L+1, C, H, W)
    x0 = torch.as_tensor(z_test[starts])
    q0 = torch.as_tensor(q_test[starts], dtype=torch.float64)

    def to_var(q: torch.Tensor) -> np.ndarray:
        """PV ``(..., 2, n, n)`` -> the chosen variable, normalised."""
        v = fine.psi(q) if variable == "psi" else q
        return (v.numpy() - mean) / std

    lead_axis = np.arange(n_lead + 1) * save_every_days
    curves: dict[str, np.ndarray] = {}
    preds: dict[str, np.ndarray] = {}
    results: dict[str, dict[str, float]] = {}
    fns = {m: forecast_fn(model, m, _residual(m, sections[m])) for m, model in models.items()}
    with torch_threads(threads), torch.no_grad():
        preds["persistence"] = np.repeat(truth[:, :1], n_lead + 1, axis=1)
        try:
            preds["coarse_sim"] = to_var(coarse_forecast(q0, coarse, n_lead, every))
        except ValueError as exc:  # the simulator's CFL check
            raise ConfigError(f"coarse simulator (nx={nc}): {exc}") from None
        left_at: dict[str, int] = {}
        for m, fn in fns.items():
            pred, bad = _rollout_checked(fn, x0, n_lead, bound)
            preds[m] = pred
            if bad is not None:
                left_at[m] = bad
        for name, pred in preds.items():
            curves[name] = forecast_rmse(pred, truth[:, : pred.shape[1]])
        persist = curves["persistence"]
        for name, curve in curves.items():
            r: dict[str, float] = {}
            for d in sorted({1.0, 2.0, 5.0, lead_days, 10.0}):
                j = d / save_every_days
                if abs(j - round(j)) < 1e-9 and 0 < round(j) < len(curve):
                    r[f"rmse_day_{d:g}"] = float(curve[round(j)])
            if name != "persistence":
                n_ok = len(curve)
                ratio = curve[1:n_ok] / np.maximum(persist[1:n_ok], 1e-30)
                complete = n_ok == n_lead + 1
                r["beats_persistence_all_leads"] = float(complete and bool((ratio < 1).all()))
                if ratio.size:
                    r["max_rmse_ratio_to_persistence"] = float(ratio.max())
                    r["worst_lead_day"] = float(lead_axis[1 + int(ratio.argmax())])
            if name in left_at:
                r["forecast_diverged_at_day"] = float(lead_axis[left_at[name]])
            results[name] = r

        # Long rollouts and KE spectra.
        p = fine.params
        weights = (p.H1 / (p.H1 + p.H2), p.H2 / (p.H1 + p.H2))
        truth_psi = fine.psi(torch.as_tensor(q_test, dtype=torch.float64)).numpy()
        k_fine, e_truth = ke_spectrum(truth_psi, p.L, weights)
        half = len(truth_psi) // 2
        _, e_a = ke_spectrum(truth_psi[:half], p.L, weights)
        _, e_b = ke_spectrum(truth_psi[half:], p.L, weights)
        spectra: dict[str, tuple[np.ndarray, np.ndarray]] = {"truth": (k_fine, e_truth)}
        rollouts: dict[str, np.ndarray] = {}
        floor = _log_error(e_a, e_b, _unfiltered(len(k_fine)))
        x_long = x0[:1]
        for m, fn in fns.items():
            roll, bad = _rollout_checked(fn, x_long, n_long, bound)
            roll = roll[0]  # (T', C, H, W), cut before any bad step
            rollouts[m] = roll
            r = results[m]
            r["rollout_days"] = float((len(roll) - 1) * save_every_days)
            r["diverged"] = float(bad is not None)
            if bad is not None:
                r["diverged_at_step"] = float(bad)
                r["diverged_at_day"] = float(bad * save_every_days)
            used = roll[len(roll) // 2 :] if len(roll) >= 4 else roll[:0]
            if len(used):
                phys = used * std + mean
                psi = (
                    phys
                    if variable == "psi"
                    else fine.psi(torch.as_tensor(phys, dtype=torch.float64)).numpy()
                )
                k, e = ke_spectrum(psi, p.L, weights)
                spectra[m] = (k, e)
                r["spectrum_log10_error"] = _log_error(e, e_truth, _unfiltered(len(k)))
                r["ke_ratio_to_truth"] = float(e.sum() / e_truth.sum())
            else:
                r["spectrum_undefined"] = 1.0
        try:
            qc_long = coarse.run(spectral_resample(q0[:1], nc), n_long * every, every)[0]
        except ValueError as exc:
            raise ConfigError(f"coarse simulator (nx={nc}), long run: {exc}") from None
        psi_c = coarse.psi(qc_long[len(qc_long) // 2 :]).numpy()
        k_c, e_c = ke_spectrum(psi_c, p.L, weights)
        spectra["coarse_sim"] = (k_c, e_c)
        # Compared where the coarse grid resolves and does not filter (see _unfiltered).
        results["coarse_sim"]["spectrum_log10_error"] = _log_error(
            e_c, e_truth[: len(e_c)], _unfiltered(len(e_c))
        )
        results["coarse_sim"]["ke_ratio_to_truth"] = float(e_c.sum() / e_truth.sum())

        # Wall clock of the same forecasts: timing_forecasts initial states, n_lead saved outputs.
        n_t = min(timing_forecasts, len(starts))
        timing = forecast_timings(
            models,
            sections,
            q0[:n_t],
            x0[:n_t],
            fine=fine,
            coarse=coarse,
            n_lead=n_lead,
            every=every,
            repeats=timing_repeats,
            threads=threads,
            gpu=gpu_timing,
        )
        for dev, t in timing.items():
            for name in ("coarse_sim", *models):
                results[name][f"speedup_{dev}"] = t["simulator"] / t[name]
                results[name][f"time_{dev}_s"] = t[name]
    setup = {
        "forecasts": n_t,
        "lead_days": lead_days,
        "simulator_steps": n_lead * every,
        "simulator_dtype": "float64",
        "emulator_dtype": "float32",
        "threads": threads,
    }
    return EmulationScores(
        results=results,
        curves=curves,
        lead_days=lead_axis,
        spectra=spectra,
        rollouts=rollouts,
        preds=preds,
        truth=truth,
        mean=mean,
        std=std,
        timing=timing,
        timing_setup=setup,
        spectrum_floor=floor,
        variable=variable,
        save_every_days=save_every_days,
        coarse_nx=nc,
        coarse_filterfac=coarse.params.filterfac,
    )
