"""Distribution scores: how close a set of states (a long free rollout) is to a reference set.

Conventions: :func:`histogram_distance` is the total-variation distance between per-component
histograms on common bins (0: the same, 1: disjoint); :func:`near_fraction` the fraction of states
within a radius of the reference set ("on the attractor"). Both take ``(N, D)`` arrays.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["histogram_distance", "near_fraction"]


def histogram_distance(a: np.ndarray, b: np.ndarray, bins: int) -> np.ndarray:
    """Total-variation distance between the histograms of each component of ``a`` and ``b``
    (``(N, D)`` and ``(M, D)``), on common bins spanning both: ``(D,)`` in [0, 1].

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(size=(5000, 2))
    >>> d = histogram_distance(x, x + [0.0, 10.0], bins=20)
    >>> bool(d[0] == 0.0), bool(d[1] == 1.0)
    (True, True)
    """
    out = np.empty(a.shape[1])
    for j in range(a.shape[1]):
        lo = min(a[:, j].min(), b[:, j].min())
        hi = max(a[:, j].max(), b[:, j].max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        pa = np.histogram(a[:, j], edges)[0] / len(a)
        pb = np.histogram(b[:, j], edges)[0] / len(b)
        out[j] = 0.5 * np.abs(pa - pb).sum()
    return out


def near_fraction(points: np.ndarray, attractor: np.ndarray, radius: float) -> float:
    """Fraction of ``points`` ``(N, D)`` within ``radius`` of a point of ``attractor`` ``(M, D)``
    (both normalised; at most about 5000 evenly spaced points are tested).

    Examples
    --------
    >>> near_fraction(np.array([[0.0, 0.0], [3.0, 0.0]]), np.zeros((1, 2)), 1.0)
    0.5
    """
    if len(points) == 0:
        return 0.0
    pts = torch.as_tensor(points[:: max(1, len(points) // 5000)])
    ref = torch.as_tensor(attractor)
    hits = 0
    for i in range(0, len(pts), 1000):
        d = torch.cdist(pts[i : i + 1000], ref).min(dim=1).values
        hits += int((d <= radius).sum())
    return hits / len(pts)
