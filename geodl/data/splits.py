"""Train/val/test splits as time ranges, separated by a gap of at least one window.

A split is a half-open range of time indices; patches are drawn inside it only, so no window
crosses a boundary. Between two splits at least ``gap`` time steps (default: the window length)
belong to no split, so the last training window and the first test window never share, or touch, a
time step. The steps given up to make that gap are counted in :attr:`Split.dropped`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from geodl.errors import DataError

__all__ = ["Split", "make_splits"]


@dataclass(frozen=True)
class Split:
    """A named half-open range ``[start, stop)`` of time indices."""

    name: str
    start: int
    stop: int
    dropped: int = 0

    @property
    def range(self) -> tuple[int, int]:
        return (self.start, self.stop)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def _label(value: Any, times: np.ndarray, name: str) -> Any:
    if np.issubdtype(times.dtype, np.datetime64):
        try:
            return np.datetime64(pd.Timestamp(value), "ns")
        except (ValueError, TypeError):
            raise DataError(
                f"split.{name}: bound {value!r} is not a date; use e.g. '2020-03-01'"
            ) from None
    if np.issubdtype(times.dtype, np.number) and not isinstance(value, int | float | np.number):
        raise DataError(
            f"split.{name}: bound {value!r} is not a number, but the data's time axis holds "
            f"numbers ({times[0]:g} .. {times[-1]:g}), not dates; give the split in those "
            "numbers, or give the file CF time units ('days since ...')"
        )
    return value


def make_splits(
    times: np.ndarray | Any,
    ranges: Mapping[str, tuple[Any, Any]],
    *,
    window: int,
    gap: int | None = None,
) -> dict[str, Split]:
    """Turn ``{name: (first, last)}`` time labels (inclusive) into index ranges.

    Parameters
    ----------
    times : array-like
        The time coordinate (datetime64 or numbers), increasing.
    ranges : mapping
        Split name -> ``(first, last)`` time labels, both inclusive (as in ``ds.sel(time=...)``).
        Errors name a split by its config key, ``split.NAME``.
    window : int
        Time length of a patch; a split shorter than this yields no patch.
    gap : int, optional
        Minimum number of unused steps between two splits (default ``window``). The later split's
        start is moved forward when needed.

    Returns
    -------
    dict of str to Split

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.date_range("2020-01-01", periods=30).values
    >>> s = make_splits(t, {"train": ("2020-01-01", "2020-01-20"),
    ...                     "test": ("2020-01-21", "2020-01-30")}, window=3)
    >>> s["train"].range, s["test"].range, s["test"].dropped
    ((0, 20), (23, 30), 3)
    """
    times = np.asarray(times)
    if times.size == 0:
        raise DataError("cannot split an empty time axis")
    if window < 1:
        raise DataError(f"split window={window}; expected >= 1")
    gap = window if gap is None else int(gap)
    first, last = times[0], times[-1]
    spans: list[tuple[str, int, int]] = []
    for name, bounds in ranges.items():
        if not isinstance(bounds, list | tuple) or len(bounds) != 2:
            raise DataError(f"split.{name}: expected (first, last) time labels, got {bounds!r}")
        lo, hi = (_label(b, times, name) for b in bounds)
        if lo > hi:
            raise DataError(f"split.{name}: first {bounds[0]} is after last {bounds[1]}")
        if lo < first or hi > last:
            raise DataError(
                f"split.{name} ({bounds[0]} .. {bounds[1]}) is outside the data "
                f"({first} .. {last}); choose bounds inside the data"
            )
        start = int(np.searchsorted(times, lo, side="left"))
        stop = int(np.searchsorted(times, hi, side="right"))
        if stop <= start:
            raise DataError(f"split.{name} ({bounds[0]} .. {bounds[1]}) holds no time step")
        spans.append((name, start, stop))
    spans.sort(key=lambda s: s[1])
    for (a, _, a_stop), (b, b_start, _) in zip(spans, spans[1:], strict=False):
        if b_start < a_stop:
            raise DataError(
                f"splits '{a}' and '{b}' overlap (time indices {b_start}..{a_stop - 1}); "
                "make the time ranges disjoint"
            )
    out: dict[str, Split] = {}
    prev_stop: int | None = None
    for name, start, stop in spans:
        dropped = 0
        if prev_stop is not None and start - prev_stop < gap:
            dropped = min(stop, prev_stop + gap) - start
            start = prev_stop + gap
        out[name] = Split(name, start, max(start, stop), dropped)
        prev_stop = stop
    return out
