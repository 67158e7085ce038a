"""Emulation of gridded dynamics: the two-layer QG model -> learned emulators -> forecasts.

Stages: ``simulate`` (one spun-up run of :class:`geodl.sim.QGModel`, saved every
``save_every_days`` and split in time into train / val / test with gaps) -> ``train_cnn`` and
``train_latent_ode`` (one stage per method listed in ``methods``: a residual CNN one-step map with
circular padding, :class:`geodl.models.CNNEmulator`, and :class:`geodl.models.LatentODE`, both trained
with a multi-step rollout loss) -> ``evaluate`` -> ``report``. Two choices measured on the quick
config (BENCHMARKS.md): the CNN sees noise on each training window's start (``cnn.input_noise``;
without it the year-long rollout left the bound at day 223), and the latent ODE forecasts
``x0 + D(z_t) - D(z_0)`` (``latent_ode.residual``; decoding ``D(z_t)`` alone lost to persistence
at short leads, the autoencoder's reconstruction error being larger than one day's change).

One emulator step is one saved interval (``save_every_days``). The state is the streamfunction
``psi`` (or the PV ``q``) of both layers as two channels, normalised per layer by the training
split's mean and standard deviation (the statistics travel with each model).

``evaluate`` scores, on the test period:

- forecast RMSE against lead (days), in normalised units (1 = one training standard deviation),
  from ``n_forecasts`` evenly spaced initial states, for each emulator, for persistence, and for the
  QG simulator run at a coarser resolution (``coarse_factor`` fewer points per side): its initial
  PV is the true PV spectrally truncated to the coarse grid; its forecast is spectrally
  interpolated (zero padding) back to the fine grid and scored there against the truth, like every
  other method (so its error at lead 0 is the energy of the scales the coarse grid cannot hold;
  the coarse model's own small-scale filter, pyqg's, set relative to its grid, then damps the top
  third of its wavenumbers within a few steps: ``coarse_filterfac`` changes its strength);
- the isotropic kinetic-energy spectrum of a long free rollout (second half of ``long_days``)
  against the spectrum of the test truth, as the mean absolute log10 ratio over the annuli below
  the QG filter's cut-off of each grid (0.65 of its Nyquist wavenumber), with the same error
  between the two halves of the test truth as the sampling floor;
- wall-clock time of each method for the same forecasts (same initial states, same number of
  daily outputs, same device, measured in the same run, best of ``timing_repeats``), and the
  speed-up of each emulator over the fine simulator, on CPU and, when a GPU is visible, on GPU;
- divergence: a rollout that becomes non-finite or exceeds ``bound`` (normalised units) is cut at
  that step, and the step is reported (``diverged_at_step`` / ``diverged_at_day``); no NaN is
  written.

Python use::

    from geodl.pipeline import run_experiment
    from geodl.tasks import load_config

    cfg, exp = load_config("configs/qg_emulation_quick.yaml")
    run_experiment(cfg, exp, "runs/qg_emulation_quick")  # metrics.json, forecast.nc, report/
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from pydantic import Field

from geodl import __version__
from geodl.config import Section
from geodl.errors import ConfigError, DataError
from geodl.pipeline import Experiment, Stage, StageContext
from geodl.tasks.registry import ExperimentSection, register
from geodl.training import TrainSection, torch_threads

__all__ = [
    "EmulationConfig",
    "check_config",
    "coarse_forecast",
    "build_emulator",
    "forecast_timings",
    "first_bad_step",
    "ke_spectrum",
    "spectral_resample",
]

METHODS = ("cnn", "latent_ode")
SPLITS = {"train": 0, "val": 1, "test": 2}


class SimulateSection(Section):
    preset: Literal["eddy", "jet"] = "eddy"
    nx: int = Field(64, ge=8, description="grid points per side (even)")
    L_km: float = Field(1000.0, gt=0, description="domain side")
    dt: float = Field(3600.0, gt=0, description="simulator time step (s)")
    spinup_days: float = Field(1095.0, ge=0)
    save_every_days: float = Field(1.0, gt=0, description="saved interval = one emulator step")
    train_days: float = Field(600.0, gt=0)
    val_days: float = Field(60.0, gt=0)
    test_days: float = Field(120.0, gt=0)
    gap_days: float = Field(10.0, ge=0, description="unsaved-for-learning gap between splits")
    variable: Literal["psi", "q"] = "psi"
    initial_amplitude: float = Field(1e-6, gt=0)
    seed: int = 0


class CNNSection(Section):
    width: int = Field(32, gt=0)
    n_layers: int = Field(4, gt=0)
    kernel_size: int = Field(3, gt=0)
    act: str = "gelu"
    rollout: int = Field(4, gt=0, description="steps of the rollout loss")
    stride: int = Field(1, gt=0, description="between training windows")
    input_noise: float = Field(
        0.0, ge=0, description="std of noise added to each training window's start (normalised)"
    )
    train: TrainSection = TrainSection(max_epochs=20, batch_size=16, lr=1e-3, progress_bar=False)


class LatentODESection(Section):
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


class EvaluateSection(Section):
    lead_days: float = Field(10.0, gt=0)
    n_forecasts: int = Field(32, gt=0, description="initial states spread over the test period")
    coarse_factor: int = Field(2, ge=2, description="the coarse simulator has nx / this points")
    coarse_filterfac: float | None = Field(
        None, ge=0, description="small-scale filter of the coarse simulator (None: the preset's)"
    )
    long_days: float = Field(365.0, gt=0, description="free rollout for the KE spectrum")
    bound: float = Field(10.0, gt=0, description="diverged: a normalised value beyond this")
    timing_repeats: int = Field(3, gt=0)
    timing_forecasts: int = Field(8, gt=0, description="forecasts timed together (one batch)")
    gpu_timing: bool = Field(True, description="also time on GPU when one is visible")
    threads: int = Field(1, gt=0, description="torch CPU threads for evaluation and timing")


class EmulationConfig(Section):
    experiment: ExperimentSection
    simulate: SimulateSection = SimulateSection()
    methods: list[Literal["cnn", "latent_ode"]] = Field(default_factory=lambda: list(METHODS))
    cnn: CNNSection = CNNSection()
    latent_ode: LatentODESection = LatentODESection()
    evaluate: EvaluateSection = EvaluateSection()


# --------------------------------------------------------------------------------------------
# pure helpers (tested alone)


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


def ke_spectrum(
    psi: np.ndarray, length_m: float, weights: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic kinetic-energy spectrum of streamfunctions ``psi`` ``(N, 2, n, n)`` (m^2/s).

    Returns wavenumbers ``k`` (rad/m, bin centres ``i * dk``, ``i = 1 .. n/2``) and ``E(k)``
    (m^3/s^2), the layer-weighted (``weights``, e.g. ``H_i / H``) kinetic energy
    ``0.5 K^2 |psi_hat|^2`` summed over each annulus, averaged over the ``N`` snapshots, divided by
    ``dk``: ``sum(E) * dk`` is the mean kinetic energy per unit mass of the resolved annuli.
    """
    n = psi.shape[-1]
    ph = np.fft.fft2(psi) / n**2
    k1 = 2 * np.pi * np.fft.fftfreq(n, d=length_m / n)
    kk = np.sqrt(k1[None, :] ** 2 + k1[:, None] ** 2)
    w = np.asarray(weights, dtype=float)[None, :, None, None]
    dens = (0.5 * kk**2 * (w * np.abs(ph) ** 2).sum(1)).mean(0)  # (n, n)
    dk = 2 * np.pi / length_m
    idx = np.rint(kk / dk).astype(int)
    n_bins = n // 2
    e = np.bincount(idx.ravel(), weights=dens.ravel(), minlength=n_bins + 1)[1 : n_bins + 1]
    return dk * np.arange(1, n_bins + 1), e / dk


