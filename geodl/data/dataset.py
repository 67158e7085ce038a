"""Torch datasets of patches: map-style :class:`PatchDataset` and iterable :class:`PatchStream`.

Design decisions
----------------
- Reads are planned by storage chunk. A *block* is a whole number of storage chunks (grown along
  time up to ``block_bytes``); it is read, decoded, normalised and NaN-masked once, kept in a
  :class:`ChunkCache` under a byte budget, and every patch inside it is a slice copy. Patches are
  grouped by the block holding their first point, so a group's patches reuse the same blocks.
- Blocks grow along time only while the blocks one group needs (times two, for the shuffle
  buffer) fit in the cache; groups of neighbouring spatial blocks then form tiles that fit too.
  A cache too small for one group is a logged warning, not a silent slowdown.
- Shuffling is by block: the order of (time run, tile) units is random, groups inside a unit are
  in random order, then a shuffle buffer mixes patches of neighbouring groups. Fully random order
  over a chunked store would decode each chunk once per patch; the map-style dataset allows it
  (with a random sampler) but is meant for in-memory data and ordered prediction.
- Batches are built whole (``__getitems__`` / the stream yields batches): one Python call per batch
  fills preallocated arrays, so per-patch overhead stays small against the copy itself.
- Equal work per DDP rank: the stream's epoch order is split into ``world_size`` equal parts
  (padded by wrapping around, like ``DistributedSampler``); use ``DistributedSampler`` with the
  map-style dataset.
- Files are opened lazily in each process (see :class:`~geodl.data.source.GriddedSource`), and Dask
  runs with the synchronous scheduler inside workers.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dask
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from geodl.data.batch import Batch, collate
from geodl.data.index import PatchIndex
from geodl.data.normalize import Normalizer
from geodl.data.source import GriddedSource
from geodl.data.splits import Split
from geodl.errors import DataError

__all__ = ["ChunkCache", "PatchDataset", "PatchStream", "make_loader"]

log = logging.getLogger("geodl.data")

Block = tuple[np.ndarray, np.ndarray]  # (values normalised with 0 where missing, finite mask)


class ChunkCache:
    """Least-recently-used cache of decoded blocks under a byte budget.

    At least one block is always kept, whatever the budget, so a block larger than the budget is
    still read only once per use. ``hits``, ``misses`` and ``bytes_read`` count what happened.

    Examples
    --------
    >>> c = ChunkCache(max_bytes=100)
    >>> a = c.get("k", lambda: (np.zeros(10),))
    >>> b = c.get("k", lambda: (np.ones(10),))
    >>> (c.hits, c.misses, float(b[0][0]))
    (1, 1, 0.0)
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Any, tuple[np.ndarray, ...]] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self.bytes_read = 0

    def get(self, key: Any, load: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return value
        value = load()
        size = sum(a.nbytes for a in value)
        self.misses += 1
        self.bytes_read += size
        self._items[key] = value
        self.nbytes += size
        while self.nbytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self.nbytes -= sum(a.nbytes for a in old)
        return value

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


def _roles(source: GriddedSource, mapping: Mapping[str, int] | None, what: str) -> dict[str, int]:
    """Accept sizes keyed by role (time/y/x) or by the source's dim names (lat/lon, ...)."""
    if mapping is None:
        return {}
    by_dim = dict(zip(source.dims, ("time", "y", "x"), strict=True))
    out = {}
    for key, value in mapping.items():
        role = key if key in ("time", "y", "x") else by_dim.get(key)
        if role is None:
            raise DataError(
                f"patch {what} has unknown dim '{key}'; expected time/y/x or {list(source.dims)}"
            )
        if not isinstance(value, int | np.integer):
            raise DataError(f"patch {what} {key}={value!r}; expected an integer")
        out[role] = int(value)
    missing = [r for r in ("time", "y", "x") if r not in out]
    if what == "size" and missing:
        raise DataError(f"patch size is missing {missing}; give e.g. time=15, y=120, x=120")
    return out


def _region(
    source: GriddedSource, region: Mapping[str, tuple[int, int]] | None
) -> dict[str, tuple[int, int]]:
    """``{"y_range": ..., "x_range": ...}`` for :class:`PatchIndex` from role or dim keys."""
    if not region:
        return {}
    by_dim = dict(zip(source.dims[1:], ("y", "x"), strict=True))
    out = {}
    for key, bounds in region.items():
        role = key if key in ("y", "x") else by_dim.get(key)
        if role is None:
            raise DataError(
                f"patch region has unknown dim '{key}'; expected y/x or {list(source.dims[1:])}"
            )
        out[f"{role}_range"] = (int(bounds[0]), int(bounds[1]))
    return out


class _PatchReader:
    """Fills batches of patches from cached, normalised blocks (shared by both datasets)."""

    def __init__(
        self,
        source: GriddedSource,
        size: Mapping[str, int],
        stride: Mapping[str, int] | None,
        split: Split | tuple[int, int] | None,
        normalizer: Normalizer | Mapping[str, Any] | None,
        max_land_fraction: float | None,
        cache_bytes: int,
        block_bytes: int = 16 * 2**20,
        region: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        self.source = source
        size = _roles(source, size, "size")
        stride = _roles(source, stride, "stride") or None
        if isinstance(normalizer, Mapping):
            normalizer = Normalizer(normalizer)
        if normalizer is not None:
            needed = [*source.target, *source.inputs, *source.obs, *source.static]
            missing = [v for v in needed if v not in normalizer.variables]
            if missing:
                raise DataError(
                    f"normalisation statistics lack {missing}; compute them for every target, "
                    "input, obs and static variable"
                )
        self.normalizer = normalizer
        if isinstance(split, Split):
            name, time_range = split.name, split.range
        elif split is None:
            name, time_range = "all", (0, source.shape["time"])
        else:
            name, time_range = "range", (int(split[0]), int(split[1]))
        if time_range[1] - time_range[0] < size["time"]:
            raise DataError(
                f"split '{name}' has {max(0, time_range[1] - time_range[0])} usable time steps "
                f"(indices {time_range[0]}..{time_range[1] - 1}), fewer than the patch time size "
                f"{size['time']}: zero usable patches; widen the split or shorten the patch"
            )
        self.land = source.land()
        self.index = PatchIndex(
            source.shape,
            size,
            stride,
            time_range=time_range,
            land=self.land,
            max_land_fraction=max_land_fraction,
            **_region(source, region),
        )
        if len(self.index) == 0:
            raise DataError(
                f"split '{name}' has zero usable patches: {self.index.report} "
                f"(max_land_fraction={max_land_fraction}); raise max_land_fraction"
            )
        self.size = self.index.size
        self.cache = ChunkCache(cache_bytes)
        self._plan_blocks(int(cache_bytes), int(block_bytes))
        self._static: np.ndarray | None = None

    # --- read plan --------------------------------------------------------------------------
    def _working_set(self, g: int, tile: int) -> int:
        """Bytes of the blocks one group of ``tile x tile`` spatial blocks touches (all vars)."""
        T, H, W = self.size["time"], self.size["y"], self.size["x"]
        total = 0
        for name in self._dynamic:
            ct, cy, cx = self.source.chunks[name]
            bt = min(ct * g, self.source.shape["time"])
            span_t = 1 + -(-(T - 1) // bt)
            span_y = min(tile + -(-(H - 1) // cy), -(-self.source.shape["y"] // cy))
            span_x = min(tile + -(-(W - 1) // cx), -(-self.source.shape["x"] // cx))
            total += span_t * span_y * span_x * bt * cy * cx * 5  # float32 values + bool mask
        return total

    def _plan_blocks(self, cache_bytes: int, block_bytes: int) -> None:
        """Choose read blocks (storage chunks grown along time) and spatial tiles of groups.

        Blocks grow along time up to ``block_bytes`` while twice the working set of a group
        (the shuffle buffer straddles two groups) fits in the cache; then groups take as many
        spatial blocks (``tile x tile``) as still fit, so neighbouring patches share decoded
        blocks.
        """
        self._dynamic = [*self.source.target, *self.source.inputs, *self.source.obs]
        first = self.source.chunks[self.source.target[0]]
        step = 5 * first[1] * first[2]
        g = 1
        while (
            first[0] * (g + 1) <= self.source.shape["time"]
            and step * first[0] * (g + 1) <= block_bytes
            and 2 * self._working_set(g + 1, 1) <= cache_bytes
        ):
            g += 1
        n_tiles = max(
            -(-self.source.shape["y"] // first[1]), -(-self.source.shape["x"] // first[2])
        )
        tile = 1
        while tile < n_tiles and 2 * self._working_set(g, tile + 1) <= cache_bytes:
            tile += 1
        self.block = {
            n: (min(self.source.chunks[n][0] * g, self.source.shape["time"]),
                *self.source.chunks[n][1:])
            for n in self._dynamic
        }  # fmt: skip
        self.tile = tile
        self.working_set_bytes = self._working_set(g, tile)
        if 2 * self._working_set(1, 1) > cache_bytes:
            log.warning(
                "cache budget %.3g MB is below twice the working set of one patch group "
                "(%.3g MB): blocks will be decoded several times; raise cache_bytes or rechunk "
                "with smaller chunks (geodl convert)",
                cache_bytes / 2**20,
                self._working_set(1, 1) / 2**20,
            )

    # --- blocks -----------------------------------------------------------------------------
    def _load(self, name: str, key: tuple[int, int, int]) -> Block:
        bt, by, bx = self.block[name]
        t0, y0, x0 = key[0] * bt, key[1] * by, key[2] * bx
        shape = self.source.shape
        ys = slice(y0, min(y0 + by, shape["y"]))
        xs = slice(x0, min(x0 + bx, shape["x"]))
        values = self.source.read(name, (slice(t0, min(t0 + bt, shape["time"])), ys, xs))
        mask = np.isfinite(values)
        if self.normalizer is not None:
            self.normalizer.apply(name, values, y=ys, x=xs, out=values)
        np.copyto(values, 0.0, where=~mask)
        return values, mask

    def _fill(self, name: str, starts: np.ndarray, out_v: np.ndarray, out_m: np.ndarray) -> None:
        """Copy patches of ``name`` starting at ``starts`` (N, 3) into ``out_v/out_m`` (N, T, H, W)."""
        T, H, W = self.size["time"], self.size["y"], self.size["x"]
        bt, by, bx = self.block[name]
        get = self.cache.get
        for n, (t0, y0, x0) in enumerate(starts.tolist()):
            for kt in range(t0 // bt, (t0 + T - 1) // bt + 1):
                ta, tb = max(t0, kt * bt), min(t0 + T, (kt + 1) * bt)
                for ky in range(y0 // by, (y0 + H - 1) // by + 1):
                    ya, yb = max(y0, ky * by), min(y0 + H, (ky + 1) * by)
                    for kx in range(x0 // bx, (x0 + W - 1) // bx + 1):
                        xa, xb = max(x0, kx * bx), min(x0 + W, (kx + 1) * bx)
                        key = (name, kt, ky, kx)
                        vals, mask = get(key, lambda k=key: self._load(k[0], k[1:]))
                        src = (
                            slice(ta - kt * bt, tb - kt * bt),
                            slice(ya - ky * by, yb - ky * by),
                            slice(xa - kx * bx, xb - kx * bx),
                        )
                        dst = (n, slice(ta - t0, tb - t0), slice(ya - y0, yb - y0),
                               slice(xa - x0, xb - x0))  # fmt: skip
                        out_v[dst] = vals[src]
                        out_m[dst] = mask[src]

    def _statics(self) -> np.ndarray | None:
        if not self.source.static:
            return None
        if self._static is None:
            arrays = []
            for name in self.source.static:
                v = self.source.read(name, (slice(None), slice(None)))
                mask = np.isfinite(v)
                if self.normalizer is not None:
                    self.normalizer.apply(name, v, out=v)
                arrays.append(np.where(mask, v, 0.0).astype(np.float32))
            self._static = np.stack(arrays)  # (Cs, ny, nx)
        return self._static

    # --- batches ----------------------------------------------------------------------------
    def _group(self, names: Sequence[str], starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, T, H, W = len(starts), self.size["time"], self.size["y"], self.size["x"]
        values = np.empty((n, T, len(names), H, W), dtype=np.float32)  # (B, T, C, H, W)
        mask = np.empty((n, T, len(names), H, W), dtype=bool)
        for c, name in enumerate(names):
            self._fill(name, starts, values[:, :, c], mask[:, :, c])
        return values, mask

    def batch(self, flat: np.ndarray) -> Batch:
        """The patches with flat indices ``flat`` as one :class:`Batch`."""
        starts = self.index.starts(np.asarray(flat, dtype=np.int64)).reshape(-1, 3)
        H, W = self.size["y"], self.size["x"]
        target, target_mask = self._group(self.source.target, starts)
        if self.source.obs:
            obs, obs_mask = self._group(self.source.obs, starts)
        else:
            obs, obs_mask = target, target_mask  # shared memory, never written to
        inputs = self._group(self.source.inputs, starts)[0] if self.source.inputs else None
        land = np.empty((len(starts), 1, 1, H, W), dtype=bool)
        statics = self._statics()
        static = (
            np.empty((len(starts), 1, statics.shape[0], H, W), np.float32)
            if statics is not None
            else None
        )
        for n, (_, y0, x0) in enumerate(starts.tolist()):
            land[n, 0, 0] = self.land[y0 : y0 + H, x0 : x0 + W]
            if static is not None:
                static[n, 0] = statics[:, y0 : y0 + H, x0 : x0 + W]
        t = torch.from_numpy
        return Batch(
            target=t(target),
            obs=t(obs),
            obs_mask=t(obs_mask),
            target_mask=t(target_mask),
            land_mask=t(land),
            time_index=t(starts[:, 0].copy()),
            y0=t(starts[:, 1].copy()),
            x0=t(starts[:, 2].copy()),
            inputs=None if inputs is None else t(inputs),
            static=None if static is None else t(static),
        )

    # --- read plan --------------------------------------------------------------------------
    def groups(self) -> tuple[list[tuple[int, int]], list[np.ndarray], np.ndarray]:
        """Patches grouped by the block holding their first point.

        Returns time runs ``(it_lo, it_hi)`` of time positions, arrays of kept spatial positions
        (one per spatial block), and the spatial tile of each of those arrays. A group is one
        (run, spatial array) pair, ``len(run) * len(array)`` patches; groups of one run and one
        tile share most of their blocks.
        """
        bt, by, bx = self.block[self.source.target[0]]
        gt = self.index.t_starts // bt
        cuts = np.flatnonzero(np.diff(gt)) + 1
        bounds = np.concatenate([[0], cuts, [gt.size]])
        runs = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        isp = np.arange(self.index.n_spatial)
        ys, xs = self.index.spatial_starts(isp)
        ky, kx = ys // by, xs // bx
        width = self.source.shape["x"] // bx + 1
        key = ky * width + kx
        order = np.argsort(key, kind="stable")
        split_at = np.flatnonzero(np.diff(key[order])) + 1
        spatial = np.split(order, split_at)
        first = order[np.concatenate([[0], split_at])].astype(np.int64)
        tiles = (ky[first] // self.tile) * (width // self.tile + 1) + kx[first] // self.tile
        return runs, spatial, tiles


class PatchDataset(Dataset):
    """Map-style dataset: item ``i`` is patch ``i`` as a :class:`Batch` of size 1.

    ``__getitems__`` (used by ``DataLoader`` with automatic batching) builds a whole batch in one
    call; use :func:`collate` as ``collate_fn`` (or :func:`make_loader`). For chunked stores and
    shuffled training, prefer :class:`PatchStream`.

    Parameters
    ----------
    source : GriddedSource
        Variables with roles.
    size : mapping
        Patch size per dim, keyed by role (``time``, ``y``, ``x``) or by dim name (``lat``...).
    stride : mapping, optional
        Stride per dim (default: ``size``, no overlap).
    split : Split or (int, int), optional
        Time index range the patches stay inside (default: all times).
    normalizer : Normalizer or dict, optional
        Statistics from :func:`~geodl.data.normalize.compute_stats`; applied on the fly.
    max_land_fraction : float, optional
        Skip patches with more land than this; counted in ``index.report``.
    cache_bytes : int
        Byte budget of the decoded-block cache (per worker).
    block_bytes : int
        Largest read block: storage chunks are grouped along time up to this size, as long as
        the blocks a group of patches needs fit in the cache (a warning says when they do not).
    region : mapping, optional
        ``{"y": (lo, hi), "x": (lo, hi)}``: keep only patches starting in these index ranges
        (on the global stride grid), e.g. one spatial tile of a large domain.

    Examples
    --------
    >>> from geodl.testing import make_field
    >>> from geodl.data import GriddedSource
    >>> ds = PatchDataset(GriddedSource(make_field(nt=8), "ssh"), size={"time": 4, "y": 8, "x": 8})
    >>> len(ds), tuple(ds[0].target.shape)
    (12, (1, 4, 1, 8, 8))
    """

    def __init__(
        self,
        source: GriddedSource,
        size: Mapping[str, int],
        stride: Mapping[str, int] | None = None,
        *,
        split: Split | tuple[int, int] | None = None,
        normalizer: Normalizer | Mapping[str, Any] | None = None,
        max_land_fraction: float | None = None,
        cache_bytes: int = 256 * 2**20,
        block_bytes: int = 16 * 2**20,
        region: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        self.reader = _PatchReader(
            source,
            size,
            stride,
            split,
            normalizer,
            max_land_fraction,
            cache_bytes,
            block_bytes,
            region,
        )

    @property
    def index(self) -> PatchIndex:
        return self.reader.index

    @property
    def source(self) -> GriddedSource:
        return self.reader.source

    def __len__(self) -> int:
        return len(self.reader.index)

    def __getitem__(self, i: int) -> Batch:
        return self.reader.batch(np.array([i]))

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        return self.reader.batch(np.asarray(indices))


class PatchStream(IterableDataset):
    """Iterable dataset yielding whole batches in block-shuffled order.

    Use with ``DataLoader(stream, batch_size=None)`` (or :func:`make_loader`). Parameters are those
    of :class:`PatchDataset` (including ``region``), plus:

    Parameters
    ----------
    batch_size : int
        Patches per yielded :class:`Batch`.
    shuffle : bool
        Random order of block groups, then a shuffle buffer; ``False`` keeps storage order.
    shuffle_buffer : int
        Patches mixed together by the shuffle buffer (at least ``batch_size``).
    seed : int
        Seed; the order also depends on the epoch (:meth:`set_epoch`).
    rank, world_size : int
        DDP rank and number of ranks: each rank gets ``ceil(N / world_size)`` patches.
    drop_last : bool
        Drop the last incomplete batch of each worker.

    Examples
    --------
    >>> from geodl.testing import make_field
    >>> from geodl.data import GriddedSource
    >>> s = PatchStream(GriddedSource(make_field(nt=8), "ssh"), size={"time": 4, "y": 8, "x": 8},
    ...                 batch_size=4)
    >>> [b.batch_size for b in s]
    [4, 4, 4]
    """

    def __init__(
        self,
        source: GriddedSource,
        size: Mapping[str, int],
        stride: Mapping[str, int] | None = None,
        *,
        batch_size: int = 16,
        split: Split | tuple[int, int] | None = None,
        normalizer: Normalizer | Mapping[str, Any] | None = None,
        max_land_fraction: float | None = None,
        shuffle: bool = True,
        shuffle_buffer: int = 256,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        cache_bytes: int = 256 * 2**20,
        block_bytes: int = 16 * 2**20,
        region: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size}; expected >= 1")
        if not 0 <= rank < world_size:
            raise DataError(f"rank={rank} with world_size={world_size}; need 0 <= rank < world")
        self.reader = _PatchReader(
            source,
            size,
            stride,
            split,
            normalizer,
            max_land_fraction,
            cache_bytes,
            block_bytes,
            region,
        )
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.shuffle_buffer = max(int(shuffle_buffer), self.batch_size)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.drop_last = drop_last
        self.epoch = 0
        self._groups = self.reader.groups()

    @property
    def index(self) -> PatchIndex:
        return self.reader.index

    @property
    def source(self) -> GriddedSource:
        return self.reader.source

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffling order (call at the start of every epoch)."""
        self.epoch = int(epoch)

    @property
    def samples_per_rank(self) -> int:
        return math.ceil(len(self.reader.index) / self.world_size)

    def __len__(self) -> int:
        """Batches this rank yields in one epoch (whatever the number of workers)."""
        n = self.samples_per_rank
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _epoch_groups(self, rng: np.random.Generator) -> list[tuple[int, int, int]]:
        """``(run, spatial group, count)`` in epoch order: units of (run, tile) in random order,
        groups in random order inside a unit (block shuffling)."""
        runs, spatial, tiles = self._groups
        units: dict[tuple[int, int], list[int]] = {}
        for s, tile in enumerate(tiles.tolist()):
            units.setdefault(tile, []).append(s)
        keys = [(r, t) for r in range(len(runs)) for t in units]
        if self.shuffle:
            keys = [keys[i] for i in rng.permutation(len(keys))]
        out = []
        for r, t in keys:
            members = units[t]
            if self.shuffle:
                members = [members[i] for i in rng.permutation(len(members))]
            lo, hi = runs[r]
            out.extend((r, s, (hi - lo) * spatial[s].size) for s in members)
        return out

    def _group_indices(self, r: int, s: int) -> np.ndarray:
        runs, spatial, _ = self._groups
        lo, hi = runs[r]
        n_sp = self.reader.index.n_spatial
        return (np.arange(lo, hi)[:, None] * n_sp + spatial[s][None, :]).ravel()

    def _positions(self) -> tuple[int, int]:
        """Half-open range of positions in the epoch order that this worker of this rank reads."""
        per_rank = self.samples_per_rank
        info = get_worker_info()
        workers, wid = (1, 0) if info is None else (info.num_workers, info.id)
        # Whole batches per worker, so the number of batches does not depend on the workers.
        total_batches = math.ceil(per_rank / self.batch_size)
        b0 = total_batches * wid // workers
        b1 = total_batches * (wid + 1) // workers
        lo = self.rank * per_rank + b0 * self.batch_size
        hi = self.rank * per_rank + min(per_rank, b1 * self.batch_size)
        return lo, hi

    def _stream(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Flat patch indices of this worker's positions, group by group (wrapping for padding)."""
        lo, hi = self._positions()
        groups = self._epoch_groups(rng)
        n = len(self.reader.index)
        counts = np.array([g[2] for g in groups])
        ends = np.cumsum(counts)
        pos = lo
        while pos < hi:
            p = pos % n
            g = int(np.searchsorted(ends, p, side="right"))
            start = p - (ends[g] - counts[g])
            take = int(min(counts[g] - start, hi - pos))
            r, s, _ = groups[g]
            yield self._group_indices(r, s)[start : start + take]
            pos += take

    def __iter__(self) -> Iterator[Batch]:
        if get_worker_info() is not None:
            dask.config.set(scheduler="synchronous")  # no thread pool inside a DataLoader worker
        rng = np.random.default_rng([self.seed, self.epoch])
        buffer = np.empty(0, dtype=np.int64)
        for part in self._stream(rng):
            buffer = np.concatenate([buffer, part])
            while buffer.size >= self.shuffle_buffer:
                chunk, buffer = buffer[: self.shuffle_buffer], buffer[self.shuffle_buffer :]
                if self.shuffle:
                    chunk = rng.permutation(chunk)
                full = chunk.size - chunk.size % self.batch_size
                for i in range(0, full, self.batch_size):
                    yield self.reader.batch(chunk[i : i + self.batch_size])
                buffer = np.concatenate([chunk[full:], buffer])
        if self.shuffle:
            buffer = rng.permutation(buffer)
        for i in range(0, buffer.size, self.batch_size):
            part = buffer[i : i + self.batch_size]
            if part.size < self.batch_size and self.drop_last:
                break
            yield self.reader.batch(part)


def _worker_init(_: int) -> None:
    dask.config.set(scheduler="synchronous")


class _StreamLoader(DataLoader):
    """Advances the stream's epoch at every pass, so each epoch has a new block order.

    Workers are not persistent for streams: each pass ships the dataset, with its new epoch, to
    fresh workers (a persistent worker would keep the first epoch's order forever).
    """

    def __iter__(self):
        self.dataset.set_epoch(self._next_epoch)
        self._next_epoch += 1
        return super().__iter__()


def make_loader(
    dataset: PatchDataset | PatchStream,
    *,
    batch_size: int | None = None,
    shuffle: bool = False,
    num_workers: int = 0,
    pin_memory: bool | None = None,
    **kwargs: Any,
) -> DataLoader:
    """A ``DataLoader`` wired for geodl datasets.

    Sets :func:`collate`, single-threaded Dask in workers, and pinned memory when a GPU is
    present (``pin_memory=None``). A :class:`PatchStream` already yields batches, so
    ``batch_size`` and ``shuffle`` apply to :class:`PatchDataset` only; its loader calls
    :meth:`PatchStream.set_epoch` with 0, 1, 2, ... at each pass (Lightning re-iterates the same
    loader every epoch, and does not call ``set_epoch`` on datasets).

    Examples
    --------
    >>> from geodl.testing import make_field
    >>> from geodl.data import GriddedSource
    >>> ds = PatchDataset(GriddedSource(make_field(nt=8), "ssh"), size={"time": 4, "y": 8, "x": 8})
    >>> next(iter(make_loader(ds, batch_size=5))).batch_size
    5
    """
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    common = dict(
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate,
        worker_init_fn=_worker_init if num_workers else None,
    )
    common.update(kwargs)
    if isinstance(dataset, PatchStream):
        loader = _StreamLoader(dataset, batch_size=None, **common)
        loader._next_epoch = dataset.epoch
        return loader
    common.setdefault("persistent_workers", num_workers > 0)
    return DataLoader(dataset, batch_size=batch_size or 1, shuffle=shuffle, **common)
