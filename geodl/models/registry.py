"""Models by name: ``build_model(name, **kwargs)``; errors list the names and the valid arguments."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from torch import nn

from geodl.errors import UserInputError
from geodl.models.autoencoder import ConvAutoencoder
from geodl.models.bilinear import BilinearResNet
from geodl.models.dincae import DINCAE
from geodl.models.discriminator import PatchDiscriminator, SpectrumDiscriminator
from geodl.models.emulators import CNNEmulator, LatentODE
from geodl.models.fourdvarnet import FourDVarNet
from geodl.models.mlp import MLP
from geodl.models.neural_ode import NeuralODE
from geodl.models.unet import UNet

__all__ = ["MODELS", "build_model"]


def neural_ode(
    *,
    dim: int | None = None,
    hidden: Sequence[int] = (64, 64),
    act: str = "tanh",
    vector_field: nn.Module | None = None,
    method: str = "rk4",
    step_size: float | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    min_step: float = 0.0,
    adjoint: bool = False,
) -> NeuralODE:
    """A :class:`NeuralODE` with ``vector_field``, or by default an MLP field ``dim -> dim``."""
    if (dim is None) == (vector_field is None):
        raise UserInputError(
            "build_model('neural_ode'): give exactly one of dim (an MLP vector field of that state "
            "size is built) or vector_field (an nn.Module f(x) -> dx/dt)"
        )
    field = vector_field if vector_field is not None else MLP(dim, dim, hidden=hidden, act=act)
    return NeuralODE(
        field,
        method=method,
        step_size=step_size,
        rtol=rtol,
        atol=atol,
        min_step=min_step,
        adjoint=adjoint,
    )


#: Registry name -> constructor.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "unet": UNet,
    "autoencoder": ConvAutoencoder,
    "dincae": DINCAE,
    "fourdvarnet": FourDVarNet,
    "neural_ode": neural_ode,
    "bilinear_resnet": BilinearResNet,
    "cnn_emulator": CNNEmulator,
    "latent_ode": LatentODE,
    "discriminator": PatchDiscriminator,
    "spectrum_discriminator": SpectrumDiscriminator,
}


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build the model registered as ``name`` with keyword arguments ``kwargs``.

    Examples
    --------
    >>> net = build_model("unet", in_channels=1, n_times=5, depth=2, width=8)
    >>> type(net).__name__
    'UNet'
    """
    if name not in MODELS:
        raise UserInputError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    builder = MODELS[name]
    signature = inspect.signature(builder)
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        params = [p for p in signature.parameters if p != "self"]
        raise UserInputError(f"build_model({name!r}): {err}; valid arguments: {params}") from None
    return builder(**kwargs)
