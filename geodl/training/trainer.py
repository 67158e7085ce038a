"""Trainer factory and the resumable ``fit`` used by every learned method.

Lightning runs the loop (devices, precision, DDP, SLURM, checkpoints, early stopping, loggers). What
geodl adds: options from a typed spec, clear errors for impossible hardware requests, checkpoints
written atomically and stamped with the training's key, resume from ``last.ckpt`` only when that key
matches, per-epoch deterministic shuffling that survives a resume, and equal batches on every rank.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from geodl.errors import UserInputError
from geodl.training.checkpoints import average_state_dicts, stamp
from geodl.training.module import TaskModule
from geodl.training.spec import TrainSection, check_hardware

__all__ = ["FitResult", "build_trainer", "fit", "fit_phases"]

log = logging.getLogger("geodl.training")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary sibling and rename it: a kill never leaves a torn file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ):
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class EpochLine(pl.Callback):
    """One line per finished epoch on stdout (rank 0), where no progress bar shows: in a batch
    job's log, or with ``train.progress_bar: false``. Prints the epoch's logged losses and time."""

    def __init__(self, echo: Callable[[str], None] = print) -> None:
        self.echo = echo
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        shown = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.endswith("loss") and getattr(v, "numel", lambda: 1)() == 1
        }
        losses = ", ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items()))
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        self.echo(
            f"[geodl]   epoch {trainer.current_epoch + 1}{total}: {losses} "
            f"({time.perf_counter() - self._start:.1f} s)"
        )


def _progress_bar(spec: TrainSection) -> bool:
    """A progress bar only where a person watches: ``train.progress_bar`` and a terminal."""
    return bool(spec.progress_bar) and sys.stderr.isatty()


@dataclass
class FitResult:
    """Where a training run left its checkpoints and what it reached."""

    last_path: Path
    best_path: Path | None
    best_score: float | None
    epochs: int
    global_step: int
    resumed_from: Path | None
    averaged_path: Path | None
    metrics_csv: Path


def build_trainer(
    spec: TrainSection,
    *,
    ckpt_dir: Path,
    log_dir: Path,
    max_epochs: int | None = None,
    monitor: str = "val/loss",
    csv_version: str = "",
    manual: bool = False,
) -> pl.Trainer:
    """A Lightning ``Trainer`` configured from ``spec`` (devices, precision, clipping, callbacks).

    ``manual``: the module optimises by hand (adversarial training) and clips its own gradients;
    Lightning then takes no clipping value and no accumulation."""
    check_hardware(spec)
    callbacks: list[pl.Callback] = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor=monitor,
            mode="min",
            save_top_k=1,
            save_last=True,
            enable_version_counter=False,
        )
    ]
    if spec.average_last > 0:
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir / "epochs",
                filename="epoch{epoch:04d}",
                monitor="epoch",
                mode="max",
                save_top_k=spec.average_last,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            )
        )
    if spec.early_stopping_patience is not None:
        callbacks.append(EarlyStopping(monitor=monitor, patience=spec.early_stopping_patience))
    if _progress_bar(spec):
        callbacks.append(TQDMProgressBar(leave=False))
    else:
        callbacks.append(EpochLine())
    loggers = [
        CSVLogger(save_dir=str(log_dir), name="", version=csv_version),
        TensorBoardLogger(save_dir=str(log_dir), name="tensorboard", version=""),
    ]
    return pl.Trainer(
        accelerator=spec.accelerator,
        devices=spec.devices,
        num_nodes=spec.num_nodes,
        strategy=spec.strategy,
        precision=spec.precision,
        max_epochs=max_epochs if max_epochs is not None else spec.max_epochs,
        max_steps=spec.max_steps,
        max_time=spec.max_time,
        gradient_clip_val=None if manual else spec.grad_clip,
        accumulate_grad_batches=1 if manual else spec.accumulate,
        deterministic=spec.deterministic,
        callbacks=callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=_progress_bar(spec),
        enable_model_summary=False,
        use_distributed_sampler=False,  # geodl builds its own rank-aware samplers (see fit)
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )


class BatchSliceSampler(DistributedSampler):
    """``DistributedSampler``'s order (by seed and epoch, padded to equal shares), dealt to the
    ranks by batches: rank ``r`` gets rows ``r*b .. (r+1)*b`` of every batch of ``world * b``
    (``b`` = ``batch_size``, the per-rank batch), where ``DistributedSampler`` deals one sample
    at a time. With one rank the order is ``DistributedSampler``'s; with several, each rank's
    batch is a contiguous slice of the one-process batch of ``world * b``, which is what
    :mod:`geodl.ranks` needs to draw noise and roll masks as that batch would.

    Examples
    --------
    >>> data = list(range(10))
    >>> [list(BatchSliceSampler(data, batch_size=2, num_replicas=2, rank=r, shuffle=False))
    ...  for r in (0, 1)]
    [[0, 1, 4, 5, 8], [2, 3, 6, 7, 9]]
    """

    def __init__(self, data: Dataset, *, batch_size: int, **kwargs: Any) -> None:
        super().__init__(data, **kwargs)
        self.batch_size = int(batch_size)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            gen = torch.Generator()
            gen.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=gen).tolist()
        else:
            order = list(range(n))
        if self.drop_last:
            order = order[: self.total_size]
        else:  # padded with the first samples, as DistributedSampler pads
            pad = self.total_size - n
            order += (order * math.ceil(pad / n))[:pad] if pad > 0 else []
        whole = self.num_replicas * self.batch_size
        mine: list[int] = []
        for start in range(0, self.total_size, whole):
            chunk = order[start : start + whole]
            share = len(chunk) // self.num_replicas
            mine += chunk[self.rank * share : (self.rank + 1) * share]
        return iter(mine)


def _loader(
    data: Dataset,
    spec: TrainSection,
    trainer: pl.Trainer,
    *,
    shuffle: bool,
    batch_size: int,
    collate_fn: Callable[[list[Any]], Any] | None,
) -> DataLoader:
    # A distributed sampler even on one process: its order depends only on (seed, epoch), so a
    # resumed run sees the same batches as an uninterrupted one, and every rank gets the same count.
    sampler = BatchSliceSampler(
        data,
        batch_size=batch_size,
        num_replicas=trainer.world_size,
        rank=trainer.global_rank,
        shuffle=shuffle,
        seed=spec.seed,
        drop_last=False,
    )
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=spec.num_workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=spec.num_workers > 0,
    )


def _resume_path(ckpt_dir: Path, key: str, resume: bool) -> Path | None:
    last = ckpt_dir / "last.ckpt"
    if not last.exists():
        return None
    try:
        meta = torch.load(last, map_location="cpu", weights_only=True).get("geodl", {})
    except Exception:  # noqa: BLE001 - a torn or foreign file: start again
        meta = {}
    if resume and meta.get("key") == key:
        return last
    log.warning("checkpoints in %s belong to another training; starting from scratch", ckpt_dir)
    shutil.rmtree(ckpt_dir)
    return None


def fit(
    module: TaskModule,
    train_data: Dataset,
    val_data: Dataset | None,
    spec: TrainSection,
    *,
    ckpt_dir: str | Path,
    log_dir: str | Path,
    key: str,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    max_epochs: int | None = None,
) -> FitResult:
    """Train ``module``; resume from ``ckpt_dir/last.ckpt`` when it was written for the same ``key``.

    ``key`` identifies this training (e.g. the stage's cache key); it is stored in every checkpoint.
    With ``spec.phases`` the training runs phase after phase (:func:`fit_phases`) and the last
    phase's result is returned, so that every task honours the config's ``train.phases``.
    """
    if spec.phases and max_epochs is None:
        return fit_phases(
            module,
            train_data,
            val_data,
            spec,
            ckpt_dir=ckpt_dir,
            log_dir=log_dir,
            key=key,
            collate_fn=collate_fn,
        )[-1]
    ckpt_dir, log_dir = Path(ckpt_dir), Path(log_dir)
    pl.seed_everything(spec.seed, workers=True, verbose=False)
    module.metadata = {**module.metadata, "key": key}
    monitor = "val/loss" if val_data is not None else "train/loss_epoch"
    resume = _resume_path(ckpt_dir, key, spec.resume)
    if resume is None and log_dir.exists():
        shutil.rmtree(log_dir)  # logs of another (or abandoned) training
    # Lightning's CSV logger truncates an existing metrics.csv: a resumed run logs to its own
    # sub-folder, and learning curves merge them (geodl.report.read_learning_curves).
    n_prior = len(list(log_dir.glob("resume-*"))) if resume else 0
    csv_version = f"resume-{n_prior + 1}" if resume else ""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    trainer = build_trainer(
        spec,
        ckpt_dir=ckpt_dir,
        log_dir=log_dir,
        max_epochs=max_epochs,
        monitor=monitor,
        csv_version=csv_version,
        manual=not module.automatic_optimization,
    )
    if spec.compile:
        module.model = torch.compile(module.model)  # type: ignore[assignment]
    train_dl = _loader(
        train_data, spec, trainer, shuffle=True, batch_size=spec.batch_size, collate_fn=collate_fn
    )
    val_dl = (
        _loader(
            val_data,
            spec,
            trainer,
            shuffle=False,
            batch_size=spec.val_batch_size or spec.batch_size,
            collate_fn=collate_fn,
        )
        if val_data is not None
        else None
    )
    if resume is not None:
        log.info("resuming from %s", resume)
    try:
        with warnings.catch_warnings():
            # Lightning's own use of a torch API that torch deprecates, on every run: not the
            # user's to act on
            warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
            trainer.fit(module, train_dl, val_dl, ckpt_path=resume, weights_only=True)
    except SystemExit as stop:
        # Lightning answers Ctrl-C (and SIGTERM) by shutting down and calling exit(1): give the
        # caller the interruption (Ctrl-C, or geodl.errors.Terminated), not a silent exit code 1.
        # The epoch-end checkpoint (last.ckpt, stamped with `key`) is what a re-run resumes from.
        if trainer.interrupted:
            cause = stop.__context__
            raise (cause if isinstance(cause, KeyboardInterrupt) else KeyboardInterrupt()) from None
        raise
    best_cb = trainer.checkpoint_callback
    best = Path(best_cb.best_model_path) if best_cb and best_cb.best_model_path else None
    score = best_cb.best_model_score if best_cb else None
    averaged = None
    if spec.average_last > 0 and trainer.is_global_zero:
        averaged = _average(ckpt_dir, module.metadata)
    return FitResult(
        last_path=ckpt_dir / "last.ckpt",
        best_path=best,
        best_score=float(score) if score is not None else None,
        epochs=trainer.current_epoch,
        global_step=trainer.global_step,
        resumed_from=resume,
        averaged_path=averaged,
        metrics_csv=log_dir / csv_version / "metrics.csv",
    )


def _average(ckpt_dir: Path, metadata: dict[str, Any]) -> Path:
    paths = sorted((ckpt_dir / "epochs").glob("epoch*.ckpt"))
    states = [torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in paths]
    out = ckpt_dir / "averaged.ckpt"
    ckpt: dict[str, Any] = {"state_dict": average_state_dicts(states)}
    stamp(ckpt, {**metadata, "averaged": len(paths)})  # the version, as load_checkpoint requires
    AtomicCheckpointIO().save_checkpoint(ckpt, out)
    return out


def fit_phases(
    module: TaskModule,
    train_data: Dataset,
    val_data: Dataset | None,
    spec: TrainSection,
    *,
    ckpt_dir: str | Path,
    log_dir: str | Path,
    key: str,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> list[FitResult]:
    """Train in the phases listed in ``spec.phases`` (or one phase), each with its own epochs, lr and
    trainable parameters; each phase resumes on its own."""
    phases: Sequence[Any] = spec.phases or [None]
    names = {n for n, _ in module.model.named_parameters()}
    results = []
    for phase in phases:
        sub = Path(ckpt_dir) / phase.name if phase else Path(ckpt_dir)
        if phase is not None:
            unknown = [p for p in phase.trainable if not any(n.startswith(p) for n in names)]
            if unknown:
                raise UserInputError(
                    f"train.phases '{phase.name}': trainable prefixes {unknown} match no parameter; "
                    f"parameters start with {sorted({n.split('.')[0] for n in names})}"
                )
            for name, param in module.model.named_parameters():
                param.requires_grad = not phase.trainable or any(
                    name.startswith(p) for p in phase.trainable
                )
            module.lr = phase.lr or spec.lr
        results.append(
            fit(
                module,
                train_data,
                val_data,
                spec,
                ckpt_dir=sub,
                log_dir=Path(log_dir) / (phase.name if phase else ""),
                key=f"{key}:{phase.name}" if phase else key,
                collate_fn=collate_fn,
                max_epochs=phase.max_epochs if phase else None,
            )
        )
    for param in module.model.parameters():
        param.requires_grad = True
    return results


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily use ``n`` torch intra-op threads (None: leave as is). Small tensors (Lorenz
    states, tiny grids) run faster on one thread: more only add synchronisation overhead."""
    if n is None:
        yield
        return
    if n < 1:
        raise UserInputError(f"threads must be >= 1, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
