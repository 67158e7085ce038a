"""The xarray/Dask side: open and validate fields, normalise, split, index patches, stream them into
torch as :class:`Batch` objects, and stitch predicted patches back into fields."""

from geodl.data.batch import Batch, collate
from geodl.data.cluster import dask_client
from geodl.data.dataset import ChunkCache, PatchDataset, PatchStream, make_loader
from geodl.data.index import PatchIndex
from geodl.data.normalize import Normalizer, compute_stats
from geodl.data.open import Axes, describe, find_axes, open_dataset
from geodl.data.source import GriddedSource
from geodl.data.splits import Split, make_splits
from geodl.data.stitch import StitchWriter, overlap_add, predict_to_file, stitch, taper

__all__ = [
    "Axes",
    "Batch",
    "ChunkCache",
    "GriddedSource",
    "Normalizer",
    "PatchDataset",
    "PatchIndex",
    "PatchStream",
    "Split",
    "StitchWriter",
    "collate",
    "compute_stats",
    "dask_client",
    "describe",
    "find_axes",
    "make_loader",
    "make_splits",
    "open_dataset",
    "overlap_add",
    "predict_to_file",
    "stitch",
    "taper",
]
