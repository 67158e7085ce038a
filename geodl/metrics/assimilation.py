"""State-estimation scores: twin experiments of data assimilation, and denoised training states.

Convention (DAPPER's, as :func:`twin_scores` reports it): the RMSE of an estimate ``(B, T, D)``
against the truth of a twin experiment is pooled over components and times per trajectory, then
averaged (and its std taken) over trajectories; ``rmse_analysis_dapper`` is DAPPER's own number,
the time mean of the instantaneous RMSE over components, at analysis times. The first
``burn_in`` steps are never scored.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dapper_scores", "denoise_scores", "twin_scores"]


def dapper_scores(
    est: np.ndarray,
    truth: np.ndarray,
    times: np.ndarray,
    burn_in: int,
    kind: str,
    spread: np.ndarray | None = None,
) -> dict[str, float]:
    """DAPPER's scores of an estimate ``(B, T, D)``: the time mean, over analysis times after the
    burn-in, of the instantaneous RMSE ``sqrt(mean over components of err^2)``, then the mean and
    std over the ``B`` trajectories (independent experiments).

    Parameters
    ----------
    est, truth : ``(B, T, D)``.
    times : ``(T,)`` booleans, the analysis (observed) times.
    burn_in : first steps left out.
    kind : ``"a"`` for a filter's analysis (DAPPER's ``rmse.a``: uses past observations only),
        ``"s"`` for a smoother's estimate (``rmse.s``); a smoother also gets ``rmse_u``, the same
        time mean over every step (DAPPER's "universal" times).
    spread : the ensemble std ``(B, T, D)`` where the method gives one: ``spread_<kind>`` is the
        time mean of ``sqrt(mean over components of spread^2)`` at the same times.

    Returns
    -------
    dict
        ``rmse_<kind>``, ``rmse_<kind>_std`` (over trajectories), and ``rmse_u`` (smoothers),
        ``spread_<kind>`` (with ``spread``).

    Examples
    --------
    >>> err = np.array([[[3.0, 4.0], [0.0, 0.0]]])  # instantaneous RMSE 3.54 then 0
    >>> s = dapper_scores(err, np.zeros_like(err), np.array([True, True]), 0, "a")
    >>> round(s["rmse_a"], 3), s["rmse_a_std"]
    (1.768, 0.0)
    """
    if kind not in ("a", "s"):
        raise ValueError(f"kind={kind!r}: expected 'a' (filter) or 's' (smoother)")
    keep = np.arange(truth.shape[1]) >= burn_in
    inst = np.sqrt(((est - truth) ** 2).mean(axis=2))  # (B, T)
    per_traj = inst[:, keep & times].mean(axis=1)
    out = {f"rmse_{kind}": float(per_traj.mean()), f"rmse_{kind}_std": float(per_traj.std())}
    if kind == "s":
        out["rmse_u"] = float(inst[:, keep].mean())
    if spread is not None:
        out[f"spread_{kind}"] = float(np.sqrt((spread**2).mean(axis=2))[:, keep & times].mean())
    return out


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
