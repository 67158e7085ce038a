"""Emulators of gridded dynamics: a CNN vector field or one-step map, and a latent ODE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geodl.errors import UserInputError
from geodl.integrate import rollout
from geodl.models.blocks import ConvBlock, PaddedConv, activation, check_padding
from geodl.models.checks import check_positive
from geodl.models.neural_ode import NeuralODE

__all__ = ["CNNEmulator", "LatentODE"]

MODES = ("map", "vector_field")
GRID = "(batch, time, channel, y, x) or (batch, channel, y, x)"


def _check_field(x: Tensor, channels: int, where: str) -> None:
    if not isinstance(x, Tensor) or x.ndim not in (4, 5) or x.shape[-3] != channels:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise UserInputError(
            f"{where}: input has shape {shape}, expected {GRID} with {channels} channels; "
            "check the axis order or the model's channels"
        )


class CNNEmulator(nn.Module):
    """Fully convolutional emulator of gridded dynamics (circular padding by default).

    ``mode="map"``: one-step map ``x_{n+1} = x_n + net(x_n)`` (residual, so that an untrained model
    is persistence). ``mode="vector_field"``: ``net(x) = dx/dt``, to be integrated by
    :class:`~geodl.models.neural_ode.NeuralODE`.

    ``forward`` accepts ``(B, C, H, W)`` states or ``(B, T, C, H, W)`` sequences (each time step
    mapped independently: time is folded into the batch, not used as channels) and returns the same
    shape.

    Examples
    --------
    >>> import torch
    >>> em = CNNEmulator(2, width=8, n_layers=2)
    >>> em(torch.zeros(3, 4, 2, 16, 16)).shape
    torch.Size([3, 4, 2, 16, 16])
    """

    def __init__(
        self,
        channels: int,
        *,
        width: int = 32,
        n_layers: int = 4,
        kernel_size: int = 3,
        mode: str = "map",
        padding: str = "circular",
        act: str = "gelu",
    ) -> None:
        super().__init__()
        check_padding(padding, "CNNEmulator")
        check_positive("CNNEmulator", channels=channels, width=width, n_layers=n_layers)
        if mode not in MODES:
            raise UserInputError(f"CNNEmulator: mode={mode!r}, expected one of {list(MODES)}")
        self.channels = channels
        self.mode = mode
        layers: list[nn.Module] = []
        c_in = channels
        for _ in range(n_layers):
            layers += [PaddedConv(c_in, width, kernel_size, padding=padding), activation(act)]
            c_in = width
        layers.append(PaddedConv(width, channels, kernel_size, padding=padding))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        _check_field(x, self.channels, "CNNEmulator.forward")
        shape = x.shape
        flat = x.reshape(-1, *shape[-3:])  # (B*T, C, H, W)
        out = self.net(flat)
        if self.mode == "map":
            out = flat + out
        return out.reshape(shape)

    @torch.no_grad()
    def rollout(self, x0: Tensor, n_steps: int) -> Tensor:
        """Iterate the one-step map: ``x0`` ``(B, C, H, W)`` -> ``(B, n_steps + 1, C, H, W)``."""
        if self.mode != "map":
            raise UserInputError(
                "CNNEmulator.rollout: mode='vector_field' has no one-step map; wrap it in "
                "NeuralODE(emulator) and call it with the output times"
            )
        return rollout(self, x0, n_steps)


class LatentODE(nn.Module):
    """Autoencoder with a neural ODE in its latent space (a latent grid, circular convolutions).

    ``forward(x0, t) -> (B, T, C, H, W)``: encode the initial state ``x0`` (``(B, C, H, W)``, or
    ``(B, T0, C, H, W)`` whose last time step is used), integrate the latent state
    ``(B, latent_channels, H / 2**depth, W / 2**depth)`` over the times ``t`` ``(T,)`` and decode
    every time step. H and W must be divisible by ``2**depth``.

    Examples
    --------
    >>> import torch
    >>> m = LatentODE(1, latent_channels=4, width=8, depth=1, step_size=0.1)
    >>> m(torch.zeros(2, 1, 16, 16), torch.linspace(0, 0.2, 3)).shape
    torch.Size([2, 3, 1, 16, 16])
    """

    def __init__(
        self,
        channels: int,
        *,
        latent_channels: int = 8,
        width: int = 32,
        depth: int = 2,
        method: str = "rk4",
        step_size: float | None = None,
        padding: str = "circular",
        act: str = "gelu",
    ) -> None:
        super().__init__()
        check_padding(padding, "LatentODE")
        check_positive("LatentODE", channels=channels, latent_channels=latent_channels, width=width)
        self.channels = channels
        self.depth = depth
        self.encoder = nn.ModuleList(
            ConvBlock(channels if i == 0 else width, width, padding=padding, act=act)
            for i in range(depth + 1)
        )
        self.to_latent = PaddedConv(width, latent_channels, 1)
        self.ode = NeuralODE(
            CNNEmulator(
                latent_channels,
                width=width,
                n_layers=2,
                mode="vector_field",
                padding=padding,
                act=act,
            ),
            method=method,
            step_size=step_size,
        )
        self.from_latent = PaddedConv(latent_channels, width, 1)
        self.decoder = nn.ModuleList(
            ConvBlock(width, width, padding=padding, act=act) for _ in range(depth)
        )
        self.out = PaddedConv(width, channels, 1)

    def encode(self, x: Tensor) -> Tensor:
        """``(N, C, H, W) -> (N, latent_channels, H / 2**depth, W / 2**depth)``."""
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.avg_pool2d(x, 2))
        return self.to_latent(x)

    def decode(self, z: Tensor) -> Tensor:
        """``(N, latent_channels, h, w) -> (N, C, h * 2**depth, w * 2**depth)``."""
        x = self.from_latent(z)
        for block in self.decoder:
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.out(x)

    def forward(self, x0: Tensor, t: Tensor) -> Tensor:
        _check_field(x0, self.channels, "LatentODE.forward")
        if x0.ndim == 5:
            x0 = x0[:, -1]
        h, w = x0.shape[-2:]
        if h % 2**self.depth or w % 2**self.depth:
            raise UserInputError(
                f"LatentODE.forward: field size {h}x{w} (y, x) is not divisible by 2**depth="
                f"{2**self.depth}; crop or pad the field, or use a smaller depth"
            )
        z = self.ode(self.encode(x0), t)  # (B, T, L, h, w)
        b, n_t = z.shape[:2]
        out = self.decode(z.reshape(b * n_t, *z.shape[2:]))  # (B*T, C, H, W)
        return out.reshape(b, n_t, *out.shape[1:])
