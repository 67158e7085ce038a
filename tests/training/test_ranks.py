"""A batch split across DDP ranks computes what the whole batch computes in one process: the
sampler deals contiguous slices of the one-process batches, and geodl.ranks' masked means, noise,
rolls and normalisers are the whole batch's (two gloo processes)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from geodl import losses, ranks
from geodl.training.trainer import BatchSliceSampler


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


@pytest.mark.parametrize("n", [10, 13, 16])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
def test_one_rank_keeps_the_distributed_samplers_order(n, shuffle, drop_last):
    data = list(range(n))
    for epoch in (0, 3):
        kw = dict(num_replicas=1, rank=0, shuffle=shuffle, seed=7, drop_last=drop_last)
        ours, torchs = BatchSliceSampler(data, batch_size=4, **kw), DistributedSampler(data, **kw)
        ours.set_epoch(epoch)
        torchs.set_epoch(epoch)
        assert list(ours) == list(torchs)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("n", [24, 25, 31])
def test_ranks_get_slices_of_the_one_process_batches(world, n):
    data, b = list(range(n)), 3
    one = BatchSliceSampler(data, batch_size=world * b, num_replicas=1, rank=0, seed=1)
    parts = [
        BatchSliceSampler(data, batch_size=b, num_replicas=world, rank=r, seed=1)
        for r in range(world)
    ]
    for s in (one, *parts):
        s.set_epoch(2)
    lists = [list(p) for p in parts]
    assert len({len(x) for x in lists}) == 1 and len(lists[0]) == len(parts[0])
    per_rank = [_batches(x, b) for x in lists]
    whole = _batches(list(one), world * b)
    if n % world == 0:  # no padding: every batch is the one-process batch, in its order
        assert [sum((p[k] for p in per_rank), []) for k in range(len(whole))] == whole
    else:  # padded with the first samples of the order, as DistributedSampler pads
        assert sorted(set(sum(lists, []))) == data


def _worker(rank: int, world: int, store: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.manual_seed(5)
        whole = torch.randn(6, 2, 4)
        mask = torch.rand(6, 2, 4) > 0.6
        mask[:2] = False  # rank 0's share has no selected entry: the whole batch's count decides
        target = torch.randn(6, 2, 4)
        n = len(whole) // world
        mine = slice(rank * n, (rank + 1) * n)
        torch.manual_seed(11)
        with ranks.split_batch(rank, world):
            noise = ranks.randn_like(whole[mine])
            after = torch.rand(3)  # the generators stay in step with one process's
            rolled = ranks.roll_batch(mask[mine])
            loss = losses.mse(whole[mine], target[mine], mask=mask[mine])
            total = loss.detach().clone()
            dist.all_reduce(total)  # DDP's average of the ranks' gradients, here of the values
            mean = ranks.batch_mean(target[mine] ** 2)
            size = ranks.batch_size(n)
        results[rank] = {
            "noise": noise,
            "after": after,
            "rolled": rolled,
            "loss": total / world,
            "mean": mean,
            "size": size,
        }
    finally:
        dist.destroy_process_group()


def test_split_batch_computes_the_whole_batch(tmp_path):
    torch.manual_seed(5)
    whole = torch.randn(6, 2, 4)
    mask = torch.rand(6, 2, 4) > 0.6
    mask[:2] = False
    target = torch.randn(6, 2, 4)
    torch.manual_seed(11)
    noise = torch.randn_like(whole)
    after = torch.rand(3)
    world = 2
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(world, str(tmp_path / "store"), results), nprocs=world, join=True)
    got = [results[r] for r in range(world)]
    torch.testing.assert_close(torch.cat([g["noise"] for g in got]), noise, rtol=0, atol=0)
    for g in got:
        torch.testing.assert_close(g["after"], after, rtol=0, atol=0)
        torch.testing.assert_close(g["loss"], losses.mse(whole, target, mask=mask))
        torch.testing.assert_close(g["mean"], (target**2).mean())
        assert g["size"] == 6
    assert torch.equal(torch.cat([g["rolled"] for g in got]), torch.roll(mask, 1, 0))


def test_outside_a_split_the_functions_are_the_plain_ones():
    x = torch.arange(12.0).reshape(4, 3)
    torch.manual_seed(0)
    a = ranks.randn_like(x)
    torch.manual_seed(0)
    assert torch.equal(a, torch.randn_like(x))
    assert torch.equal(ranks.roll_batch(x), torch.roll(x, 1, 0))
    assert ranks.batch_mean(x) == x.mean() and ranks.batch_size(4) == 4
    assert ranks.batch_total(torch.tensor(5.0)) == 5.0
    with ranks.split_batch(0, 1):  # one rank: no collective, nothing changes
        assert torch.equal(ranks.roll_batch(x), torch.roll(x, 1, 0))
