"""Losses as pure functions ``loss(pred, target, *, mask=None, weights=None) -> scalar``.

``mask`` (bool or 0/1, broadcastable to ``pred``) selects the entries that count; masked-out entries
may hold NaN and influence neither the value nor the gradient (``torch.where``, not multiplication,
so that ``0 * NaN`` never appears). ``weights`` (broadcastable to ``pred``, e.g. cos(latitude) or
per-channel weights from the config) weight the entries; the reduction is the weighted mean over the
selected entries. NaN in a selected entry, or a mask that selects nothing, is an error: there is no
fake loss for an empty batch.

Likelihood losses take their distribution parameters explicitly (``log_var``, ``factor``); the
adversarial losses take discriminator logits. Losses are also available by name through
:func:`get_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from geodl.errors import UserInputError
from geodl.integrate import rk4_step
from geodl.ranks import batch_total

__all__ = [
    "LOSSES",
    "adversarial_discriminator_loss",
    "check_terms",
    "NEEDS",
    "adversarial_generator_loss",
    "gaussian_kl",
    "gaussian_nll",
    "get_loss",
    "gradient_loss",
    "huber",
    "lowrank_gaussian_nll",
    "lp",
    "mae",
    "mse",
    "ode_residual",
    "sliced_wasserstein",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _select(
    pred: Tensor, target: Tensor, mask: Tensor | None, weights: Tensor | None, where: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(pred - target with 0 where masked, weights * mask, sum of those weights)``."""
    if pred.shape != target.shape:
        raise UserInputError(
            f"{where}: pred has shape {tuple(pred.shape)} but target has {tuple(target.shape)}; "
            "they must match, e.g. both (batch, time, channel, y, x)"
        )
    diff = pred - target
    keep = (
        torch.ones_like(diff, dtype=torch.bool)
        if mask is None
        else _broadcast(mask, diff, "mask", where).bool()
    )
    if torch.isnan(diff[keep]).any():
        hint = (
            "pass mask=torch.isfinite(target)"
            if mask is None
            else "set the mask to 0 where data are NaN"
        )
        raise UserInputError(f"{where}: NaN in pred or target at selected entries; {hint}")
    w = keep.to(diff.dtype)
    if weights is not None:
        w = w * _broadcast(weights, diff, "weights", where).to(diff.dtype)
    total = batch_total(w.sum())  # the whole batch's count when DDP ranks split it
    if not total > 0:
        raise UserInputError(
            f"{where}: the mask (times weights) selects no entries, so the loss is undefined; "
            "drop empty batches in the data pipeline or check the mask"
        )
    return torch.where(keep, diff, torch.zeros_like(diff)), w, total


def _broadcast(x: Tensor, like: Tensor, name: str, where: str) -> Tensor:
    try:
        return torch.broadcast_to(torch.as_tensor(x, device=like.device), like.shape)
    except RuntimeError:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise UserInputError(
            f"{where}: {name} of shape {shape} does not broadcast to {tuple(like.shape)}; give it the "
            "shape of pred, or size-1 axes where it is constant"
        ) from None


def _mean(values: Tensor, w: Tensor, total: Tensor) -> Tensor:
    return (values * w).sum() / total


def mse(
    pred: Tensor, target: Tensor, *, mask: Tensor | None = None, weights: Tensor | None = None
) -> Tensor:
    """Masked, weighted mean squared error.

    .. math:: L = \\frac{\\sum_i w_i m_i (\\hat y_i - y_i)^2}{\\sum_i w_i m_i}

    Examples
    --------
    >>> import torch
    >>> float(mse(torch.tensor([1.0, 2.0]), torch.tensor([1.0, float("nan")]), mask=torch.tensor([1, 0])))
    0.0
    """
    diff, w, total = _select(pred, target, mask, weights, "mse")
    return _mean(diff**2, w, total)