def first_bad_step(x: np.ndarray, bound: float) -> int | None:
    """First index along axis 1 of ``x`` ``(N, T, ...)`` where any member is non-finite or beyond
    ``bound`` in absolute value; None if there is none.

    Examples
    --------
    >>> first_bad_step(np.array([[[0.0], [1.0], [20.0], [np.nan]]]), 10.0)
    2
    """
    flat = np.abs(x.reshape(x.shape[0], x.shape[1], -1))
    bad = ~(flat <= bound)  # NaN compares False: counted as bad
    hits = np.flatnonzero(bad.any(axis=(0, 2)))
    return int(hits[0]) if hits.size else None


def coarse_forecast(q0: torch.Tensor, coarse: Any, n_saves: int, every: int) -> torch.Tensor:
    """Forecast of fine-grid PV ``q0`` ``(B, 2, n, n)`` by the QG model ``coarse`` on a coarser grid.

    The initial PV is spectrally truncated to the coarse grid (:func:`spectral_resample`), the coarse
    model runs ``n_saves * every`` steps saving every ``every``, and each saved PV is spectrally
    interpolated back to the fine grid: ``(B, n_saves + 1, 2, n, n)``, the start included.
    """
    qc = coarse.run(spectral_resample(q0, coarse.nx), n_saves * every, every)
    return spectral_resample(qc, q0.shape[-1])


