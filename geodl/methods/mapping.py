"""Mapping methods: one registry, ``name -> (config section, fit, reconstruct)``.

The mapping task (:mod:`geodl.tasks.mapping`) and the Python API (:mod:`geodl.mapping`) both go
through :data:`METHODS`; a method's defaults are stated once, in its section.

Every method has the same two verbs:

- ``fit(section, data, artifact, *, work_dir, key, metadata) -> dict``: learn (or tune) on
  ``data.splits["train"]`` / ``["val"]`` and write everything :func:`reconstruct` needs into the
  file ``artifact``; returns a JSON-able summary (for ``metrics.json``).
- ``reconstruct(section, data, artifact, split) -> (mean, std | None)``: the complete field over
  the time range ``split`` of ``data.source`` (its ``obs`` variable), in the target's units.

:func:`write_reconstruction` writes a method's reconstruction to a CF file (the task's predict
stage): a method with a ``stream`` function (the learned ones) writes it patch by patch through
:func:`geodl.data.predict_to_file`, so that memory holds one time slab of the stitching
accumulators rather than every patch of the period; the others write their ``reconstruct``.

How to add a method: write the two functions and a :class:`Section` for its settings, then
``register(MappingMethod("name", Section, fit, reconstruct, learned=..., artifact=".ckpt"))``. The
experiment schema (``geodl.tasks.mapping.build_schema``) then accepts ``methods: [name]`` and a
section ``name:``; ``geodl.mapping.fit(..., method="name")`` works too.
``tests/test_mapping_methods.py`` registers a toy method this way. A method that starts from another one's result (4DVarNet's
``warm_start``) says so with ``depends``: the task then trains that method first and passes its
artifact to ``fit`` as ``inputs={name: path}``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import xarray as xr
from pydantic import Field, field_validator, model_validator

from geodl import ranks
from geodl.atomic import atomic_path
from geodl.config import Section
from geodl.data import GriddedSource, Normalizer, PatchDataset, collate, predict_to_file, stitch
from geodl.data.batch import build_aux
from geodl.errors import ConfigError, DataError, UserInputError
from geodl.grid import days, grid_km, grid_mapping, restore_order, sort_axes
from geodl.methods.observing import (
    ObsSection,
    noise_level,
    observation_dataset,
    observe,
    observe_blocks,
    observe_members,
)
from geodl.models.outputs import ScaledUncertainty
from geodl.training import (
    AdversarialSection,
    TrainSection,
    fit,
    generator_module,
    load_checkpoint,
    load_model_weights,
)

__all__ = [
    "METHODS",
    "DataSection",
    "DincaeSection",
    "FourDVarNetSection",
    "LearnedSection",
    "MappingData",
    "MappingMethod",
    "OISection",
    "OITuneSection",
    "PatchSection",
    "SimulateSection",
    "SplitSection",
    "UNetSection",
    "aux_names",
    "check_methods",
    "get_method",
    "member_sources",
    "mapping_loss",
    "observed_scales",
    "patch_ensembles",
    "patch_geometry",
    "prediction_dataset",
    "prepare_inputs",
    "read_predictors",
    "read_sorted",
    "read_truth",
    "write_reconstruction",
    "register",
    "score_reconstructions",
    "split_labels",
    "summarise_inputs",
]

log = logging.getLogger("geodl.mapping")


# ----- sections ----------------------------------------------------------------------------
class DataSection(Section):
    """The mapping task's data: the truth ``variable`` of ``path`` and, optionally, predictors.

    ``inputs`` are time-dependent variables of the same file (e.g. SST when mapping SSH) and
    ``static`` time-independent ones (e.g. bathymetry), on the truth's grid; every learned method
    reads them as extra input channels (normalised with training-split statistics), OI ignores
    them. Empty lists (the default) give the runs as before.

    ``grid_spacing_km`` is the cell size (one number, or ``[dy, dx]``) of a file whose grid axes
    have no coordinate values: geodl builds y/x axes in km from 0 with it. A file with coordinates
    takes its cell size from them, and the key is refused there.
    """

    path: str | None = Field(None, description="NetCDF/Zarr truth; null: embedded QG simulation")
    variable: str = "ssh"
    land_mask: str | None = None
    grid_spacing_km: float | list[float] | None = Field(
        None, description="cell size [km] (or [dy, dx]) of a file without coordinates"
    )
    inputs: list[str] = Field(default_factory=list, description="time-dependent predictors")
    static: list[str] = Field(default_factory=list, description="time-independent predictors")

    @field_validator("grid_spacing_km", mode="before")
    @classmethod
    def _spacing(cls, value: Any) -> Any:
        """One line for any value but a positive number or a pair of them (not pydantic's
        report of both members of the union)."""
        pair = value if isinstance(value, list | tuple) else [value]

        def positive(v: Any) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and v > 0

        if value is not None and (len(pair) not in (1, 2) or not all(map(positive, pair))):
            raise ValueError("expected a positive number of km, or a [dy, dx] pair of them")
        return value

    @model_validator(mode="after")
    def _predictors(self) -> DataSection:
        names = [*self.inputs, *self.static]
        if self.variable in names:
            raise ValueError(
                f"data.inputs/static list the target '{self.variable}': a predictor must be "
                "another variable"
            )
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"data.inputs/static list {twice} more than once")
        if names and self.path is None:
            raise ValueError(
                f"data.inputs/static {names} need data.path: the embedded QG twin (data.path "
                "null) has no variable but 'ssh'"
            )
        if self.grid_spacing_km is not None and self.path is None:
            raise ValueError(
                "data.grid_spacing_km needs data.path: the embedded QG twin (data.path null) "
                "has coordinates"
            )
        if self.land_mask is not None and self.path is None:
            raise ValueError(
                f"data.land_mask '{self.land_mask}' needs data.path: the embedded QG twin (data.path "
                "null) has no land and no variable but 'ssh'"
            )
        return self


class SimulateSection(Section):
    """Embedded QG twin truth (used when ``data.path`` is null).

    ``members`` > 1 simulates that many independent realisations (batched, each from its own
    initial noise): member 0 is the experiment's truth (its splits, its test period); the others
    are observed the same way and every day of them is training data for the learned methods.
    """

    preset: Literal["eddy", "jet"] = "eddy"
    nx: int = Field(64, ge=8)
    days: float = Field(730.0, gt=0)
    spinup_days: float = Field(1460.0, ge=0)
    members: int = Field(1, ge=1)
    seed: int = 0
    threads: int | None = Field(None, gt=0)


class SplitSection(Section):
    """Inclusive time ranges (days for numeric time axes, dates for calendar ones)."""

    train: list[float | str] = Field(min_length=2, max_length=2)
    val: list[float | str] = Field(min_length=2, max_length=2)
    test: list[float | str] = Field(min_length=2, max_length=2)

    @model_validator(mode="after")
    def _ordered(self) -> SplitSection:
        """Where the config alone shows it (numbers, or dates in ISO form): each range runs
        forwards, and no two overlap (shared days would leak the test into training). A
        training period after the test period is legal (hindcasting) but warned about."""
        import warnings

        ranges = {}
        for name in ("train", "val", "test"):
            a, b = getattr(self, name)
            try:
                lo, hi = (
                    (float(a), float(b))
                    if not isinstance(a, str) and not isinstance(b, str)
                    else (np.datetime64(a), np.datetime64(b))
                )
            except (TypeError, ValueError):
                return self  # mixed or free-form labels: checked against the data at prepare
            if lo > hi:
                raise ValueError(f"split.{name} [{a}, {b}] ends before it starts; swap them")
            ranges[name] = (lo, hi)
        if len({type(r[0]) for r in ranges.values()}) > 1:
            return self
        names = list(ranges)
        for i, p in enumerate(names):
            for q in names[i + 1 :]:
                (a0, a1), (b0, b1) = ranges[p], ranges[q]
                if a0 <= b1 and b0 <= a1:
                    raise ValueError(
                        f"split.{p} {list(getattr(self, p))} and split.{q} "
                        f"{list(getattr(self, q))} overlap; the periods must be disjoint "
                        "(with a gap of one window)"
                    )
        if ranges["train"][0] > ranges["test"][1]:
            warnings.warn(
                f"split.train {list(self.train)} lies after split.test {list(self.test)}: the "
                "models are scored on a period before the one they learned from",
                UserWarning,
                stacklevel=2,
            )
        return self


class PatchSection(Section):
    """Space-time windows seen by the learned methods.

    The spatial stride defaults to half the patch size: overlapping patches, stitched with a Hann
    taper, leave no seams along tile edges (a stride equal to the patch size does).
    """

    time: int = Field(5, gt=0)
    y: int = Field(64, gt=0)
    x: int = Field(64, gt=0)
    stride_time: int = Field(1, gt=0, description="stride of the windows at prediction")
    train_stride_time: int | None = Field(
        None, gt=0, description="stride of the training windows (default: stride_time)"
    )
    stride_y: int | None = Field(None, gt=0, description="default: y // 2 (overlapping)")
    stride_x: int | None = Field(None, gt=0, description="default: x // 2 (overlapping)")
    max_land_fraction: float | None = Field(None, ge=0, le=1)


def patch_geometry(
    p: PatchSection, *, train: bool = False
) -> tuple[dict[str, int], dict[str, int]]:
    """``(size, stride)`` of the patches of ``p`` (training windows with ``train=True``)."""
    size = {"time": p.time, "y": p.y, "x": p.x}
    st = (p.train_stride_time or p.stride_time) if train else p.stride_time
    stride = {
        "time": st,
        "y": p.stride_y or max(p.y // 2, 1),
        "x": p.stride_x or max(p.x // 2, 1),
    }
    return size, stride


class OITuneSection(Section):
    """Search of the OI scales on the validation period, chosen by validation RMSE.

    Candidate scales are factors of the centre scales (``oi.lx_km`` / ``oi.lt_days`` if given,
    else the correlation scales that ``prepare`` estimates from the training observations); a grid
    whose best point lies on its edge is extended beyond it (``expand`` times at most), so that the
    optimum lies inside the searched grid. A grid larger than ``window`` cells a side is tuned on
    its central ``window`` x ``window`` cells (read alone from the files: the search's memory and
    time do not grow with the grid), as ``prepare`` estimates the scales there.
    """

    enabled: bool = True
    lx_factors: list[float] = Field(
        default_factory=lambda: [0.5, 0.75, 1.0, 1.5, 2.0], min_length=1
    )
    lt_factors: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0], min_length=1)
    noise_factors: list[float] = Field(
        default_factory=lambda: [1.0], min_length=1, description="of the noise std (if unknown)"
    )
    every_days: int = Field(3, gt=0, description="score every n-th validation day")
    window: int = Field(
        256,
        gt=0,
        description="cells a side of the central window of a larger grid that is tuned on",
    )
    expand: int = Field(3, ge=0, description="extensions of a grid whose best point is its edge")
    tile_space: int = Field(16, gt=0, description="search tiles (never split: a fast search)")


class OISection(Section):
    """Space-time optimal interpolation (:func:`geodl.baselines.optimal_interpolation`).

    With ``tune.enabled`` (the default) the scales are searched on the validation period
    (isotropic: ``ly = lx``; ``ly_km`` applies only without tuning), and the error std is then
    calibrated on the same validation days: it is scaled so that 68% of the normalised errors lie
    within one std (``std_scale`` in ``models/oi.json``).
    """

    lx_km: float | None = Field(None, gt=0, description="null: tuned / estimated from the data")
    ly_km: float | None = Field(None, gt=0, description="null: lx_km")
    lt_days: float | None = Field(None, gt=0, description="null: tuned / estimated")
    signal_std: float | None = Field(None, gt=0, description="default: from training obs")
    noise_std: float | None = Field(None, gt=0, description="default: obs.noise_std")
    periodic: bool | None = Field(None, description="periodic distances; null: twin domains")
    tile_time: int = Field(5, gt=0)
    tile_space: int = Field(32, gt=0)
    max_obs: int = Field(1000, gt=0)
    tune: OITuneSection = OITuneSection()


#: Loss terms every learned mapping method can train with (names of geodl.losses.LOSSES).
BASE_TERMS = ("mse", "mae", "huber", "grad", "sliced_wasserstein")
#: What a term needs beyond geodl.losses.NEEDS: 4DVarNet's prior-consistency term.
TERM_NEEDS = {"prior": "a learned prior phi (fourdvarnet)"}


class LearnedSection(Section):
    """A learned method: model arguments, loss terms and weights, augmentation, training.

    ``model`` keys are checked against the constructor of :data:`model_name`
    (:data:`geodl.models.MODELS`) when the config is read, not when training starts.
    """

    #: The loss terms (names of :data:`geodl.losses.LOSSES`) this method can train with.
    terms: ClassVar[tuple[str, ...]] = BASE_TERMS
    #: The :data:`geodl.models.MODELS` entry built from ``model`` (None: not checked).
    model_name: ClassVar[str | None] = None
    model: dict[str, Any] = Field(default_factory=dict)
    loss: dict[str, float] = Field(default_factory=lambda: {"mse": 1.0})
    adversarial: AdversarialSection = Field(
        AdversarialSection(),
        description="a patch discriminator judges the maps against the truth (weight 0: off)",
    )
    mask_swap: float = Field(0.0, ge=0, le=1, description="probability of mask-swap augmentation")
    land_channel: bool = Field(False, description="feed the land mask as an input channel")
    calibrate: bool = Field(
        True,
        description="scale the predicted std (and covariance factor) to maximise the validation "
        "likelihood, for models with a variance head (the OI's std is calibrated on validation too)",
    )
    extra_members: int | None = Field(
        None, ge=0, description="extra training realisations used (default: every one there is)"
    )
    train: TrainSection = TrainSection()

    @model_validator(mode="after")
    def _known_terms(self) -> LearnedSection:
        from geodl.losses import check_terms

        who = self.model_name or "this method"
        try:
            check_terms(self.loss, dict.fromkeys(self.terms, ""), who, needs=TERM_NEEDS)
        except UserInputError as exc:
            raise ValueError(str(exc)) from None
        if self.model_name is not None:
            import inspect

            from geodl.models import MODELS

            params = inspect.signature(MODELS[self.model_name]).parameters
            # set by the method from the data, the patch and data.inputs/static/land_channel
            given = ("in_channels", "n_times", "aux_channels")
            valid = [p for p in params if p not in (*given, "self")]
            bad = sorted(set(self.model) - set(valid))
            if bad:
                raise ValueError(
                    f"model keys {bad} invalid for {self.model_name}; choose from {valid}"
                )
        return self


class UNetSection(LearnedSection):
    model_name: ClassVar[str | None] = "unet"


class DincaeSection(LearnedSection):
    """DINCAE: ``nll`` trains a diagonal Gaussian; ``model.rank: R`` with ``{mse: 1.0,
    lowrank_nll: 1.0}`` trains the mean point-wise and a diagonal plus rank-R covariance of its
    errors over each patch (coherent error samples)."""

    terms: ClassVar[tuple[str, ...]] = (*BASE_TERMS, "nll", "lowrank_nll")
    model_name: ClassVar[str | None] = "dincae"
    loss: dict[str, float] = Field(default_factory=lambda: {"nll": 1.0})

    @model_validator(mode="after")
    def _rank_and_term(self) -> DincaeSection:
        rank = self.model.get("rank", 0)
        if "lowrank_nll" in self.loss and not rank:
            raise ValueError(
                "dincae: loss term 'lowrank_nll' needs a covariance factor: set dincae.model.rank "
                "(e.g. 4)"
            )
        if "lowrank_nll" in self.loss and (
            "nll" in self.loss or not {"mse", "mae", "huber"} & set(self.loss)
        ):
            raise ValueError(
                "dincae: loss term 'lowrank_nll' trains the covariance of the errors of a mean "
                "that a point-wise term trains: add mse (or mae, huber) and leave out nll, e.g. "
                "{mse: 1.0, lowrank_nll: 1.0}"
            )
        if rank and "lowrank_nll" not in self.loss:
            raise ValueError(
                f"dincae.model.rank is {rank} but no loss term trains the factor: add "
                "lowrank_nll to dincae.loss"
            )
        return self


class FourDVarNetSection(LearnedSection):
    """4DVarNet: ``prior`` adds the prior-consistency term ||x - phi(x)||^2 (output and truth).

    ``warm_start: unet`` starts the solver's first-guess network (``model.first_guess: unet``)
    from the weights the ``unet`` method of the same run has learned, so that the training budget
    goes to the variational refinement; the two UNets must have the same depth and width.
    """

    terms: ClassVar[tuple[str, ...]] = (*BASE_TERMS, "nll", "prior")
    loss: dict[str, float] = Field(default_factory=lambda: {"mse": 1.0, "grad": 0.1, "prior": 0.1})
    mask_swap: float = Field(0.5, ge=0, le=1)
    warm_start: str | None = Field(
        None, description="a method of this run (unet) whose weights start model.first_guess"
    )

    model_name: ClassVar[str | None] = "fourdvarnet"

    @model_validator(mode="after")
    def _warm_start_needs_a_first_guess(self) -> FourDVarNetSection:
        if "nll" in self.loss and not self.model.get("variance", False):
            raise ValueError("loss term 'nll' needs model.variance: true (a variance head)")
        if self.land_channel and self.model.get("first_guess") != "unet":
            raise ValueError(
                "fourdvarnet.land_channel needs model.first_guess: unet (the network that reads "
                "the extra channels)"
            )
        if self.warm_start is not None:
            if self.warm_start != "unet":
                raise ValueError(f"warm_start '{self.warm_start}' invalid; choose 'unet' or null")
            if self.model.get("first_guess") != "unet":
                raise ValueError(
                    "warm_start: unet needs model.first_guess: unet (the network it starts)"
                )
        return self


# ----- data given to every method ----------------------------------------------------------
@dataclass(frozen=True)
class MappingData:
    """What a mapping method sees: one validated source (``target`` and ``obs``), its splits
    (time-index ranges), the training statistics and the grid facts ``prepare`` recorded.

    ``extra`` are more training realisations (twin experiments: other QG members), each a source
    whose whole time range is training data.
    """

    source: GriddedSource
    splits: dict[str, tuple[int, int]]
    normalizer: dict[str, Any]
    patch: PatchSection
    noise_std: float
    obs_std: float
    obs_mean: float
    scales: dict[str, Any] | None = None
    periodic: bool = False
    extra: tuple[GriddedSource, ...] = field(default_factory=tuple)

    @property
    def variable(self) -> str:
        return self.source.target[0]

    @property
    def signal_std(self) -> float:
        """Signal std: the observations' spread minus the noise variance."""
        return math.sqrt(max(self.obs_std**2 - self.noise_std**2, 1e-12))

    def obs(
        self, split: tuple[int, int], window: tuple[slice, slice] | None = None
    ) -> xr.DataArray:
        """Observations ``(time, y, x)`` over ``split`` (NaN where unobserved), only the
        ``window`` ``(y, x)`` slices of the grid read when given."""
        return self._read(self.source.obs[0], split, window)

    def truth(
        self, split: tuple[int, int], window: tuple[slice, slice] | None = None
    ) -> xr.DataArray:
        return self._read(self.variable, split, window)

    def _read(
        self, name: str, split: tuple[int, int], window: tuple[slice, slice] | None
    ) -> xr.DataArray:
        t_dim, y_dim, x_dim = self.source.dims
        ys, xs = window or (slice(None), slice(None))
        da = self.source.variable(name, dask=False).transpose(*self.source.dims)
        return da.isel({t_dim: slice(*split), y_dim: ys, x_dim: xs}).load()

    @classmethod
    def from_prepare(
        cls,
        prep: dict[str, Any],
        truth: Path,
        obs: Path,
        *,
        variable: str,
        patch: PatchSection,
        land_mask: str | None = None,
        members: tuple[Path, Path] | None = None,
        grid_spacing_km: float | list[float] | None = None,
    ) -> MappingData:
        """The data of a run: the truth file (``target`` = ``variable``), the observation file
        (``{variable}_obs``), what ``prepare`` recorded (``prep``: splits, normalisation, noise,
        scales, the predictors ``data.inputs`` / ``data.static`` of the truth file) and, for twin
        experiments, the extra realisations' (truth, observation) files; ``grid_spacing_km``: the
        cell size of a truth file without coordinates (``data.grid_spacing_km``)."""
        predictors = prep.get("predictors", {})
        source = GriddedSource(
            truth,
            target=variable,
            obs=f"{variable}_obs",
            extra=obs,
            land_mask=land_mask,
            inputs=predictors.get("inputs", ()),
            static=predictors.get("static", ()),
            grid_spacing_km=grid_spacing_km,
        )
        return cls(
            source=source,
            splits={k: tuple(v) for k, v in prep["splits"].items()},
            normalizer=prep["normalizer"],
            patch=patch,
            noise_std=prep["noise_std"],
            obs_std=prep["obs_std_train"],
            obs_mean=prep["obs_mean_train"],
            scales=prep.get("scales"),
            periodic=bool(prep.get("periodic", False)),
            extra=member_sources(*members, variable) if members else (),
        )