def mae(
    pred: Tensor, target: Tensor, *, mask: Tensor | None = None, weights: Tensor | None = None
) -> Tensor:
    """Masked, weighted mean absolute error.

    .. math:: L = \\frac{\\sum_i w_i m_i |\\hat y_i - y_i|}{\\sum_i w_i m_i}
    """
    diff, w, total = _select(pred, target, mask, weights, "mae")
    return _mean(diff.abs(), w, total)


def lp(
    pred: Tensor,
    target: Tensor,
    *,
    p: float = 2.0,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """Masked, weighted mean of ``|error|**p`` (``p=2`` is :func:`mse`, ``p=1`` :func:`mae`).

    .. math:: L = \\frac{\\sum_i w_i m_i |\\hat y_i - y_i|^p}{\\sum_i w_i m_i}
    """
    if not p > 0:
        raise UserInputError(f"lp: p must be > 0, got {p!r}")
    diff, w, total = _select(pred, target, mask, weights, "lp")
    # |0|**p has an infinite derivative for p < 1; the tiny floor keeps gradients finite.
    return _mean((diff.abs() + (1e-12 if p < 1 else 0.0)) ** p, w, total)


def huber(
    pred: Tensor,
    target: Tensor,
    *,
    delta: float = 1.0,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """Masked, weighted Huber loss (quadratic below ``delta``, linear above; Huber 1964).

    .. math:: \\ell(e) = \\begin{cases} e^2/2 & |e| \\le \\delta \\\\ \\delta(|e| - \\delta/2) & |e| > \\delta \\end{cases}
    """
    if not delta > 0:
        raise UserInputError(f"huber: delta must be > 0, got {delta!r}")
    diff, w, total = _select(pred, target, mask, weights, "huber")
    a = diff.abs()
    return _mean(torch.where(a <= delta, 0.5 * diff**2, delta * (a - 0.5 * delta)), w, total)


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def _sobel(x: Tensor) -> tuple[Tensor, Tensor]:
    """Sobel derivatives along x and y of ``(..., H, W)`` -> each ``(..., H-2, W-2)`` (valid part)."""
    flat = x.reshape(-1, 1, *x.shape[-2:])
    k = _SOBEL.to(x)
    gx = F.conv2d(flat, k[None, None])
    gy = F.conv2d(flat, k.T[None, None])
    shape = (*x.shape[:-2], x.shape[-2] - 2, x.shape[-1] - 2)
    return gx.reshape(shape), gy.reshape(shape)


def gradient_loss(
    pred: Tensor, target: Tensor, *, mask: Tensor | None = None, weights: Tensor | None = None
) -> Tensor:
    """Mean squared difference of Sobel gradients over the last two axes ``(..., y, x)``.

    .. math:: L = \\overline{(\\partial_x \\hat y - \\partial_x y)^2 + (\\partial_y \\hat y - \\partial_y y)^2}

    A gradient counts only where its whole 3x3 stencil is selected by ``mask``; borders (one pixel)
    are dropped. Penalises smooth reconstructions that an MSE alone favours (Fablet et al. 2021).
    """
    if pred.ndim < 2 or pred.shape != target.shape:
        raise UserInputError(
            f"gradient_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the "
            "same shape (..., y, x) with y, x >= 3"
        )
    if pred.shape[-1] < 3 or pred.shape[-2] < 3:
        raise UserInputError(
            f"gradient_loss: y and x sizes must be >= 3, got {tuple(pred.shape[-2:])}"
        )
    keep = (
        torch.ones_like(pred, dtype=torch.bool)
        if mask is None
        else _broadcast(mask, pred, "mask", "gradient_loss").bool()
    )
    zero = torch.zeros_like(pred)
    gx_p, gy_p = _sobel(torch.where(keep, pred, zero))
    gx_t, gy_t = _sobel(torch.where(keep, target, zero))
    # Erode the mask: the stencil's 9 points must all be selected.
    flat = (~keep).to(pred.dtype).reshape(-1, 1, *pred.shape[-2:])
    stencil_ok = (F.max_pool2d(flat, 3, stride=1) == 0).reshape(gx_p.shape)
    w = (
        None
        if weights is None
        else _broadcast(weights, pred, "weights", "gradient_loss")[..., 1:-1, 1:-1]
    )
    err = (gx_p - gx_t) ** 2 + (gy_p - gy_t) ** 2
    sel = None if mask is None else stencil_ok
    return mse(err, torch.zeros_like(err), mask=sel, weights=w)


def gaussian_nll(
    mean: Tensor,
    target: Tensor,
    *,
    log_var: Tensor,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    min_log_var: float = -10.0,
    max_log_var: float = 10.0,
) -> Tensor:
    """Gaussian negative log-likelihood with diagonal variance ``exp(log_var)``.

    .. math:: L = \\overline{\\tfrac12 \\left(\\log\\sigma_i^2 + (y_i - \\mu_i)^2/\\sigma_i^2 + \\log 2\\pi\\right)},
              \\quad \\log\\sigma_i^2 = \\mathrm{clamp}(\\text{log\\_var}_i, a, b)

    The clamp keeps ``exp(-log_var)`` finite. Minimised over ``log_var`` at the squared error.

    References
    ----------
    Nix, D. A., Weigend, A. S. (1994). Estimating the mean and variance of the target probability
    distribution. ICNN'94. Barth et al. (2020), DINCAE 1.0, Geosci. Model Dev. 13.
    """
    diff, w, total = _select(mean, target, mask, weights, "gaussian_nll")
    if log_var.shape != mean.shape:
        raise UserInputError(
            f"gaussian_nll: log_var has shape {tuple(log_var.shape)}, expected the shape of mean "
            f"{tuple(mean.shape)}"
        )
    keep = w > 0
    lv = torch.where(keep, log_var, torch.zeros_like(log_var)).clamp(min_log_var, max_log_var)
    return _mean(0.5 * (lv + diff**2 * torch.exp(-lv) + _LOG_2PI), w, total)


def lowrank_gaussian_nll(
    mean: Tensor,
    target: Tensor,
    *,
    factor: Tensor,
    log_diag: Tensor,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    min_log_var: float = -10.0,
    max_log_var: float = 10.0,
) -> Tensor:
    """Gaussian NLL with low-rank-plus-diagonal covariance, per entry observed.

    .. math:: \\Sigma = F F^\\top + \\mathrm{diag}(e^{d}),\\qquad
              L = \\frac{1}{\\sum_b n_b} \\sum_b \\tfrac12\\left(\\log|\\Sigma_b| + r_b^\\top\\Sigma_b^{-1}r_b
              + n_b\\log 2\\pi\\right)

    ``mean``, ``target``, ``log_diag`` are ``(B, N)`` (flatten gridded fields to N), ``factor`` is
    ``(B, N, R)``. Masked entries are marginalised out exactly (their rows of ``F`` are zeroed and their
    residual set to 0, which decouples them); ``n_b`` counts the observed entries. Computed with the
    Woodbury identity and the matrix determinant lemma (``torch.distributions.LowRankMultivariateNormal``),
    cost O(N R^2). ``weights`` are not supported (a joint likelihood does not split into entries).

    References
    ----------
    Dorta, G., Vicente, S., Agapito, L., Campbell, N. D. F., Simpson, I. (2018). Structured
    uncertainty prediction networks. CVPR.
    """
    if weights is not None:
        raise UserInputError(
            "lowrank_gaussian_nll: weights are not supported (the likelihood does not split into "
            "entries); use mask to select entries"
        )
    if mean.ndim != 2 or target.shape != mean.shape or log_diag.shape != mean.shape:
        raise UserInputError(
            f"lowrank_gaussian_nll: mean {tuple(mean.shape)}, target {tuple(target.shape)} and "
            f"log_diag {tuple(log_diag.shape)} must all be (batch, N); flatten fields with .flatten(1)"
        )
    if factor.ndim != 3 or factor.shape[:2] != mean.shape:
        raise UserInputError(
            f"lowrank_gaussian_nll: factor has shape {tuple(factor.shape)}, expected (batch, N, rank) "
            f"with (batch, N) = {tuple(mean.shape)}"
        )
    diff, w, total = _select(mean, target, mask, None, "lowrank_gaussian_nll")
    keep = w > 0  # (B, N)
    d = torch.where(keep, log_diag, torch.zeros_like(log_diag)).clamp(min_log_var, max_log_var)
    fac = torch.where(keep[..., None], factor, torch.zeros_like(factor))
    dist = torch.distributions.LowRankMultivariateNormal(
        torch.zeros_like(diff), fac, torch.exp(d), validate_args=False
    )
    # Unobserved entries contribute exactly 0.5 * log(2 pi) each (unit variance, zero residual).
    n_missing = (~keep).sum()
    return (-dist.log_prob(diff).sum() - 0.5 * _LOG_2PI * n_missing) / total


def gaussian_kl(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL divergence of ``N(mean, exp(log_var))`` from ``N(0, 1)``, summed over all but the first
    axis and averaged over the batch (the VAE regulariser, Kingma & Welling 2014).

    .. math:: \\mathrm{KL} = \\tfrac12 \\sum_j \\left(\\mu_j^2 + \\sigma_j^2 - \\log\\sigma_j^2 - 1\\right)
    """
    if mean.shape != log_var.shape:
        raise UserInputError(
            f"gaussian_kl: mean {tuple(mean.shape)} and log_var {tuple(log_var.shape)} must match"
        )
    kl = 0.5 * (mean**2 + torch.exp(log_var) - log_var - 1.0)
    return kl.reshape(kl.shape[0], -1).sum(1).mean()


def sliced_wasserstein(
    pred: Tensor,
    target: Tensor,
    *,
    mask: Tensor | None = None,
    weights: Tensor | None = None,
    n_projections: int = 64,
    p: int = 2,
    seed: int = 0,
) -> Tensor:
    """Sliced Wasserstein-p distance between two equal-size sample sets ``(N, D)``, to the power p.

    .. math:: SW_p^p(\\mu, \\nu) = \\mathbb{E}_{\\theta \\sim U(S^{D-1})}\\, W_p^p(\\theta_\\# \\mu, \\theta_\\# \\nu)

    estimated with ``n_projections`` random directions (drawn from ``seed``, so the loss is
    deterministic) and sorted 1-D projections. ``mask`` ``(N,)`` selects samples (rows) in both
    sets. Compares distributions, not pairs: use it to match the statistics of generated fields.

    References
    ----------
    Bonneel, N., Rabin, J., Peyré, G., Pfister, H. (2015). Sliced and Radon Wasserstein barycenters
    of measures. J. Math. Imaging Vis. 51, 22-45.
    """
    if weights is not None:
        raise UserInputError(
            "sliced_wasserstein: weights are not supported; use mask to select samples"
        )
    if pred.ndim != 2 or pred.shape != target.shape:
        raise UserInputError(
            f"sliced_wasserstein: pred {tuple(pred.shape)} and target {tuple(target.shape)} must be "
            "sample sets of the same shape (samples, features); reshape with x.reshape(-1, D)"
        )
    if mask is not None:
        keep = mask.bool()
        if keep.shape != pred.shape[:1]:
            raise UserInputError(
                f"sliced_wasserstein: mask has shape {tuple(keep.shape)}, expected (samples,) = "
                f"{tuple(pred.shape[:1])}"
            )
        pred, target = pred[keep], target[keep]
    if pred.shape[0] == 0:
        raise UserInputError("sliced_wasserstein: no samples selected; check the mask")
    if torch.isnan(pred).any() or torch.isnan(target).any():
        raise UserInputError("sliced_wasserstein: NaN in the selected samples; mask those rows out")
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(pred.shape[1], n_projections, generator=gen, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(pred)
    a = torch.sort(pred @ theta, dim=0).values  # (N, P)
    b = torch.sort(target @ theta, dim=0).values
    return ((a - b).abs() ** p).mean()


ADVERSARIAL_KINDS = ("non_saturating", "hinge")


def _check_kind(kind: str, where: str) -> None:
    if kind not in ADVERSARIAL_KINDS:
        raise UserInputError(f"{where}: kind={kind!r}, expected one of {list(ADVERSARIAL_KINDS)}")


def adversarial_generator_loss(fake_logits: Tensor, *, kind: str = "non_saturating") -> Tensor:
    """Generator loss from discriminator logits on generated samples.

    .. math:: L_G^{ns} = \\overline{\\mathrm{softplus}(-D(G(z)))},\\qquad L_G^{hinge} = -\\overline{D(G(z))}

    References
    ----------
    Goodfellow, I., et al. (2014). Generative adversarial nets. NeurIPS. Lim, J. H., Ye, J. C.
    (2017). Geometric GAN. arXiv:1705.02894 (hinge).
    """
    _check_kind(kind, "adversarial_generator_loss")
    return F.softplus(-fake_logits).mean() if kind == "non_saturating" else -fake_logits.mean()


def adversarial_discriminator_loss(
    real_logits: Tensor, fake_logits: Tensor, *, kind: str = "non_saturating"
) -> Tensor:
    """Discriminator loss from logits on real and generated samples.

    .. math:: L_D^{ns} = \\overline{\\mathrm{softplus}(-D(x))} + \\overline{\\mathrm{softplus}(D(G(z)))},\\qquad
              L_D^{hinge} = \\overline{\\max(0, 1 - D(x))} + \\overline{\\max(0, 1 + D(G(z)))}

    References
    ----------
    Goodfellow et al. (2014); Lim & Ye (2017), see :func:`adversarial_generator_loss`.
    """
    _check_kind(kind, "adversarial_discriminator_loss")
    if kind == "non_saturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


RESIDUAL_SCHEMES = ("central", "rk4")


def ode_residual(
    trajectory: Tensor,
    vector_field: Callable[[Tensor], Tensor],
    *,
    dt: float,
    scheme: str = "central",
    mask: Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """Physics residual: mismatch between a trajectory ``(B, T, ...)`` and an ODE ``dx/dt = f(x)``.

    .. math:: \\text{central: } r_t = \\frac{x_{t+1} - x_{t-1}}{2\\,\\Delta t} - f(x_t),\\qquad
              \\text{rk4: } r_t = \\frac{x_{t+1} - \\Phi^{RK4}_{\\Delta t}(x_t)}{\\Delta t},\\qquad
              L = \\overline{r_t^2}

    ``central`` compares the right-hand side with a finite-difference derivative (O(dt^2) at the
    true trajectory); ``rk4`` the one-step RK4 prediction (O(dt^4)). ``mask``/``weights`` have the
    shape of ``trajectory`` and are applied to the residual at the time steps it is defined on
    (``1:-1`` for central, ``:-1`` for rk4); a residual counts when all states it uses are selected.

    References
    ----------
    Raissi, M., Perdikaris, P., Karniadakis, G. E. (2019). Physics-informed neural networks.
    J. Comput. Phys. 378, 686-707.
    """
    if scheme not in RESIDUAL_SCHEMES:
        raise UserInputError(
            f"ode_residual: scheme={scheme!r}, expected one of {list(RESIDUAL_SCHEMES)}"
        )
    if trajectory.ndim < 3 or trajectory.shape[1] < 3:
        raise UserInputError(
            f"ode_residual: trajectory has shape {tuple(trajectory.shape)}, expected (batch, time, ...) "
            "with at least 3 time steps"
        )
    if not dt > 0:
        raise UserInputError(f"ode_residual: dt must be > 0, got {dt!r}")
    keep = None if mask is None else _broadcast(mask, trajectory, "mask", "ode_residual").bool()
    x = trajectory if keep is None else torch.where(keep, trajectory, torch.zeros_like(trajectory))
    b, t = x.shape[:2]
    if scheme == "central":
        states = x[:, 1:-1]
        fx = vector_field(states.reshape(b * (t - 2), *x.shape[2:])).reshape(states.shape)
        res = (x[:, 2:] - x[:, :-2]) / (2 * dt) - fx
        sel = None if keep is None else keep[:, 2:] & keep[:, 1:-1] & keep[:, :-2]
        w = None if weights is None else _broadcast(weights, x, "weights", "ode_residual")[:, 1:-1]
    else:
        states = x[:, :-1].reshape(b * (t - 1), *x.shape[2:])
        step = rk4_step(vector_field, states, dt).reshape(x[:, 1:].shape)
        res = (x[:, 1:] - step) / dt
        sel = None if keep is None else keep[:, 1:] & keep[:, :-1]
        w = None if weights is None else _broadcast(weights, x, "weights", "ode_residual")[:, :-1]
    return mse(res, torch.zeros_like(res), mask=sel, weights=w)


#: The loss terms by the names the configs use (``loss: {mse: 1.0, grad: 0.1, nll: 0.1}``).
#: One registry for docs, configs and code: a method's loss builder reads its weights by these
#: names, and refuses (at config validation) a term whose :data:`NEEDS` it cannot provide.
LOSSES: dict[str, Callable[..., Tensor]] = {
    "mse": mse,
    "mae": mae,
    "lp": lp,
    "huber": huber,
    "grad": gradient_loss,
    "nll": gaussian_nll,
    "lowrank_nll": lowrank_gaussian_nll,
    "kl": gaussian_kl,
    "sliced_wasserstein": sliced_wasserstein,
    "adversarial": adversarial_generator_loss,
    "adversarial_discriminator": adversarial_discriminator_loss,
    "physics": ode_residual,
}

#: What a model must provide, beside its output, for a term of :data:`LOSSES`.
NEEDS: dict[str, str] = {
    "nll": "a predicted variance (log_var)",
    "lowrank_nll": "a predicted low-rank covariance factor",
    "kl": "a latent distribution (mean, log_var)",
    "adversarial": "a discriminator (the adversarial section)",
    "adversarial_discriminator": "a discriminator (the adversarial section)",
    "physics": "a vector field",
}


def check_terms(
    weights: dict[str, float],
    allowed: dict[str, str],
    who: str,
    needs: dict[str, str] | None = None,
) -> None:
    """One :class:`UserInputError` line for a loss-weight dict that ``who`` cannot train with:
    an unknown name, a term of :data:`LOSSES` that it cannot provide (``allowed`` maps the names
    it can to a short description), or no term at all. ``needs`` adds method-side terms (name ->
    what they need) to :data:`NEEDS`.

    Examples
    --------
    >>> check_terms({"mse": 1.0, "nll": 0.1}, {"mse": "", "grad": ""}, "unet")
    Traceback (most recent call last):
    ...
    geodl.errors.UserInputError: unet: loss term 'nll' needs a predicted variance (log_var), which unet does not give; its terms: ['grad', 'mse']
    """
    if not weights:
        raise UserInputError(f"{who}: loss has no term; choose from {sorted(allowed)}")
    every = {**NEEDS, **(needs or {})}
    for name in weights:
        if name in allowed:
            continue
        if name in LOSSES or name in every:
            need = every.get(name)
            what = f"needs {need}, which {who} does not give" if need else "is not one of its terms"
            raise UserInputError(f"{who}: loss term '{name}' {what}; its terms: {sorted(allowed)}")
        raise UserInputError(
            f"{who}: unknown loss term '{name}'; {who}'s terms: {sorted(allowed)} (all: "
            f"{sorted(LOSSES)})"
        )


def get_loss(name: str) -> Callable[..., Tensor]:
    """The loss function registered as ``name``.

    Examples
    --------
    >>> get_loss("grad") is gradient_loss
    True
    """
    if name not in LOSSES:
        raise UserInputError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}")
    return LOSSES[name]
