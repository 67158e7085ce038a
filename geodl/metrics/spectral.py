"""Spectral scores: the PSD score and effective resolution of a map, and kinetic-energy spectra.

Conventions: :func:`psd_score` is the SSH-mapping challenge's ``1 - PSD(error) / PSD(truth)``
along x and along t (Hann-windowed marginals of the space-time spectrum, mean removed, invalid
points set to 0); :func:`effective_resolution` is the wavelength of its last 0.5 crossing, in the
grid's units. :func:`ke_spectrum` is the isotropic, layer-weighted kinetic-energy spectrum of
doubly periodic streamfunctions, and :func:`spectrum_log10_error` the mean absolute log10 ratio of
two such spectra.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from geodl.errors import DataError
from geodl.metrics._inputs import ArrayLike, _Grid, _prepare

__all__ = [
    "ResolutionBoundWarning",
    "effective_resolution",
    "ke_spectrum",
    "psd_score",
    "spectrum_log10_error",
]


class ResolutionBoundWarning(UserWarning):
    """The PSD score never crosses 0.5: the returned resolution is a bound, not a crossing.

    ``side`` is ``"<="`` (every resolvable scale is resolved: the true resolution is at most the
    Nyquist wavelength returned) or ``">="`` (none is: at least the domain's wavelength).
    """

    def __init__(self, message: str, side: str = "<=") -> None:
        super().__init__(message)
        self.side = side


def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)  # periodic Hann


def _marginal_spectra(a: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marginals along x and along t of the Hann-windowed space-time power spectrum of ``a``.

    ``a`` is ``(N, T, Y, X)``; the spectrum of each (N, Y) slice over (t, x) is averaged. By Parseval,
    summing ``|FFT_tx|^2`` over frequencies equals ``sum_t |FFT_x|^2`` (and symmetrically), so the
    2-D transform is never formed.
    """
    along_x, along_t, rows = _spectra_sums(a, valid)
    return along_x / rows, along_t / rows


def _spectra_sums(a: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`_marginal_spectra` summed, not averaged, over the (N, Y) slices, and their number:
    each slice is independent, so bands of rows can be summed one after the other."""
    a = np.where(valid, a, 0.0)
    # Remove each (t, x) slice's mean over its valid points (constant detrend), keep gaps at 0.
    count = np.maximum(valid.sum(axis=(1, 3), keepdims=True), 1)
    a = np.where(valid, a - a.sum(axis=(1, 3), keepdims=True) / count, 0.0)
    n_t, n_x = a.shape[1], a.shape[3]
    a = a * _hann(n_t)[None, :, None, None] * _hann(n_x)[None, None, None, :]
    along_x = (np.abs(np.fft.rfft(a, axis=3)) ** 2).sum(axis=1).sum(axis=(0, 1))  # (X//2+1,)
    along_t = (np.abs(np.fft.rfft(a, axis=1)) ** 2).sum(axis=3).sum(axis=(0, 2))  # (T//2+1,)
    return along_x, along_t, a.shape[0] * a.shape[2]


def psd_score(
    prediction: ArrayLike,
    truth: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    dx: float | None = None,
    dt: float | None = None,
    **dims: str,
) -> dict[str, np.ndarray]:
    """PSD score ``1 - PSD(error) / PSD(truth)`` along x and along t.

    Spectra are the marginals of the space-time power spectrum over (t, x) with a Hann window in
    both, averaged over y (and extra dims); the mean is removed first and invalid points are set to
    0 (fine for small gaps; large gaps bias both spectra alike). Returns ``wavenumber_x`` (cycles per
    x unit), ``score_x``, ``frequency_t`` (cycles per time unit), ``score_t``, without the zero bin.

    References
    ----------
    Le Guillou, F., et al. (2020). Ocean data challenge 2020a (``psd_based_scores``), after
    Ballarotta, M., et al. (2019). On the resolutions of ocean altimetry maps. Ocean Sci. 15.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.random.default_rng(0).normal(size=(8, 2, 8))
    >>> s = psd_score(0.5 * truth, truth)  # half the truth: error power 1/4 of it at every scale
    >>> s["wavenumber_x"], s["score_x"]
    (array([0.125, 0.25 , 0.375, 0.5  ]), array([0.75, 0.75, 0.75, 0.75]))
    """
    p, t, _, valid = _prepare(prediction, truth, mask=mask, dx=dx, dt=dt, **dims)
    return _psd_score(p, t, valid)


def _check_psd_shape(t: _Grid) -> None:
    if t.values.shape[1] < 4 or t.values.shape[3] < 4:
        raise DataError(
            f"psd_score: need at least 4 time steps and 4 x points, got {t.values.shape[1]} and "
            f"{t.values.shape[3]}; score a longer period or a wider domain"
        )


def _psd_score(p: _Grid, t: _Grid, valid: np.ndarray) -> dict[str, np.ndarray]:
    _check_psd_shape(t)
    err_x, err_t = _marginal_spectra(p.values - t.values, valid)
    ref_x, ref_t = _marginal_spectra(t.values, valid)
    return _psd_from_spectra(err_x, err_t, ref_x, ref_t, t)


def _psd_from_spectra(
    err_x: np.ndarray, err_t: np.ndarray, ref_x: np.ndarray, ref_t: np.ndarray, t: _Grid
) -> dict[str, np.ndarray]:
    """The PSD scores of the error and truth spectra (``t``: the truth's grid, for the axes)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        score_x = 1.0 - err_x[1:] / ref_x[1:]
        score_t = 1.0 - err_t[1:] / ref_t[1:]
    return {
        "wavenumber_x": np.fft.rfftfreq(t.values.shape[3], t.dx)[1:],
        "score_x": score_x,
        "frequency_t": np.fft.rfftfreq(t.values.shape[1], t.dt)[1:],
        "score_t": score_t,
    }


def effective_resolution(wavenumber: np.ndarray, score: np.ndarray, level: float = 0.5) -> float:
    """Wavelength ``1 / k`` at which ``score(k)`` crosses ``level``, linearly interpolated in k.

    The crossing at the largest wavenumber is used (the shortest resolved wavelength, as the
    challenge's minimum over the 0.5 contour). If the score never crosses: all above ``level`` gives
    the Nyquist wavelength ``1 / k_max`` (every resolvable scale is resolved), all below gives the
    domain wavelength ``1 / k_min``; both with a :class:`ResolutionBoundWarning`.

    Examples
    --------
    >>> import numpy as np
    >>> effective_resolution(np.array([1.0, 2.0, 3.0]), np.array([0.9, 0.7, 0.3]))
    0.4
    """
    k = np.asarray(wavenumber, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64)
    ok = np.isfinite(s)
    k, s = k[ok], s[ok]
    if k.size == 0:
        raise DataError("effective_resolution: the score is NaN everywhere (truth has no variance)")
    above = s >= level
    crossings = np.flatnonzero(above[:-1] != above[1:])
    if crossings.size == 0:
        bound = 1.0 / (k[-1] if above.all() else k[0])
        side = "above" if above.all() else "below"
        warnings.warn(
            ResolutionBoundWarning(
                f"PSD score is {side} {level} at every wavenumber; returning the bound {bound:g}",
                "<=" if above.all() else ">=",
            ),
            stacklevel=2,
        )
        return float(bound)
    i = crossings[-1]
    k_star = k[i] + (level - s[i]) * (k[i + 1] - k[i]) / (s[i + 1] - s[i])
    return float(1.0 / k_star)


def ke_spectrum(
    psi: np.ndarray, length_m: float, weights: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic kinetic-energy spectrum of streamfunctions ``psi`` ``(N, 2, n, n)`` (m^2/s).

    Returns wavenumbers ``k`` (rad/m, bin centres ``i * dk``, ``i = 1 .. n/2``) and ``E(k)``
    (m^3/s^2), the layer-weighted (``weights``, e.g. ``H_i / H``) kinetic energy
    ``0.5 K^2 |psi_hat|^2`` summed over each annulus, averaged over the ``N`` snapshots, divided by
    ``dk``: ``sum(E) * dk`` is the mean kinetic energy per unit mass of the resolved annuli.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(8) * 2 * np.pi / 8  # a domain of side 2 pi m: dk = 1 rad/m
    >>> psi = np.zeros((1, 2, 8, 8))
    >>> psi[0, 0] = np.cos(x)  # upper layer only: v = -sin x, mean KE 1/4
    >>> k, e = ke_spectrum(psi, 2 * np.pi, (1.0, 0.0))
    >>> k, int(e.argmax()), round(float(e.sum() * (k[1] - k[0])), 12)
    (array([1., 2., 3., 4.]), 0, 0.25)
    """
    n = psi.shape[-1]
    ph = np.fft.fft2(psi) / n**2
    k1 = 2 * np.pi * np.fft.fftfreq(n, d=length_m / n)
    kk = np.sqrt(k1[None, :] ** 2 + k1[:, None] ** 2)
    w = np.asarray(weights, dtype=float)[None, :, None, None]
    dens = (0.5 * kk**2 * (w * np.abs(ph) ** 2).sum(1)).mean(0)  # (n, n)
    dk = 2 * np.pi / length_m
    idx = np.rint(kk / dk).astype(int)
    n_bins = n // 2
    e = np.bincount(idx.ravel(), weights=dens.ravel(), minlength=n_bins + 1)[1 : n_bins + 1]
    return dk * np.arange(1, n_bins + 1), e / dk


def spectrum_log10_error(e: np.ndarray, ref: np.ndarray, n: int) -> float:
    """Mean ``|log10(e / ref)|`` over the first ``n`` annuli where both are positive (``inf`` if
    there is none): the error of a spectrum ``e`` against ``ref`` on the same annuli.

    Examples
    --------
    >>> import numpy as np
    >>> spectrum_log10_error(np.array([10.0, 1.0, 0.0]), np.ones(3), 3)  # the 0 is left out
    0.5
    """
    e, ref = e[:n], ref[:n]
    ok = (e > 0) & (ref > 0)
    return float(np.abs(np.log10(e[ok] / ref[ok])).mean()) if ok.any() else math.inf
