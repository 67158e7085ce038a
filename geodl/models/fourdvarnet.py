"""4DVarNet: a learned variational solver (Fablet et al. 2021) for mapping and data assimilation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geodl.models.blocks import ConvLSTMCell, PaddedConv, check_padding
from geodl.models.checks import check_grid, check_positive, masked_input
from geodl.models.outputs import MappingOutput, clamp_log_var

__all__ = ["BilinearAEPrior", "FourDVarNet"]


class BilinearAEPrior(nn.Module):
    """Bilinear convolutional autoencoder prior ``phi``: ``(N, K, H, W) -> (N, K, H, W)``.

    Down-samples by ``downsample`` (average pooling), applies one convolution and a bilinear unit
    (``conv(h)`` concatenated with ``conv(h) * conv(h)``), and up-samples bilinearly, as in the
    4DVarNet reference implementation. The bilinear product lets the prior represent quadratic
    (advective) interactions that a linear convolution cannot.
    """

    def __init__(
        self, channels: int, hidden: int, *, downsample: int = 2, padding: str = "zeros"
    ) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv_in = PaddedConv(channels, hidden, 3, padding=padding)
        self.conv_hidden = PaddedConv(hidden, hidden, 3, padding=padding)
        self.bilin_1 = PaddedConv(hidden, hidden, 3, padding=padding)
        self.bilin_21 = PaddedConv(hidden, hidden, 3, padding=padding)
        self.bilin_22 = PaddedConv(hidden, hidden, 3, padding=padding)
        self.conv_out = PaddedConv(2 * hidden, channels, 3, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample)
        h = self.conv_hidden(F.relu(self.conv_in(x)))
        h = self.conv_out(torch.cat([self.bilin_1(h), self.bilin_21(h) * self.bilin_22(h)], dim=1))
        if self.downsample > 1:
            h = F.interpolate(h, scale_factor=self.downsample, mode="bilinear", align_corners=False)
        return h


class FourDVarNet(nn.Module):
    """4DVarNet: minimise a variational cost with a learned ConvLSTM gradient solver.

    The cost of a state ``x`` given observations ``y`` and mask ``m`` is

    .. math:: U(x) = \\alpha_o \\overline{m (x - y)^2} + \\alpha_p \\overline{(x - \\phi(x))^2}

    (means per sample), with ``phi`` a :class:`BilinearAEPrior`. Starting from ``x_0 = y`` (zeros at
    gaps), each of the ``n_iter`` iterations computes ``g = dU/dx`` by autograd, normalises it by its
    root mean square at iteration 0 (per sample), feeds it to a ConvLSTM, and updates
    ``x_{k+1} = x_k - (lstm_out / (k + 1) + grad_step * (k + 1) / K * g)``.

    ``forward(obs, obs_mask=None) -> MappingOutput``. Time is used as channels: the state is
    ``(B, T*C, H, W)`` inside the solver, so ``n_times`` is fixed at construction.

    Why autograd inside ``forward``: the gradient of the cost is part of the model. ``forward``
    enables grad itself, so it also works under ``torch.no_grad()`` (evaluation); the graph through
    the iterations is kept (``create_graph``) only when grad is enabled by the caller (training).
    ``detach=True`` cuts it between iterations (truncated back-propagation: memory of one
    iteration, gradients from the last one only).

    Parameters
    ----------
    in_channels, n_times : int
        C and T of the input.
    n_iter : int
        Solver iterations K.
    prior_hidden, lstm_hidden : int
        Channels of the prior and of the ConvLSTM.
    downsample : int
        Down-sampling of the prior; H and W must be divisible by it.
    obs_weight, prior_weight : float
        :math:`\\alpha_o`, :math:`\\alpha_p` of the cost.
    grad_step : float
        Weight of the raw gradient step.
    detach : bool
        Detach the state (and ConvLSTM state) between iterations.
    variance : bool
        Add a log-variance head (conv on state and ConvLSTM hidden state), clamped to
        ``[min_log_var, max_log_var]``.

    References
    ----------
    Fablet, R., Chapron, B., Drumetz, L., Mémin, E., Pannekoucke, O., Rousseau, F. (2021). Learning
    variational data assimilation models and solvers. J. Adv. Model. Earth Syst. 13, e2021MS002572.

    Examples
    --------
    >>> import torch
    >>> net = FourDVarNet(1, 3, n_iter=2, prior_hidden=8, lstm_hidden=8)
    >>> obs = torch.randn(2, 3, 1, 16, 16)
    >>> net(obs, (torch.rand_like(obs) > 0.5).float()).mean.shape
    torch.Size([2, 3, 1, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        n_times: int,
        *,
        n_iter: int = 5,
        prior_hidden: int = 32,
        lstm_hidden: int = 32,
        downsample: int = 2,
        padding: str = "zeros",
        obs_weight: float = 1.0,
        prior_weight: float = 1.0,
        grad_step: float = 0.2,
        detach: bool = False,
        variance: bool = False,
        min_log_var: float = -10.0,
        max_log_var: float = 5.0,
    ) -> None:
        super().__init__()
        check_padding(padding, "FourDVarNet")
        check_positive(
            "FourDVarNet",
            in_channels=in_channels,
            n_times=n_times,
            n_iter=n_iter,
            prior_hidden=prior_hidden,
            lstm_hidden=lstm_hidden,
            downsample=downsample,
        )
        self.in_channels = in_channels
        self.n_times = n_times
        self.n_iter = n_iter
        self.downsample = downsample
        self.obs_weight = obs_weight
        self.prior_weight = prior_weight
        self.grad_step = grad_step
        self.detach = detach
        self.min_log_var = min_log_var
        self.max_log_var = max_log_var
        k = in_channels * n_times
        self.prior = BilinearAEPrior(k, prior_hidden, downsample=downsample, padding=padding)
        self.lstm = ConvLSTMCell(k, lstm_hidden, padding=padding)
        self.lstm_out = PaddedConv(lstm_hidden, k, 1, bias=False)
        self.log_var_head = PaddedConv(k + lstm_hidden, k, 3, padding=padding) if variance else None

    def cost(self, state: Tensor, obs: Tensor, mask: Tensor) -> Tensor:
        """Variational cost per sample ``(B,)`` of ``state``, ``obs``, ``mask`` (each ``(B, K, H, W)``)."""
        obs_term = (mask * (state - obs) ** 2).mean(dim=(1, 2, 3))
        prior_term = ((state - self.prior(state)) ** 2).mean(dim=(1, 2, 3))
        return self.obs_weight * obs_term + self.prior_weight * prior_term

    def forward(self, obs: Tensor, obs_mask: Tensor | None = None) -> MappingOutput:
        check_grid(
            obs,
            "obs",
            "FourDVarNet.forward",
            channels=self.in_channels,
            times=self.n_times,
            multiple=self.downsample,
        )
        y, m = masked_input(obs, obs_mask, "FourDVarNet.forward")  # (B, T, C, H, W)
        shape = y.shape
        b, _, _, h, w = shape
        keep_graph = torch.is_grad_enabled()
        # inference_mode (Lightning's default for validation and prediction) forbids autograd even
        # under enable_grad; leave it, and clone the inputs out of it (inference tensors cannot be
        # saved for backward).
        with torch.inference_mode(False), torch.enable_grad():
            y = y.reshape(b, -1, h, w).detach().clone()  # (B, T*C, H, W)
            m = m.reshape(b, -1, h, w).clone()
            state = y.clone().requires_grad_(True)
            lstm_state = self.lstm.init_state(state)
            norm = None
            for k in range(self.n_iter):
                if k > 0 and (self.detach or not keep_graph):
                    state = state.detach().requires_grad_(True)
                    lstm_state = (lstm_state[0].detach(), lstm_state[1].detach())
                grad = torch.autograd.grad(
                    self.cost(state, y, m).sum(), state, create_graph=keep_graph
                )[0]
                if norm is None:
                    # Per-sample scale: the ConvLSTM sees gradients of order 1 whatever the data.
                    norm = grad.detach().pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-8
                lstm_state = self.lstm(grad / norm, lstm_state)
                step = (
                    self.lstm_out(lstm_state[0]) / (k + 1)
                    + self.grad_step * (k + 1) / self.n_iter * grad
                )
                state = state - step
            log_var = None
            if self.log_var_head is not None:
                raw = self.log_var_head(torch.cat([state, lstm_state[0]], dim=1))
                log_var = clamp_log_var(raw, self.min_log_var, self.max_log_var).reshape(shape)
        if not keep_graph:
            state = state.detach()
            log_var = None if log_var is None else log_var.detach()
        return MappingOutput(state.reshape(shape), log_var)
