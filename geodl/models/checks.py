"""Input checks shared by the models: shapes, channels and NaN, each failing with one clear line.

Models validate at their boundary (``forward``) because a wrong axis order silently broadcasts into a
plausible-looking but meaningless result (e.g. ``(B, C, T, H, W)`` read as ``(B, T, C, H, W)``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from geodl.errors import UserInputError

__all__ = ["check_grid", "check_mask", "check_positive", "check_state", "masked_input"]

GRID = "(batch, time, channel, y, x)"


def check_grid(
    x: Tensor,
    name: str,
    where: str,
    *,
    channels: int | None = None,
    times: int | None = None,
    multiple: int = 1,
) -> None:
    """Raise :class:`UserInputError` unless ``x`` is a ``(B, T, C, H, W)`` tensor of the expected size."""
    if not isinstance(x, Tensor):
        raise UserInputError(
            f"{where}: {name} must be a torch.Tensor {GRID}, got {type(x).__name__}"
        )
    if x.ndim != 5:
        raise UserInputError(
            f"{where}: {name} has {x.ndim} dims {tuple(x.shape)}, expected 5 dims {GRID}; "
            "add missing axes with x[:, None] (time) or x[:, :, None] (channel)"
        )
    if channels is not None and x.shape[2] != channels:
        raise UserInputError(
            f"{where}: {name} has {x.shape[2]} channels (axis 2 of {tuple(x.shape)}), expected "
            f"{channels} in {GRID}; build the model with in_channels={x.shape[2]} or fix the axis order"
        )
    if times is not None and x.shape[1] != times:
        raise UserInputError(
            f"{where}: {name} has {x.shape[1]} time steps (axis 1 of {tuple(x.shape)}), expected "
            f"{times} in {GRID}; this model uses time as channels, build it with n_times={x.shape[1]}"
        )
    if multiple > 1 and (x.shape[3] % multiple or x.shape[4] % multiple):
        raise UserInputError(
            f"{where}: patch size {x.shape[3]}x{x.shape[4]} (y, x) is not divisible by {multiple} "
            f"(2**depth or the down-sampling factor); use patches whose y and x sizes are multiples "
            f"of {multiple}, or a smaller depth"
        )


def check_mask(mask: Tensor, x: Tensor, where: str) -> None:
    """Raise unless ``mask`` has the shape of ``x``."""
    if not isinstance(mask, Tensor) or mask.shape != x.shape:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise UserInputError(
            f"{where}: obs_mask has shape {shape}, expected the shape of obs {tuple(x.shape)} "
            f"{GRID} with 1 where observed and 0 elsewhere"
        )


def masked_input(obs: Tensor, obs_mask: Tensor | None, where: str) -> tuple[Tensor, Tensor]:
    """Return ``(obs with zeros where unobserved, float mask)``, refusing NaN where observed.

    ``torch.where`` (not multiplication) is used so that NaN placeholders at unobserved points give
    neither NaN values nor NaN gradients.
    """
    if obs_mask is None:
        if torch.isnan(obs).any():
            raise UserInputError(
                f"{where}: obs contains NaN but no obs_mask was given; pass obs_mask "
                "(1 where observed, 0 elsewhere), e.g. obs_mask = torch.isfinite(obs)"
            )
        return obs, torch.ones_like(obs)
    check_mask(obs_mask, obs, where)
    keep = obs_mask.bool()
    if torch.isnan(obs[keep]).any():
        raise UserInputError(
            f"{where}: obs is NaN at points where obs_mask is 1; set obs_mask to 0 there, e.g. "
            "obs_mask = obs_mask * torch.isfinite(obs)"
        )
    return torch.where(keep, obs, torch.zeros_like(obs)), keep.to(obs.dtype)


def check_state(x: Tensor, name: str, where: str, *, features: int | None = None) -> None:
    """Raise unless ``x`` is a state tensor ``(..., component)`` with ``features`` components."""
    if not isinstance(x, Tensor):
        raise UserInputError(f"{where}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 1 or (features is not None and x.shape[-1] != features):
        raise UserInputError(
            f"{where}: {name} has shape {tuple(x.shape)}, expected (..., {features}) with the state "
            f"components last; build the model with dim={x.shape[-1] if x.ndim else '?'}"
        )


def check_positive(where: str, **values: int | float) -> None:
    """Raise unless every keyword value is > 0."""
    for key, value in values.items():
        if not value > 0:
            raise UserInputError(f"{where}: {key} must be > 0, got {value!r}")