@dataclass(frozen=True)
class MappingMethod:
    """A registry entry: the section class (defaults), ``fit`` and ``reconstruct``."""

    name: str
    section: type[Section]
    fit: Callable[..., dict[str, Any]]
    reconstruct: Callable[..., tuple[xr.DataArray, xr.DataArray | None]]
    learned: bool = True
    artifact: str = ".ckpt"
    #: ``(section, sections by method name) -> methods whose artifacts fit reads``; raises
    #: ValueError (one line) where the run's other sections do not fit with ``section``.
    depends: Callable[[Section, dict[str, Section]], tuple[str, ...]] = lambda *_: ()
    #: ``(section, data, artifact, split, path, *, attrs) -> path``: ``reconstruct`` streamed into
    #: the file ``path`` (optional; see :func:`write_reconstruction`).
    stream: Callable[..., Path] | None = None


METHODS: dict[str, MappingMethod] = {}


def register(method: MappingMethod) -> MappingMethod:
    """Add ``method`` to :data:`METHODS` (replacing one of the same name)."""
    METHODS[method.name] = method
    return method


def get_method(name: str) -> MappingMethod:
    if name not in METHODS:
        raise UserInputError(f"unknown mapping method '{name}'; choose one of {list(METHODS)}")
    return METHODS[name]


