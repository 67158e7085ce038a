"""State-estimation scores: twin experiments of data assimilation, and denoised training states.

Convention (DAPPER's, as :func:`twin_scores` reports it): the RMSE of an estimate ``(B, T, D)``
against the truth of a twin experiment is pooled over components and times per trajectory, then
averaged (and its std taken) over trajectories; ``rmse_analysis_dapper`` is DAPPER's own number,
the time mean of the instantaneous RMSE over components, at analysis times. The first
``burn_in`` steps are never scored.
"""

from __future__ import annotations

import numpy as np

__all__ = ["denoise_scores", "twin_scores"]


def twin_scores(
    est: np.ndarray, truth: np.ndarray, times: np.ndarray, burn_in: int
) -> dict[str, float]:
    """RMSE over components and times per trajectory, then mean and std over trajectories.

    Parameters
    ----------
    est, truth : ``(B, T, D)``.
    times : ``(T,)`` booleans, the analysis times (scored by the ``rmse_analysis*`` keys).
    burn_in : first steps left out of every score.

    Returns
    -------
    dict
        ``rmse`` (over every time), ``rmse_analysis`` (at analysis times), their ``*_std`` over
        trajectories, and ``rmse_analysis_dapper`` (DAPPER's time mean of the instantaneous RMSE).

    Examples
    --------
    >>> s = twin_scores(np.ones((1, 4, 2)), np.zeros((1, 4, 2)), np.ones(4, bool), 0)
    >>> s["rmse"], s["rmse_analysis_dapper"]
    (1.0, 1.0)
    """
    keep = np.arange(truth.shape[1]) >= burn_in
    err2 = (est - truth) ** 2
    whole = np.sqrt(err2[:, keep].mean(axis=(1, 2)))
    at = np.sqrt(err2[:, keep & times].mean(axis=(1, 2)))
    return {
        "rmse": float(np.sqrt(err2[:, keep].mean())),
        "rmse_std": float(whole.std()),
        "rmse_analysis": float(np.sqrt(err2[:, keep & times].mean())),
        "rmse_analysis_std": float(at.std()),
        # DAPPER's convention: the time mean of the instantaneous RMSE over components (smaller
        # than the root of the overall mean square when errors vary in time).
        "rmse_analysis_dapper": float(np.sqrt(err2[:, keep & times].mean(axis=2)).mean()),
    }


def denoise_scores(data: np.ndarray, states: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """How much of the noise the joint state estimate removed: RMSE of the noisy training ``data``
    and of the estimated ``states`` against the ``clean`` ones (original units).

    Examples
    --------
    >>> clean = np.zeros((2, 3, 1))
    >>> denoise_scores(clean + 2.0, clean + 1.0, clean)
    {'train_data_rmse': 2.0, 'train_states_rmse': 1.0}
    """
    return {
        "train_data_rmse": float(np.sqrt(((data - clean) ** 2).mean())),
        "train_states_rmse": float(np.sqrt(((states - clean) ** 2).mean())),
    }