# --------------------------------------------------------------------------------------------
# data


def _steps_per_save(s: SimulateSection) -> int:
    every = 86400.0 * s.save_every_days / s.dt
    if abs(every - round(every)) > 1e-6 or round(every) < 1:
        raise ConfigError(
            f"simulate.save_every_days={s.save_every_days:g} is not a whole number of time steps of "
            f"simulate.dt={s.dt:g} s; choose dt dividing {86400.0 * s.save_every_days:g} s"
        )
    return round(every)


def _n_saved(days: float, s: SimulateSection, key: str) -> int:
    n = days / s.save_every_days
    if abs(n - round(n)) > 1e-6:
        raise ConfigError(
            f"{key}={days:g} is not a whole number of saved intervals "
            f"(simulate.save_every_days={s.save_every_days}); use a multiple of it"
        )
    return round(n)


def _qg(
    s: SimulateSection, nx: int | None = None, device: str = "cpu", filterfac: float | None = None
) -> Any:
    from geodl.errors import UserInputError
    from geodl.sim import QGModel

    extra = {} if filterfac is None else {"filterfac": filterfac}
    try:
        return QGModel(s.preset, nx=nx or s.nx, L=s.L_km * 1e3, dt=s.dt, device=device, **extra)
    except UserInputError as exc:
        raise ConfigError(f"simulate: {exc}") from None


def _simulate(ctx: StageContext) -> None:
    s = ctx.cfg.simulate
    if s.nx % 2:
        raise ConfigError(
            f"simulate.nx={s.nx} must be even (the spectral grid needs a Nyquist mode)"
        )
    every = _steps_per_save(s)
    parts = [
        ("train", _n_saved(s.train_days, s, "simulate.train_days")),
        ("gap", _n_saved(s.gap_days, s, "simulate.gap_days")),
        ("val", _n_saved(s.val_days, s, "simulate.val_days")),
        ("gap", _n_saved(s.gap_days, s, "simulate.gap_days")),
        ("test", _n_saved(s.test_days, s, "simulate.test_days")),
    ]
    labels = np.concatenate([np.full(n, SPLITS.get(name, -1), dtype=np.int8) for name, n in parts])
    model = _qg(s)
    with torch_threads(1), torch.no_grad():
        state = model.start(model.initial_pv(1, seed=s.seed, amplitude=s.initial_amplitude))
        state = model.advance(state, round(86400.0 * s.spinup_days / s.dt))
        snaps = [
            model.to_physical(st.qh) for st in model.trajectory(state, len(labels) * every, every)
        ]
        q = torch.cat(snaps, 0)  # (T, 2, y, x)
        psi = model.psi(q)
    km = model.coords_km().numpy()
    days = s.spinup_days + s.save_every_days * np.arange(1, len(labels) + 1)
    ds = xr.Dataset(
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
            "title": f"two-layer QG ({s.preset}) trajectories for emulation",
            "source": f"geodl.sim.QGModel: {model.params.describe()}",
            "qg_params": json.dumps(asdict(model.params)),
            "steps_per_save": every,
            "save_every_days": s.save_every_days,
            "Conventions": "CF-1.8",
        },
    )
    ds.to_netcdf(ctx.output("trajectories.nc"))


def _series(ctx: StageContext) -> dict[str, Any]:
    """The chosen variable per split (physical units), the test PV, and the training statistics."""
    var = ctx.cfg.simulate.variable
    with xr.open_dataset(ctx.input("trajectories.nc")) as ds:
        split = ds["split"].values
        x = ds[var].values.astype(np.float32)  # (T, C, y, x)
        q = ds["q"].values
        out = {name: x[split == code] for name, code in SPLITS.items()}
        out["q_test"] = q[split == SPLITS["test"]]
    for name in SPLITS:
        if len(out[name]) < 2:
            raise DataError(
                f"trajectories.nc: the {name} split has {len(out[name])} saved states; "
                f"simulate.{name}_days must cover at least 2 saved intervals"
            )
    if not np.isfinite(out["train"]).all():
        raise DataError("trajectories.nc: non-finite values in the training split; re-simulate")
    out["mean"] = out["train"].mean(axis=(0, 2, 3), keepdims=True)[0]  # (C, 1, 1)
    out["std"] = out["train"].std(axis=(0, 2, 3), keepdims=True)[0]
    return out


