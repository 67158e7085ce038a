"""Small, deterministic training run used by the training tests (run as a script or imported).

Usage: python train_script.py OUT_DIR [--epochs N] [--batch B] [--pause-at EPOCH:BATCH MARKER]
Writes OUT_DIR/result.json with the final validation loss and a prediction checksum.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import TensorDataset

from geodl.training import TaskModule, TrainSection, fit


def make_data(n: int = 96, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 12, 12, generator=gen)
    y = 0.5 * x.roll(1, -1) + 0.25 * x.roll(-1, -2)
    return TensorDataset(x, y)


def make_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 1, 3, padding=1))


def loss_fn(model: nn.Module, batch) -> dict[str, torch.Tensor]:
    x, y = batch
    return {"loss": ((model(x) - y) ** 2).mean()}


class Pause(pl.Callback):
    """Stop (sleep) inside a given epoch and batch so that a test can kill the process."""

    def __init__(self, epoch: int, batch: int, marker: Path) -> None:
        self.epoch, self.batch, self.marker = epoch, batch, marker

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self.marker.write_text("paused")
            time.sleep(120)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--pause-at")
    p.add_argument("--marker")
    p.add_argument("--strategy", default="auto")
    p.add_argument("--devices", default="auto")
    args = p.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    out = Path(args.out)
    devices = int(args.devices) if args.devices.isdigit() else "auto"
    spec = TrainSection(
        max_epochs=args.epochs,
        batch_size=args.batch,
        lr=1e-2,
        progress_bar=False,
        strategy=args.strategy,
        devices=devices,
        accelerator="cpu",
    )
    module = TaskModule(make_model(), loss_fn, spec, metadata={"config": {"demo": 1}})
    if args.pause_at:
        epoch, batch = (int(v) for v in args.pause_at.split(":"))
        import geodl.training.trainer as trainer_mod

        original = trainer_mod.build_trainer

        def build_with_pause(*a, **kw):
            trainer = original(*a, **kw)
            trainer.callbacks.append(Pause(epoch, batch, Path(args.marker)))
            return trainer

        trainer_mod.build_trainer = build_with_pause
    data = make_data()
    result = fit(
        module,
        data,
        make_data(32, seed=5),
        spec,
        ckpt_dir=out / "ckpt",
        log_dir=out / "logs",
        key="test-key",
    )
    if int(torch.distributed.get_rank() if torch.distributed.is_initialized() else 0) == 0:
        module.model.eval()
        with torch.no_grad():
            pred = module.model(make_data(8, seed=9).tensors[0])
        (out / "result.json").write_text(
            json.dumps(
                {
                    "val_loss": float(module.trainer.callback_metrics["val/loss"]),
                    "pred_sum": float(pred.double().sum()),
                    "resumed": result.resumed_from is not None,
                    "epochs": result.epochs,
                    "world_size": module.trainer.world_size,
                }
            )
        )


if __name__ == "__main__":
    main()
