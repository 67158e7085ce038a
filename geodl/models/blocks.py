"""Building blocks: padded convolutions (zero or circular), conv blocks, a ConvLSTM cell.

Circular padding wraps in y and x (doubly periodic domains, e.g. the QG channel or a global grid in
longitude); along time (3-D convolutions) padding is always zeros because time is never periodic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geodl.errors import UserInputError

__all__ = ["ACTIVATIONS", "ConvBlock", "ConvLSTMCell", "PaddedConv", "activation"]

PADDINGS = ("zeros", "circular")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU}


def activation(name: str) -> nn.Module:
    """Activation module by name (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise UserInputError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def check_padding(padding: str, where: str) -> None:
    if padding not in PADDINGS:
        raise UserInputError(f"{where}: padding={padding!r}, expected one of {list(PADDINGS)}")


class PaddedConv(nn.Module):
    """2-D or 3-D convolution with 'same' output size and zero or circular padding in (y, x).

    Input ``(N, C, H, W)`` for ``ndim=2`` or ``(N, C, T, H, W)`` for ``ndim=3``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        ndim: int = 2,
        padding: str = "zeros",
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_padding(padding, "PaddedConv")
        self.pad = kernel_size // 2
        self.padding = padding
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        # Zero padding of y/x is done by the conv itself; circular padding of y/x by F.pad.
        spatial = self.pad if padding == "zeros" else 0
        pad = (spatial, spatial) if ndim == 2 else (self.pad, spatial, spatial)
        self.conv = conv(in_channels, out_channels, kernel_size, padding=pad, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.padding == "circular" and self.pad:
            pad = (self.pad,) * 4 + ((0, 0) if x.ndim == 5 else ())  # never wrap time
            x = F.pad(x, pad, mode="circular")
        return self.conv(x)


class ConvBlock(nn.Sequential):
    """Two (conv, normalisation, activation) layers; the UNet's and DINCAE's unit."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        ndim: int = 2,
        padding: str = "zeros",
        act: str = "relu",
        norm: bool = True,
    ) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers.append(
                PaddedConv(c_in, out_channels, 3, ndim=ndim, padding=padding, bias=not norm)
            )
            if norm:
                # GroupNorm, not BatchNorm: batches of patches are small and DDP-agnostic.
                layers.append(nn.GroupNorm(min(8, out_channels), out_channels))
            layers.append(activation(act))
        super().__init__(*layers)


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell (Shi et al. 2015) on ``(N, C, H, W)`` inputs.

    Returns the new ``(hidden, cell)`` pair, each ``(N, hidden_channels, H, W)``.
    """

    def __init__(
        self, in_channels: int, hidden_channels: int, kernel_size: int = 3, padding: str = "zeros"
    ) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = PaddedConv(
            in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=padding
        )

    def init_state(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shape = (x.shape[0], self.hidden_channels, *x.shape[2:])
        zeros = torch.zeros(shape, dtype=x.dtype, device=x.device)
        return zeros, zeros.clone()

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        hidden, cell = state
        i, f, o, g = self.gates(torch.cat([x, hidden], dim=1)).chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        return hidden, cell
