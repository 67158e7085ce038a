r"""4DVarNet for state trajectories ``(B, T, D)`` (Lorenz systems): learned ODE prior and solver.

The gridded :class:`~geodl.models.fourdvarnet.FourDVarNet` uses time as channels and 2-D
convolutions; for a low-dimensional state observed in time the natural prior is a dynamical model
(Fablet et al. 2021, Lorenz experiments). The variational cost of a trajectory ``x`` given
observations ``y`` and mask ``m`` is

.. math::

    U(x) = \alpha_o \overline{m (x - y)^2}
         + \alpha_p \overline{\lVert x_{t+1} - \Phi_\theta(x_t) \rVert^2},

with :math:`\Phi_\theta` a :class:`~geodl.models.bilinear.BilinearResNet` one-step map (so it can
represent quadratic dynamics exactly; ``prior="local"``: the same bilinear stencil at every
component of a periodic domain, :class:`LocalBilinearStep`, as in Lorenz-96), and it is minimised by ``n_iter`` iterations of a learned
gradient solver: a 1-D (in time) convolutional LSTM reads the normalised gradient and proposes the
update, ``x_{k+1} = x_k - (lstm_out / (k + 1) + grad_step (k + 1) / K\, g)``, with ``g``
the gradient normalised by its root mean square (``grad_norm="each"``: at every iteration;
``"first"``: by that of the first iteration, as 4DVarNet's reference code does, so that the
steps shrink as the cost decreases).

Why a separate model: the state has a handful of components and hundreds of time steps; time is
the axis to convolve over, components are channels. Inputs are expected normalised (order-one
values); the task layer normalises with training statistics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geodl.errors import UserInputError
from geodl.integrate import rk4_step
from geodl.models.bilinear import BilinearResNet
from geodl.ranks import batch_mean

__all__ = ["LocalBilinearStep", "StateFourDVarNet"]

PRIORS = ("dense", "local")
GRAD_NORMS = ("each", "first")


class LocalBilinearStep(nn.Module):
    """RK4 step of a translation-invariant bilinear vector field on a periodic 1-D domain.

    .. math:: f(x) = a * x + c + \\sum_k m_k \\left[(l_k * x) \\odot (r_k * x)\\right]

    with ``*`` a circular convolution over the components by a stencil of width ``stencil``.
    Why: Lorenz-96 (and advection-like grids) use the same local equation at every component; a
    dense map over 40 components needs thousands of parameters fitted from few windows, the
    stencil a few dozen, and it represents the L96 tendency
    :math:`(x_{i+1} - x_{i-2}) x_{i-1} - x_i + F` exactly (stencil >= 5).

    Examples
    --------
    >>> LocalBilinearStep(n_bilinear=2, stencil=5, dt=0.05)(torch.zeros(4, 40)).shape
    torch.Size([4, 40])
    """

    def __init__(self, *, n_bilinear: int, stencil: int, dt: float) -> None:
        super().__init__()
        if stencil < 1 or stencil % 2 == 0:
            raise UserInputError(f"LocalBilinearStep: stencil must be odd and >= 1, got {stencil}")
        if n_bilinear < 1:
            raise UserInputError(f"LocalBilinearStep: n_bilinear must be >= 1, got {n_bilinear}")
        self.dt = dt
        self.pad = stencil // 2
        self.linear = nn.Conv1d(1, 1, stencil)
        self.left = nn.Conv1d(1, n_bilinear, stencil, bias=False)
        self.right = nn.Conv1d(1, n_bilinear, stencil, bias=False)
        self.mix = nn.Conv1d(n_bilinear, 1, 1, bias=False)

    def vector_field(self, x: Tensor) -> Tensor:
        """``f(x)`` for ``x`` of shape ``(..., D)``."""
        z = F.pad(x.reshape(-1, 1, x.shape[-1]), (self.pad, self.pad), mode="circular")
        f = self.linear(z) + self.mix(self.left(z) * self.right(z))  # (N, 1, D)
        return f.reshape(x.shape)

    def forward(self, x: Tensor) -> Tensor:
        return rk4_step(self.vector_field, x, self.dt)


class _ConvLSTM1d(nn.Module):
    """LSTM cell whose gates are 1-D convolutions over time: ``(B, C, T)`` in, ``(B, H, T)`` state."""

    def __init__(self, channels: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv1d(channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden, x.shape[2])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class StateFourDVarNet(nn.Module):
    """Learned variational data assimilation of a trajectory: ``forward(obs, mask) -> (B, T, D)``.

    Parameters
    ----------
    dim : int
        State size D.
    dt : float
        Time step of the prior's one-step map (in the units of the data's time axis).
    n_iter : int
        Solver iterations K.
    n_bilinear : int
        Bilinear products of the prior's vector field.
    lstm_hidden, kernel : int
        Hidden channels and temporal kernel size of the solver's ConvLSTM.
    obs_weight, prior_weight : float
        Initial :math:`\\alpha_o`, :math:`\\alpha_p` (both learned).
    grad_step : float
        Weight of the raw (normalised) gradient step.
    prior : {"dense", "local"}
        Dense bilinear map over all components, or the same bilinear ``stencil`` at every
        component of a periodic domain (:class:`LocalBilinearStep`).
    stencil : int
        Stencil width of the local prior (odd).
    grad_norm : {"each", "first"}
        Normalise the gradient by its RMS at every iteration, or by that of the first one.
    grad_iters : int or None
        Training backpropagates through the last ``grad_iters`` solver iterations only (None:
        all): the earlier ones run without a graph, so more iterations cost less memory and time
        (truncated backpropagation, as in 4DVarNet's ``n_grad``).

    Examples
    --------
    >>> net = StateFourDVarNet(3, dt=0.01, n_iter=2, lstm_hidden=8)
    >>> y = torch.randn(2, 50, 3)
    >>> net(y, (torch.rand_like(y) > 0.8).float()).shape
    torch.Size([2, 50, 3])
    """

    def __init__(
        self,
        dim: int,
        *,
        dt: float,
        n_iter: int = 10,
        n_bilinear: int = 6,
        lstm_hidden: int = 32,
        kernel: int = 5,
        obs_weight: float = 1.0,
        prior_weight: float = 1.0,
        grad_step: float = 0.2,
        prior: str = "dense",
        stencil: int = 5,
        grad_iters: int | None = None,
        grad_norm: str = "each",
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("n_iter", n_iter), ("lstm_hidden", lstm_hidden)):
            if value < 1:
                raise UserInputError(f"StateFourDVarNet: {name} must be >= 1, got {value}")
        if not (obs_weight > 0 and prior_weight > 0):
            raise UserInputError(
                f"StateFourDVarNet: obs_weight and prior_weight must be > 0, got {obs_weight}, "
                f"{prior_weight}"
            )
        if kernel < 1 or kernel % 2 == 0:
            raise UserInputError(f"StateFourDVarNet: kernel must be odd and >= 1, got {kernel}")
        if grad_iters is not None and not 1 <= grad_iters <= n_iter:
            raise UserInputError(
                f"StateFourDVarNet: grad_iters must be in 1..n_iter={n_iter} or None, got "
                f"{grad_iters}"
            )
        if grad_norm not in GRAD_NORMS:
            raise UserInputError(
                f"StateFourDVarNet: grad_norm={grad_norm!r}, expected one of {list(GRAD_NORMS)}"
            )
        if prior not in PRIORS:
            raise UserInputError(
                f"StateFourDVarNet: prior={prior!r}, expected one of {list(PRIORS)}"
            )
        if prior == "local" and stencil > dim:
            raise UserInputError(
                f"StateFourDVarNet: the local prior's stencil ({stencil}) is wider than the state "
                f"({dim} components)"
            )
        self.dim = dim
        self.n_iter = n_iter
        self.grad_iters = n_iter if grad_iters is None else grad_iters
        self.grad_norm = grad_norm
        # The weights are learned (in log space) with the solver: their ratio sets how much the
        # analysis trusts the prior against the observations, which nobody knows in advance.
        self.log_obs_weight = nn.Parameter(torch.tensor(math.log(obs_weight)))
        self.log_prior_weight = nn.Parameter(torch.tensor(math.log(prior_weight)))
        self.grad_step = grad_step
        self.prior: nn.Module = (
            BilinearResNet(dim, n_bilinear=n_bilinear, dt=dt)
            if prior == "dense"
            else LocalBilinearStep(n_bilinear=n_bilinear, stencil=stencil, dt=dt)
        )
        self.lstm = _ConvLSTM1d(dim, lstm_hidden, kernel)
        self.lstm_out = nn.Conv1d(lstm_hidden, dim, 1, bias=False)

    def prior_residual(self, x: Tensor) -> Tensor:
        """``x_{t+1} - Phi(x_t)`` ``(B, T-1, D)``: how far ``x`` is from a prior trajectory."""
        return x[:, 1:] - self.prior(x[:, :-1])

    def prior_loss(self, x: Tensor) -> Tensor:
        """Training loss of the prior on true trajectories ``x`` ``(B, T, D)``: the one-step error
        relative to the mean squared increment (1 for persistence, 0 for a perfect model). The
        increment is the whole batch's when DDP ranks split it (:func:`geodl.ranks.batch_mean`)."""
        increments = batch_mean((x[:, 1:] - x[:, :-1]).pow(2))
        return self.prior_residual(x).pow(2).mean() / increments.clamp(min=1e-12)

    def cost(self, x: Tensor, obs: Tensor, mask: Tensor) -> Tensor:
        """Variational cost per sample ``(B,)``."""
        obs_term = (mask * (x - obs) ** 2).mean(dim=(1, 2))
        prior_term = self.prior_residual(x).pow(2).mean(dim=(1, 2))
        return self.log_obs_weight.exp() * obs_term + self.log_prior_weight.exp() * prior_term

    def forward(self, obs: Tensor, obs_mask: Tensor, init: Tensor | None = None) -> Tensor:
        """Analysis ``(B, T, D)`` from ``obs`` ``(B, T, D)`` (any value where ``obs_mask`` is 0).

        ``init`` is the first guess (default: ``obs`` with zeros at gaps). As in
        :class:`~geodl.models.fourdvarnet.FourDVarNet`, autograd is enabled inside; the graph
        through the iterations is kept only when the caller has grad enabled (training).
        """
        if obs.ndim != 3 or obs.shape[-1] != self.dim or obs_mask.shape != obs.shape:
            raise UserInputError(
                f"StateFourDVarNet: obs {tuple(obs.shape)} and obs_mask {tuple(obs_mask.shape)} "
                f"must both be (batch, time, {self.dim})"
            )
        mask = obs_mask.to(obs.dtype)
        y = torch.where(mask > 0, obs, torch.zeros_like(obs)).detach()
        keep_graph = torch.is_grad_enabled()
        first_graph = self.n_iter - self.grad_iters if keep_graph else self.n_iter
        with torch.enable_grad():
            x = (y if init is None else init).detach().clone().requires_grad_(True)
            state = None
            for k in range(self.n_iter):
                graph = k >= first_graph
                if k > 0 and k <= first_graph:  # no graph behind this iteration
                    x = x.detach().requires_grad_(True)
                    state = (state[0].detach(), state[1].detach())
                cost = self.cost(x, y, mask).sum()
                grad = torch.autograd.grad(cost, x, create_graph=graph)[0]  # (B, T, D)
                # Normalised per sample: the steps stay bounded even where the gradient is tiny
                # (a good first guess) or huge (a bad prior early in training). By the first
                # norm only, the steps also shrink as the solver converges.
                if k == 0 or self.grad_norm == "each":
                    norm = grad.pow(2).mean(dim=(1, 2), keepdim=True).sqrt() + 1e-12
                grad = grad / norm
                with torch.set_grad_enabled(graph):
                    state = self.lstm(grad.transpose(1, 2), state)  # (B, H, T)
                    step = self.lstm_out(state[0]).transpose(1, 2) / (k + 1)
                    x = x - step - self.grad_step * (k + 1) / self.n_iter * grad
        return x if keep_graph else x.detach()
