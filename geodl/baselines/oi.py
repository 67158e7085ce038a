r"""Space-time optimal interpolation (OI): the classical mapping baseline.

The analysis at grid points :math:`g` from observations :math:`y` at points :math:`o` is

.. math::

    x_a = \bar{x} + B_{go} (B_{oo} + R)^{-1} (y - \bar{x}), \qquad
    \sigma_a^2 = \sigma^2 - \operatorname{diag}\big(B_{go} (B_{oo} + R)^{-1} B_{og}\big),

with a Gaussian space-time covariance
:math:`B(d) = \sigma^2 \exp(-\Delta x^2/L_x^2 - \Delta y^2/L_y^2 - \Delta t^2/L_t^2)` and white
observation noise :math:`R = \sigma_o^2 I` (Bretherton et al. 1976; Le Traon et al. 1998 for the
altimetry mapping of DUACS).

Why local solves: the dense system has one row per observation (10^4-10^6 for altimetry). The grid is
cut into space-time tiles; each tile solves with the observations within ``cutoff`` correlation
scales of it, and the tiles' systems are padded to a common size and solved as one batched Cholesky
in torch (CPU or GPU). With tiles that see every observation the result equals the dense solve.

Periodic domains (doubly periodic twin experiments): with ``period=(Py, Px)`` the separations along
y and x are wrapped to the nearest image, :math:`d \mapsto ((d + P/2) \bmod P) - P/2`, both in the
covariance and in the choice of the observations a tile sees. Why images, not only the nearest one:
:math:`\exp(-d^2/L^2)` of the wrapped separation has a kink at :math:`d = P/2` and is not positive
definite on the circle (the Cholesky fails once :math:`L` is a fair fraction of :math:`P`); the
covariance along a periodic axis is therefore the periodised Gaussian
:math:`\sum_n \exp(-(d + nP)^2/L^2)`, normalised to 1 at :math:`d = 0`, which is positive definite
and equals the nearest-image Gaussian to round-off when :math:`L \le P/12`.

Tuning: :func:`estimate_scales` gives first guesses of the scales from the observations alone
(empirical correlation functions), and :func:`tune_oi` refines them by a grid search against a
validation truth, using the mean-only path (``return_std=False``) at a subset of ``times``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from geodl.errors import UserInputError

__all__ = [
    "OIParams",
    "OITuning",
    "estimate_scales",
    "optimal_interpolation",
    "optimal_interpolation_dense",
    "tune_oi",
]

Period = tuple[float | None, float | None]


@dataclass(frozen=True)
class OIParams:
    """Covariance model: scales in the units of the coordinates (e.g. km and days)."""

    lx: float
    ly: float
    lt: float
    signal_std: float
    noise_std: float

    def __post_init__(self) -> None:
        for name in ("lx", "ly", "lt", "signal_std", "noise_std"):
            value = getattr(self, name)
            if not value > 0:
                raise UserInputError(f"OI parameter {name} must be > 0, got {value}")


def _check_period(period: Period, coords: tuple[Tensor, Tensor] | None = None) -> Period:
    """Validate ``period`` (Py, Px); with ``coords`` (y, x), each period must exceed their extent."""
    if not isinstance(period, tuple | list) or len(period) != 2:
        raise UserInputError(
            f"OI period must be a pair (y, x) of domain lengths or None, got {period!r}"
        )
    for k, (name, value) in enumerate(zip("yx", period, strict=True)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise UserInputError(
                f"OI period along {name} must be None or a length > 0, got {value!r}"
            )
        if not math.isfinite(value):
            raise UserInputError(f"OI period along {name} must be finite, got {value!r}")
        if coords is not None and len(coords[k]) > 1:
            span = float(coords[k].max() - coords[k].min())
            if span >= value:
                raise UserInputError(
                    f"OI period along {name} ({value}) must exceed the extent of the {name} "
                    f"coordinate ({span}): a periodic grid of n points spaced d has period n * d"
                )
    return float(period[0]) if period[0] is not None else None, (
        float(period[1]) if period[1] is not None else None
    )


def _wrap(d: Tensor, period: float) -> Tensor:
    """Separation ``d`` wrapped to its nearest periodic image, in [-period/2, period/2)."""
    return torch.remainder(d + period / 2, period) - period / 2


def _periodic_gaussian(d: Tensor, length: float, period: float) -> tuple[Tensor, bool]:
    """Periodised Gaussian of the separation ``d``: ``(d2, False)`` with ``exp(-d2)`` the kernel
    when one image suffices (``length <= period / 12``), else ``(kernel, True)``."""
    d = _wrap(d, period)
    # images beyond |n| = n_img lie > 6 scales away: their terms are below exp(-36)
    n_img = max(0, math.ceil(6 * length / period - 0.5))
    if n_img == 0:
        return (d / length) ** 2, False
    kernel = torch.zeros_like(d)
    for n in range(-n_img, n_img + 1):
        kernel.add_(((d + n * period) / length).pow_(2).neg_().exp_())
    norm = sum(math.exp(-((n * period / length) ** 2)) for n in range(-n_img, n_img + 1))
    return kernel.div_(norm), True


def _cov(a: Tensor, b: Tensor, p: OIParams, period: Period = (None, None)) -> Tensor:
    """Covariance between points ``a`` (..., N, 3) and ``b`` (..., M, 3) given as (t, y, x)."""
    # accumulate per axis: never materialise the (..., N, M, 3) difference tensor
    d2 = None
    factors = []
    for k, (length, per) in enumerate(zip((p.lt, p.ly, p.lx), (None, *period), strict=True)):
        # contiguous (..., N) and (..., M) coordinates: broadcasting strided slices was slower
        d = a[..., k].contiguous()[..., :, None] - b[..., k].contiguous()[..., None, :]
        if per is None:
            term = d.div_(length).pow_(2)  # in place: (d / length) ** 2, the same values
        else:
            term, is_factor = _periodic_gaussian(d, length, per)
            if is_factor:
                factors.append(term)
                continue
        d2 = term if d2 is None else d2.add_(term)
    cov = d2.neg_().exp_()  # time is never periodic, so d2 exists
    for factor in factors:
        cov.mul_(factor)
    return cov.mul_(p.signal_std**2)


def _check_grid(obs: Tensor, t: Tensor, y: Tensor, x: Tensor, what: str) -> None:
    if obs.ndim != 3:
        raise UserInputError(
            f"{what} expects observations (time, y, x), got shape {tuple(obs.shape)}"
        )
    if obs.shape != (len(t), len(y), len(x)):
        raise UserInputError(
            f"{what} coordinates (t={len(t)}, y={len(y)}, x={len(x)}) do not match observations "
            f"{tuple(obs.shape)}"
        )


def _check_window(
    window: tuple[slice, slice] | None, shape: tuple[int, int]
) -> tuple[range, range]:
    """The (y, x) index ranges of ``window`` (slices, step 1) within ``shape``; all by default."""
    if window is None:
        return range(shape[0]), range(shape[1])
    if not isinstance(window, tuple | list) or len(window) != 2:
        raise UserInputError(f"OI window must be a pair (ys, xs) of slices, got {window!r}")
    out = []
    for name, sl, n in zip("yx", window, shape, strict=True):
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            raise UserInputError(f"OI window along {name} must be a slice of step 1, got {sl!r}")
        r = range(n)[sl]
        if len(r) == 0:
            raise UserInputError(
                f"OI window along {name} ({sl!r}) selects no grid point of the {n} there"
            )
        out.append(r)
    return out[0], out[1]


def _check_times(times: Tensor | None, n: int) -> list[int]:
    """Sorted unique time indices in [0, n); every index when ``times`` is None."""
    if times is None:
        return list(range(n))
    idx = torch.as_tensor(times)
    if (
        idx.ndim != 1
        or idx.dtype.is_floating_point
        or idx.dtype.is_complex
        or idx.dtype == torch.bool
    ):
        raise UserInputError(
            f"OI times must be a 1-D tensor of integer time indices, got dtype {idx.dtype} and "
            f"shape {tuple(idx.shape)}"
        )
    if len(idx) == 0:
        raise UserInputError("OI times is empty: give at least one time index (or None for all)")
    if bool((idx < 0).any()) or bool((idx >= n).any()):
        raise UserInputError(
            f"OI times must lie in 0..{n - 1} (the observations have {n} time steps), got "
            f"{idx.min().item()}..{idx.max().item()}"
        )
    return sorted(set(idx.tolist()))


def optimal_interpolation_dense(
    obs_points: Tensor,
    obs_values: Tensor,
    targets: Tensor,
    params: OIParams,
    *,
    period: Period = (None, None),
    return_std: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Direct OI with every observation: the reference the local solver is tested against.

    ``obs_points`` (N, 3) and ``targets`` (M, 3) hold (t, y, x); ``obs_values`` (N,) are anomalies.
    ``period`` (y, x) wraps the separations as in :func:`optimal_interpolation`.
    Returns the analysis mean (M,) and standard deviation (M,) (None when not ``return_std``).
    """
    period = _check_period(period)
    boo = _cov(obs_points, obs_points, params, period)
    boo = boo + params.noise_std**2 * torch.eye(len(obs_points), dtype=boo.dtype)
    bgo = _cov(targets, obs_points, params, period)
    chol = torch.linalg.cholesky(boo)
    w = torch.cholesky_solve(bgo.T, chol)  # (N, M)
    mean = w.T @ obs_values
    if not return_std:
        return mean, None
    var = params.signal_std**2 - (bgo * w.T).sum(-1)
    return mean, var.clamp_min(0).sqrt()


