"""The batch handed to models: a frozen dataclass of named tensors ``(batch, time, channel, y, x)``.

Design decisions
----------------
- Names, not positions: models read ``batch.obs`` and ``batch.obs_mask`` instead of unpacking a
  tuple whose order differs between codebases.
- Missing values never reach a model: every float tensor is NaN-free (missing points hold 0) and the
  matching boolean mask says which points are valid (``target_mask``, ``obs_mask``; ``land_mask`` is
  True on land).
- Shapes are checked once, on construction, so a wrong reader fails at its source and not deep
  inside a model. Values are not scanned (that would cost a pass over the data per batch); use
  :meth:`Batch.check_finite` in tests.
- A single sample is a batch of size 1; :func:`collate` concatenates batches, so map-style and
  iterable datasets share one type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Batch", "build_aux", "collate"]

_DYNAMIC = ("target", "obs", "obs_mask", "target_mask", "inputs")
_MASKS = ("obs_mask", "target_mask", "land_mask")


@dataclass(frozen=True)
class Batch:
    """Named tensors of one batch; see the module docstring for the conventions.

    Attributes
    ----------
    target : Tensor
        ``(B, T, C, H, W)`` float, normalised, 0 where missing.
    obs : Tensor
        ``(B, T, Co, H, W)`` float, normalised observations, 0 where unobserved.
    obs_mask : Tensor
        ``(B, T, Co, H, W)`` bool, True where ``obs`` holds a value.
    target_mask : Tensor
        ``(B, T, C, H, W)`` bool, True where ``target`` holds a value.
    land_mask : Tensor
        ``(B, 1, 1, H, W)`` bool, True on land.
    time_index : Tensor
        ``(B,)`` int64, index of the first time step of each patch in the source.
    y0, x0 : Tensor
        ``(B,)`` int64, offsets of each patch in the source grid.
    inputs : Tensor or None
        ``(B, T, Ci, H, W)`` float, extra input channels (normalised, 0 where missing).
    static : Tensor or None
        ``(B, 1, Cs, H, W)`` float, time-independent fields (bathymetry, ...).

    Examples
    --------
    >>> import torch
    >>> z = torch.zeros(2, 3, 1, 4, 5)
    >>> m = torch.ones(2, 3, 1, 4, 5, dtype=torch.bool)
    >>> b = Batch(target=z, obs=z, obs_mask=m, target_mask=m,
    ...           land_mask=torch.zeros(2, 1, 1, 4, 5, dtype=torch.bool),
    ...           time_index=torch.arange(2), y0=torch.zeros(2, dtype=torch.long),
    ...           x0=torch.zeros(2, dtype=torch.long))
    >>> b.batch_size, tuple(b.target.shape)
    (2, (2, 3, 1, 4, 5))
    """

    target: Tensor
    obs: Tensor
    obs_mask: Tensor
    target_mask: Tensor
    land_mask: Tensor
    time_index: Tensor
    y0: Tensor
    x0: Tensor
    inputs: Tensor | None = None
    static: Tensor | None = None

    def __post_init__(self) -> None:
        b, t, _, h, w = _shape5("target", self.target)
        for name in ("obs", "obs_mask", "target_mask", "inputs", "static", "land_mask"):
            value = getattr(self, name)
            if value is None:
                continue
            vb, vt, vc, vh, vw = _shape5(name, value)
            expect_t = t if name in _DYNAMIC else 1
            if (vb, vt, vh, vw) != (b, expect_t, h, w) or (name == "land_mask" and vc != 1):
                c = "1" if name == "land_mask" else "C"
                raise ValueError(
                    f"Batch.{name} has shape {tuple(value.shape)}; expected "
                    f"({b}, {expect_t}, {c}, {h}, {w}) to match target {tuple(self.target.shape)}"
                )
        if self.obs.shape != self.obs_mask.shape:
            raise ValueError(
                f"Batch.obs_mask shape {tuple(self.obs_mask.shape)} != obs shape "
                f"{tuple(self.obs.shape)}"
            )
        if self.target_mask.shape != self.target.shape:
            raise ValueError(
                f"Batch.target_mask shape {tuple(self.target_mask.shape)} != target shape "
                f"{tuple(self.target.shape)}"
            )
        for name in _MASKS:
            if getattr(self, name).dtype != torch.bool:
                raise TypeError(f"Batch.{name} must be bool, got {getattr(self, name).dtype}")
        for name in ("target", "obs", "inputs", "static"):
            value = getattr(self, name)
            if value is not None and not value.is_floating_point():
                raise TypeError(f"Batch.{name} must be a float tensor, got {value.dtype}")
        for name in ("time_index", "y0", "x0"):
            value = getattr(self, name)
            if value.shape != (b,):
                raise ValueError(f"Batch.{name} has shape {tuple(value.shape)}; expected ({b},)")

    @property
    def batch_size(self) -> int:
        return int(self.target.shape[0])

    @property
    def starts(self) -> Tensor:
        """``(B, 3)`` int64 starts ``(time_index, y0, x0)`` of each patch (what stitching takes)."""
        return torch.stack([self.time_index, self.y0, self.x0], dim=1)

    def _map(self, fn) -> Batch:
        return dataclasses.replace(
            self,
            **{
                f.name: fn(getattr(self, f.name))
                for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None
            },
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The same batch on ``device`` (``non_blocking`` for pinned host memory)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)``: page-locked copies for fast GPU transfer."""
        return self._map(lambda t: t.pin_memory())

    def check_finite(self) -> None:
        """Raise ``ValueError`` if a float tensor holds NaN or inf (one pass over the data)."""
        for name in ("target", "obs", "inputs", "static"):
            value = getattr(self, name)
            if value is not None and not bool(torch.isfinite(value).all()):
                raise ValueError(f"Batch.{name} holds NaN or inf values")


