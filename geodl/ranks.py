"""One training batch split across DDP ranks, computed as the one-process batch would be.

Under DDP each rank holds a contiguous slice of every global batch (``geodl.training``'s sampler
gives rank ``r`` rows ``r*b .. (r+1)*b`` of each batch of ``world * b``), and the gradients are
averaged over the ranks. That average is the one-process gradient only when nothing in a step
depends on the rank's share alone. Four things did, and go through this module:

- a masked mean divides by the number of selected entries: each rank's count differs, so the
  losses divide by the whole batch's count instead (:func:`batch_total`);
- random draws (input noise, a VAE's latent sample) come from each rank's generator in the
  rank's shape: every rank draws the whole batch's noise, from generators seeded alike, and keeps
  its rows (:func:`randn_like`), so the draws, and every later draw, are the one-process ones;
- a roll along the batch (the mask swap) needs the previous rank's last sample
  (:func:`roll_batch`);
- a normaliser computed from the batch's data (the mean increment of 4DVarNet's prior loss) is
  the whole batch's (:func:`batch_mean`).

The split is declared by :func:`split_batch` around a training or validation step (the
Lightning adapter does it when ``world_size > 1``); outside it every function is its plain
one-process form, so code run by rank 0 alone (calibration, prediction) never waits on a
collective.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

__all__ = ["batch_mean", "batch_size", "batch_total", "randn_like", "roll_batch", "split_batch"]

_SPLIT: ContextVar[tuple[int, int] | None] = ContextVar("geodl_split_batch", default=None)


@contextmanager
def split_batch(rank: int, world_size: int) -> Iterator[None]:
    """Within this block, the batches are rank ``rank``'s slices of batches split over
    ``world_size`` ranks (an initialised ``torch.distributed`` process group)."""
    token = _SPLIT.set((int(rank), int(world_size)) if world_size > 1 else None)
    try:
        yield
    finally:
        _SPLIT.reset(token)


def batch_size(local: int) -> int:
    """The whole batch's size, given this rank's."""
    split = _SPLIT.get()
    return local if split is None else local * split[1]


def batch_total(total: Tensor) -> Tensor:
    """A per-rank sum of weights (a masked mean's denominator) as the one to divide by: the whole
    batch's sum over the number of ranks, so that the ranks' mean of their losses (DDP's average
    of the gradients) is the whole batch's masked mean."""
    split = _SPLIT.get()
    if split is None:
        return total
    whole = total.detach().clone()
    torch.distributed.all_reduce(whole)
    return whole / split[1]


def batch_mean(x: Tensor) -> Tensor:
    """``x.mean()`` over the whole batch: under a split, the ranks' sums and counts are summed (a
    normaliser of data, such as a trajectory's mean increment: no gradient flows through it)."""
    split = _SPLIT.get()
    if split is None:
        return x.mean()
    count = torch.tensor(float(x.numel()), dtype=torch.float64, device=x.device)
    parts = torch.stack((x.detach().sum().double(), count))  # on x's device, as NCCL needs
    torch.distributed.all_reduce(parts)
    return (parts[0] / parts[1]).to(x.dtype)


def randn_like(x: Tensor) -> Tensor:
    """``torch.randn_like(x)`` for a batch ``x`` (batch first): this rank's rows of the noise
    that the whole batch would get in one process."""
    split = _SPLIT.get()
    if split is None:
        return torch.randn_like(x)
    rank, world = split
    n = x.shape[0]
    whole = torch.randn((world * n, *x.shape[1:]), dtype=x.dtype, device=x.device)
    return whole[rank * n : (rank + 1) * n]


def roll_batch(x: Tensor) -> Tensor:
    """``torch.roll(x, 1, 0)`` of the whole batch: this rank's first row is the previous rank's
    last."""
    split = _SPLIT.get()
    if split is None:
        return torch.roll(x, 1, 0)
    rank, world = split
    dtype = x.dtype
    last = x[-1:].contiguous()
    if dtype == torch.bool:  # gloo has no boolean all_gather
        last = last.to(torch.uint8)
    parts = [torch.empty_like(last) for _ in range(world)]
    torch.distributed.all_gather(parts, last)
    previous = parts[(rank - 1) % world].to(dtype)
    return torch.cat((previous, x[:-1]), 0)
