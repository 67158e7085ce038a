"""Every registered model, two configurations each: construction, shapes, golden outputs,
checkpoint round trip, gradients to every parameter."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
sys.path.insert(0, str(GOLDEN))

from cases import CASES, outputs  # noqa: E402
from make_golden import golden_outputs  # noqa: E402

from geodl.models import MODELS, build_model  # noqa: E402

IDS = [c[0] for c in CASES]
# float32 CPU kernels may differ in the last bits across machines and thread counts.
RTOL, ATOL = 1e-4, 1e-5


def _expected_shapes(name: str, args: tuple) -> dict[str, tuple]:
    x = args[0]
    if name in ("unet", "dincae", "fourdvarnet", "cnn_emulator"):
        return {"mean": x.shape, "log_var": x.shape, "out": x.shape}
    if name == "autoencoder":
        return {"reconstruction": x.shape}
    if name == "mlp":
        return {"out": (*x.shape[:-1], {3: 3, 5: 2}[x.shape[-1]])}
    if name == "bilinear_resnet":
        return {"out": x.shape}
    if name in ("neural_ode", "latent_ode"):
        return {"out": (x.shape[0], len(args[1]), *x.shape[1:])}
    if name == "discriminator":
        return {}
    if name == "spectrum_discriminator":
        return {"out": (x.shape[0],)}
    raise AssertionError(name)


def test_every_registered_model_has_two_cases():
    names = [c[1] for c in CASES]
    assert sorted(set(names)) == sorted(MODELS)
    assert all(names.count(n) == 2 for n in MODELS)


@pytest.mark.parametrize(("case_id", "name", "kwargs", "make_inputs"), CASES, ids=IDS)
def test_forward_shapes(case_id, name, kwargs, make_inputs):
    model = build_model(name, **kwargs)
    args = make_inputs(torch.Generator().manual_seed(0))
    out = outputs(model(*args))
    expected = _expected_shapes(name, args)
    for key, value in out.items():
        assert torch.isfinite(value).all(), key
        if key in expected:
            assert tuple(value.shape) == tuple(expected[key]), key


def test_discriminator_patch_shape():
    d = build_model("discriminator", in_channels=1, n_times=2, width=4, n_layers=2)
    assert d(torch.randn(3, 2, 1, 16, 8)).shape == (3, 4, 2)


@pytest.mark.parametrize(("case_id", "name", "kwargs", "make_inputs"), CASES, ids=IDS)
def test_golden_outputs(case_id, name, kwargs, make_inputs):
    golden = torch.load(GOLDEN / "models.pt", weights_only=True)
    got = golden_outputs(case_id, name, kwargs, make_inputs)
    assert got, case_id
    for key, value in got.items():
        torch.testing.assert_close(value, golden[key], rtol=RTOL, atol=ATOL, msg=key)


@pytest.mark.parametrize(("case_id", "name", "kwargs", "make_inputs"), CASES, ids=IDS)
def test_checkpoint_round_trip(case_id, name, kwargs, make_inputs):
    torch.manual_seed(0)
    model = build_model(name, **kwargs).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)  # different initial weights, overwritten by the load
    restored = build_model(name, **kwargs).eval()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    args = make_inputs(torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = outputs(model(*args)), outputs(restored(*args))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


@pytest.mark.parametrize(("case_id", "name", "kwargs", "make_inputs"), CASES, ids=IDS)
def test_gradients_reach_every_parameter(case_id, name, kwargs, make_inputs):
    torch.manual_seed(0)
    model = build_model(name, **kwargs).train()
    args = make_inputs(torch.Generator().manual_seed(0))
    loss = sum((v**2).mean() for v in outputs(model(*args)).values())
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{case_id}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{case_id}: non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{case_id}: zero gradient for {pname}"
