"""Plain torch models: tensors in, tensors out; no xarray, no Lightning.

Conventions
-----------
- Gridded tensors are ``(B, T, C, H, W)`` = ``(batch, time, channel, y, x)``; state vectors
  (Lorenz systems) are ``(B, D)`` and trajectories ``(B, T, D)``. A model that uses time as channels
  reshapes inside itself, says so in its docstring and takes ``n_times`` at construction.
- **Mapping models** (``unet``, ``dincae``, ``fourdvarnet``) all have
  ``forward(obs, obs_mask=None) -> MappingOutput``: ``obs`` ``(B, T, C, H, W)`` may hold NaN (or
  anything) where ``obs_mask`` is 0; ``obs_mask`` has the shape of ``obs`` (1 observed, 0 not).
  Without a mask every point counts as observed and NaN is an error. :class:`MappingOutput` has
  ``mean`` ``(B, T, C, H, W)`` and ``log_var`` (same shape, clamped) or None.
- **Dynamics models**: ``neural_ode`` ``forward(x0, t) -> (B, T, ...)``; ``bilinear_resnet`` and
  ``cnn_emulator`` (``mode="map"``) are one-step maps with ``rollout(x0, n_steps)``;
  ``latent_ode`` ``forward(x0, t) -> (B, T, C, H, W)``.
- Models are built by name with :func:`build_model`; unknown names and arguments are
  :class:`~geodl.errors.UserInputError` listing the valid choices.
"""

from geodl.models.autoencoder import AutoencoderOutput, ConvAutoencoder
from geodl.models.bilinear import BilinearResNet
from geodl.models.dincae import DINCAE
from geodl.models.discriminator import PatchDiscriminator, SpectrumDiscriminator
from geodl.models.emulators import CNNEmulator, LatentODE
from geodl.models.fourdvarnet import BilinearAEPrior, FourDVarNet
from geodl.models.mlp import MLP
from geodl.models.neural_ode import KnownPlusLearned, NeuralODE, rk4_odeint
from geodl.models.outputs import MappingOutput
from geodl.models.registry import MODELS, build_model
from geodl.models.unet import UNet

__all__ = [
    "DINCAE",
    "MLP",
    "MODELS",
    "AutoencoderOutput",
    "BilinearAEPrior",
    "BilinearResNet",
    "CNNEmulator",
    "ConvAutoencoder",
    "FourDVarNet",
    "LatentODE",
    "MappingOutput",
    "KnownPlusLearned",
    "NeuralODE",
    "PatchDiscriminator",
    "SpectrumDiscriminator",
    "UNet",
    "build_model",
    "rk4_odeint",
]
