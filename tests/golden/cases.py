"""Model configurations shared by the model tests and the golden-output generator.

Each case: (id, registry name, constructor kwargs, inputs(generator) -> tuple of forward args).
Two configurations per model; inputs are tiny so that the whole set runs in seconds on CPU.
"""

from __future__ import annotations

import torch

from geodl.models import AutoencoderOutput, MappingOutput


def _grid(b: int, t: int, c: int, h: int, w: int, masked: bool = True):
    def make(gen: torch.Generator):
        obs = torch.randn(b, t, c, h, w, generator=gen)
        if not masked:
            return (obs,)
        mask = (torch.rand(b, t, c, h, w, generator=gen) > 0.4).float()
        # NaN at unobserved points: models must ignore them.
        return (torch.where(mask.bool(), obs, torch.full_like(obs, float("nan"))), mask)

    return make


def _state(b: int, d: int):
    return lambda gen: (torch.randn(b, d, generator=gen),)


def _ode(b: int, d: int, n_t: int, t_end: float):
    return lambda gen: (torch.randn(b, d, generator=gen), torch.linspace(0.0, t_end, n_t))


def _field_ode(b: int, c: int, h: int, w: int, n_t: int, t_end: float):
    return lambda gen: (torch.randn(b, c, h, w, generator=gen), torch.linspace(0.0, t_end, n_t))


CASES = [
    ("mlp-a", "mlp", {"in_features": 3, "out_features": 3, "hidden": (8,)}, _state(4, 3)),
    (
        "mlp-b",
        "mlp",
        {"in_features": 5, "out_features": 2, "hidden": (8, 8), "act": "tanh"},
        _state(4, 5),
    ),
    (
        "unet-a",
        "unet",
        {"in_channels": 1, "n_times": 2, "depth": 2, "width": 4},
        _grid(2, 2, 1, 8, 8),
    ),
    (
        "unet-b",
        "unet",
        {
            "in_channels": 2,
            "time_mode": "conv3d",
            "padding": "circular",
            "depth": 1,
            "width": 4,
            "use_mask": False,
        },
        _grid(2, 3, 2, 8, 8, masked=False),
    ),
    (
        "autoencoder-a",
        "autoencoder",
        {"in_channels": 1, "n_times": 2, "depth": 1, "width": 4, "latent_channels": 2},
        _grid(2, 2, 1, 8, 8, masked=False),
    ),
    (
        "autoencoder-b",
        "autoencoder",
        {
            "in_channels": 1,
            "n_times": 2,
            "kind": "variational",
            "depth": 2,
            "width": 4,
            "latent_channels": 2,
        },
        _grid(2, 2, 1, 8, 8, masked=False),
    ),
    (
        "dincae-a",
        "dincae",
        {"in_channels": 1, "n_times": 2, "depth": 1, "width": 4},
        _grid(2, 2, 1, 8, 8),
    ),
    (
        "dincae-b",
        "dincae",
        {"in_channels": 2, "n_times": 3, "depth": 2, "width": 4, "padding": "circular"},
        _grid(2, 3, 2, 8, 8),
    ),
    (
        "fourdvarnet-a",
        "fourdvarnet",
        {"in_channels": 1, "n_times": 2, "n_iter": 2, "prior_hidden": 4, "lstm_hidden": 4},
        _grid(2, 2, 1, 8, 8),
    ),
    (
        "fourdvarnet-b",
        "fourdvarnet",
        {
            "in_channels": 1,
            "n_times": 3,
            "n_iter": 3,
            "prior_hidden": 4,
            "lstm_hidden": 4,
            "detach": True,
            "variance": True,
            "padding": "circular",
            "downsample": 1,
        },
        _grid(2, 3, 1, 8, 8),
    ),
    (
        "neural_ode-a",
        "neural_ode",
        {"dim": 3, "hidden": (8,), "step_size": 0.05},
        _ode(2, 3, 3, 0.2),
    ),
    (
        "neural_ode-b",
        "neural_ode",
        {"dim": 2, "hidden": (8,), "method": "dopri5", "rtol": 1e-5, "atol": 1e-7},
        _ode(2, 2, 4, 0.3),
    ),
    ("bilinear_resnet-a", "bilinear_resnet", {"dim": 3}, _state(4, 3)),
    (
        "bilinear_resnet-b",
        "bilinear_resnet",
        {"dim": 4, "n_bilinear": 2, "scheme": "euler", "dt": 0.05},
        _state(4, 4),
    ),
    (
        "cnn_emulator-a",
        "cnn_emulator",
        {"channels": 1, "width": 4, "n_layers": 1},
        _grid(2, 2, 1, 8, 8, masked=False),
    ),
    (
        "cnn_emulator-b",
        "cnn_emulator",
        {"channels": 2, "width": 4, "n_layers": 2, "mode": "vector_field", "padding": "zeros"},
        lambda gen: (torch.randn(2, 2, 8, 8, generator=gen),),
    ),
    (
        "latent_ode-a",
        "latent_ode",
        {"channels": 1, "latent_channels": 2, "width": 4, "depth": 1, "step_size": 0.1},
        _field_ode(2, 1, 8, 8, 3, 0.2),
    ),
    (
        "latent_ode-b",
        "latent_ode",
        {
            "channels": 2,
            "latent_channels": 3,
            "width": 4,
            "depth": 2,
            "method": "euler",
            "padding": "zeros",
        },
        _field_ode(1, 2, 8, 8, 2, 0.1),
    ),
    (
        "discriminator-a",
        "discriminator",
        {"in_channels": 1, "n_times": 2, "width": 4, "n_layers": 2},
        _grid(2, 2, 1, 8, 8, masked=False),
    ),
    (
        "discriminator-b",
        "discriminator",
        {
            "in_channels": 2,
            "n_times": 1,
            "width": 4,
            "n_layers": 1,
            "spectral_norm": True,
            "padding": "circular",
        },
        _grid(2, 1, 2, 8, 8, masked=False),
    ),
    (
        "spectrum_discriminator-a",
        "spectrum_discriminator",
        {"in_channels": 1, "n_times": 2, "n_bins": 4, "width": 8},
        _grid(2, 2, 1, 8, 8, masked=False),
    ),
    (
        "spectrum_discriminator-b",
        "spectrum_discriminator",
        {
            "in_channels": 2,
            "n_times": 1,
            "n_bins": 3,
            "width": 8,
            "k_min": 0.1,
            "spectral_norm": True,
        },
        _grid(2, 1, 2, 8, 16, masked=False),
    ),
]


def outputs(out) -> dict[str, torch.Tensor]:
    """The tensors of a model output, by name."""
    if isinstance(out, MappingOutput):
        return {"mean": out.mean} | ({} if out.log_var is None else {"log_var": out.log_var})
    if isinstance(out, AutoencoderOutput):
        return {"reconstruction": out.reconstruction, "latent": out.latent}
    return {"out": out}