# ----- optimal interpolation ---------------------------------------------------------------
def _coords(da: xr.DataArray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t_dim, y_dim, x_dim = da.dims
    y_km, x_km, _ = grid_km(da, y_dim, x_dim)
    t = torch.from_numpy(days(da[t_dim].values).astype(np.float64))
    return t, torch.from_numpy(y_km), torch.from_numpy(x_km)


def _period(y: torch.Tensor, x: torch.Tensor, periodic: bool) -> tuple[float | None, float | None]:
    """Domain lengths of a doubly periodic grid of regular cells (n * spacing)."""
    if not periodic:
        return (None, None)
    return tuple(float((c[-1] - c[0]) * len(c) / (len(c) - 1)) for c in (y, x))  # type: ignore[return-value]


def _oi_noise(section: OISection, data: MappingData) -> float:
    signal = section.signal_std or data.signal_std
    # a floor keeps the system well conditioned when observations are given as exact
    return section.noise_std or max(data.noise_std, 1e-3 * signal)


def observed_scales(
    obs: xr.DataArray, noise_std: float, *, periodic: bool
) -> tuple[dict[str, Any] | None, str | None]:
    """Correlation scales (km, days) of gridded observations ``obs (time, y, x)``, NaN where
    unobserved (:func:`geodl.baselines.estimate_scales`), and ``None`` with the reason where the
    data are too sparse even when 10 pairs per separation are accepted."""
    from geodl.baselines import estimate_scales

    t, y, x = _coords(obs)
    reason = None
    for min_pairs in (100, 10):  # fewer pairs per separation only where data are that sparse
        try:
            scales = estimate_scales(
                torch.from_numpy(obs.values.astype(np.float64)),
                t,
                y,
                x,
                noise_std=noise_std,
                period=_period(y, x, periodic),
                min_pairs=min_pairs,
            )
            return scales, None
        except UserInputError as exc:
            reason = str(exc)
    return None, reason


def split_labels(
    bounds: dict[str, tuple[Any, Any]], times: np.ndarray
) -> dict[str, tuple[Any, Any]]:
    """Split bounds as time labels: on a calendar axis, numbers are days since the first time."""
    out = {}
    for name, pair in bounds.items():
        if np.issubdtype(times.dtype, np.datetime64) and all(
            isinstance(v, int | float) for v in pair
        ):
            pair = tuple(times[0] + np.timedelta64(round(float(v) * 86400), "s") for v in pair)
        out[name] = tuple(pair)
    return out


#: Cells a side of the window of the training observations whose correlation scales are
#: estimated (:func:`summarise_inputs`): the FFT pair sums of a larger grid would not fit memory.
SCALES_WINDOW = 256


def central_window(shape: tuple[int, int], size: int) -> tuple[slice, slice] | None:
    """The ``(y, x)`` slices of the central ``size`` x ``size`` cells of a grid of ``shape``;
    ``None`` where the grid is not larger than that along either axis."""
    if max(shape) <= size:
        return None
    ys, xs = (slice(max(0, (n - size) // 2), max(0, (n - size) // 2) + size) for n in shape)
    return ys, xs


def _obs_values(obs: Any, t: slice, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
    """``obs[t, ys, xs]`` of an array or a (lazy) DataArray ``(time, y, x)``, as NumPy."""
    if isinstance(obs, xr.DataArray):
        return np.asarray(obs.isel(dict(zip(obs.dims, (t, ys, xs), strict=True))).values)
    return np.asarray(obs[t, ys, xs])


def summarise_inputs(
    truth: xr.DataArray,
    obs: np.ndarray | xr.DataArray,
    bounds: dict[str, tuple[Any, Any]],
    *,
    window: int,
    noise_std: float,
    simulated_noise: bool = True,
    periodic: bool = False,
    predictors: xr.Dataset | None = None,
    budget: int | None = None,
) -> dict[str, Any]:
    """What every method is given (``prepare.json``): the splits of ``truth`` ``(time, y, x)``
    by ``bounds`` (``{"train": (a, b), "val": ..., "test": ...}``, gaps of ``window`` steps),
    the training statistics, observation coverage per split, the training observations'
    correlation scales and the grid facts. Splits without any observation are a
    :class:`DataError`; a noise level above the observed signal is a warning (``simulated_noise``:
    the noise is the one the observations were made with). ``predictors`` (the variables of
    :func:`read_predictors`: with a time axis ``inputs``, without ``static``) get training
    statistics too.

    ``obs`` may be a lazy DataArray (the observation file): it is read by blocks of time steps
    that fit ``budget`` bytes (:mod:`geodl.data.blocks`), and the correlation scales are those of
    the central :data:`SCALES_WINDOW` x :data:`SCALES_WINDOW` cells of a larger grid (recorded as
    ``scales_window``; a sub-window is not periodic); the coverage and the observations' moments
    use every block (merged in float64 when there are several)."""
    from geodl.data import compute_stats, make_splits
    from geodl.data.blocks import block_ranges, block_size, nan_moments

    t_dim, y_dim, x_dim = (str(d) for d in truth.dims)
    var = str(truth.name)
    times = truth[t_dim].values
    splits = make_splits(times, split_labels(bounds, times), window=window)
    nt, ny, nx = truth.shape
    steps = block_size(nt, 8 * ny * nx, budget)  # a block of values and its finite mask
    counts = np.zeros(nt, dtype=np.int64)  # observations per time step
    for a, b in block_ranges(0, nt, steps):
        counts[a:b] = np.isfinite(_obs_values(obs, slice(a, b))).sum(axis=(1, 2))
    coverage = {}
    for name, sp in splits.items():
        seen = int(counts[sp.start : sp.stop].sum())
        if not seen:
            raise DataError(
                f"split '{name}' (time steps {sp.start}..{sp.stop - 1}) holds no observation; "
                "move its range or observe more densely"
            )
        coverage[name] = seen / ((sp.stop - sp.start) * ny * nx)
    pred = predictors if predictors is not None else xr.Dataset()
    names = [str(v) for v in pred.data_vars]
    for n in names:  # before the statistics, which would only warn about empty means
        da = (
            pred[n].isel({t_dim: slice(*splits["train"].range)})
            if t_dim in pred[n].dims
            else pred[n]
        )
        if int(da.count()) == 0:
            raise DataError(
                f"data.inputs/static: predictor '{n}' is NaN everywhere in the training split "
                f"(time steps {splits['train'].start}..{splits['train'].stop - 1}); check the "
                "file's _FillValue or drop it"
            )
    stats = compute_stats(
        pred.assign({var: truth}), [var, *names], time_range=splits["train"].range
    )
    stats["variables"][f"{var}_obs"] = stats["variables"][var]  # obs in the target's units
    train = splits["train"]
    _, obs_mean, obs_std = nan_moments(
        _obs_values(obs, slice(a, b)) for a, b in block_ranges(train.start, train.stop, steps)
    )
    warnings = []
    # the observations' variance is signal + noise: noise above half of it means a negative SNR
    if simulated_noise and noise_std > obs_std / math.sqrt(2):
        warnings.append(
            f"obs.noise_std {noise_std:g} exceeds the std of the signal it observes "
            f"(observations' std {obs_std:.3g}): the observations are mostly noise"
        )
    window = central_window((ny, nx), SCALES_WINDOW)
    part = window is not None
    ys, xs = window or (slice(0, ny), slice(0, nx))
    tr = slice(train.start, train.stop)
    train_da = truth.isel({t_dim: tr, y_dim: ys, x_dim: xs})
    train_obs = _obs_values(obs, tr, ys, xs)
    scales, reason = observed_scales(
        train_da.copy(data=train_obs), noise_std, periodic=periodic and not part
    )
    if scales is None:
        warnings.append(f"no correlation scales from the training observations ({reason})")
    else:
        log.info("training observations' correlation scales: %s", scales)
    for msg in warnings:
        log.warning(msg)
    y_km, x_km, kind = grid_km(truth, y_dim, x_dim)
    return {
        "variable": var,
        "dims": [t_dim, y_dim, x_dim],
        "splits": {k: [s.start, s.stop] for k, s in splits.items()},
        "dropped_for_gaps": {k: s.dropped for k, s in splits.items()},
        "normalizer": stats,
        "coverage": coverage,
        "obs_std_train": obs_std,
        "noise_std": noise_std,
        "obs_mean_train": obs_mean,
        "scales": scales,
        **({"scales_window": {"y": [ys.start, ys.stop], "x": [xs.start, xs.stop]}} if part else {}),
        "periodic": periodic,
        "grid": {
            "kind": kind,
            "dy_km": float(np.diff(y_km).mean()),
            "dx_km": float(np.diff(x_km).mean()),
        },
        "units": truth.attrs.get("units", ""),
        "predictors": {
            "inputs": [n for n in names if t_dim in pred[n].dims],
            "static": [n for n in names if t_dim not in pred[n].dims],
        },
        "warnings": warnings,
    }


def read_truth(
    path: Path,
    var: str,
    land_mask: str | None = None,
    *,
    budget: int | None = None,
    grid_spacing_km: float | list[float] | None = None,
) -> xr.DataArray:
    """The truth ``var`` of ``path`` as a ``(time, y, x)`` DataArray: loaded where it takes at
    most a quarter of ``budget`` bytes (default :data:`geodl.data.blocks.MEMORY_BUDGET`; the
    in-memory preparation copies it a few times), else lazy (Dask, by the file's storage chunks)
    for the block-wise preparation; one :class:`DataError` line if it is NaN everywhere.
    ``grid_spacing_km``: the cell size of a file without coordinates (:class:`GriddedSource`)."""
    from geodl.data.blocks import MEMORY_BUDGET, block_ranges

    src = GriddedSource(path, target=var, land_mask=land_mask, grid_spacing_km=grid_spacing_km)
    lazy = src.variable(var).transpose(*src.dims)
    budget = MEMORY_BUDGET if budget is None else budget
    if 4 * lazy.size * lazy.dtype.itemsize <= budget:
        truth = src.variable(var, dask=False).load().transpose(*src.dims)
        blocks: Any = [truth.values]
    else:
        truth = lazy.chunk(dict(zip(src.dims, src.chunks[var], strict=True)))
        t_dim = src.dims[0]
        # a finite value in the first blocks ends the check: one pass only for all-NaN data
        blocks = (
            truth.isel({t_dim: slice(a, b)}).values
            for a, b in block_ranges(0, truth.shape[0], src.chunks[var][0])
        )
    if not any(np.isfinite(b).any() for b in blocks):
        raise DataError(
            f"truth variable '{var}' in {path} is NaN everywhere; check data.variable or the "
            "file's _FillValue"
        )
    return truth.rename(var)


def read_predictors(
    path: Path,
    var: str,
    inputs: list[str] | tuple[str, ...],
    static: list[str] | tuple[str, ...],
    land_mask: str | None = None,
    grid_spacing_km: float | list[float] | None = None,
) -> xr.Dataset | None:
    """The predictors ``inputs`` ``(time, y, x)`` and ``static`` ``(y, x)`` of ``path`` (lazy),
    checked against the grid of the truth ``var`` (None without predictors); a missing variable
    or wrong dims are one :class:`DataError` line naming ``data.inputs`` / ``data.static``."""
    if not inputs and not static:
        return None
    try:
        src = GriddedSource(
            path,
            target=var,
            inputs=inputs,
            static=static,
            land_mask=land_mask,
            grid_spacing_km=grid_spacing_km,
        )
    except DataError as exc:
        raise DataError(f"data.inputs/static in {path}: {exc}") from None
    return src.dataset()[[*inputs, *static]]


def prepare_inputs(
    truth: xr.DataArray,
    obs: ObsSection,
    bounds: dict[str, tuple[Any, Any]],
    *,
    window: int,
    periodic: bool,
    members: xr.DataArray | None = None,
    predictors: xr.Dataset | None = None,
    obs_path: Path | None = None,
    budget: int | None = None,
) -> tuple[xr.Dataset, xr.Dataset | None, dict[str, Any]]:
    """Observe ``truth`` (and the extra realisations ``members``) as ``obs`` says and summarise
    what every method is given: ``(observations, members' observations or None, prepare.json)``,
    with training statistics of the ``predictors`` (:func:`read_predictors`).

    With ``obs_path``, the observations are written to that file (NetCDF, chunked) block by block
    of time steps as many as fit ``budget`` bytes (:mod:`geodl.data.blocks`), and returned opened
    lazily from it: with a lazy ``truth`` (:func:`read_truth`), memory is bounded by the budget,
    not the grid (nadir and swath observations; clouds and files are made whole).
    """
    var = str(truth.name)
    source = f"geodl obs: {obs.model_dump_json()}"
    steps = _obs_steps(truth, budget)
    noise_std = noise_level(obs, truth, steps=steps)
    if obs_path is None:
        values: Any = observe(truth, obs, noise_std)
        if not np.isfinite(values).any():
            raise DataError(f"no observation at all of '{var}' (obs.kind {obs.kind})")
        obs_ds = observation_dataset(values, truth, var, obs.kind, source)
    else:
        obs_ds = _write_observations(truth, obs, noise_std, obs_path, source, steps)
        values = obs_ds[f"{var}_obs"]
    members_ds = None
    if members is not None:
        made = observe_members(members, obs, noise_std)
        members_ds = made.to_dataset(name=f"{var}_obs").assign_attrs(source=source)
    prep = summarise_inputs(
        truth,
        values,
        bounds,
        window=window,
        noise_std=noise_std,
        simulated_noise=obs.kind != "file",
        periodic=periodic,
        predictors=predictors,
        budget=budget,
    )
    return obs_ds, members_ds, prep


#: Bytes per grid cell of one block of :func:`observe_blocks` (truth, zeros, the operator's grid,
#: its point table, the mask and the observations).
_OBS_BYTES_PER_CELL = 48


def _obs_steps(truth: xr.DataArray, budget: int | None) -> int:
    from geodl.data.blocks import block_size

    return block_size(truth.shape[0], _OBS_BYTES_PER_CELL * truth[0].size, budget)


def _write_observations(
    truth: xr.DataArray, obs: ObsSection, noise_std: float, path: Path, source: str, steps: int
) -> xr.Dataset:
    """:func:`observe` of ``truth`` written to the file ``path`` block by block of ``steps`` time
    steps (:func:`~geodl.methods.observing.observe_blocks`); the file, opened lazily."""
    import dask.array as dsa

    from geodl.data.blocks import FieldWriter

    var = str(truth.name)
    name = f"{var}_obs"
    lazy = dsa.full(truth.shape, np.nan, dtype="float32", chunks=(steps, *truth.shape[1:]))
    template = observation_dataset(lazy, truth, var, obs.kind, source)  # type: ignore[arg-type]
    ny, nx = truth.shape[1:]
    seen = False
    with FieldWriter(path, template, dict(zip(truth.dims, (steps, 256, 256), strict=True))) as w:
        for t0, t1, values in observe_blocks(truth, obs, noise_std, steps=steps):
            seen = seen or bool(np.isfinite(values).any())
            w.write(name, (slice(t0, t1), slice(0, ny), slice(0, nx)), values)
        if not seen:
            raise DataError(f"no observation at all of '{var}' (obs.kind {obs.kind})")
    return xr.open_dataset(path)


def prediction_attrs(
    var: str, method: str, units: str, experiment: str, standard_name: str | None = None
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """``(variable attributes by name, global attributes)`` of a method's prediction file.

    The mean keeps the field's ``standard_name`` (where the input has one) and names its std as
    an ancillary variable; the std takes CF's ``standard_error`` modifier of that name, so that no
    tool reads it as the field itself.
    """
    mean = {"long_name": f"{var} reconstructed by {method}", "units": units}
    std = {"long_name": f"standard deviation of the {method} reconstruction error", "units": units}
    if standard_name:
        mean["standard_name"] = standard_name
        std["standard_name"] = f"{standard_name} standard_error"
    mean["ancillary_variables"] = f"{var}_std"  # dropped where the method gives no std
    glob = {
        "Conventions": "CF-1.8",
        "title": f"geodl mapping: {method}",
        "source": f"geodl {method} ({experiment})",
    }
    return {var: mean, f"{var}_std": std}, glob


def _without_std(attrs: dict[str, dict[str, str]], var: str) -> dict[str, dict[str, str]]:
    mean = {k: v for k, v in attrs[var].items() if k != "ancillary_variables"}
    return {var: mean}


def prediction_dataset(
    mean: xr.DataArray,
    std: xr.DataArray | None,
    var: str,
    method: str,
    units: str,
    experiment: str,
    standard_name: str | None = None,
) -> xr.Dataset:
    """A method's reconstruction as a CF dataset: ``var`` (mean) and ``{var}_std`` where given,
    with the attributes of :func:`prediction_attrs` and a ``history`` line."""
    from geodl.data.stitch import history

    attrs, glob = prediction_attrs(var, method, units, experiment, standard_name)
    if std is None:
        attrs = _without_std(attrs, var)
    keep = {
        k: v for k, v in mean.attrs.items() if k not in ("standard_name", "ancillary_variables")
    }
    out = {var: mean.copy(deep=False)}
    out[var].attrs = {**keep, **attrs[var]}
    if std is not None:
        out[f"{var}_std"] = std.copy(deep=False)
        out[f"{var}_std"].attrs = attrs[f"{var}_std"]
    return xr.Dataset(out, attrs={**glob, "history": history(None, f"{method} reconstruction")})


def cf_encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """NetCDF encoding of ``ds`` with no ``_FillValue`` on its coordinates (CF: coordinates have
    no missing values; xarray adds NaN by default)."""
    return {str(c): {"_FillValue": None} for c in ds.coords}


def write_reconstruction(
    method: str,
    section: Section,
    data: MappingData,
    artifact: Path,
    split: tuple[int, int],
    path: Path,
    *,
    units: str,
    experiment: str,
) -> Path:
    """Write ``method``'s reconstruction of ``split`` to the CF NetCDF file ``path``.

    Methods with a ``stream`` function write patch by patch (bounded memory); the others write the
    result of ``reconstruct``. Both give the file :func:`prediction_dataset` describes, with the
    input's grid mapping (:func:`geodl.grid.grid_mapping`: the input's own, or ``crs`` on a
    geographic grid).
    """
    entry = get_method(method)
    sn = data.source.attrs.get(data.variable, {}).get("standard_name")
    attrs, glob = prediction_attrs(data.variable, method, units, experiment, sn)
    if entry.stream is not None:
        entry.stream(section, data, artifact, split, path, attrs=attrs, dataset_attrs=glob)
    else:
        mean, std = entry.reconstruct(section, data, artifact, split)
        ds = prediction_dataset(mean, std, data.variable, method, units, experiment, sn)
        ds.to_netcdf(path, encoding=cf_encoding(ds))
    mapping = grid_mapping(data.source.dataset(), data.variable, *data.source.dims[1:])
    _write_grid_mapping(path, mapping, [data.variable, f"{data.variable}_std"])
    if data.source.order:  # a descending or wrapping input grid: written back in its order
        tmp = path.with_name(f".unsorted-{path.name}")
        with xr.open_dataset(path, chunks={}) as ds:
            back = restore_order(ds, data.source.order)
            back.to_netcdf(tmp, encoding=cf_encoding(back))
        tmp.replace(path)
    return path


def _write_grid_mapping(path: Path, mapping: xr.DataArray | None, names: list[str]) -> None:
    """Add ``mapping`` (:func:`geodl.grid.grid_mapping`) to the NetCDF file ``path`` and point
    the ``grid_mapping`` attribute of its variables ``names`` at it; with None, drop that
    attribute (a copy of the input's that names no variable of the output)."""
    import netCDF4

    with netCDF4.Dataset(path, "a") as nc:
        if mapping is not None and mapping.name not in nc.variables:
            v = nc.createVariable(str(mapping.name), mapping.dtype)
            v.setncatts(mapping.attrs)
            v.assignValue(mapping.values)
        for n in names:
            if n not in nc.variables:
                continue
            if mapping is not None:
                nc[n].setncattr("grid_mapping", str(mapping.name))
            elif "grid_mapping" in nc[n].ncattrs():
                nc[n].delncattr("grid_mapping")


@contextmanager
def _sorted_lazy(
    path: Path, names: list[str], dims: list[str], time: slice | None = None
) -> Iterator[xr.Dataset]:
    """:func:`read_sorted` without loading: the file's variables, lazily indexed (bands are
    read as they are selected), closed on exit."""
    with xr.open_dataset(path) as raw:
        ds = sort_axes(raw[[n for n in names if n in raw]], tuple(dims[1:]))[0]
        yield ds if time is None else ds.isel({dims[0]: time})


def read_sorted(
    path: Path,
    names: list[str],
    dims: list[str],
    time: slice | None = None,
    space: tuple[slice, slice] | None = None,
):
    """Variables ``names`` of a truth or predictions file, loaded, on the sorted grid every
    method works on (:func:`geodl.grid.sort_axes`: inputs may come with descending latitude or
    wrapping longitude, and predictions are written back in the input's order); ``time``
    selects along ``dims[0]``, ``space`` rows and columns of the sorted grid (only they are
    read). Missing names are left out."""
    with xr.open_dataset(path) as raw:
        ds = sort_axes(raw[[n for n in names if n in raw]], tuple(dims[1:]))[0]
        if time is not None:
            ds = ds.isel({dims[0]: time})
        if space is not None:
            ds = ds.isel({dims[1]: space[0], dims[2]: space[1]})
        return ds.load()


def check_methods(
    methods: list[str],
    config: Any,
    patch: PatchSection,
    split: Any,
    *,
    twin_nx: int | None = None,
) -> None:
    """Config-time checks of a method list: known names, none twice, dependencies listed first
    (``config.<method>`` are the sections) and, on a twin grid of ``twin_nx`` cells a side with
    daily steps, patches that fit the grid and train/val splits that hold one window. Raises
    ValueError (one line)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods {unknown or '[]'} invalid; choose from {list(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods {methods} lists a method twice")
    if twin_nx is not None:
        for name in ("train", "val", "test"):
            if any(isinstance(v, str) for v in getattr(split, name)):
                raise ValueError(
                    f"split.{name} {list(getattr(split, name))} gives dates, but the simulated "
                    "twin's time axis is in days since its first saved day; give numbers"
                )
    learned = any(METHODS[m].learned for m in methods)
    if learned and twin_nx is not None:
        if patch.y > twin_nx or patch.x > twin_nx:
            raise ValueError(
                f"patch {patch.y} x {patch.x} (y x) is larger than the simulated "
                f"grid ({twin_nx} x {twin_nx}); lower patch.y / patch.x or raise simulate.nx"
            )
        for name in ("train", "val"):
            a, b = getattr(split, name)
            numeric = isinstance(a, int | float) and isinstance(b, int | float)
            if numeric and b - a + 1 < patch.time:
                raise ValueError(
                    f"split.{name} [{a:g}, {b:g}] is shorter than patch.time "
                    f"({patch.time} days): no window fits; widen it or lower patch.time"
                )
    sections = {m: getattr(config, m) for m in methods}
    for m, sec in sections.items():
        adv = getattr(sec, "adversarial", None)
        problem = adv.grid_problem(m, patch.y, patch.x) if adv is not None else None
        if problem:
            raise ValueError(f"{problem} (or change patch.y / patch.x)")
    data = getattr(config, "data", None)
    predictors = [*getattr(data, "inputs", ()), *getattr(data, "static", ())]
    fdv = sections.get("fourdvarnet")
    if predictors and fdv is not None and fdv.model.get("first_guess") != "unet":
        raise ValueError(
            f"data.inputs/static {predictors} reach fourdvarnet through its first guess only: "
            "set fourdvarnet.model.first_guess: unet, or drop fourdvarnet from methods"
        )
    for i, m in enumerate(methods):
        for dep in METHODS[m].depends(sections[m], sections):
            if dep not in methods[:i]:
                raise ValueError(f"methods: {m} needs {dep} trained first; list it before {m}")


def member_sources(truth_path: Path, obs_path: Path, var: str) -> tuple[GriddedSource, ...]:
    """One source per realisation of a ``member`` dimension: the truths in ``truth_path``, the
    observations ``{var}_obs`` in ``obs_path`` (extra training data of twin experiments)."""
    out = []
    with xr.open_dataset(truth_path) as tds, xr.open_dataset(obs_path) as ods:
        for k in range(tds.sizes["member"]):
            ds = xr.Dataset(
                {
                    var: tds[var].isel(member=k).load(),
                    f"{var}_obs": ods[f"{var}_obs"].isel(member=k).load(),
                }
            )
            out.append(GriddedSource(ds, target=var, obs=f"{var}_obs"))
    return tuple(out)


def score_reconstructions(
    truth_path: Path,
    predictions: dict[str, Path],
    prep: dict[str, Any],
    *,
    reference: str | None = "oi",
    budget: int | None = None,
) -> dict[str, Any]:
    """Scores (:func:`geodl.metrics.score`) of each method's predictions file over the test
    period recorded in ``prep`` (``prepare.json``), with ratios to ``reference`` where it is
    one of them; the ``metrics.json`` body (``methods``, ``units``, ``test_period``).

    The files are read by bands of rows (every test step, every column) that fit ``budget``
    bytes (:mod:`geodl.data.blocks`) and scored with :class:`geodl.metrics.ScoreAccumulator`:
    every score, the PSD-based ``lambda_x`` / ``lambda_t`` included, is that of the whole field
    (to the rounding of the sums), with one band in memory at a time."""
    from geodl.data.blocks import block_ranges, block_size
    from geodl.metrics import ScoreAccumulator, relative_to, score_units

    var = prep["variable"]
    t_dim, y_dim, x_dim = prep["dims"]
    a, b = prep["splits"]["test"]
    dims = {"time_dim": t_dim, "y_dim": y_dim, "x_dim": x_dim}
    projected = prep["grid"]["kind"] == "projected"
    grid = {"dx": prep["grid"]["dx_km"] if projected else None, "dt": None}
    results, bounds = {}, {}
    with _sorted_lazy(truth_path, [var], prep["dims"], slice(a, b)) as tds:
        truth_all = tds[var]
        nt, ny, nx = (truth_all.sizes[d] for d in prep["dims"])
        # a band's truth, prediction, std, their float64 copies, error, masks and spectra
        rows = block_size(ny, 96 * nt * nx, budget)
        bands = list(block_ranges(0, ny, rows))
        first = None
        for method, path in predictions.items():
            acc = ScoreAccumulator()
            with _sorted_lazy(path, [var, f"{var}_std"], prep["dims"]) as ds:
                for y0, y1 in bands:
                    truth = truth_all.isel({y_dim: slice(y0, y1)}).load()
                    first = truth if first is None else first
                    band = ds.isel({y_dim: slice(y0, y1)})
                    pred = band[var].reindex_like(truth).load()
                    std = (
                        band[f"{var}_std"].reindex_like(truth).load()
                        if f"{var}_std" in band
                        else None
                    )
                    acc.add(pred, truth, std=std, **grid, **dims)
            found: dict[str, str] = {}
            results[method] = acc.result(bounds=found)
            if found:
                bounds[method] = found
        if first is None:
            first = truth_all.isel({y_dim: slice(0, 1)}).load()
    if reference in results:  # the comparison that matters: against the tuned OI of this run
        results = relative_to(results, reference)
    flip = {"<=": ">=", ">=": "<="}
    for method in results if reference in results else ():  # a ratio to or of a bound
        for key in ("lambda_x", "lambda_t"):
            ratio = f"{key}_ratio_{reference}"
            if ratio not in results[method]:
                continue
            own = bounds.get(method, {}).get(key)
            ref = flip.get(bounds.get(reference, {}).get(key, ""))
            side = own if ref is None else ref if own is None or own == ref else "?"
            if side is not None:
                bounds.setdefault(method, {})[ratio] = side
    units = score_units(first, **grid, **dims)  # from the coordinates and attributes alone
    if projected:
        units["lambda_x"] = "km"
    out = {"task": "mapping", "methods": results, "units": units, "test_period": [a, b]}
    if bounds:  # lambda values where the PSD score never crossed 0.5: bounds, not crossings
        out["bounds"] = bounds
    return out


def _fit_oi(section: OISection, data: MappingData, artifact: Path, **_: Any) -> dict[str, Any]:
    """Tune (or set) the OI scales on the validation period; write them to ``artifact`` (JSON)."""
    from geodl.baselines import OIParams, optimal_interpolation, tune_oi

    periodic = data.periodic if section.periodic is None else section.periodic
    scales = data.scales or {}
    lx = section.lx_km or scales.get("lx")
    lt = section.lt_days or scales.get("lt")
    if lx is None or lt is None:
        raise ConfigError(
            "oi: no length scales: set oi.lx_km and oi.lt_days, or let prepare estimate them"
        )
    signal, noise = section.signal_std or data.signal_std, _oi_noise(section, data)
    summary: dict[str, Any] = {"estimated": scales, "periodic": periodic}
    if section.tune.enabled:
        tn = section.tune
        # a larger grid is tuned on its central window: read alone, never periodic
        window = central_window((data.source.shape["y"], data.source.shape["x"]), tn.window)
        val = data.obs(data.splits["val"], window)
        truth = data.truth(data.splits["val"], window)
        t, y, x = _coords(val)
        periodic_tune = periodic and window is None
        if window is not None:
            ys, xs = window
            summary["tuning_window"] = {"y": [ys.start, ys.stop], "x": [xs.start, xs.stop]}
        result = tune_oi(
            torch.from_numpy(val.values.astype(np.float64)),
            torch.from_numpy(truth.values.astype(np.float64)),
            t,
            y,
            x,
            signal_std=signal,
            noise_std=noise,
            lx=[lx * f for f in tn.lx_factors],
            lt=[lt * f for f in tn.lt_factors],
            noise_factors=tn.noise_factors,
            times=torch.arange(0, len(t), tn.every_days),
            period=_period(y, x, periodic_tune),
            mean=data.obs_mean,
            tile=(1, tn.tile_space, tn.tile_space),
            max_obs=section.max_obs,
            min_tile=tn.tile_space**2 + 1,
            expand=tn.expand,
        )
        params = result.params
        summary["tuning"] = result.to_dict()
        # calibrate the error std on the same validation days: the factor that makes the
        # normalised errors' 68% quantile one (a misfit covariance shape mis-states the spread)
        m, s = optimal_interpolation(
            torch.from_numpy(val.values.astype(np.float64)),
            t,
            y,
            x,
            params,
            tile=(1, section.tile_space, section.tile_space),
            max_obs=section.max_obs,
            mean=data.obs_mean,
            period=_period(y, x, periodic_tune),
            times=torch.arange(0, len(t), tn.every_days),
        )
        z = ((m - torch.from_numpy(truth.values.astype(np.float64))) / s).abs()
        z = z[torch.isfinite(z)]
        std_scale = float(torch.quantile(z, 0.6827)) if len(z) else 1.0
        if result.on_edge:
            log.warning("oi: the tuned scales lie on the edge of the searched grid")
        log.info(
            "oi tuned on validation: lx %.1f km, lt %.1f days, noise %.3g (val rmse %.4g)",
            params.lx,
            params.lt,
            params.noise_std,
            result.rmse,
        )
    else:
        params = OIParams(lx=lx, ly=section.ly_km or lx, lt=lt, signal_std=signal, noise_std=noise)
        std_scale = 1.0
    chosen = {
        "lx": params.lx,
        "ly": params.ly,
        "lt": params.lt,
        "signal_std": params.signal_std,
        "noise_std": params.noise_std,
        "mean": data.obs_mean,
        "periodic": periodic,
        "std_scale": std_scale,
    }
    summary["params"] = chosen
    artifact.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _reconstruct_oi(
    section: OISection, data: MappingData, artifact: Path, split: tuple[int, int]
) -> tuple[xr.DataArray, xr.DataArray]:
    from geodl.baselines import OIParams, optimal_interpolation

    chosen = json.loads(Path(artifact).read_text())["params"]
    obs = data.obs(split)
    t, y, x = _coords(obs)
    params = OIParams(**{k: chosen[k] for k in ("lx", "ly", "lt", "signal_std", "noise_std")})
    m, s = optimal_interpolation(
        torch.from_numpy(obs.values.astype(np.float64)),
        t,
        y,
        x,
        params,
        tile=(section.tile_time, section.tile_space, section.tile_space),
        max_obs=section.max_obs,
        mean=chosen["mean"],
        period=_period(y, x, chosen["periodic"]),
    )
    s = s * chosen.get("std_scale", 1.0)  # calibrated on the validation period
    attrs = {"units": obs.attrs.get("units", "")}
    sea = xr.DataArray(~data.source.land(), dims=obs.dims[1:])  # nothing to map on land
    out = [
        xr.DataArray(v.numpy().astype(np.float32), dims=obs.dims, coords=obs.coords)
        .where(sea)
        .assign_attrs(attrs)
        for v in (m, s)
    ]
    return out[0], out[1]


#: Cutoff (in correlation scales) of the observations entering an OI system
#: (:func:`geodl.baselines.optimal_interpolation`'s default, which :func:`_reconstruct_oi` uses).
_OI_CUTOFF = 3.0
#: Tiles of ``oi.tile_space`` a side per spatial region of :func:`_stream_oi`.
_OI_REGION_TILES = 4


def _oi_halo(length: float, coords: np.ndarray, tile: int) -> int:
    """Grid steps covering ``_OI_CUTOFF * length`` along regular ``coords``, rounded up to whole
    tiles (so that a region's tiles line up with those of the whole grid)."""
    step = float(np.abs(np.diff(coords)).min()) if len(coords) > 1 else 1.0
    cells = math.ceil(_OI_CUTOFF * length / step) + 1
    return tile * math.ceil(cells / tile)


def _stream_oi(
    section: OISection,
    data: MappingData,
    artifact: Path,
    split: tuple[int, int],
    path: Path,
    *,
    attrs: dict[str, dict[str, str]],
    dataset_attrs: dict[str, str],
) -> Path:
    """:func:`_reconstruct_oi` written region by region into ``path``.

    Each region (``oi.tile_time`` x ``_OI_REGION_TILES`` steps in time, ``_OI_REGION_TILES``
    tiles a side in space) is analysed from the observations within ``_OI_CUTOFF`` correlation
    scales of it (a halo rounded up to whole tiles), which are every observation any of its
    tiles can select: the analysis equals that of the whole grid (to the rounding of the batched
    solves), and memory holds one region with its halo. Only the region's own tiles are solved
    (``window``): the halo's observations enter its systems, the halo is not analysed (it was,
    4x the solves of a 128-cell region with a 64-cell halo). A periodic domain is split in time
    only.
    """
    from geodl.baselines import OIParams
    from geodl.data.blocks import FieldWriter

    chosen = json.loads(Path(artifact).read_text())["params"]
    params = OIParams(**{k: chosen[k] for k in ("lx", "ly", "lt", "signal_std", "noise_std")})
    src, var = data.source, data.variable
    t_dim, y_dim, x_dim = src.dims
    lazy = src.variable(src.obs[0]).isel({t_dim: slice(*split)}).transpose(*src.dims)
    t_all, y_all, x_all = _coords(lazy)
    nt, ny, nx = lazy.shape
    period = _period(y_all, x_all, chosen["periodic"])
    tt, ts = section.tile_time, section.tile_space
    ht = _oi_halo(params.lt, t_all.numpy(), tt)
    hy = _oi_halo(params.ly, y_all.numpy(), ts)
    hx = _oi_halo(params.lx, x_all.numpy(), ts)
    side = ts * _OI_REGION_TILES
    periodic = period != (None, None)
    ry, rx = (ny, nx) if periodic else (side, side)
    rt = tt * _OI_REGION_TILES
    sea = ~src.land()
    import dask.array as dsa

    template = xr.Dataset(
        {
            n: (
                lazy.dims,
                dsa.full(lazy.shape, np.nan, dtype="float32", chunks=(1, ny, nx)),
                attrs[n],
            )
            for n in (var, f"{var}_std")
        },
        coords=lazy.coords,
        attrs={**dataset_attrs, "history": _history("oi reconstruction")},
    )
    chunks = {t_dim: tt, y_dim: min(side, 256), x_dim: min(side, 256)}
    with FieldWriter(path, template, chunks) as writer:
        for t0 in range(0, nt, rt):
            t1 = min(nt, t0 + rt)
            a, b = max(0, t0 - ht), min(nt, t1 + ht)
            for y0 in range(0, ny, ry):
                y1 = min(ny, y0 + ry)
                c, d = max(0, y0 - hy), min(ny, y1 + hy)
                for x0 in range(0, nx, rx):
                    x1 = min(nx, x0 + rx)
                    e, f = max(0, x0 - hx), min(nx, x1 + hx)
                    box = (slice(split[0] + a, split[0] + b), slice(c, d), slice(e, f))
                    obs = src.read(src.obs[0], box)
                    inner = (slice(t0 - a, t1 - a), slice(y0 - c, y1 - c), slice(x0 - e, x1 - e))
                    coords = (t_all[a:b], y_all[c:d], x_all[e:f])
                    m, s = _oi_region(obs, coords, inner, params, section, chosen, period)
                    land = sea[y0:y1, x0:x1]
                    region = (slice(t0, t1), slice(y0, y1), slice(x0, x1))
                    for n, v in ((var, m), (f"{var}_std", s)):
                        writer.write(n, region, np.where(land, v, np.float32(np.nan)))
    return path


def _oi_region(
    obs: np.ndarray,
    coords: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    inner: tuple[slice, slice, slice],
    params: Any,
    section: OISection,
    chosen: dict[str, Any],
    period: tuple[float | None, float | None],
) -> tuple[np.ndarray, np.ndarray]:
    """OI mean and std (float32) over ``inner`` of the observations ``obs`` (a region and its
    halo); the background (mean, prior std) where no observation is within reach, as the whole
    grid's analysis gives there."""
    from geodl.baselines import optimal_interpolation

    scale = chosen.get("std_scale", 1.0)  # calibrated on the validation period
    shape = tuple(s.stop - s.start for s in inner)
    if not np.isfinite(obs).any():
        m = np.full(shape, chosen["mean"], dtype=np.float32)
        s = np.full(shape, math.sqrt(params.signal_std**2) * scale, dtype=np.float32)
        return m, s
    m, s = optimal_interpolation(
        torch.from_numpy(obs.astype(np.float64)),
        *coords,
        params,
        tile=(section.tile_time, section.tile_space, section.tile_space),
        max_obs=section.max_obs,
        mean=chosen["mean"],
        period=period,
        times=torch.arange(inner[0].start, inner[0].stop),
        window=inner[1:],  # the halo's observations only enter the systems
    )
    s = s * scale
    return m[inner].numpy().astype(np.float32), s[inner].numpy().astype(np.float32)


def _history(action: str) -> str:
    from geodl.data.stitch import history

    return history(None, action)


# ----- learned methods ---------------------------------------------------------------------
def value_gradient_wasserstein(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, max_samples: int = 65536
) -> torch.Tensor:
    """Sliced Wasserstein-2 distance (:func:`geodl.losses.sliced_wasserstein`) between the joint
    distributions of (value, d/dx, d/dy) of ``pred`` and ``target`` ``(B, T, C, H, W)`` at the
    pixels where ``mask`` holds for the pixel and its x and y neighbours (at most
    ``max_samples`` of them, a fixed subsample).

    Why: a map trained on point-wise errors alone is too smooth, its gradient distribution too
    narrow; this term compares distributions, not pairs, so it pulls the map's small-scale
    statistics towards the truth's without asking for the unpredictable small-scale details.

    Examples
    --------
    >>> x = torch.randn(2, 3, 1, 8, 8)
    >>> m = torch.ones_like(x, dtype=torch.bool)
    >>> float(value_gradient_wasserstein(x, x, m))
    0.0
    """
    from geodl.losses import sliced_wasserstein

    def features(x: torch.Tensor) -> torch.Tensor:
        core = x[..., :-1, :-1]
        dx = x[..., :-1, 1:] - core
        dy = x[..., 1:, :-1] - core
        return torch.stack([core, dx, dy], -1).reshape(-1, 3)

    m = (mask[..., :-1, :-1] & mask[..., :-1, 1:] & mask[..., 1:, :-1]).reshape(-1)
    zero = torch.zeros_like(target)
    f_pred = features(torch.where(mask, pred, zero))
    f_true = features(torch.where(mask, target, zero))
    idx = torch.nonzero(m)[:, 0]
    if idx.numel() > max_samples:
        gen = torch.Generator().manual_seed(0)
        pick = torch.randperm(idx.numel(), generator=gen)[:max_samples].to(idx.device)
        idx = idx[pick]
    return sliced_wasserstein(f_pred[idx], f_true[idx])


def mapping_loss(
    weights: dict[str, float],
    *,
    mask_swap: float = 0.0,
    noise_std: float = 0.0,
    land_channel: bool = False,
) -> Callable[[torch.nn.Module, Any], dict[str, torch.Tensor]]:
    """Loss function for :class:`~geodl.training.TaskModule` on mapping batches.

    ``weights`` maps term names (``mse``, ``grad``, ``nll``, ``prior``) to weights from the
    config. ``prior`` is 4DVarNet's prior-consistency term, the mean of ``||x - phi(x)||^2`` over
    the output and the truth (Fablet et al. 2021), for models with a ``prior_cost``. With
    probability ``mask_swap`` a training batch gets the observation masks of other windows
    (rolled along the batch) applied to its own truth plus noise of ``noise_std`` (normalised units):
    new observing patterns for the same fields, the 4DVarNet augmentation. The model also gets
    the batch's auxiliary channels (:func:`geodl.data.batch.build_aux`: predictors, and the land
    mask with ``land_channel``) where there are any.
    """
    from geodl import losses

    known = (*BASE_TERMS, "nll", "lowrank_nll", "prior")
    try:
        losses.check_terms(weights, dict.fromkeys(known, ""), "mapping", needs=TERM_NEEDS)
    except UserInputError as exc:
        raise ConfigError(str(exc)) from None

    def fields(model: torch.nn.Module, batch: Any) -> tuple[dict[str, torch.Tensor], Any, Any]:
        """The loss terms, and the truth and the map where the truth is known (zero elsewhere):
        what a discriminator judges in adversarial training."""
        obs, mask = batch.obs, batch.obs_mask
        if (
            model.training
            and mask_swap > 0
            and ranks.batch_size(batch.batch_size) > 1
            and (torch.rand(()) < mask_swap)
        ):
            # the whole batch's roll and noise when DDP ranks split it (geodl.ranks)
            mask = ranks.roll_batch(batch.obs_mask) & batch.target_mask
            noisy = batch.target + noise_std * ranks.randn_like(batch.target)
            obs = torch.where(mask, noisy, torch.zeros_like(noisy))
        out = _apply(model, obs, mask, build_aux(batch, land_channel=land_channel))
        tm = batch.target_mask
        terms: dict[str, torch.Tensor] = {}
        if "mse" in weights:
            terms["mse"] = losses.mse(out.mean, batch.target, mask=tm)
        if "grad" in weights:
            terms["grad"] = losses.gradient_loss(out.mean, batch.target, mask=tm)
        for name in ("mae", "huber"):
            if name in weights:
                terms[name] = losses.LOSSES[name](out.mean, batch.target, mask=tm)
        if "sliced_wasserstein" in weights:
            terms["sliced_wasserstein"] = value_gradient_wasserstein(out.mean, batch.target, tm)
        if "nll" in weights:
            if out.log_var is None:
                raise ConfigError(
                    "loss term 'nll' needs a model that predicts a variance (dincae, or "
                    "fourdvarnet with model.variance: true)"
                )
            terms["nll"] = losses.gaussian_nll(out.mean, batch.target, log_var=out.log_var, mask=tm)
        if "lowrank_nll" in weights:
            if out.factor is None or out.log_var is None:
                raise ConfigError("loss term 'lowrank_nll' needs dincae with model.rank > 0")
            # The mean is held fixed here (trained by a point-wise term): given the factor's
            # freedom, the joint likelihood alone would explain the field itself as coherent
            # "error" and leave the mean near zero (measured: mu 0.06 against 0.71).
            terms["lowrank_nll"] = losses.lowrank_gaussian_nll(
                out.mean.detach().flatten(1),
                batch.target.flatten(1),
                factor=out.factor.flatten(1, -2),
                log_diag=out.log_var.flatten(1),
                mask=tm.flatten(1),
            )
        if "prior" in weights:
            if not hasattr(model, "prior_cost"):
                raise ConfigError("loss term 'prior' needs a model with a prior (fourdvarnet)")
            target = torch.where(tm, batch.target, torch.zeros_like(batch.target))
            terms["prior"] = 0.5 * (model.prior_cost(out.mean) + model.prior_cost(target))
        terms["loss"] = sum(weights[k] * terms[k] for k in weights)
        if "mse" not in terms:
            with torch.no_grad():
                terms["mse"] = losses.mse(out.mean, batch.target, mask=tm)
        zero = torch.zeros_like(batch.target)
        return terms, torch.where(tm, batch.target, zero), torch.where(tm, out.mean, zero)

    def loss_fn(model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        return fields(model, batch)[0]

    loss_fn.fields = fields  # type: ignore[attr-defined]
    return loss_fn


def _apply(model: torch.nn.Module, obs: torch.Tensor, mask: torch.Tensor, aux: Any) -> Any:
    """``model(obs, mask[, aux])``: without auxiliary channels, the call of models that have none."""
    extra = () if aux is None else (aux,)
    return model(obs, mask.to(obs.dtype), *extra)


def aux_names(source: GriddedSource, land_channel: bool) -> list[str]:
    """The auxiliary channels a learned method reads from ``source``, in
    :func:`~geodl.data.batch.build_aux`'s order (recorded in the checkpoint)."""
    return [*source.inputs, *source.static, *(["land_mask"] if land_channel else [])]


def _build(name: str, section: LearnedSection, data: MappingData) -> torch.nn.Module:
    from geodl.models import build_model

    n_aux = len(aux_names(data.source, section.land_channel))
    extra = {"aux_channels": n_aux} if n_aux else {}  # models without aux keep their signature
    return build_model(name, in_channels=1, n_times=data.patch.time, **section.model, **extra)


def _fit_learned(name: str) -> Callable[..., dict[str, Any]]:
    def fit_method(
        section: LearnedSection,
        data: MappingData,
        artifact: Path,
        *,
        work_dir: Path,
        key: str,
        metadata: dict[str, Any],
        inputs: dict[str, Path] | None = None,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Train on the ``train`` split (and every ``extra`` realisation), validated on ``val``;
        the averaged, else best-on-validation, else last weights go to ``artifact``.

        ``inputs`` are the artifacts of the methods this one depends on (``warm_start``);
        ``seed`` (the experiment's) offsets ``train.seed``, which seeds the model's initial
        weights as well as the training."""
        inputs = inputs or {}
        spec = section.train.model_copy(update={"seed": section.train.seed + seed})
        import shutil

        size, stride = patch_geometry(data.patch, train=True)
        norm = Normalizer(data.normalizer)
        kw = {"normalizer": norm, "max_land_fraction": data.patch.max_land_fraction}
        train_sets = [PatchDataset(data.source, size, stride, split=data.splits["train"], **kw)]
        extra = data.extra if section.extra_members is None else data.extra[: section.extra_members]
        train_sets += [
            PatchDataset(src, size, stride, split=(0, len(src.times)), **kw) for src in extra
        ]
        val_size, val_stride = patch_geometry(data.patch)
        val = PatchDataset(data.source, val_size, val_stride, split=data.splits["val"], **kw)
        for label, ds in (("train", train_sets[0]), ("val", val)):
            if len(ds) == 0:
                raise DataError(f"split '{label}' has no usable patch of size {size}")
        train = torch.utils.data.ConcatDataset(train_sets) if len(train_sets) > 1 else train_sets[0]
        torch.manual_seed(spec.seed)  # the initial weights are part of the seeded run
        model = _build(name, section, data)
        var = data.variable
        times = data.source.times

        def describe(batch: Any) -> str:
            i0 = int(batch.time_index.min())
            i1 = int(batch.time_index.max()) + data.patch.time - 1
            return f"batch times {times[i0]} .. {times[min(i1, len(times) - 1)]}"

        warm = getattr(section, "warm_start", None)
        if warm is not None:
            if warm not in inputs:
                raise ConfigError(
                    f"{name}.warm_start: '{warm}' has no trained model here (train it first)"
                )
            load_model_weights(model.first_guess, load_checkpoint(inputs[warm]))
            log.info("%s: first guess warm-started from %s", name, inputs[warm])
        loss_fn = mapping_loss(
            section.loss,
            mask_swap=section.mask_swap,
            noise_std=data.noise_std / data.normalizer["variables"][var]["std"],
            land_channel=section.land_channel,
        )
        module = generator_module(
            model,
            loss_fn,
            loss_fn.fields,  # type: ignore[attr-defined]
            spec,
            section.adversarial,
            channels=1,
            n_times=data.patch.time,
            describe_batch=describe,
            metadata={
                **metadata,
                "method": name,
                "normalizer": data.normalizer,
                "aux": aux_names(data.source, section.land_channel),
            },
        )
        result = fit(
            module,
            train,
            val,
            spec,
            ckpt_dir=work_dir / "checkpoints" / name,
            log_dir=work_dir / "logs" / name,
            key=key,
            collate_fn=collate,
        )
        best = result.averaged_path or result.best_path or result.last_path
        log.info("%s trained: %d epochs, best val %s", name, result.epochs, result.best_score)
        ckpt = load_checkpoint(best)
        scales = None
        if section.calibrate:
            model = load_model_weights(model, ckpt).eval()
            scales = _calibrate(model, val, section, spec.val_batch_size or spec.batch_size)
        if scales is None:
            shutil.copyfile(best, artifact)
        else:
            log.info("%s: std scaled on validation by %s", name, scales)
            ckpt["geodl"]["calibration"] = scales
            with atomic_path(artifact) as tmp:
                torch.save(ckpt, tmp)
        return {
            "epochs": result.epochs,
            "best_val": None if result.best_score is None else float(result.best_score),
            "train_windows": len(train),
            "realisations": 1 + len(extra),
            **({"calibration": scales} if scales else {}),
        }

    return fit_method


def _calibrate(
    model: torch.nn.Module, val: PatchDataset, section: LearnedSection, batch_size: int
) -> dict[str, float] | None:
    """:func:`~geodl.training.calibration.fit_std_scales` over the validation windows (None for
    a model without a variance head)."""
    from geodl.training.calibration import fit_std_scales

    outs, targets, masks = [], [], []
    loader = torch.utils.data.DataLoader(val, batch_size=batch_size, collate_fn=collate)
    with torch.no_grad():
        for batch in loader:
            aux = build_aux(batch, land_channel=section.land_channel)
            out = _apply(model, batch.obs, batch.obs_mask, aux)
            if out.log_var is None:
                return None
            outs.append(out)
            targets.append(batch.target)
            masks.append(batch.target_mask)
    return fit_std_scales(outs, targets, masks)


def _reconstruct_learned(name: str) -> Callable[..., tuple[xr.DataArray, xr.DataArray | None]]:
    def reconstruct(
        section: LearnedSection,
        data: MappingData,
        artifact: Path,
        split: tuple[int, int],
        *,
        batch_size: int = 8,
    ) -> tuple[xr.DataArray, xr.DataArray | None]:
        """Mean (and std, for models with a variance head) over ``split``, stitched from
        overlapping patches (Hann taper) in the source's units."""
        model, normalizer = _load_learned(name, section, data, artifact)
        var = data.variable
        size, stride = patch_geometry(data.patch)
        norm = Normalizer(normalizer)
        ds = PatchDataset(data.source, size, stride, split=split, normalizer=norm)
        means, stds, starts = [], [], []
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=collate)
        with torch.no_grad():
            for batch in loader:
                aux = build_aux(batch, land_channel=section.land_channel)
                out = _apply(model, batch.obs, batch.obs_mask, aux)
                means.append(out.mean)
                if out.log_var is not None:
                    stds.append(out.std)
                starts.append(batch.starts)
        start = torch.cat(starts)
        mean = stitch(torch.cat(means), start, data.source, names=[var], normalizer=norm)[var]
        std = None
        if stds:
            scale = float(normalizer["variables"][var]["std"])
            std = stitch(torch.cat(stds), start, data.source, names=[var])[var] * scale
        return mean, std

    return reconstruct


def patch_ensembles(
    name: str,
    section: LearnedSection,
    data: MappingData,
    artifact: Path,
    split: tuple[int, int],
    *,
    n_members: int = 100,
    time_stride: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """Ensembles of maps drawn from a learned method's predicted Gaussian, patch by patch.

    Patches tile ``split`` without spatial overlap (time windows every ``time_stride`` steps,
    default the window), so that every member is one draw of the model's joint distribution over
    the patch: with a low-rank factor (DINCAE ``model.rank``) the errors are coherent over it,
    with a diagonal variance independent per pixel. Returns ``(members (M, S, N), truth (S, N),
    (T, H, W))`` in the variable's units, NaN where the truth is missing: the inputs of
    :func:`geodl.metrics.ensemble_scores`.
    """
    model, normalizer = _load_learned(name, section, data, artifact)
    var = data.variable
    stats = normalizer["variables"][var]
    size = {"time": data.patch.time, "y": data.patch.y, "x": data.patch.x}
    stride = {**size, "time": time_stride or data.patch.time}
    ds = PatchDataset(data.source, size, stride, split=split, normalizer=Normalizer(normalizer))
    gen = torch.Generator().manual_seed(seed)
    members, truths = [], []
    loader = torch.utils.data.DataLoader(ds, batch_size=1, collate_fn=collate)
    with torch.no_grad():
        for batch in loader:
            aux = build_aux(batch, land_channel=section.land_channel)
            out = _apply(model, batch.obs, batch.obs_mask, aux)
            draws = out.sample(n_members, generator=gen)[:, 0]  # (M, T, C, H, W)
            members.append(draws.reshape(n_members, -1).numpy() * stats["std"] + stats["mean"])
            t = batch.target[0] * stats["std"] + stats["mean"]
            truths.append(torch.where(batch.target_mask[0], t, torch.nan).reshape(-1).numpy())
    if not truths:
        raise DataError(f"split {split} holds no patch of size {size}")
    return np.stack(members, 1), np.stack(truths), (size["time"], size["y"], size["x"])


def _load_learned(
    name: str, section: LearnedSection, data: MappingData, artifact: Path
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model (eval mode) and its normalisation statistics; a :class:`ConfigError`
    line where the run's auxiliary channels are not those the model was trained with."""
    ckpt = load_checkpoint(artifact)
    trained, given = ckpt["geodl"].get("aux", []), aux_names(data.source, section.land_channel)
    if list(trained) != given:
        raise ConfigError(
            f"{name}: {artifact} was trained with auxiliary channels {list(trained)}, this run "
            f"gives {given} (data.inputs, data.static, {name}.land_channel); set them as in "
            "training or train again"
        )
    model = load_model_weights(_build(name, section, data), ckpt).eval()
    scales = ckpt["geodl"].get("calibration")
    if scales:  # fitted on the validation period when the model was trained
        model = ScaledUncertainty(model, scales["diag"], scales["factor"]).eval()
    return model, ckpt["geodl"]["normalizer"]


#: Rows and columns of the tiles a learned method's predictions are stitched and written by.
_PREDICT_TILE = 256


def _stream_learned(name: str) -> Callable[..., Path]:
    def stream(
        section: LearnedSection,
        data: MappingData,
        artifact: Path,
        split: tuple[int, int],
        path: Path,
        *,
        attrs: dict[str, dict[str, str]],
        dataset_attrs: dict[str, str],
        batch_size: int = 8,
    ) -> Path:
        """``reconstruct`` written patch by patch into ``path`` (:func:`predict_to_file`)."""
        model, normalizer = _load_learned(name, section, data, artifact)
        var = data.variable
        size, stride = patch_geometry(data.patch)
        norm = Normalizer(normalizer)
        first = collate([PatchDataset(data.source, size, stride, split=split, normalizer=norm)[0]])
        land = section.land_channel
        with torch.no_grad():
            probe = _apply(model, first.obs, first.obs_mask, build_aux(first, land_channel=land))
        has_std = probe.log_var is not None
        names = [var, *([f"{var}_std"] if has_std else [])]
        stats = {**normalizer, "variables": dict(normalizer["variables"])}
        if has_std:  # the std is stitched in normalised units and only scaled back
            scale = stats["variables"][var]["std"]
            stats["variables"][f"{var}_std"] = {"mean": np.zeros_like(scale).tolist(), "std": scale}

        def predict(batch: Any) -> torch.Tensor:
            with torch.no_grad():
                out = _apply(model, batch.obs, batch.obs_mask, build_aux(batch, land_channel=land))
            if not has_std:
                return out.mean
            return torch.cat([out.mean, out.std], dim=2)

        return predict_to_file(
            path,
            data.source,
            predict,
            size,
            stride,
            split=split,
            normalizer=stats,
            batch_size=batch_size,
            tile=(_PREDICT_TILE, _PREDICT_TILE),  # bounded accumulators, chunks read by bands
            names=names,
            attrs=attrs if has_std else _without_std(attrs, var),
            dataset_attrs=dataset_attrs,
        )

    return stream


register(
    MappingMethod(
        "oi",
        OISection,
        _fit_oi,
        _reconstruct_oi,
        learned=False,
        artifact=".json",
        stream=_stream_oi,
    )
)
for _name, _section in (("unet", UNetSection), ("dincae", DincaeSection)):
    register(
        MappingMethod(
            _name,
            _section,
            _fit_learned(_name),
            _reconstruct_learned(_name),
            stream=_stream_learned(_name),
        )
    )


def _fourdvarnet_depends(
    section: FourDVarNetSection, sections: dict[str, Section]
) -> tuple[str, ...]:
    """The warm-start method, whose UNet must have the first guess's depth and width."""
    if section.warm_start is None:
        return ()
    import inspect

    from geodl.models import FourDVarNet, UNet

    ws = section.warm_start
    if ws not in sections:
        raise ValueError(f"fourdvarnet.warm_start: '{ws}' is not among the methods of this run")
    theirs_land = getattr(sections[ws], "land_channel", False)
    if theirs_land != section.land_channel:
        raise ValueError(
            f"fourdvarnet.warm_start: {ws}.land_channel is {theirs_land} but "
            f"fourdvarnet.land_channel is {section.land_channel}: the first guess reads the "
            "same channels as the network it starts from; set both alike"
        )
    fg = inspect.signature(FourDVarNet).parameters
    un = inspect.signature(UNet).parameters
    other = sections[ws].model
    # the UNet's argument -> the first guess's argument of FourDVarNet
    pairs = {"depth": "first_guess_depth", "width": "first_guess_width", "padding": "padding"}
    for key, mine_key in pairs.items():
        mine = section.model.get(mine_key, fg[mine_key].default)
        theirs = other.get(key, un[key].default)
        if mine != theirs:
            raise ValueError(
                f"fourdvarnet.warm_start: {ws}.model.{key} is {theirs!r} but the first guess's is "
                f"{mine!r} (fourdvarnet.model.{mine_key})"
            )
    extra = sorted(set(other) - set(pairs))
    if extra:
        raise ValueError(
            f"fourdvarnet.warm_start: {ws}.model sets {extra}, which the first guess does not have"
        )
    return (ws,)


register(
    MappingMethod(
        "fourdvarnet",
        FourDVarNetSection,
        _fit_learned("fourdvarnet"),
        _reconstruct_learned("fourdvarnet"),
        depends=_fourdvarnet_depends,
        stream=_stream_learned("fourdvarnet"),
    )
)