def _shape5(name: str, value: Tensor) -> tuple[int, int, int, int, int]:
    if not isinstance(value, Tensor):
        raise TypeError(f"Batch.{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != 5:
        raise ValueError(
            f"Batch.{name} has {value.ndim} dims {tuple(value.shape)}; expected 5 "
            "(batch, time, channel, y, x)"
        )
    return tuple(value.shape)  # type: ignore[return-value]


def collate(items: Sequence[Batch] | Batch) -> Batch:
    """Concatenate batches along the batch axis (a ``Batch`` alone is returned as is).

    Use as ``DataLoader(..., collate_fn=collate)``; a dataset's ``__getitems__`` already returns a
    whole ``Batch``, which passes through unchanged.
    """
    if isinstance(items, Batch):
        return items
    if len(items) == 0:
        raise ValueError("collate() got no batches")
    if len(items) == 1:
        return items[0]
    out = {}
    for f in dataclasses.fields(Batch):
        values = [getattr(b, f.name) for b in items]
        if any(v is None for v in values):
            if any(v is not None for v in values):
                raise ValueError(f"collate(): Batch.{f.name} is None in some items only")
            out[f.name] = None
        else:
            out[f.name] = torch.cat(values, dim=0)
    return Batch(**out)


def build_aux(batch: Batch, *, land_channel: bool = False) -> Tensor | None:
    """The auxiliary model input ``(B, T, Ca, H, W)`` of ``batch``: ``inputs`` (Ci channels),
    ``static`` broadcast over time (Cs), and with ``land_channel`` the land mask as a float
    channel (1 on land); None where there is none of them.

    Why one function: training, validation and prediction of every learned method must stack the
    same channels in the same order, or a model would read SST where it was trained on bathymetry.

    Examples
    --------
    >>> import torch
    >>> z = torch.zeros(2, 3, 1, 4, 5)
    >>> m = torch.ones(2, 3, 1, 4, 5, dtype=torch.bool)
    >>> b = Batch(target=z, obs=z, obs_mask=m, target_mask=m,
    ...           land_mask=torch.zeros(2, 1, 1, 4, 5, dtype=torch.bool),
    ...           time_index=torch.arange(2), y0=torch.zeros(2, dtype=torch.long),
    ...           x0=torch.zeros(2, dtype=torch.long), static=torch.ones(2, 1, 2, 4, 5))
    >>> tuple(build_aux(b, land_channel=True).shape)
    (2, 3, 3, 4, 5)
    >>> build_aux(dataclasses.replace(b, static=None)) is None
    True
    """
    b, t, _, h, w = batch.target.shape
    parts = []
    if batch.inputs is not None:
        parts.append(batch.inputs)  # (B, T, Ci, H, W)
    if batch.static is not None:
        parts.append(batch.static.expand(b, t, -1, h, w))  # (B, T, Cs, H, W)
    if land_channel:
        parts.append(batch.land_mask.to(batch.target.dtype).expand(b, t, 1, h, w))
    return torch.cat(parts, dim=2) if parts else None