def optimal_interpolation(
    obs: Tensor,
    t: Tensor,
    y: Tensor,
    x: Tensor,
    params: OIParams,
    *,
    tile: tuple[int, int, int] = (5, 16, 16),
    cutoff: float = 3.0,
    max_obs: int = 1000,
    mean: float | None = None,
    batch_tiles: int = 16,
    min_tile: int = 16,
    period: Period = (None, None),
    return_std: bool = True,
    times: Tensor | None = None,
    window: tuple[slice, slice] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """OI of gridded observations onto the same grid.

    Parameters
    ----------
    obs : (T, H, W) observations, NaN where unobserved.
    t, y, x : 1-D coordinates (T,), (H,), (W,) in the units of ``params`` (e.g. days, km, km).
    params : covariance scales and standard deviations.
    tile : (nt, ny, nx) grid points per tile; each tile is one local system.
    cutoff : observations within ``cutoff`` scales of a tile (in t, y and x) enter its system.
    max_obs : at most this many observations per system: those nearest the tile (in scaled
        distance to its box) are kept, and a tile is split while more than ``max_obs`` lie within
        one correlation scale of it. Bounds the cost of a solve without starving any target.
    mean : background value removed before and added after (default: mean of the observations).
    batch_tiles : tiles solved together in one batched Cholesky.
    min_tile : tiles are not split below this many grid points.
    period : domain lengths (y, x) in coordinate units (e.g. ``nx * dx``) of a periodic domain, or
        None for a bounded axis; separations along a periodic axis go to the nearest image.
    return_std : when False, skip the variance (one triangular solve per tile) and return
        ``(mean, None)``: the cheap path for tuning.
    times : integer indices of the time steps to analyse (default all). Observations at every time
        still enter the systems; the output is NaN at the other times.
    window : index ranges ``(ys, xs)`` of the grid points to analyse (default all), the tiles laid
        from their starts; observations everywhere still enter the systems and the output is NaN
        outside. A region analysed with the observations of a halo around it, tiles aligned with
        the whole grid's, gives the whole grid's analysis there.

    Returns
    -------
    mean, std : (T, H, W) analysis and its standard deviation (None when not ``return_std``).

    Examples
    --------
    >>> import torch
    >>> obs = torch.full((3, 8, 8), float("nan")); obs[1, 4, 4] = 1.0
    >>> t, y, x = torch.arange(3.0), torch.arange(8.0), torch.arange(8.0)
    >>> p = OIParams(lx=2.0, ly=2.0, lt=1.0, signal_std=1.0, noise_std=0.1)
    >>> m, s = optimal_interpolation(obs, t, y, x, p, mean=0.0)
    >>> round(float(m[1, 4, 4]), 2), bool(s[1, 4, 4] < s[0, 0, 0])
    (0.99, True)
    >>> m, s = optimal_interpolation(obs, t, y, x, p, mean=0.0, times=torch.tensor([1]),
    ...                              return_std=False)
    >>> round(float(m[1, 4, 4]), 2), bool(m[0].isnan().all()), s is None
    (0.99, True, True)
    """
    _check_grid(obs, t, y, x, "OI")
    ys, xs = _check_window(window, obs.shape[1:])
    dtype = torch.float64
    obs = obs.to(dtype)
    t, y, x = (c.to(dtype=dtype, device=obs.device) for c in (t, y, x))
    period = _check_period(period, (y, x))
    wanted = _check_times(times, len(t))
    ok = torch.isfinite(obs)
    if not ok.any():
        raise UserInputError("OI: no observation at all (every value is NaN)")
    it, iy, ix = ok.nonzero(as_tuple=True)
    pts = torch.stack((t[it], y[iy], x[ix]), -1)  # (N, 3)
    background = float(obs[ok].mean()) if mean is None else mean
    vals = obs[ok] - background
    scale = pts.new_tensor([params.lt, params.ly, params.lx])

    nt, ny, nx = tile
    # time blocks: runs of consecutive requested indices, at most nt long
    blocks: list[tuple[int, int]] = []
    for i in wanted:
        if blocks and blocks[-1][1] == i and i - blocks[-1][0] < nt:
            blocks[-1] = (blocks[-1][0], i + 1)
        else:
            blocks.append((i, i + 1))
    coords = (t, y, x)
    periods = (None, *period)
    tiles = _select_tiles(
        pts.cpu().numpy(),
        [c.tolist() for c in coords],
        scale.tolist(),
        periods,
        blocks,
        (ys, xs),
        tile,
        cutoff=cutoff,
        max_obs=max_obs,
        min_tile=min_tile,
    )

    out_mean = torch.full_like(obs, math.nan)  # NaN at the times and points not analysed
    out_var = torch.full_like(obs, math.nan) if return_std else None
    for group in _groups(tiles, batch_tiles):
        targets = [
            torch.cartesian_prod(*(coords[k][box[k][0] : box[k][1]] for k in range(3))).reshape(
                -1, 3
            )
            for box, _ in group
        ]
        selections = [sel for _, sel in group]
        n_max = max(1, max(len(s) for s in selections))
        m_max = max(len(g) for g in targets)
        # pad every tile's system to (n_max, m_max): padded observations have zero covariance with
        # everything, unit variance and a zero value, so they change nothing
        index = np.zeros((len(group), n_max), dtype=np.int64)
        valid_np = np.zeros((len(group), n_max), dtype=bool)
        for i, sel in enumerate(selections):
            index[i, : len(sel)] = sel
            valid_np[i, : len(sel)] = True
        index_t = torch.from_numpy(index).to(pts.device)
        valid = torch.from_numpy(valid_np).to(pts.device)
        obs_pts = torch.where(valid[:, :, None], pts[index_t], 0.0)  # (G, N, 3)
        obs_val = torch.where(valid, vals[index_t], 0.0)  # (G, N)
        tgt = pts.new_zeros((len(group), m_max, 3))
        for i, grid in enumerate(targets):
            tgt[i, : len(grid)] = grid
        pair = valid[:, :, None] & valid[:, None, :]
        boo = torch.where(pair, _cov(obs_pts, obs_pts, params, period), 0.0)
        eye = torch.eye(n_max, dtype=dtype, device=pts.device)
        noise = torch.where(valid, params.noise_std**2, 1.0)
        boo = boo + eye * noise[:, None, :]
        bgo = torch.where(valid[:, None, :], _cov(tgt, obs_pts, params, period), 0.0)  # (G, M, N)
        chol = torch.linalg.cholesky(boo)  # (G, N, N)
        # mean: one right-hand side; variance: ||L^-1 B_og||^2 per target (one triangular solve)
        alpha = torch.cholesky_solve(obs_val[:, :, None], chol)  # (G, N, 1)
        mean_tile = (bgo @ alpha).squeeze(-1)  # (G, M)
        if out_var is not None:
            v = torch.linalg.solve_triangular(chol, bgo.transpose(1, 2), upper=False)  # (G, N, M)
            var_tile = params.signal_std**2 - (v * v).sum(1)
        for i, (box, _) in enumerate(group):
            region = tuple(slice(lo, hi) for lo, hi in box)
            shape = tuple(hi - lo for lo, hi in box)
            n = math.prod(shape)
            out_mean[region] = mean_tile[i, :n].reshape(shape)
            if out_var is not None:
                out_var[region] = var_tile[i, :n].reshape(shape)
    std = out_var.clamp_min(0).sqrt() if out_var is not None else None
    return out_mean + background, std


_Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def _select_tiles(
    pts_np: np.ndarray,
    values: list[list[float]],
    scales: list[float],
    periods: tuple[float | None, float | None, float | None],
    blocks: list[tuple[int, int]],
    window: tuple[range, range],
    tile: tuple[int, int, int],
    *,
    cutoff: float,
    max_obs: int,
    min_tile: int,
) -> list[tuple[_Box, np.ndarray]]:
    """The tiles of :func:`optimal_interpolation` and the observations each solves with.

    Why NumPy and Python floats: the selection runs for thousands of small tiles, where torch's
    per-call overhead dominated; the elementwise IEEE operations are the same, and the norm and
    the sort stay torch's (their round-off and tie order decide the selection).

    ``pts_np`` (N, 3) holds the observations' (t, y, x), ``values`` the grid's coordinates (t, y,
    x) as lists, ``scales`` the scales (lt, ly, lx), ``periods`` (None, Py, Px), ``blocks`` the
    time blocks ``(start, stop)`` and ``window`` the (y, x) index ranges to tile. Returns
    ``(box, sel)`` pairs: ``box`` ((t0, t1), (y0, y1), (x0, x1)) and ``sel`` the indices into
    ``pts_np`` (at most ``max_obs``, the nearest first when some were dropped).
    """
    _, ny, nx = tile
    ys, xs = window

    def near(
        box: tuple[tuple[int, int], ...], cand: np.ndarray, gap: np.ndarray, axes: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The observations among ``cand`` (ascending indices into ``pts_np``) within ``cutoff``
        scales of the tile's box, and their scaled gaps to it (K, 3): those along ``axes`` are
        computed, the others are ``gap``'s (the candidates' gaps to a box with the same extent
        along them, which they lie within ``cutoff`` of)."""
        keep = np.ones(len(cand), dtype=bool)
        cols = {}
        for k in axes:
            lo, hi = values[k][box[k][0]], values[k][box[k][1] - 1]
            # distance to an interval = distance to its centre less its half width; on a periodic
            # axis the offset to the centre is wrapped, which picks the nearest image of the point
            col = pts_np[cand, k] - (lo + hi) / 2
            if periods[k] is not None:
                col = _wrap(torch.from_numpy(col), periods[k]).numpy()
            col = np.abs(col, out=col)
            col -= (hi - lo) / 2
            np.maximum(col, 0.0, out=col)
            col /= scales[k]  # 0 inside the box
            cols[k] = col
            keep &= col <= cutoff
        index = keep.nonzero()[0]
        out = gap[index]
        for k, col in cols.items():
            out[:, k] = col[index]
        return cand[index], out

    # Why candidates: a tile's observations are among those within the cutoff in time of its time
    # block, and a half tile's among its parent's (a sub-box is nowhere nearer, and only its gaps
    # along the halved axis change); searching those, not every observation, makes the selection
    # cost follow the tiles' neighbourhoods, not the grid (the same elementwise gaps, so the same
    # selections in the same order).
    todo = []
    every, no_gap = np.arange(len(pts_np)), np.zeros((len(pts_np), 3))
    for block in blocks:
        cand, gap = near((block, (0, 1), (0, 1)), every, no_gap, (0,))
        todo += [
            ((block, (b, min(b + ny, ys.stop)), (c, min(c + nx, xs.stop))), cand, gap, (1, 2))
            for b in range(ys.start, ys.stop, ny)
            for c in range(xs.start, xs.stop, nx)
        ]

    # Too many observations for one system: keep those nearest the tile's box (every target keeps
    # the data around it), and split the tile only while the observations within one correlation
    # scale of it alone exceed max_obs.
    tiles: list[tuple[_Box, np.ndarray]] = []
    while todo:
        box, cand, gap, axes = todo.pop()
        sel, gap = near(box, cand, gap, axes)
        sizes = [box[k][1] - box[k][0] for k in range(3)]
        if len(sel) > max_obs:
            dist = torch.linalg.vector_norm(torch.from_numpy(gap), dim=-1)
            if int((dist <= 1.0).sum()) > max_obs and math.prod(sizes) > min_tile:
                extent = [
                    (values[k][box[k][1] - 1] - values[k][box[k][0]]) / scales[k]
                    if sizes[k] > 1
                    else -1.0
                    for k in range(3)
                ]
                k = max(range(3), key=lambda i: extent[i])
                mid = box[k][0] + sizes[k] // 2
                for half in ((box[k][0], mid), (mid, box[k][1])):
                    todo.append(
                        (tuple(half if i == k else box[i] for i in range(3)), sel, gap, (k,))
                    )
                continue
            sel = sel[dist.argsort()[:max_obs].numpy()]
        tiles.append((box, sel))
    return tiles


#: Bytes of one (tiles, targets, observations) float64 array of a batched solve; the solve holds
#: a few of them at once.
_GROUP_BYTES = 32 * 2**20


def _groups(tiles: list, batch_tiles: int) -> list[list]:
    """``tiles`` in groups of at most ``batch_tiles`` solved together, by size: a group is padded
    to its largest tile, so tiles of like sizes go together (split tiles are far smaller than
    whole ones), and a group of large tiles is cut so that its (tiles, targets, observations)
    arrays stay within :data:`_GROUP_BYTES` (memory does not follow the grid or the mix of
    tile sizes)."""

    def size(tile: tuple) -> int:
        return math.prod(hi - lo for lo, hi in tile[0])

    ordered = sorted(tiles, key=size)  # stable: equal sizes keep their order
    out: list[list] = []
    for tile in ordered:
        group = out[-1] if out else None
        if group is not None and len(group) < batch_tiles:
            m = max(size(tile), *(size(g) for g in group))
            n = max(len(tile[1]), *(len(g[1]) for g in group), 1)
            if (len(group) + 1) * m * n * 8 <= _GROUP_BYTES:
                group.append(tile)
                continue
        out.append([tile])
    return out


def _spacing(c: Tensor, name: str) -> float:
    """The constant spacing of a regular 1-D coordinate."""
    if len(c) < 2:
        raise UserInputError(f"estimate_scales needs at least 2 points along {name}, got {len(c)}")
    steps = c[1:] - c[:-1]
    step = float(steps.mean())
    if not step > 0 or float((steps - step).abs().max()) > 1e-6 * abs(step):
        raise UserInputError(
            f"estimate_scales needs an increasing regular {name} coordinate (constant spacing), "
            f"got steps from {float(steps.min())} to {float(steps.max())}"
        )
    return step


def _efold(dist: Tensor, corr: Tensor) -> tuple[float, bool]:
    """First separation where ``corr`` drops below 1/e (linear interpolation), and whether the
    correlation stays above it over every separation given (then the largest is returned)."""
    level = math.exp(-1.0)
    # the signal correlation at zero separation is 1 by definition
    d_prev, c_prev = 0.0, 1.0
    for d, c in zip(dist.tolist(), corr.tolist(), strict=True):
        if c < level:
            return d_prev + (c_prev - level) / (c_prev - c) * (d - d_prev), False
        d_prev, c_prev = d, c
    return d_prev, True


def estimate_scales(
    obs: Tensor,
    t: Tensor,
    y: Tensor,
    x: Tensor,
    *,
    noise_std: float,
    period: Period = (None, None),
    min_pairs: int = 100,
) -> dict:
    r"""Empirical correlation scales of an observed field: first guesses of the OI scales.

    The anomalies :math:`a = y - \bar{y}` give the correlation at separation :math:`d`

    .. math::

        \rho(d) = \frac{\sum_{|o - o'| \approx d} a_o a_{o'}}{n(d)\,(\operatorname{var}(y) -
        \sigma_o^2)},

    over the :math:`n(d)` pairs of distinct observations at the same time (spatial, binned by
    radial distance with the grid spacing as bin width) or at the same cell (temporal, by time
    lag). The pair sums are FFT autocorrelations of the zero-filled anomalies and of the mask,
    summed over time (cells), zero-padded unless the axis is periodic. A scale is the separation
    where :math:`\rho` first drops below :math:`1/e`, which for the Gaussian covariance
    :math:`\exp(-d^2/L^2)` of the OI is :math:`L`.

    Parameters
    ----------
    obs : (T, H, W) gridded observations, NaN where unobserved.
    t, y, x : regular 1-D coordinates (T,), (H,), (W,) (e.g. days, km, km).
    noise_std : observation noise standard deviation, removed from the variance.
    period : domain lengths (y, x) of a periodic domain (must equal ``n * spacing``), or None.
    min_pairs : separations with fewer pairs of observations are ignored.

    Returns
    -------
    dict
        ``lx`` (isotropic spatial scale), ``lt`` (temporal scale), ``signal_std``, and
        ``lx_bounded`` / ``lt_bounded``: True when the correlation never dropped below 1/e within
        the separations available, so the scale returned is only the largest of them (a lower
        bound).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> t, y, x = torch.arange(20.0), torch.arange(32.0), torch.arange(32.0)
    >>> field = torch.randn(20, 32, 32, generator=g, dtype=torch.float64)
    >>> s = estimate_scales(field, t, y, x, noise_std=0.1)
    >>> sorted(s), s["lx"] < 1.0
    (['lt', 'lt_bounded', 'lx', 'lx_bounded', 'signal_std'], True)
    """
    _check_grid(obs, t, y, x, "estimate_scales")
    if not noise_std >= 0:
        raise UserInputError(f"estimate_scales: noise_std must be >= 0, got {noise_std}")
    dtype = torch.float64
    obs = obs.to(dtype)
    dt, dy, dx = (_spacing(c.to(dtype), n) for c, n in ((t, "t"), (y, "y"), (x, "x")))
    period = _check_period(period)
    n_t, n_y, n_x = obs.shape
    for name, per, n, step in (("y", period[0], n_y, dy), ("x", period[1], n_x, dx)):
        if per is not None and abs(per - n * step) > 1e-6 * per:
            raise UserInputError(
                f"estimate_scales: period along {name} ({per}) must equal the grid length "
                f"{n} * {step} = {n * step}"
            )
    ok = torch.isfinite(obs)
    n_obs = int(ok.sum())
    if n_obs < 2:
        raise UserInputError(f"estimate_scales needs at least 2 observations, got {n_obs}")
    anomaly = torch.where(ok, obs - obs[ok].mean(), 0.0)  # (T, H, W), zero where unobserved
    mask = ok.to(dtype)
    variance = float(anomaly.pow(2).sum()) / n_obs
    signal_var = variance - noise_std**2
    if not signal_var > 0:
        raise UserInputError(
            f"estimate_scales: the observations' variance ({variance:.4g}) does not exceed the "
            f"noise variance noise_std**2 = {noise_std**2:.4g}: no signal to correlate"
        )

    # spatial: pair sums per lag (dy, dx) at the same time, summed over time in Fourier space
    size = (n_y if period[0] else 2 * n_y, n_x if period[1] else 2 * n_x)
    power_a = power_m = 0.0
    for first in range(0, n_t, 16):  # chunks bound the memory of the padded transforms
        fa = torch.fft.rfft2(anomaly[first : first + 16], s=size)
        fm = torch.fft.rfft2(mask[first : first + 16], s=size)
        power_a = power_a + fa.abs().pow(2).sum(0)
        power_m = power_m + fm.abs().pow(2).sum(0)
    sums = torch.fft.irfft2(power_a, s=size).flatten()
    pairs = torch.fft.irfft2(power_m, s=size).round().flatten()  # ordered pairs per lag
    lag_y = torch.fft.fftfreq(size[0], dtype=dtype) * size[0] * dy
    lag_x = torch.fft.fftfreq(size[1], dtype=dtype) * size[1] * dx
    radius = torch.sqrt(lag_y[:, None] ** 2 + lag_x[None, :] ** 2).flatten()
    keep = (radius > 0) & (pairs > 0)  # lag 0 holds the self pairs: variance, noise included
    width = max(dy, dx)
    bins = torch.round(radius[keep] / width).long()
    n_bins = int(bins.max()) + 1 if len(bins) else 0
    bin_pairs = torch.bincount(bins, pairs[keep], n_bins)
    bin_sums = torch.bincount(bins, sums[keep], n_bins)
    bin_dist = torch.bincount(bins, radius[keep] * pairs[keep], n_bins)
    enough = bin_pairs / 2 >= min_pairs  # both orders of each pair are counted
    if not enough.any():
        raise UserInputError(
            f"estimate_scales: no spatial separation has {min_pairs} pairs of observations at "
            f"the same time ({n_obs} observations in all); lower min_pairs or give more data"
        )
    lx, lx_bounded = _efold(
        bin_dist[enough] / bin_pairs[enough], bin_sums[enough] / bin_pairs[enough] / signal_var
    )

    # temporal: pair sums per time lag at the same cell, summed over cells in Fourier space
    power_a = power_m = 0.0
    rows = max(1, 4096 // max(1, n_x))
    for first in range(0, n_y, rows):
        fa = torch.fft.rfft(anomaly[:, first : first + rows], n=2 * n_t, dim=0)
        fm = torch.fft.rfft(mask[:, first : first + rows], n=2 * n_t, dim=0)
        power_a = power_a + fa.abs().pow(2).sum((1, 2))
        power_m = power_m + fm.abs().pow(2).sum((1, 2))
    sums = torch.fft.irfft(power_a, n=2 * n_t)[1:n_t]  # lags 1 .. T-1
    pairs = torch.fft.irfft(power_m, n=2 * n_t)[1:n_t].round()  # each pair once
    lags = torch.arange(1, n_t, dtype=dtype) * dt
    enough = pairs >= min_pairs
    if not enough.any():
        raise UserInputError(
            f"estimate_scales: no time lag has {min_pairs} pairs of observations at the same "
            f"cell ({n_obs} observations in all); lower min_pairs or give more data"
        )
    lt, lt_bounded = _efold(lags[enough], sums[enough] / pairs[enough] / signal_var)
    return {
        "lx": float(lx),
        "lt": float(lt),
        "signal_std": math.sqrt(signal_var),
        "lx_bounded": bool(lx_bounded),
        "lt_bounded": bool(lt_bounded),
    }


@dataclass(frozen=True)
class OITuning:
    """Result of :func:`tune_oi`.

    ``grid`` keeps every evaluated point, not only the best, so that the flatness of the RMSE
    around the optimum (how much the choice matters) can be read or plotted afterwards; ``on_edge``
    says the optimum could not be bracketed within the allowed expansions, i.e. the chosen scale
    is a bound rather than a minimum.
    """

    params: OIParams
    rmse: float
    grid: list[dict]
    on_edge: bool

    def to_dict(self) -> dict:
        """JSON-serialisable content: ``params``, ``rmse``, ``grid`` and ``on_edge``."""
        return {
            "params": dataclasses.asdict(self.params),
            "rmse": float(self.rmse),
            "grid": [dict(point) for point in self.grid],
            "on_edge": bool(self.on_edge),
        }


def _candidates(values: Sequence[float], name: str) -> list[float]:
    """Sorted unique candidate values, each > 0."""
    try:
        out = sorted({float(v) for v in values})
    except (TypeError, ValueError) as err:
        raise UserInputError(
            f"tune_oi: {name} must be a sequence of numbers, got {values!r}"
        ) from err
    if not out or not all(v > 0 and math.isfinite(v) for v in out):
        raise UserInputError(
            f"tune_oi: {name} must hold at least one finite value > 0, got {list(values)!r}"
        )
    return out


def tune_oi(
    obs: Tensor,
    truth: Tensor,
    t: Tensor,
    y: Tensor,
    x: Tensor,
    *,
    signal_std: float,
    noise_std: float,
    lx: Sequence[float],
    lt: Sequence[float],
    times: Tensor | None = None,
    period: Period = (None, None),
    noise_factors: Sequence[float] = (1.0,),
    mean: float | None = None,
    tile: tuple[int, int, int] = (5, 16, 16),
    cutoff: float = 3.0,
    max_obs: int = 1000,
    min_tile: int = 16,
    expand: int = 3,
) -> OITuning:
    """Grid search of the OI scales by the RMSE against a validation truth.

    Every combination of ``lx`` (with ``ly = lx``: isotropic), ``lt`` and
    ``noise_std * noise_factors`` is run with :func:`optimal_interpolation` (mean only, at
    ``times``) and scored by the RMSE against ``truth`` over its finite values at ``times``. When
    the best ``lx`` or ``lt`` is the smallest or largest candidate, that grid is extended
    geometrically by one value beyond the edge (ratio of the two edge values) and the new points
    are run, up to ``expand`` times per axis, so that the optimum is bracketed whenever possible.
    An axis with a single candidate is held fixed.

    Parameters
    ----------
    obs : (T, H, W) observations, NaN where unobserved.
    truth : (T, H, W) validation field, NaN where not scored (e.g. land).
    t, y, x : 1-D coordinates (T,), (H,), (W,).
    signal_std, noise_std : the standard deviations of the OI (noise_std scaled by
        ``noise_factors``).
    lx, lt : candidate spatial and temporal scales.
    times : integer indices of the validation time steps (default all).
    period, mean, tile, cutoff, max_obs, min_tile : passed to :func:`optimal_interpolation`
        (a large ``min_tile`` never splits tiles: a fast search whose RMSE was within 2% of the
        split solve at the 5 points compared on the project's twin).
    noise_factors : candidate multipliers of ``noise_std`` (not extended).
    expand : at most this many extensions of each of the ``lx`` and ``lt`` grids.

    Returns
    -------
    OITuning
        The chosen parameters, their RMSE, every evaluated point (sorted by lx, lt, noise_std) and
        whether the choice still lies on an edge of the ``lx`` or ``lt`` grid.

    Examples
    --------
    >>> import torch
    >>> t, y, x = torch.arange(4.0), torch.arange(8.0), torch.arange(8.0)
    >>> truth = torch.sin(y / 3)[None, :, None].expand(4, 8, 8).double()
    >>> obs = truth.clone(); obs[:, 1::2] = float("nan")
    >>> res = tune_oi(obs, truth, t, y, x, signal_std=1.0, noise_std=0.05, lx=[1.0, 2.0, 4.0],
    ...               lt=[2.0], times=torch.tensor([2]))
    >>> res.params.lx in {r["lx"] for r in res.grid}, len(res.grid) >= 3
    (True, True)
    """
    _check_grid(obs, t, y, x, "tune_oi")
    if truth.shape != obs.shape:
        raise UserInputError(
            f"tune_oi: truth has shape {tuple(truth.shape)}, the observations "
            f"{tuple(obs.shape)}; they must match"
        )
    if isinstance(expand, bool) or not isinstance(expand, int) or expand < 0:
        raise UserInputError(f"tune_oi: expand must be an integer >= 0, got {expand!r}")
    axes = {"lx": _candidates(lx, "lx"), "lt": _candidates(lt, "lt")}
    factors = _candidates(noise_factors, "noise_factors")
    wanted = _check_times(times, len(t))
    index = torch.tensor(wanted, device=obs.device)
    target = truth.to(torch.float64)[index]  # (K, H, W)
    scored = torch.isfinite(target)
    if not scored.any():
        raise UserInputError("tune_oi: truth has no finite value at the validation times")
    # validate once, before any solve
    OIParams(lx=1.0, ly=1.0, lt=1.0, signal_std=signal_std, noise_std=noise_std)

    cache: dict[tuple[float, float, float], float] = {}

    def run(lx_: float, lt_: float, noise: float) -> float:
        p = OIParams(lx=lx_, ly=lx_, lt=lt_, signal_std=signal_std, noise_std=noise)
        analysis, _ = optimal_interpolation(
            obs,
            t,
            y,
            x,
            p,
            tile=tile,
            cutoff=cutoff,
            max_obs=max_obs,
            min_tile=min_tile,
            mean=mean,
            period=period,
            return_std=False,
            times=index,
        )
        err = (analysis[index] - target)[scored]
        return float(err.pow(2).mean().sqrt())

    grown = {"lx": 0, "lt": 0}
    while True:
        for a in axes["lx"]:
            for b in axes["lt"]:
                for f in factors:
                    key = (a, b, noise_std * f)
                    if key not in cache:
                        cache[key] = run(*key)
        best = min(cache, key=cache.__getitem__)
        edges = {}
        extended = False
        for k, (name, values) in enumerate(axes.items()):
            lo_edge, hi_edge = best[k] == values[0], best[k] == values[-1]
            edges[name] = len(values) > 1 and (lo_edge or hi_edge)
            if edges[name] and grown[name] < expand:
                grown[name] += 1
                extended = True
                if lo_edge:
                    values.insert(0, values[0] * values[0] / values[1])
                else:
                    values.append(values[-1] * values[-1] / values[-2])
        if not extended:  # the edges were computed on the final grid
            break

    grid = [{"lx": a, "lt": b, "noise_std": n, "rmse": r} for (a, b, n), r in sorted(cache.items())]
    return OITuning(
        params=OIParams(
            lx=best[0], ly=best[0], lt=best[1], signal_std=signal_std, noise_std=best[2]
        ),
        rmse=cache[best],
        grid=grid,
        on_edge=any(edges.values()),
    )
