"""Thin Lightning adapters: a plain model, a loss function and an optimiser spec.

Why adapters and not one big LightningModule: models and losses stay plain torch (usable without
Lightning, testable alone), and a task adapter only says how a batch becomes named loss terms. The
adapters log losses per step and epoch; they never write files or print.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from geodl import ranks
from geodl.errors import UserInputError
from geodl.training.spec import TrainSection

__all__ = ["LossFn", "TaskModule", "TrainingDiverged"]

#: ``loss_fn(model, batch) -> {"loss": total, other named terms...}``
LossFn = Callable[[nn.Module, Any], dict[str, Tensor]]


class TrainingDiverged(UserInputError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TaskModule(pl.LightningModule):
    """Lightning adapter around ``model``.

    Parameters
    ----------
    model : plain ``nn.Module``.
    loss_fn : maps ``(model, batch)`` to named scalar terms; ``"loss"`` is optimised.
    spec : optimiser and schedule options (``lr``, ``optimizer``, ``schedule``...).
    describe_batch : text identifying a batch (e.g. its time range) for error messages.
    metadata : plain data saved in every checkpoint under ``"geodl"`` (config, normalisation, grid).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        spec: TrainSection,
        *,
        describe_batch: Callable[[Any], str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.spec = spec
        self.lr = spec.lr
        self.describe_batch = describe_batch or (lambda batch: "")
        self.metadata = metadata or {}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def _log_terms(self, prefix: str, terms: dict[str, Tensor], batch_size: int) -> None:
        for name, value in terms.items():
            self.log(
                f"{prefix}/{name}",
                value.detach().float(),
                on_step=prefix == "train",
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=batch_size,
                # averaged over the ranks under DDP (a scalar beside the gradients' all-reduce),
                # so that the epoch line reports the whole batch, not rank 0's share
                sync_dist=True,
            )

    @staticmethod
    def _batch_size(batch: Any) -> int:
        if isinstance(batch, Tensor):
            return int(batch.shape[0])
        for name in ("target", "obs", "x"):
            value = getattr(batch, name, None)
            if isinstance(value, Tensor):
                return int(value.shape[0])
        if isinstance(batch, list | tuple) and batch and isinstance(batch[0], Tensor):
            return int(batch[0].shape[0])
        return 1

    def _split(self) -> Any:
        """The batch is this rank's slice of the whole batch (geodl.ranks) under DDP."""
        trainer = self._trainer  # None for a module stepped by hand, outside a Trainer
        if trainer is None:
            return ranks.split_batch(0, 1)
        return ranks.split_batch(trainer.global_rank, trainer.world_size)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        with self._split():
            terms = self.loss_fn(self.model, batch)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            where = self.describe_batch(batch)
            raise TrainingDiverged(
                f"training loss is {loss.item()} at step {self.global_step} (epoch "
                f"{self.current_epoch}{', ' + where if where else ''}); the last good checkpoint is "
                "kept; lower train.lr or set train.grad_clip"
            )
        self._log_terms("train", terms, self._batch_size(batch))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        with self._split():
            terms = self.loss_fn(self.model, batch)
        self._log_terms("val", terms, self._batch_size(batch))

    def configure_optimizers(self) -> Any:
        spec = self.spec
        params = [p for p in self.model.parameters() if p.requires_grad]
        if spec.optimizer == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(
                params, lr=self.lr, weight_decay=spec.weight_decay
            )
        elif spec.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=spec.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=spec.weight_decay)
        if spec.schedule == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, factor=spec.gamma, patience=spec.plateau_patience
            )
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "monitor": "val/loss", "interval": "epoch"},
            }
        total = self._total_steps()
        warm = spec.warmup_steps

        def factor(step: int) -> float:
            if warm and step < warm:
                return (step + 1) / warm
            if spec.schedule == "cosine":
                progress = min(1.0, (step - warm) / max(1, total - warm))
                return 0.5 * (1.0 + math.cos(math.pi * progress))
            if spec.schedule == "step":
                per_epoch = max(1, total // max(1, self._max_epochs()))
                return spec.gamma ** ((step // per_epoch) // spec.step_size)
            return 1.0

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _max_epochs(self) -> int:
        return int(self.trainer.max_epochs or self.spec.max_epochs)

    def _total_steps(self) -> int:
        try:
            return max(1, int(self.trainer.estimated_stepping_batches))
        except (RuntimeError, ValueError, TypeError):
            return max(1, self.spec.max_steps)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from geodl.training.checkpoints import stamp

        stamp(checkpoint, self.metadata)
