"""Scores of ensembles of fields: marginal (CRPS, coverage, spread-skill) and joint over a
patch (energy score, variogram score), which tell coherent errors from independent ones.

Every function takes ``members`` ``(M, S, N)`` (M members of S samples, each a vector of N
values: a patch flattened) and ``truth`` ``(S, N)``, NumPy arrays; NaN in ``truth`` marks
entries left out (they are zeroed in members and truth alike for the joint scores, so that
they add nothing).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ensemble_scores", "energy_score", "variogram_score"]


def _valid(members: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    members, truth = np.asarray(members, np.float64), np.asarray(truth, np.float64)
    if members.ndim != 3 or truth.shape != members.shape[1:]:
        raise ValueError(
            f"members {members.shape} must be (M, S, N) and truth {truth.shape} (S, N)"
        )
    valid = np.isfinite(truth) & np.isfinite(members).all(0)
    return np.where(valid, members, 0.0), np.where(valid, truth, 0.0), valid


def energy_score(members: np.ndarray, truth: np.ndarray) -> float:
    """Mean over samples of ``E||X - y|| - 0.5 E||X - X'||`` (Gneiting & Raftery 2007), in the
    fair form (pairs of distinct members); lower is better, and it rewards the right joint
    structure of the errors, which marginal scores cannot see.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.zeros((1, 50))
    >>> good = rng.normal(size=(20, 1, 50))
    >>> energy_score(good, y) < energy_score(3 * good, y)
    True
    """
    x, y, _ = _valid(members, truth)
    m = x.shape[0]
    skill = np.linalg.norm(x - y[None], axis=-1).mean(0)  # (S,)
    pair = np.zeros(x.shape[1])
    for i in range(m):
        pair += np.linalg.norm(x[i][None] - x, axis=-1).sum(0)
    return float((skill - 0.5 * pair / (m * (m - 1))).mean())


def variogram_score(
    members: np.ndarray, truth: np.ndarray, shape: tuple[int, ...], lags=(1, 2, 4, 8), p=0.5
) -> float:
    """Variogram score of order ``p`` (Scheuerer & Hamill 2015) over the pairs of points at the
    given ``lags`` along the last two axes of ``shape`` (the unflattened patch, e.g.
    ``(T, H, W)``): mean over pairs of ``(|y_i - y_j|^p - E|X_i - X_j|^p)^2``. It is sensitive
    to the correlation between neighbouring errors: independent per-pixel draws get the
    increments of the field wrong."""
    x, y, valid = _valid(members, truth)
    s = y.shape[0]
    x, y, valid = x.reshape(x.shape[0], s, *shape), y.reshape(s, *shape), valid.reshape(s, *shape)
    total, count = 0.0, 0
    for axis in (-1, -2):
        for lag in lags:
            if lag >= shape[axis]:
                continue
            take = [slice(None)] * len(shape)
            take2 = list(take)
            take[axis], take2[axis] = slice(lag, None), slice(None, -lag)
            t1, t2 = (slice(None), *take), (slice(None), *take2)
            both = valid[t1] & valid[t2]
            obs = np.abs(y[t1] - y[t2]) ** p
            ens = (np.abs(x[(slice(None), *t1)] - x[(slice(None), *t2)]) ** p).mean(0)
            total += float(((obs - ens) ** 2)[both].sum())
            count += int(both.sum())
    return total / max(count, 1)


def ensemble_scores(
    members: np.ndarray, truth: np.ndarray, shape: tuple[int, ...] | None = None
) -> dict[str, float]:
    """``crps`` (fair ensemble CRPS, mean over valid entries), ``coverage_68``/``coverage_95``
    (the truth inside the ensemble's central 68% / 95% range: for a calibrated ensemble of M
    members, about p (M - 1) / (M + 1), so use M >= 100 to compare with p), ``spread_skill`` (mean ensemble
    variance over the squared error of the ensemble mean, times (M+1)/M: 1 when calibrated),
    ``energy_score`` and, with the patch ``shape``, ``variogram_score``."""
    x, y, valid = _valid(members, truth)
    m = x.shape[0]
    xs = np.sort(x, axis=0)
    # fair CRPS from sorted members: E|X - y| - 0.5 E|X - X'| with distinct pairs
    skill = np.abs(x - y[None]).mean(0)
    ranks = np.arange(m)[:, None, None]
    pair = (2 * (2 * ranks - m + 1) * xs).sum(0) / (m * (m - 1))
    crps = skill - 0.5 * pair
    lo68, hi68 = np.quantile(x, [0.16, 0.84], axis=0)
    lo95, hi95 = np.quantile(x, [0.025, 0.975], axis=0)
    mean = x.mean(0)
    var = x.var(0, ddof=1)
    err2 = (mean - y) ** 2
    out = {
        "crps": float(crps[valid].mean()),
        "coverage_68": float(((y >= lo68) & (y <= hi68))[valid].mean()),
        "coverage_95": float(((y >= lo95) & (y <= hi95))[valid].mean()),
        "spread_skill": float(var[valid].mean() * (m + 1) / m / err2[valid].mean()),
        "energy_score": energy_score(members, truth),
    }
    if shape is not None:
        out["variogram_score"] = variogram_score(members, truth, shape)
    return out
