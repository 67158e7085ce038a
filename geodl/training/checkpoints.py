"""Checkpoints that carry what is needed to use them, loaded without unpickling code.

One envelope for every model file geodl writes: a dict with ``"state_dict"`` and a ``"geodl"``
entry of plain data (the geodl version, then what the writer adds: the resolved config,
normalisation statistics, the grid description, the method's options). Training checkpoints are
Lightning's with that entry added (:func:`stamp`); finished models (``model.pt``,
``models/*.pt``) are written by :func:`save_model`. Everything in it is tensors, numbers, strings,
lists and dicts, so it loads with ``torch.load(..., weights_only=True)``; :func:`load_checkpoint`
is the one reader, and refuses a file with no geodl version in one line.

Examples
--------
>>> import tempfile, pathlib
>>> path = save_model(pathlib.Path(tempfile.mkdtemp()) / "m.pt", {"w": torch.ones(2)}, {"dim": 2})
>>> ckpt = load_checkpoint(path)
>>> ckpt["geodl"]["dim"], sorted(ckpt["geodl"]) == ["dim", "version"]
(2, True)
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from geodl.atomic import atomic_path
from geodl.errors import UserInputError

__all__ = [
    "CheckpointMismatch",
    "average_state_dicts",
    "config_differences",
    "load_checkpoint",
    "load_model_weights",
    "save_model",
    "stamp",
]


class CheckpointMismatch(UserInputError):
    """A checkpoint made by another config or another geodl major version."""


def _version() -> str:
    return importlib.metadata.version("geodl")


def stamp(checkpoint: dict[str, Any], metadata: Mapping[str, Any]) -> None:
    """Add the geodl version and ``metadata`` (plain data) to a checkpoint dict."""
    checkpoint["geodl"] = {"version": _version(), **metadata}


def save_model(
    path: str | Path, state_dict: Mapping[str, Tensor], metadata: Mapping[str, Any]
) -> Path:
    """Write ``{"state_dict": state_dict, "geodl": {version, **metadata}}`` atomically to ``path``
    (a kill never leaves a torn file); read it back with :func:`load_checkpoint`."""
    path = Path(path)
    ckpt: dict[str, Any] = {"state_dict": dict(state_dict)}
    stamp(ckpt, metadata)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Key paths whose values differ between two plain nested configs."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            else:
                out.extend(config_differences(old[key], new[key], path))
        return out
    return [] if old == new else [prefix or "(root)"]


def load_checkpoint(
    path: str | Path, *, expected_config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check it matches ``expected_config``.

    Raises :class:`CheckpointMismatch` naming the differing keys, when the checkpoint was written
    by another geodl major version, or when it records no geodl version (not a geodl checkpoint).
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"checkpoint '{path}' not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise UserInputError(
            f"checkpoint '{path}' cannot be loaded safely ({type(exc).__name__}); "
            "it is corrupted or was not written by geodl"
        ) from None
    meta = ckpt.get("geodl") if isinstance(ckpt, dict) else None
    version = meta.get("version") if isinstance(meta, dict) else None
    if not isinstance(version, str) or not version:
        # Why no default version: geodl's own major version may be 0, so a default of "0" would
        # let any foreign checkpoint through the major-version check below.
        raise CheckpointMismatch(
            f"checkpoint '{path}' has no geodl version; it was not written by geodl, or by a "
            "geodl too old to record its version"
        )
    if version.split(".")[0] != _version().split(".")[0]:
        raise CheckpointMismatch(
            f"checkpoint '{path}' was written by geodl {version}, this is "
            f"{_version()}; retrain, or use the matching geodl major version"
        )
    if expected_config is not None:
        diffs = config_differences(meta.get("config", {}), expected_config)
        if diffs:
            shown = ", ".join(diffs[:8]) + (" ..." if len(diffs) > 8 else "")
            raise CheckpointMismatch(
                f"checkpoint '{path}' was trained with another config; differing keys: {shown}"
            )
    return ckpt


def load_model_weights(model: nn.Module, ckpt: Mapping[str, Any]) -> nn.Module:
    """Load the ``model.*`` weights of a Lightning checkpoint (or a plain state dict) into ``model``."""
    state = ckpt.get("state_dict", ckpt)
    inner = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    model.load_state_dict(inner or dict(state))
    return model


def average_state_dicts(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Element-wise mean of several state dicts (checkpoint averaging); integer buffers come from
    the last one."""
    if not states:
        raise ValueError("no state dicts to average")
    out: dict[str, Tensor] = {}
    for key, last in states[-1].items():
        if torch.is_floating_point(last):
            out[key] = torch.stack([s[key].float() for s in states]).mean(0).to(last.dtype)
        else:
            out[key] = last.clone()
    return out
