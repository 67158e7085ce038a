"""Typed training options: the ``train`` section shared by every learned method."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from geodl.config import Section

__all__ = ["PhaseSection", "TrainSection"]


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
    phases: list[PhaseSection] = Field(default_factory=list)
