"""4DVarNet: a learned variational solver (Fablet et al. 2021) for mapping and data assimilation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geodl.errors import UserInputError
from geodl.models.autoencoder import ConvAutoencoder
from geodl.models.blocks import ConvLSTMCell, PaddedConv, check_padding
from geodl.models.checks import check_grid, check_positive, masked_input
from geodl.models.outputs import MappingOutput, clamp_log_var
from geodl.models.unet import UNet, aux_input

__all__ = ["PRIORS", "BilinearAEPrior", "ConvAEPrior", "FourDVarNet", "UNetPrior"]


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


def _upsample2(x: Tensor, padding: str) -> Tensor:
    """Bilinear 2x up-sampling ``(N, C, H, W) -> (N, C, 2H, 2W)``, periodic for circular padding.

    ``F.interpolate`` clamps at the borders; for a periodic domain the field is wrapped by one cell
    first and the result cropped, which gives exactly the periodic interpolation.
    """
    if padding != "circular":
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    up = F.interpolate(
        F.pad(x, (1, 1, 1, 1), mode="circular"),
        scale_factor=2,
        mode="bilinear",
        align_corners=False,
    )
    return up[..., 2:-2, 2:-2]


class UNetPrior(nn.Module):
    """Multi-scale prior ``phi``: a small conv encoder-decoder with skips, ``(N, K, H, W) -> same``.

    ``levels`` 2x average-pooling steps (width ``hidden * 2**level``, two 3x3 conv + ReLU per
    level), bilinear up-sampling, a skip connection at every level and a linear 3x3 output
    convolution, so H and W must be divisible by ``2**levels``. No normalisation layer: ``phi``
    must keep the amplitude of the state (a per-sample normalisation would make
    ``x - phi(x)`` depend on the amplitude of ``x`` in a way no prior can undo).

    Why: :class:`BilinearAEPrior` only sees the state at ``1 / downsample`` resolution, so the
    prior term cannot tell a realistic small-scale field from a smooth one. The skips let ``phi``
    represent all scales; the flip side is that ``phi`` can drift towards the identity (an
    uninformative prior), so train it with the reconstruction loss and not on the
    prior-consistency term alone.
    """

    def __init__(
        self, channels: int, hidden: int, *, levels: int = 2, padding: str = "zeros"
    ) -> None:
        super().__init__()
        check_positive("UNetPrior", channels=channels, hidden=hidden, levels=levels)
        self.levels = levels
        self.padding = padding
        widths = [hidden * 2**i for i in range(levels + 1)]

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                PaddedConv(c_in, c_out, 3, padding=padding),
                nn.ReLU(),
                PaddedConv(c_out, c_out, 3, padding=padding),
                nn.ReLU(),
            )

        self.down = nn.ModuleList([block(channels, widths[0])])
        self.down.extend(block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.up = nn.ModuleList(
            block(b + a, a) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.conv_out = PaddedConv(widths[0], channels, 3, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for i, down in enumerate(self.down):
            x = down(x if i == 0 else F.avg_pool2d(x, 2))  # (N, hidden * 2**i, H / 2**i, W / 2**i)
            skips.append(x)
        x = skips.pop()
        for up in reversed(self.up):
            x = up(torch.cat([_upsample2(x, self.padding), skips.pop()], dim=1))
        return self.conv_out(x)  # (N, K, H, W)


class ConvAEPrior(nn.Module):
    """Bottleneck prior ``phi``: a :class:`~geodl.models.ConvAutoencoder`, ``(N, K, H, W) -> same``.

    The ``K = T*C`` channels of the solver's state are the autoencoder's channels (one time step
    of ``K`` channels: the state already has time as channels). ``depth`` 2x poolings down to a
    latent grid of ``latent_channels``, no skip connection: unlike :class:`UNetPrior`, ``phi``
    cannot drift towards the identity, so the prior term keeps pulling the state towards the
    low-dimensional manifold the autoencoder has learned (the original 4DVarNet's AE prior).
    H and W must be divisible by ``2**depth``.
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        *,
        depth: int = 2,
        latent_channels: int = 8,
        padding: str = "zeros",
    ) -> None:
        super().__init__()
        self.ae = ConvAutoencoder(
            channels,
            1,
            depth=depth,
            width=hidden,
            latent_channels=latent_channels,
            padding=padding,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.ae(x[:, None]).reconstruction[:, 0]  # (N, 1, K, H, W) inside


#: Prior names accepted by :class:`FourDVarNet`.
PRIORS = ("bilinear", "unet", "conv_ae")
#: First guesses accepted by :class:`FourDVarNet` (None: the observations, zeros at gaps).
FIRST_GUESSES = (None, "unet")
#: Down-sampling levels of the ``"unet"`` and ``"conv_ae"`` priors.
UNET_PRIOR_LEVELS = 2


class FourDVarNet(nn.Module):
    """4DVarNet: minimise a variational cost with a learned ConvLSTM gradient solver.

    The cost of a state ``x`` given observations ``y`` and mask ``m`` (time as channels, each
    ``(B, T*C, H, W)``) is, per sample,

    .. math::

        U(x) = \\alpha_o \\frac{\\sum m (x - y)^2}{\\max(1, \\sum m)}
             + \\alpha_p \\overline{(x - \\phi(x))^2}

    The observation term is the mean over the *observed* pixels only (as the reference's
    ``BaseObsCost``), the prior term the mean over all pixels. Why not the mean over all pixels for
    both: at 5 % coverage the observation term would be 20 times weaker than the prior term, and
    the balance of the two would depend on the coverage of each patch. ``phi`` is a
    :class:`BilinearAEPrior` (``prior="bilinear"``), a :class:`UNetPrior` (``prior="unet"``) or a
    :class:`ConvAEPrior` (``prior="conv_ae"``).
    Starting from ``x_0 = y`` (zeros at gaps), or from a learned first guess ``x_0 = g(y, m)``
    (``first_guess="unet"``: a :class:`~geodl.models.UNet`), each of the ``n_iter`` iterations computes
    ``g = dU/dx`` by autograd, normalises it by its root mean square at iteration 0 (per sample),
    feeds it to a ConvLSTM, and updates
    ``x_{k+1} = x_k - (lstm_out / (k + 1) + grad_step * (k + 1) / K * g)``. With ``project=True``
    the returned mean is ``phi(x_K)``, the projection of the last iterate onto the prior.

    ``forward(obs, obs_mask=None, aux=None) -> MappingOutput``; ``aux`` ``(B, T, Ca, H, W)``
    (predictors, static fields, the land mask) goes to the first guess only: the variational
    cost is about the state and its observations. Time is used as channels: the state is
    ``(B, T*C, H, W)`` inside the solver, so ``n_times`` is fixed at construction.
    :meth:`prior_cost` and :meth:`project` take and return the ``(B, T, C, H, W)`` layout, so that a
    training loss can add the prior-consistency term :math:`\\lVert x - \\phi(x) \\rVert^2` on the
    output and on the target (Fablet et al. 2021) without knowing the reshape.

    Why autograd inside ``forward``: the gradient of the cost is part of the model. ``forward``
    enables grad itself, so it also works under ``torch.no_grad()`` (evaluation); the graph through
    the iterations is kept (``create_graph``) only when grad is enabled by the caller (training).
    ``detach=True`` cuts it between iterations (truncated back-propagation: memory of one
    iteration, gradients from the last one only).

    Why a first guess: at 5 % coverage ``x_0 = y`` is zero almost everywhere, and each iteration
    moves information only as far as the receptive fields of ``phi`` and the ConvLSTM, so a few
    iterations cannot carry an observation across a 29-day window. The reference applications
    start the solver from a large-scale field (an OI, 4dvarnet-core's augmented state); here a
    small UNet gives that first guess, trained with the rest (and warm-started from a trained
    UNet by the mapping task's ``fourdvarnet.warm_start``). The solver then refines it under the
    variational cost.

    Why the final projection in training too: the reference solver projects only in evaluation
    mode; here training optimises what evaluation returns.

    Parameters
    ----------
    in_channels, n_times : int
        C and T of the input.
    n_iter : int
        Solver iterations K.
    prior_hidden, lstm_hidden : int
        Channels of the prior (of its first level for ``"unet"``) and of the ConvLSTM.
    downsample : int
        Down-sampling of the ``"bilinear"`` prior; H and W must be divisible by it. The
        ``"unet"`` and ``"conv_ae"`` priors ignore it and need H and W divisible by ``2**2``.
    padding : {"zeros", "circular"}
        Padding in (y, x) of every convolution; circular for periodic domains.
    obs_weight, prior_weight : float
        :math:`\\alpha_o`, :math:`\\alpha_p` of the cost (>= 0; > 0 with ``learn_weights``).
    grad_step : float
        Weight of the raw gradient step.
    detach : bool
        Detach the state (and ConvLSTM state) between iterations.
    variance : bool
        Add a log-variance head (conv on the last iterate ``x_K`` and the ConvLSTM hidden state),
        clamped to ``[min_log_var, max_log_var]``.
    prior : {"bilinear", "unet", "conv_ae"}
        The prior ``phi``: :class:`BilinearAEPrior` (the reference's), :class:`UNetPrior`
        (multi-scale, for fields the down-sampled bilinear prior cannot represent) or
        :class:`ConvAEPrior` (a bottleneck autoencoder of width ``prior_hidden``).
    project : bool
        Return ``phi(x_K)`` instead of ``x_K`` (the reference's final step).
    first_guess : {None, "unet"}
        Where the solver starts: ``None`` the observations (zeros at gaps, the reference's),
        ``"unet"`` the output of a UNet on (``y``, ``m``) of depth ``first_guess_depth`` and width
        ``first_guess_width`` (H and W divisible by ``2**first_guess_depth``).
    first_guess_depth, first_guess_width : int
        Size of the first-guess UNet.
    aux_channels : int
        Channels Ca of ``aux``, fed to the first guess (so they need ``first_guess="unet"``);
        0 (the default) builds exactly the model without them.
    learn_weights : bool
        Learn :math:`\\alpha_o` and :math:`\\alpha_p` (stored as their logarithms, so they stay
        positive; initialised at ``obs_weight`` and ``prior_weight``). Their ratio sets how much
        the analysis trusts the prior against the observations, which is rarely known in advance.

    References
    ----------
    Fablet, R., Chapron, B., Drumetz, L., Mémin, E., Pannekoucke, O., Rousseau, F. (2021). Learning
    variational data assimilation models and solvers. J. Adv. Model. Earth Syst. 13, e2021MS002572.

    4dvarnet-starter (CIA Oceanix), ``src/models.py``: ``GradSolver``, ``BaseObsCost``,
    ``BilinAEPriorCost``, ``ConvLstmGradModel``. https://github.com/CIA-Oceanix/4dvarnet-starter

    Examples
    --------
    >>> import torch
    >>> net = FourDVarNet(1, 3, n_iter=2, prior_hidden=8, lstm_hidden=8)
    >>> obs = torch.randn(2, 3, 1, 16, 16)
    >>> net(obs, (torch.rand_like(obs) > 0.5).float()).mean.shape
    torch.Size([2, 3, 1, 16, 16])
    >>> net.prior_cost(obs).shape
    torch.Size([])
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
        prior: str = "bilinear",
        project: bool = True,
        learn_weights: bool = False,
        first_guess: str | None = None,
        first_guess_depth: int = 2,
        first_guess_width: int = 16,
        aux_channels: int = 0,
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
        if first_guess not in FIRST_GUESSES:
            raise UserInputError(
                f"FourDVarNet: first_guess={first_guess!r}, expected one of {list(FIRST_GUESSES)}"
            )
        if prior not in PRIORS:
            raise UserInputError(f"FourDVarNet: prior={prior!r}, expected one of {list(PRIORS)}")
        if aux_channels < 0 or (aux_channels and first_guess is None):
            raise UserInputError(
                f"FourDVarNet: aux_channels={aux_channels} needs first_guess='unet' (the network "
                "that reads them) and must be >= 0"
            )
        for key, value in (("obs_weight", obs_weight), ("prior_weight", prior_weight)):
            if learn_weights and not value > 0:
                raise UserInputError(
                    f"FourDVarNet: {key} must be > 0 with learn_weights=True (it is learned as "
                    f"its logarithm), got {value!r}"
                )
            if not value >= 0:
                raise UserInputError(f"FourDVarNet: {key} must be >= 0, got {value!r}")
        self.in_channels = in_channels
        self.n_times = n_times
        self.n_iter = n_iter
        self.aux_channels = aux_channels
        self.downsample = downsample
        self.prior_name = prior
        # H and W must be divisible by the prior's total down-sampling.
        self.multiple = downsample if prior == "bilinear" else 2**UNET_PRIOR_LEVELS
        if first_guess is not None:
            self.multiple = math.lcm(self.multiple, 2**first_guess_depth)
        self.grad_step = grad_step
        self.detach = detach
        self.project_output = project
        self.learn_weights = learn_weights
        self.min_log_var = min_log_var
        self.max_log_var = max_log_var
        if learn_weights:
            self.log_obs_weight = nn.Parameter(torch.tensor(math.log(obs_weight)))
            self.log_prior_weight = nn.Parameter(torch.tensor(math.log(prior_weight)))
        else:
            # Plain floats, not buffers: the state dict (and old checkpoints) stay as they were.
            self._obs_weight = float(obs_weight)
            self._prior_weight = float(prior_weight)
        k = in_channels * n_times
        self.prior: nn.Module
        if prior == "bilinear":
            self.prior = BilinearAEPrior(k, prior_hidden, downsample=downsample, padding=padding)
        elif prior == "unet":
            self.prior = UNetPrior(k, prior_hidden, levels=UNET_PRIOR_LEVELS, padding=padding)
        else:
            self.prior = ConvAEPrior(k, prior_hidden, depth=UNET_PRIOR_LEVELS, padding=padding)
        self.lstm = ConvLSTMCell(k, lstm_hidden, padding=padding)
        self.lstm_out = PaddedConv(lstm_hidden, k, 1, bias=False)
        self.log_var_head = PaddedConv(k + lstm_hidden, k, 3, padding=padding) if variance else None
        # Only built when asked for: the state dict of a model without it stays as it was.
        self.first_guess = (
            UNet(
                in_channels,
                n_times,
                depth=first_guess_depth,
                width=first_guess_width,
                padding=padding,
                aux_channels=aux_channels,
            )
            if first_guess == "unet"
            else None
        )
        if self.first_guess is not None:
            # The learned steps start at zero: a warm-started first guess is not perturbed by an
            # untrained ConvLSTM before the solver has learned anything.
            nn.init.zeros_(self.lstm_out.conv.weight)

    @property
    def obs_weight(self) -> Tensor | float:
        """:math:`\\alpha_o` (a positive scalar tensor when learned)."""
        return self.log_obs_weight.exp() if self.learn_weights else self._obs_weight

    @property
    def prior_weight(self) -> Tensor | float:
        """:math:`\\alpha_p` (a positive scalar tensor when learned)."""
        return self.log_prior_weight.exp() if self.learn_weights else self._prior_weight

    def cost(self, state: Tensor, obs: Tensor, mask: Tensor) -> Tensor:
        """Variational cost per sample ``(B,)`` of ``state``, ``obs``, ``mask`` (each ``(B, K, H, W)``).

        The observation term is the mean of ``(state - obs)**2`` over the observed pixels of each
        sample (0 for a sample without observations), the prior term the mean of
        ``(state - phi(state))**2`` over all pixels.
        """
        n_obs = mask.sum(dim=(1, 2, 3)).clamp(min=1.0)  # (B,)
        obs_term = (mask * (state - obs) ** 2).sum(dim=(1, 2, 3)) / n_obs
        prior_term = ((state - self.prior(state)) ** 2).mean(dim=(1, 2, 3))
        return self.obs_weight * obs_term + self.prior_weight * prior_term

    def _check_field(self, x: Tensor, where: str) -> None:
        check_grid(
            x, "x", where, channels=self.in_channels, times=self.n_times, multiple=self.multiple
        )
        if torch.isnan(x).any():
            raise UserInputError(
                f"{where}: x contains NaN; the prior needs a complete field (the model output, or "
                "a target with its gaps filled)"
            )

    def _project(self, x: Tensor, where: str) -> Tensor:
        self._check_field(x, where)
        b, _, _, h, w = x.shape
        return self.prior(x.reshape(b, -1, h, w)).reshape(x.shape)  # (B, T*C, H, W) inside

    def project(self, x: Tensor) -> Tensor:
        """``phi(x)``: the projection of a field ``x`` ``(B, T, C, H, W)`` by the prior, same shape."""
        return self._project(x, "FourDVarNet.project")

    def prior_cost(self, x: Tensor) -> Tensor:
        """Prior-consistency term: the scalar mean of ``(x - phi(x))**2`` over ``x`` ``(B, T, C, H, W)``.

        Add it to a training loss on the output and on the target, so that ``phi`` learns to be a
        prior of the true fields (it is otherwise trained only through the solver's gradients).
        """
        return (x - self._project(x, "FourDVarNet.prior_cost")).pow(2).mean()

    def forward(
        self, obs: Tensor, obs_mask: Tensor | None = None, aux: Tensor | None = None
    ) -> MappingOutput:
        check_grid(
            obs,
            "obs",
            "FourDVarNet.forward",
            channels=self.in_channels,
            times=self.n_times,
            multiple=self.multiple,
        )
        y, m = masked_input(obs, obs_mask, "FourDVarNet.forward")  # (B, T, C, H, W)
        a = aux_input(aux, y, self.aux_channels, "FourDVarNet.forward")  # (B, T, Ca, H, W)
        shape = y.shape
        b, _, _, h, w = shape
        keep_graph = torch.is_grad_enabled()
        # inference_mode (Lightning's default for validation and prediction) forbids autograd even
        # under enable_grad; leave it, and clone the inputs out of it (inference tensors cannot be
        # saved for backward).
        with torch.inference_mode(False), torch.enable_grad():
            y = y.reshape(b, -1, h, w).detach().clone()  # (B, T*C, H, W)
            m = m.reshape(b, -1, h, w).clone()
            a = None if a is None else a.clone()
            if self.first_guess is None:
                state = y.clone().requires_grad_(True)
            else:
                with torch.set_grad_enabled(keep_graph):  # trained with the rest
                    x0 = self.first_guess(y.reshape(shape), m.reshape(shape), a).mean
                x0 = x0.reshape(b, -1, h, w)  # (B, T*C, H, W)
                state = x0 if keep_graph else x0.detach().requires_grad_(True)
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
            # No autograd needed below unless the caller trains.
            with torch.set_grad_enabled(keep_graph):
                mean = self.prior(state) if self.project_output else state  # (B, T*C, H, W)
                log_var = None
                if self.log_var_head is not None:
                    raw = self.log_var_head(torch.cat([state, lstm_state[0]], dim=1))
                    log_var = clamp_log_var(raw, self.min_log_var, self.max_log_var).reshape(shape)
        if not keep_graph:
            mean = mean.detach()
            log_var = None if log_var is None else log_var.detach()
        return MappingOutput(mean.reshape(shape), log_var)
