"""Observations of a low-dimensional state (Lorenz systems): every k-th step, chosen components."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from geodl.errors import UserInputError

__all__ = ["observe_state"]


def observe_state(
    truth: np.ndarray,
    *,
    every: int,
    components: Sequence[int] | None = None,
    noise_std: float,
    seed: int = 0,
    offset: int = 0,
) -> np.ndarray:
    """Noisy observations of ``truth`` (``(..., time, component)``), NaN where unobserved.

    Time steps ``offset, offset + every, ...`` of the chosen ``components`` are observed with
    Gaussian noise of standard deviation ``noise_std``; the result has the shape of ``truth``.

    Examples
    --------
    >>> obs = observe_state(np.zeros((1, 9, 3)), every=4, noise_std=0.0)
    >>> np.isfinite(obs[0, :, 0]).nonzero()[0].tolist()
    [0, 4, 8]
    """
    truth = np.asarray(truth)
    n_comp = truth.shape[-1]
    if every < 1:
        raise UserInputError(f"observe.every must be >= 1, got {every}")
    if noise_std < 0:
        raise UserInputError(f"observe.noise_std must be >= 0, got {noise_std}")
    comps = list(range(n_comp)) if components is None else list(components)
    bad = [c for c in comps if not 0 <= c < n_comp]
    if bad or not comps:
        raise UserInputError(
            f"observe.components {comps} invalid for a state of {n_comp} components "
            f"(valid: 0..{n_comp - 1})"
        )
    rng = np.random.default_rng(seed)
    obs = np.full(truth.shape, np.nan, dtype=truth.dtype)
    steps = np.arange(offset, truth.shape[-2], every)
    sel = (..., steps[:, None], np.asarray(comps)[None, :])
    obs[sel] = truth[sel] + noise_std * rng.standard_normal(truth[sel].shape)
    return obs
