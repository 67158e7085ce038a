"""Typed training options: the ``train`` section shared by every learned method."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from geodl.config import Section
from geodl.errors import UserInputError

__all__ = ["PhaseSection", "TrainSection", "check_config_hardware", "check_hardware"]


class PhaseSection(Section):
    """One phase of multi-stage training (e.g. pre-train a prior, then the solver).

    ``trainable`` lists parameter-name prefixes left trainable in this phase (empty: all).
    """

    name: str
    max_epochs: int = Field(gt=0)
    lr: float | None = Field(None, gt=0)
    trainable: list[str] = Field(default_factory=list)


class TrainSection(Section):
    """Trainer, optimiser, schedule and checkpointing options."""

    max_epochs: int = Field(10, gt=0)
    max_steps: int = Field(-1, ge=-1)
    max_time: str | None = Field(None, description="DD:HH:MM:SS wall-clock limit")
    batch_size: int = Field(8, gt=0)
    val_batch_size: int | None = Field(None, gt=0)
    num_workers: int = Field(0, ge=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["none", "cosine", "step", "plateau"] = "none"
    warmup_steps: int = Field(0, ge=0)
    step_size: int = Field(10, gt=0, description="epochs between decays (schedule: step)")
    gamma: float = Field(0.5, gt=0, le=1)
    plateau_patience: int = Field(3, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    accumulate: int = Field(1, gt=0)
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int | Literal["auto"] = "auto"
    num_nodes: int = Field(1, gt=0)
    strategy: Literal["auto", "ddp"] = "auto"
    seed: int = 0
    deterministic: bool = False
    compile: bool = False
    early_stopping_patience: int | None = Field(None, gt=0)
    average_last: int = Field(0, ge=0, description="average the weights of the last K epochs")
    resume: bool = True
    progress_bar: bool = True
    phases: list[PhaseSection] = Field(
        default_factory=list,
        description="train phase after phase (each its own epochs, lr and trainable parameters) "
        "instead of max_epochs in one go",
    )


def check_hardware(spec: TrainSection, key: str = "train") -> None:
    """Refuse GPU requests this machine cannot serve, with one clear line naming ``key``."""
    import torch

    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec.accelerator == "gpu" and n_gpu == 0:
        raise UserInputError(
            f"{key}.accelerator is 'gpu' but no CUDA GPU is visible on this machine "
            f"(torch {torch.__version__}); set {key}.accelerator to 'auto' or 'cpu'"
        )
    if spec.accelerator == "gpu" and isinstance(spec.devices, int) and spec.devices > n_gpu:
        raise UserInputError(
            f"{key}.devices is {spec.devices} but this machine has {n_gpu} GPU(s); "
            f"set {key}.devices to at most {n_gpu}"
        )
    on_cpu = spec.accelerator == "cpu" or (spec.accelerator == "auto" and n_gpu == 0)
    if spec.precision == "16-mixed" and on_cpu:
        raise UserInputError(
            f"{key}.precision '16-mixed' needs a GPU; use 'bf16-mixed' or '32' on CPU"
        )


def _train_sections(node: Any, key: str) -> list[tuple[str, TrainSection]]:
    if isinstance(node, TrainSection):
        return [(key, node)]
    if isinstance(node, BaseModel):
        found = []
        for name in type(node).model_fields:
            found += _train_sections(getattr(node, name), f"{key}.{name}" if key else name)
        return found
    if isinstance(node, dict):
        return [f for k, v in node.items() for f in _train_sections(v, f"{key}.{k}")]
    return []


def check_config_hardware(cfg: BaseModel) -> None:
    """:func:`check_hardware` for every ``train`` section of an experiment config, so that a GPU
    request on a machine without one fails before the first stage rather than at training time.

    Examples
    --------
    >>> class Cfg(Section):
    ...     train: TrainSection = TrainSection()
    >>> check_config_hardware(Cfg(train=TrainSection(accelerator="cpu")))
    """
    for key, spec in _train_sections(cfg, ""):
        check_hardware(spec, key)
