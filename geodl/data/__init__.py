"""The xarray/Dask side: open and validate fields, and (later) stream them into torch."""

from geodl.data.open import Axes, describe, find_axes, open_dataset

__all__ = ["Axes", "describe", "find_axes", "open_dataset"]