# --------------------------------------------------------------------------------------------
# models


def build_emulator(cfg: Any, method: str, channels: int, nx: int) -> torch.nn.Module:
    """The untrained ``method`` ("cnn" or "latent_ode") for ``channels`` fields of ``nx x nx``."""
    from geodl.errors import UserInputError
    from geodl.models import CNNEmulator, LatentODE

    try:
        if method == "cnn":
            c = cfg.cnn
            return CNNEmulator(
                channels,
                width=c.width,
                n_layers=c.n_layers,
                kernel_size=c.kernel_size,
                mode="map",
                padding="circular",
                act=c.act,
            )
        c = cfg.latent_ode
        if nx % 2**c.depth:
            raise ConfigError(
                f"latent_ode.depth={c.depth}: simulate.nx={nx} is not divisible by "
                f"2**depth={2**c.depth}; lower the depth or change nx"
            )
        return LatentODE(
            channels,
            latent_channels=c.latent_channels,
            width=c.width,
            depth=c.depth,
            method=c.method,
            step_size=c.step_size,
            padding="circular",
            act=c.act,
        )
    except ConfigError:
        raise
    except UserInputError as exc:
        raise ConfigError(f"{method}: {exc}") from None


def _forecast_fn(
    model: torch.nn.Module, method: str, residual: bool = False
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """``(x0 (B, C, H, W), n_steps) -> (B, n_steps + 1, C, H, W)``, normalised units.

    The CNN map is iterated. The latent ODE encodes ``x0`` once and decodes every step; with
    ``residual`` the forecast is ``x0 + D(z_t) - D(z_0)`` (the decoded change since the start), so
    that lead 0 is ``x0`` itself and the autoencoder need not reproduce the scales that persist.
    """
    if method == "cnn":

        def cnn(x0: torch.Tensor, n: int) -> torch.Tensor:
            out = [x0]
            for _ in range(n):
                out.append(model(out[-1]))
            return torch.stack(out, 1)

        return cnn

    def latent(x0: torch.Tensor, n: int) -> torch.Tensor:
        out = model(x0, torch.arange(n + 1, dtype=x0.dtype, device=x0.device))  # (B, n+1, C, H, W)
        return x0[:, None] + out - out[:, :1] if residual else out

    return latent


def _residual(cfg: Any, method: str) -> bool:
    return method == "latent_ode" and cfg.latent_ode.residual


def _rollout_loss(
    model: torch.nn.Module, method: str, x: torch.Tensor, residual: bool = False
) -> torch.Tensor:
    """MSE of a rollout from ``x[:, 0]`` against ``x[:, 1:]`` (``(B, K+1, C, H, W)``); for the
    plain latent ODE the lead-0 reconstruction is scored too (the autoencoder's training signal)."""
    pred = _forecast_fn(model, method, residual)(x[:, 0], x.shape[1] - 1)
    if method == "cnn" or residual:
        return (pred[:, 1:] - x[:, 1:]).pow(2).mean()
    return (pred - x).pow(2).mean()


def _train_stage(method: str) -> Callable[[StageContext], None]:
    def run(ctx: StageContext) -> None:
        from torch.utils.data import TensorDataset

        from geodl.training import TaskModule, fit, load_model_weights

        cfg = ctx.cfg
        section = getattr(cfg, method)
        data = _series(ctx)
        mean, std = data["mean"], data["std"]
        k = section.rollout  # shorter than each split: checked in check_config

        def windows(x: np.ndarray) -> TensorDataset:
            z = torch.as_tensor((x - mean) / std)  # (T, C, H, W)
            w = z.unfold(0, k + 1, section.stride)  # (nW, C, H, W, K+1)
            return TensorDataset(w.permute(0, 4, 1, 2, 3).contiguous())

        torch.manual_seed(section.train.seed)
        channels, nx = data["train"].shape[1], data["train"].shape[-1]
        model = build_emulator(cfg, method, channels, nx)

        def loss_fn(net: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
            (x,) = batch  # (B, K+1, C, H, W)
            noise = getattr(section, "input_noise", 0.0)
            if noise and net.training:
                # Why: a rollout feeds the map its own imperfect states; noisy starts teach it to
                # pull such states back rather than amplify them (long-rollout stability).
                x = torch.cat((x[:, :1] + noise * torch.randn_like(x[:, :1]), x[:, 1:]), 1)
            return {"loss": _rollout_loss(net, method, x, _residual(cfg, method))}

        module = TaskModule(model, loss_fn, section.train)
        with torch_threads(cfg.evaluate.threads):
            result = fit(
                module,
                windows(data["train"]),
                windows(data["val"]),
                section.train,
                ckpt_dir=ctx.run_dir / "checkpoints" / method,
                log_dir=ctx.run_dir / "logs" / method,
                key=ctx.key,
            )
        if result.best_path is not None:
            best = torch.load(result.best_path, map_location="cpu", weights_only=True)
            load_model_weights(module.model, best)
        torch.save(
            {
                "state_dict": module.model.state_dict(),
                "geodl": {
                    "version": __version__,
                    "method": method,
                    "variable": cfg.simulate.variable,
                    "mean": mean.ravel().tolist(),
                    "std": std.ravel().tolist(),
                    "epochs": result.epochs,
                    "best_val_loss": result.best_score,
                    "config": cfg.model_dump(mode="json"),
                },
            },
            ctx.output(f"models/{method}.pt"),
        )

    return run


def _load_model(ctx: StageContext, method: str, channels: int, nx: int) -> torch.nn.Module:
    from geodl.errors import UserInputError
    from geodl.training import load_checkpoint

    path = ctx.input(f"models/{method}.pt")
    ckpt = load_checkpoint(path)  # one-line UserInputError for a corrupt or foreign file
    model = build_emulator(ctx.cfg, method, channels, nx)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise UserInputError(
            f"model checkpoint '{path}' does not fit the config ({str(exc).splitlines()[0]}); "
            f"re-run the train_{method} stage"
        ) from None
    return model.eval()


# --------------------------------------------------------------------------------------------
# evaluation


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
    fn: Callable[[torch.Tensor, int], torch.Tensor], x0: torch.Tensor, n: int, bound: float
) -> tuple[np.ndarray, int | None]:
    """A rollout ``(B, n+1, C, H, W)`` cut before its first bad step, and that step (or None)."""
    with torch.no_grad():
        z = fn(x0, n).cpu().numpy()
    bad = first_bad_step(z, bound)
    return (z if bad is None else z[:, :bad]), bad


def forecast_timings(
    cfg: EmulationConfig,
    models: dict[str, torch.nn.Module],
    q0: torch.Tensor,
    x0: torch.Tensor,
) -> dict[str, dict[str, float]]:
    """Best wall time (s) of the same forecast by each method: ``{device: {method: seconds}}``.

    From fine PV ``q0`` ``(B, 2, n, n)`` (the simulators) and the same states as normalised model
    input ``x0`` ``(B, C, n, n)`` (the emulators), ``evaluate.lead_days`` of daily outputs:
    ``simulator`` (the fine QG model, float64 as it made the data), ``coarse_sim`` (truncation,
    coarse run, interpolation back), and each model in ``models`` (float32, no gradients), after
    one warm-up run, best of ``evaluate.timing_repeats``; on CPU with ``evaluate.threads`` threads,
    and on the GPU too when one is visible and ``evaluate.gpu_timing`` is set. The cost of a
    forecast does not depend on the weights' values: untrained models time the same.
    """
    s, ev = cfg.simulate, cfg.evaluate
    every = _steps_per_save(s)
    n_lead = _n_saved(ev.lead_days, s, "evaluate.lead_days")
    nc = s.nx // ev.coarse_factor
    devices = [torch.device("cpu")]
    if ev.gpu_timing and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    timing: dict[str, dict[str, float]] = {}
    with torch_threads(ev.threads), torch.no_grad():
        for dev in devices:
            t: dict[str, float] = {}
            fine = _qg(s, device=str(dev))
            coarse = _qg(s, nx=nc, device=str(dev), filterfac=ev.coarse_filterfac)
            q_t = q0.to(dev)
            t["simulator"] = _best_time(
                lambda f=fine, q=q_t: f.run(q, n_lead * every, every), ev.timing_repeats, dev
            )
            t["coarse_sim"] = _best_time(
                lambda c=coarse, q=q_t: coarse_forecast(q, c, n_lead, every), ev.timing_repeats, dev
            )
            for m, model in models.items():
                fn = _forecast_fn(model.to(dev), m, _residual(cfg, m))
                x_t = x0.to(dev)
                t[m] = _best_time(lambda f=fn, x=x_t: f(x, n_lead), ev.timing_repeats, dev)
                model.cpu()
            timing[dev.type] = t
    return timing


def _evaluate(ctx: StageContext) -> None:
    cfg = ctx.cfg
    s, ev = cfg.simulate, cfg.evaluate
    from geodl.metrics import forecast_rmse

    data = _series(ctx)
    mean, std = data["mean"], data["std"]
    test, q_test = data["test"], data["q_test"]  # (T, C, H, W)
    every = _steps_per_save(s)
    n_lead = _n_saved(ev.lead_days, s, "evaluate.lead_days")
    n_long = _n_saved(ev.long_days, s, "evaluate.long_days")
    nc = s.nx // ev.coarse_factor  # checked in check_config
    fine = _qg(s)
    coarse = _qg(s, nx=nc, filterfac=ev.coarse_filterfac)
    channels, nx = test.shape[1], test.shape[-1]
    z_test = (test - mean) / std
    starts = np.unique(np.linspace(0, len(test) - 1 - n_lead, ev.n_forecasts).astype(int))
    truth = np.stack([z_test[i : i + n_lead + 1] for i in starts])  # (N, L+1, C, H, W)
    x0 = torch.as_tensor(z_test[starts])
    q0 = torch.as_tensor(q_test[starts], dtype=torch.float64)

    def to_var(q: torch.Tensor) -> np.ndarray:
        """PV ``(..., 2, n, n)`` -> the chosen variable, normalised."""
        v = fine.psi(q) if s.variable == "psi" else q
        return (v.numpy() - mean) / std

    lead_days = np.arange(n_lead + 1) * s.save_every_days
    curves: dict[str, np.ndarray] = {}
    preds: dict[str, np.ndarray] = {}
    results: dict[str, dict[str, float]] = {}
    with torch_threads(ev.threads), torch.no_grad():
        preds["persistence"] = np.repeat(truth[:, :1], n_lead + 1, axis=1)
        try:
            preds["coarse_sim"] = to_var(coarse_forecast(q0, coarse, n_lead, every))
        except ValueError as exc:  # the simulator's CFL check
            raise ConfigError(f"coarse simulator (nx={nc}): {exc}") from None
        models = {m: _load_model(ctx, m, channels, nx) for m in cfg.methods}
        left_at: dict[str, int] = {}
        for m, model in models.items():
            pred, bad = _rollout_checked(
                _forecast_fn(model, m, _residual(cfg, m)), x0, n_lead, ev.bound
            )
            preds[m] = pred
            if bad is not None:
                left_at[m] = bad
        for name, pred in preds.items():
            curves[name] = forecast_rmse(pred, truth[:, : pred.shape[1]])
        persist = curves["persistence"]
        for name, curve in curves.items():
            r: dict[str, float] = {}
            for d in sorted({1.0, 2.0, 5.0, ev.lead_days, 10.0}):
                j = d / s.save_every_days
                if abs(j - round(j)) < 1e-9 and 0 < round(j) < len(curve):
                    r[f"rmse_day_{d:g}"] = float(curve[round(j)])
            if name != "persistence":
                n_ok = len(curve)
                ratio = curve[1:n_ok] / np.maximum(persist[1:n_ok], 1e-30)
                complete = n_ok == n_lead + 1
                r["beats_persistence_all_leads"] = float(complete and bool((ratio < 1).all()))
                if ratio.size:
                    r["max_rmse_ratio_to_persistence"] = float(ratio.max())
                    r["worst_lead_day"] = float(lead_days[1 + int(ratio.argmax())])
            if name in left_at:
                r["forecast_diverged_at_day"] = float(lead_days[left_at[name]])
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
        for m, model in models.items():
            roll, bad = _rollout_checked(
                _forecast_fn(model, m, _residual(cfg, m)), x_long, n_long, ev.bound
            )
            roll = roll[0]  # (T', C, H, W), cut before any bad step
            rollouts[m] = roll
            r = results[m]
            r["rollout_days"] = float((len(roll) - 1) * s.save_every_days)
            r["diverged"] = float(bad is not None)
            if bad is not None:
                r["diverged_at_step"] = float(bad)
                r["diverged_at_day"] = float(bad * s.save_every_days)
            used = roll[len(roll) // 2 :] if len(roll) >= 4 else roll[:0]
            if len(used):
                phys = used * std + mean
                psi = (
                    phys
                    if s.variable == "psi"
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
        n_t = min(ev.timing_forecasts, len(starts))
        timing = forecast_timings(cfg, models, q0[:n_t], x0[:n_t])
        for dev, t in timing.items():
            for name in ("coarse_sim", *models):
                results[name][f"speedup_{dev}"] = t["simulator"] / t[name]
                results[name][f"time_{dev}_s"] = t[name]
    for name in ("cnn", "latent_ode"):
        if name in results:
            ctx.log.info("emulation %s: %s", name, results[name])
    metrics = {
        "task": "emulation",
        "methods": results,
        "units": {
            "rmse_day_1": "normalised",
            "time_cpu_s": "s",
            "speedup_cpu": "simulator time / method time",
        },
        "variable": s.variable,
        "lead_days": lead_days.tolist(),
        "rmse_vs_lead": {k: v.tolist() for k, v in curves.items()},
        "timing_s": timing,
        "timing_setup": {
            "forecasts": n_t,
            "lead_days": ev.lead_days,
            "simulator_steps": n_lead * every,
            "simulator_dtype": "float64",
            "emulator_dtype": "float32",
            "threads": ev.threads,
        },
        "spectrum_log10_error_truth_halves": floor,
        "coarse_nx": nc,
        "coarse_filterfac": coarse.params.filterfac,
        "coarse_comparison": "coarse forecast spectrally interpolated to the fine grid",
    }
    ctx.output("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _write_forecast(ctx, curves, lead_days, spectra, rollouts, preds, truth, mean, std, results)


def _unfiltered(n_bins: int) -> int:
    """Annuli ``1 .. n`` below the QG filter's cut-off (0.65 of the grid's Nyquist wavenumber):
    above it the simulator's own filter removes energy by orders of magnitude per step, and log
    ratios there would swamp the comparison of the energetic scales."""
    return max(1, int(0.65 * n_bins))


def _log_error(e: np.ndarray, ref: np.ndarray, n: int) -> float:
    """Mean ``|log10(e / ref)|`` over the first ``n`` annuli where both are positive."""
    e, ref = e[:n], ref[:n]
    ok = (e > 0) & (ref > 0)
    return float(np.abs(np.log10(e[ok] / ref[ok])).mean()) if ok.any() else math.inf


def _write_forecast(
    ctx: StageContext,
    curves: dict[str, np.ndarray],
    lead_days: np.ndarray,
    spectra: dict[str, tuple[np.ndarray, np.ndarray]],
    rollouts: dict[str, np.ndarray],
    preds: dict[str, np.ndarray],
    truth: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    results: dict[str, dict[str, float]],
) -> None:
    """``forecast.nc``: every curve on its own lead / wavenumber axis (cut where a method left),
    the first forecast's last lead per method, and thinned long rollouts (physical units)."""
    var = ctx.cfg.simulate.variable
    save = ctx.cfg.simulate.save_every_days
    data: dict[str, Any] = {}
    coords: dict[str, Any] = {}
    for name, curve in curves.items():
        coords[f"lead_{name}"] = (f"lead_{name}", lead_days[: len(curve)], {"units": "days"})
        data[f"rmse_{name}"] = ((f"lead_{name}",), curve, {"units": "1 (normalised)"})
    for name, (k, e) in spectra.items():
        coords[f"k_{name}"] = (f"k_{name}", k, {"units": "rad m-1"})
        data[f"ke_spectrum_{name}"] = ((f"k_{name}",), e, {"units": "m3 s-2"})
    last = truth.shape[1] - 1
    data["snapshot_truth"] = (("layer", "y", "x"), truth[0, last] * std + mean)
    data["snapshot_initial"] = (("layer", "y", "x"), truth[0, 0] * std + mean)
    for name, pred in preds.items():
        if pred.shape[1] == truth.shape[1] and name != "persistence":
            data[f"snapshot_{name}"] = (("layer", "y", "x"), pred[0, last] * std + mean)
    for name, roll in rollouts.items():
        step = max(1, len(roll) // 50)
        idx = np.arange(0, len(roll), step)
        coords[f"day_{name}"] = (f"day_{name}", idx * save, {"units": "days"})
        data[f"rollout_{name}"] = ((f"day_{name}", "layer", "y", "x"), roll[idx] * std + mean)
    attrs: dict[str, Any] = {
        "title": "QG emulation: forecast RMSE, KE spectra, snapshots, long rollouts",
        "variable": var,
        "comment": "curves and rollouts stop where a method diverged; nothing is NaN-filled",
        "Conventions": "CF-1.8",
    }
    for name, r in results.items():
        attrs[f"diverged_at_day_{name}"] = r.get("diverged_at_day", -1.0)
    xr.Dataset(data, coords=coords, attrs=attrs).to_netcdf(ctx.output("forecast.nc"))


def _report(ctx: StageContext) -> None:
    from geodl.tasks.emulation_report import write_emulation_report

    write_emulation_report(ctx)


def check_config(cfg: EmulationConfig) -> None:
    """Cross-section checks, before any stage runs: every error is one :class:`ConfigError` line."""
    s, ev = cfg.simulate, cfg.evaluate
    if not cfg.methods:
        raise ConfigError("methods is empty; list at least one of " + ", ".join(METHODS))
    if len(set(cfg.methods)) != len(cfg.methods):
        raise ConfigError(f"methods {cfg.methods} lists a method twice; list each once")
    if s.nx % 2:
        raise ConfigError(
            f"simulate.nx={s.nx} must be even (the spectral grid needs a Nyquist mode)"
        )
    _steps_per_save(s)
    n = {name: _n_saved(getattr(s, f"{name}_days"), s, f"simulate.{name}_days") for name in SPLITS}
    _n_saved(s.gap_days, s, "simulate.gap_days")
    _n_saved(s.spinup_days, s, "simulate.spinup_days")
    n_lead = _n_saved(ev.lead_days, s, "evaluate.lead_days")
    _n_saved(ev.long_days, s, "evaluate.long_days")
    for name, count in n.items():
        if count < 2:
            raise ConfigError(
                f"simulate.{name}_days={getattr(s, f'{name}_days'):g} gives {count} saved state(s); "
                "each split needs at least 2"
            )
    for method in cfg.methods:
        k = getattr(cfg, method).rollout
        for name in ("train", "val"):
            if k >= n[name]:
                raise ConfigError(
                    f"{method}.rollout={k} steps needs more than the {n[name]} saved states of the "
                    f"{name} split; lower the rollout or raise simulate.{name}_days"
                )
    if n_lead >= n["test"]:
        raise ConfigError(
            f"evaluate.lead_days={ev.lead_days:g} is not shorter than the test period "
            f"({n['test']} saved states); lower it or raise simulate.test_days"
        )
    nc = s.nx // ev.coarse_factor
    if s.nx % ev.coarse_factor or nc < 8 or nc % 2:
        raise ConfigError(
            f"evaluate.coarse_factor={ev.coarse_factor}: the coarse grid nx / factor = "
            f"{s.nx / ev.coarse_factor:g} must be an even integer >= 8; use a divisor of "
            f"simulate.nx={s.nx}"
        )
    if "latent_ode" in cfg.methods and s.nx % 2**cfg.latent_ode.depth:
        raise ConfigError(
            f"latent_ode.depth={cfg.latent_ode.depth}: simulate.nx={s.nx} is not divisible by "
            f"2**depth={2**cfg.latent_ode.depth}; lower the depth or change nx"
        )
    _qg(s)
    _qg(s, nx=nc, filterfac=ev.coarse_filterfac)


def _stages(cfg: Any) -> tuple[Stage, ...]:
    check_config(cfg)
    stages = [Stage("simulate", _simulate, sections=("simulate",), outputs=("trajectories.nc",))]
    for method in cfg.methods:
        stages.append(
            Stage(
                f"train_{method}",
                _train_stage(method),
                # Not evaluate.threads: the thread count changes the speed, not the model.
                sections=(method, "simulate.variable"),
                needs=("simulate",),
                outputs=(f"models/{method}.pt",),
            )
        )
    trained = tuple(f"train_{m}" for m in cfg.methods)
    stages.append(
        Stage(
            "evaluate",
            _evaluate,
            sections=("evaluate", "methods", "simulate", *cfg.methods),
            needs=("simulate", *trained),
            outputs=("metrics.json", "forecast.nc"),
        )
    )
    stages.append(
        Stage(
            "report",
            _report,
            sections=("methods", "experiment.name"),
            needs=("evaluate",),
            outputs=("report",),
        )
    )
    return tuple(stages)


EXPERIMENT = register(Experiment(task="emulation", schema=EmulationConfig, stage_factory=_stages))
