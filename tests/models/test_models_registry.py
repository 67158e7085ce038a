"""Registry and argument errors."""

from __future__ import annotations

import pytest
import torch

from geodl.errors import UserInputError
from geodl.models import MODELS, build_model
from geodl.models.blocks import activation


def test_unknown_model_lists_the_options():
    with pytest.raises(
        UserInputError, match=r"unknown model 'resnet'; expected one of \[.*'unet'.*\]"
    ):
        build_model("resnet")


def test_unknown_argument_lists_the_valid_ones():
    with pytest.raises(
        UserInputError, match=r"build_model\('unet'\).*valid arguments: \[.*'depth'"
    ):
        build_model("unet", in_channels=1, n_times=2, dept=3)


def test_registry_names():
    assert sorted(MODELS) == sorted(
        [
            "mlp", "unet", "autoencoder", "dincae", "fourdvarnet", "neural_ode",
            "bilinear_resnet", "cnn_emulator", "latent_ode", "discriminator",
            "spectrum_discriminator",
        ]
    )  # fmt: skip


def test_unknown_activation():
    with pytest.raises(UserInputError, match=r"unknown activation 'swish'; expected one of"):
        activation("swish")


def test_non_positive_sizes():
    with pytest.raises(UserInputError, match="width must be > 0"):
        build_model("dincae", in_channels=1, n_times=2, width=0)


def test_autoencoder_kinds_and_errors():
    with pytest.raises(
        UserInputError, match=r"kind='sparse'.*\['plain', 'denoising', 'variational'\]"
    ):
        build_model("autoencoder", in_channels=1, n_times=1, kind="sparse")
    ae = build_model("autoencoder", in_channels=1, n_times=1, kind="denoising", depth=1, width=4)
    x = torch.randn(1, 1, 1, 8, 8)
    ae.eval()
    torch.testing.assert_close(ae(x).reconstruction, ae(x).reconstruction)  # no noise in eval
    with pytest.raises(UserInputError, match="x contains NaN"):
        ae(torch.full((1, 1, 1, 8, 8), float("nan")))


def test_variational_autoencoder_returns_latent_gaussian():
    ae = build_model(
        "autoencoder",
        in_channels=1,
        n_times=2,
        kind="variational",
        depth=1,
        width=4,
        latent_channels=3,
    )
    out = ae(torch.randn(2, 2, 1, 8, 8))
    assert out.latent_mean.shape == out.latent_log_var.shape == (2, 3, 4, 4)


def test_mlp_wrong_features():
    with pytest.raises(UserInputError, match=r"expected \(\.\.\., 3\)"):
        build_model("mlp", in_features=3, out_features=3)(torch.zeros(2, 4))


def test_emulator_errors_and_rollout():
    em = build_model("cnn_emulator", channels=2, width=4, n_layers=1)
    with pytest.raises(
        UserInputError, match=r"expected \(batch, time, channel, y, x\) or \(batch, channel, y, x\)"
    ):
        em(torch.zeros(2, 8, 8))
    assert em.rollout(torch.zeros(1, 2, 8, 8), 3).shape == (1, 4, 2, 8, 8)
    vf = build_model("cnn_emulator", channels=2, width=4, n_layers=1, mode="vector_field")
    with pytest.raises(UserInputError, match="has no one-step map"):
        vf.rollout(torch.zeros(1, 2, 8, 8), 3)
    with pytest.raises(UserInputError, match=r"mode='step'"):
        build_model("cnn_emulator", channels=2, mode="step")


def test_latent_ode_errors():
    m = build_model("latent_ode", channels=1, latent_channels=2, width=4, depth=2)
    with pytest.raises(UserInputError, match="not divisible by 2\\*\\*depth=4"):
        m(torch.zeros(1, 1, 6, 8), torch.tensor([0.0, 0.1]))
    out = m(torch.zeros(1, 3, 1, 8, 8), torch.tensor([0.0, 0.1]))  # history: last step used
    assert out.shape == (1, 2, 1, 8, 8)


def test_discriminator_errors():
    d = build_model("discriminator", in_channels=1, n_times=2, n_layers=2, width=4)
    with pytest.raises(UserInputError, match=r"expected 5 dims"):
        d(torch.zeros(1, 1, 8, 8))
    with pytest.raises(UserInputError, match="not divisible by 4"):
        d(torch.zeros(1, 2, 1, 6, 8))


def test_bilinear_resnet_represents_lorenz63_exactly():
    from geodl.sim.lorenz import lorenz63_rhs, rk4_step

    net = build_model("bilinear_resnet", dim=3, dt=0.01).double()
    with torch.no_grad():
        # f(x) = A x + M[(B1 x) * (B2 x)]: sigma (x1 - x0), rho x0 - x1 - x0 x2, x0 x1 - beta x2
        net.linear.weight.copy_(
            torch.tensor([[-10.0, 10.0, 0.0], [28.0, -1.0, 0.0], [0.0, 0.0, -8.0 / 3.0]])
        )
        net.linear.bias.zero_()
        net.left.weight.copy_(torch.eye(3))  # x0, x0, (unused)
        net.left.weight[1] = torch.tensor([1.0, 0.0, 0.0])
        net.right.weight.copy_(torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
        net.mix.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    x = torch.randn(5, 3, dtype=torch.float64) * 10
    torch.testing.assert_close(net(x), rk4_step(lorenz63_rhs, x, 0.01))
    assert net.rollout(x, 4).shape == (5, 5, 3)
    with pytest.raises(UserInputError, match="scheme='rk2'"):
        build_model("bilinear_resnet", scheme="rk2")
