"""UNet mapping model: sparse observations ``(B, T, C, H, W)`` -> complete field ``(B, T, C, H, W)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geodl.errors import UserInputError
from geodl.models.blocks import ConvBlock, PaddedConv, check_padding
from geodl.models.checks import check_grid, check_positive, masked_input
from geodl.models.outputs import MappingOutput

__all__ = ["UNet", "UNetCore", "aux_input"]

TIME_MODES = ("channels", "conv3d")


def aux_input(aux: Tensor | None, obs: Tensor, channels: int, where: str) -> Tensor | None:
    """Check the auxiliary input channels ``aux`` ``(B, T, Ca, H, W)`` against ``obs``
    ``(B, T, C, H, W)`` and the model's ``aux_channels``; NaN at gaps become 0.

    Why a hard error both ways: a model built with auxiliary channels and called without them (or
    the reverse) would otherwise fail deep inside a convolution, or silently be fed zeros.
    """
    if channels == 0:
        if aux is not None:
            raise UserInputError(
                f"{where}: aux given but the model has aux_channels=0; build it with "
                f"aux_channels={aux.shape[2] if aux.ndim == 5 else '...'} or pass aux=None"
            )
        return None
    if aux is None:
        raise UserInputError(
            f"{where}: the model has aux_channels={channels} but no aux was given; pass "
            f"aux (batch, time, {channels}, y, x)"
        )
    b, t, _, h, w = obs.shape
    if aux.ndim != 5 or tuple(aux.shape) != (b, t, channels, h, w):
        raise UserInputError(
            f"{where}: aux has shape {tuple(aux.shape)}; expected ({b}, {t}, {channels}, {h}, {w}) "
            "(batch, time, aux channel, y, x) to match obs"
        )
    return torch.nan_to_num(aux.to(obs.dtype))


class UNetCore(nn.Module):
    """Encoder-decoder with skip connections; ``(N, C_in, [T,] H, W) -> (N, width, [T,] H, W)``.

    Down-sampling is 2x2 average pooling in (y, x) only (time is never pooled), so H and W must be
    divisible by ``2**depth``.
    """

    def __init__(
        self, in_channels: int, *, depth: int, width: int, ndim: int, padding: str, act: str
    ) -> None:
        super().__init__()
        self.ndim = ndim
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            [ConvBlock(in_channels, width, ndim=ndim, padding=padding, act=act)]
        )
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            self.down.append(ConvBlock(a, b, ndim=ndim, padding=padding, act=act))
        self.up = nn.ModuleList(
            ConvBlock(b + a, a, ndim=ndim, padding=padding, act=act)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def _pool(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 2) if self.ndim == 2 else F.avg_pool3d(x, (1, 2, 2))

    def _upsample(self, x: Tensor) -> Tensor:
        scale = 2 if self.ndim == 2 else (1, 2, 2)
        return F.interpolate(x, scale_factor=scale, mode="nearest")

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self._pool(x))
            skips.append(x)
        x = skips.pop()
        for block in reversed(self.up):
            x = block(torch.cat([self._upsample(x), skips.pop()], dim=1))
        return x


class UNet(nn.Module):
    """UNet (Ronneberger et al. 2015) for gap filling, with an optional mask channel.

    ``forward(obs, obs_mask=None, aux=None) -> MappingOutput`` (``log_var`` is None). With
    ``time_mode="channels"`` the model reshapes ``(B, T, C, H, W) -> (B, T*C, H, W)`` inside itself,
    so it needs a fixed ``n_times``; with ``time_mode="conv3d"`` it convolves over (time, y, x) and
    accepts any number of time steps.

    Parameters
    ----------
    in_channels : int
        Channels C of the observations (the output has ``out_channels``, default C).
    n_times : int or None
        Number of time steps T; required for ``time_mode="channels"``.
    depth : int
        Number of 2x down-samplings; H and W must be divisible by ``2**depth``.
    width : int
        Channels of the first level (doubled at each level).
    padding : {"zeros", "circular"}
        Padding in (y, x); circular for periodic domains.
    time_mode : {"channels", "conv3d"}
        How time is handled (see above).
    use_mask : bool
        Whether the observation mask is given to the network as extra input channels.
    aux_channels : int
        Channels Ca of the auxiliary input ``aux`` ``(B, T, Ca, H, W)`` (predictors such as SST,
        static fields, the land mask), concatenated to the input channels at every time step.
        0 (the default) builds exactly the model without them (same state dict).

    Examples
    --------
    >>> import torch
    >>> net = UNet(1, n_times=3, depth=2, width=8)
    >>> net(torch.zeros(2, 3, 1, 16, 16), torch.ones(2, 3, 1, 16, 16)).mean.shape
    torch.Size([2, 3, 1, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        n_times: int | None = None,
        *,
        out_channels: int | None = None,
        depth: int = 3,
        width: int = 32,
        padding: str = "zeros",
        time_mode: str = "channels",
        use_mask: bool = True,
        act: str = "relu",
        aux_channels: int = 0,
    ) -> None:
        super().__init__()
        check_padding(padding, "UNet")
        if aux_channels < 0:
            raise UserInputError(f"UNet: aux_channels must be >= 0, got {aux_channels}")
        if time_mode not in TIME_MODES:
            raise UserInputError(
                f"UNet: time_mode={time_mode!r}, expected one of {list(TIME_MODES)}"
            )
        if time_mode == "channels" and n_times is None:
            raise UserInputError(
                "UNet: time_mode='channels' needs n_times (the T of (batch, time, channel, y, x)); "
                "pass n_times=T or use time_mode='conv3d'"
            )
        check_positive("UNet", in_channels=in_channels, depth=depth + 1, width=width)
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.n_times = n_times if time_mode == "channels" else None
        self.depth = depth
        self.time_mode = time_mode
        self.use_mask = use_mask
        self.aux_channels = aux_channels
        per_time = in_channels * (2 if use_mask else 1) + aux_channels
        if time_mode == "channels":
            self.core = UNetCore(
                per_time * n_times, depth=depth, width=width, ndim=2, padding=padding, act=act
            )
            self.head = PaddedConv(width, self.out_channels * n_times, 1)
        else:
            self.core = UNetCore(
                per_time, depth=depth, width=width, ndim=3, padding=padding, act=act
            )
            self.head = PaddedConv(width, self.out_channels, 1, ndim=3)

    def forward(
        self, obs: Tensor, obs_mask: Tensor | None = None, aux: Tensor | None = None
    ) -> MappingOutput:
        check_grid(
            obs,
            "obs",
            "UNet.forward",
            channels=self.in_channels,
            times=self.n_times,
            multiple=2**self.depth,
        )
        y, m = masked_input(obs, obs_mask, "UNet.forward")  # (B, T, C, H, W)
        a = aux_input(aux, y, self.aux_channels, "UNet.forward")  # (B, T, Ca, H, W) or None
        x = torch.cat([y, m], dim=2) if self.use_mask else y
        if a is not None:
            x = torch.cat([x, a], dim=2)  # (B, T, C_in + Ca, H, W)
        b, t, _, h, w = x.shape
        if self.time_mode == "channels":
            out = self.head(self.core(x.reshape(b, -1, h, w)))  # (B, T*C_out, H, W)
            return MappingOutput(out.reshape(b, t, self.out_channels, h, w))
        out = self.head(self.core(x.transpose(1, 2)))  # (B, C_out, T, H, W)
        return MappingOutput(out.transpose(1, 2))
