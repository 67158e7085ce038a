"""Two-layer QG model: conservation, Rossby waves, equilibration, ensembles, gradients, errors."""

import math

import pytest
import torch

from geodl.errors import UserInputError
from geodl.sim.qg import PRESETS, QGModel


def _inviscid(nx: int = 32, dt: float = 1800.0) -> QGModel:
    return QGModel(nx=nx, beta=0.0, rek=0.0, filterfac=0.0, U1=0.0, U2=0.0, dealias=True, dt=dt)


def _rates(m: QGModel, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dE/dt and dZ/dt of the tendency at q, from the semi-discrete equations."""
    p = m.params
    qh = m.to_spectral(q)
    dq = m.to_physical(m.tendency(qh))
    psi = m.to_physical(m.invert(qh))
    h = torch.tensor([p.H1, p.H2], dtype=q.dtype)[:, None, None] / (p.H1 + p.H2)
    de = -(h * psi * dq).sum(1).mean((-2, -1))
    dz = (h * q * dq).sum(1).mean((-2, -1))
    return de, dz


def test_dealiased_jacobian_conserves_energy_and_enstrophy_exactly():
    m = _inviscid()
    q = m.to_physical(m.start(m.initial_pv(3, seed=1, amplitude=2e-5)).qh)
    de, dz = _rates(m, q)
    # Time scales: E / (dE/dt) must be astronomically long compared with the eddy turnover.
    e, z = m.energy(q), m.enstrophy(q)
    turnover = 1.0 / q.abs().amax().item()
    assert (de.abs() * turnover / e).max() < 1e-12
    assert (dz.abs() * turnover / z).max() < 1e-12
    # The check can fail: bottom drag removes energy at a rate far above round-off.
    drag = QGModel(nx=32, beta=0.0, rek=1e-6, filterfac=0.0, U1=0.0, U2=0.0, dealias=True)
    assert (_rates(drag, q)[0].abs() * turnover / e).min() > 1e-8


def test_rollout_conserves_invariants_while_the_flow_changes():
    m = _inviscid(dt=1800.0)
    state = m.start(m.initial_pv(2, seed=1, amplitude=2e-5))
    q0 = m.to_physical(state.qh)
    q1 = m.run(q0, n_steps=960, every=960)[:, -1]  # 20 days, several eddy turnovers
    assert ((q1 - q0).norm() / q0.norm()) > 0.5
    # Drift from AB3's time truncation only (measured 4e-5 here, 2e-5 with dt halved).
    torch.testing.assert_close(m.energy(q1), m.energy(q0), rtol=1e-4, atol=0)
    torch.testing.assert_close(m.enstrophy(q1), m.enstrophy(q0), rtol=1e-4, atol=0)


def _wave(m: QGModel, kx: int, ly: int, structure: tuple[float, float], t: float) -> torch.Tensor:
    """Streamfunction A cos(k x + l y - omega t) per layer with the given vertical structure."""
    p = m.params
    x = torch.arange(p.nx, dtype=torch.float64) * p.dx
    k, l_ = 2 * math.pi * kx / p.L, 2 * math.pi * ly / p.L
    k2 = k**2 + l_**2
    baroclinic = structure[1] < 0
    omega = -p.beta * k / (k2 + (p.rd**-2 if baroclinic else 0.0))
    phase = k * x[None, :] + l_ * x[:, None] - omega * t
    return torch.stack([a * 1e3 * torch.cos(phase) for a in structure])[None]


@pytest.mark.parametrize("mode", ["barotropic", "baroclinic"])
def test_linear_rossby_wave_dispersion(mode):
    m = QGModel(nx=16, U1=0.0, U2=0.0, rek=0.0)
    structure = (1.0, 1.0) if mode == "barotropic" else (1.0, -m.params.delta)
    psi0 = _wave(m, 2, 1, structure, 0.0)
    # q from psi: the inverse of the model's inversion, applied in spectral space.
    p, k2 = m.params, m._wv2
    ph = m.to_spectral(psi0)
    qh = torch.stack(
        (-(k2 + p.F1) * ph[:, 0] + p.F1 * ph[:, 1], p.F2 * ph[:, 0] - (k2 + p.F2) * ph[:, 1]), 1
    )
    n_steps = 24 * 20  # 20 days: about a third of a period (barotropic) or a tenth (baroclinic)
    q = m.run(m.to_physical(qh), n_steps, every=n_steps)[:, -1]
    expected = _wave(m, 2, 1, structure, n_steps * p.dt)
    torch.testing.assert_close(m.psi(q), expected, rtol=0, atol=1e-3 * 1e3)
    # ... and the wave did move: by 50x the tolerance (baroclinic: 0.07 rad, so the check above
    # pins omega to ~1.5%; barotropic: 2 rad).
    assert (psi0 - expected).abs().max() > 50 * 1e-3 * 1e3


def test_eddy_regime_equilibrates_with_cm_ssh():
    # Criterion (documented in BENCHMARKS.md with the 64x64 run): starting from small noise, KE
    # first grows by baroclinic instability (>= 10x from its minimum), then levels off: the mean
    # KE of the 5th year is within 25% of the 4th's. The SSH proxy then has a std of order cm.
    m = QGModel("eddy", nx=32, dt=7200.0)
    q = m.run(m.initial_pv(1, seed=0, amplitude=1e-6), n_steps=12 * 30 * 60, every=12 * 30)[0]
    ke = m.kinetic_energy(q)  # monthly, (61,)
    assert ke[-1] / ke.min() > 10
    ratio = (ke[-12:].mean() / ke[-24:-12].mean()).item()
    assert 0.8 < ratio < 1.25, ratio
    ssh_std_cm = 100 * m.ssh(q[-1]).std().item()
    assert 0.5 < ssh_std_cm < 10, ssh_std_cm


def test_batched_ensemble_equals_members_run_one_by_one():
    m = QGModel(nx=16, dt=7200.0)
    q0 = m.initial_pv(3, seed=2, amplitude=1e-5)
    batch = m.run(q0, n_steps=30, every=10)
    for i in range(3):
        single = m.run(q0[i : i + 1], n_steps=30, every=10)
        torch.testing.assert_close(single[0], batch[i], rtol=1e-12, atol=1e-20)


def test_float32_tracks_float64_and_presets_differ():
    q0 = QGModel(nx=16).initial_pv(1, seed=3, amplitude=1e-5)
    a = QGModel(nx=16, dtype=torch.float64).run(q0, 48, every=48)
    b = QGModel(nx=16, dtype=torch.float32).run(q0, 48, every=48)
    assert b.dtype == torch.float32
    torch.testing.assert_close(b.double(), a, rtol=1e-3, atol=1e-3 * a.abs().max().item())
    c = QGModel("jet", nx=16).run(q0, 48, every=48)
    assert (c - a).abs().max() > 1e-3 * a.abs().max()
    assert PRESETS["jet"].delta == 0.1 and PRESETS["eddy"].rek == 5.787e-7


def test_differentiable_through_a_short_rollout():
    m = QGModel(nx=8, dt=7200.0)
    q0 = m.initial_pv(1, seed=4, amplitude=1e-5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: m.run(q, 3, every=3)[:, -1] * 1e5, (q0,))


def test_ssh_proxy_and_shapes():
    m = QGModel(nx=16)
    q = m.initial_pv(2, seed=5, amplitude=1e-5)
    psi = m.psi(q)
    assert psi.shape == (2, 2, 16, 16)
    torch.testing.assert_close(m.ssh(q), 1e-4 / 9.81 * psi[:, 0])
    # psi inverts back to q
    torch.testing.assert_close(m.psi(m.run(q, 0, include_start=True)[:, 0]), psi)
    assert m.coords_km()[0].item() == pytest.approx(1e3 / 16 / 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nx": 33}, "even integer >= 8"),
        ({"nx": 6}, "even integer >= 8"),
        ({"rd": -1.0}, "rd must be > 0"),
        ({"dt": 0.0}, "dt must be > 0"),
        ({"rek": -1e-7}, "rek must be >= 0"),
        ({"U1": 1.0, "dt": 20000.0}, r"CFL = .* use dt <= "),
        ({"ny": 3}, "unknown qg parameter"),
        ({"params": "storm"}, "unknown qg preset 'storm'"),
        ({"dtype": torch.float16}, "float32 or torch.float64"),
        ({"device": "cuda:99"}, "qg device 'cuda:99' is not usable here"),
    ],
)
def test_bad_parameters_raise_clear_errors(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        QGModel(**kwargs)


def test_unstable_run_says_cfl_and_suggests_dt():
    m = QGModel(nx=16, dt=86400.0)  # mean flow is slow enough, eddies of 1 m/s are not
    with pytest.raises(UserInputError, match=r"unstable .* CFL .* use dt <= "):
        m.run(m.initial_pv(1, seed=0, amplitude=1e-3), n_steps=10)


def test_bad_state_shape_and_counts():
    m = QGModel(nx=16)
    with pytest.raises(UserInputError, match=r"shape \(batch, 2, 16, 16\)"):
        m.run(torch.zeros(1, 16, 16), 1)
    with pytest.raises(UserInputError, match="every >= 1"):
        m.run(m.initial_pv(), 2, every=0)
    with pytest.raises(UserInputError, match="batch must be >= 1"):
        m.initial_pv(0)
    with pytest.raises(UserInputError, match="amplitude must be > 0"):
        m.initial_pv(1, amplitude=-1.0)


def test_linear_tendency_is_exact_in_float64():
    # A barotropic wave feels only beta: dq/dt = -beta dpsi/dx, to round-off (catches parameters
    # rounded to float32 on the way in, which shift omega by ~1e-8).
    m = QGModel(nx=16, U1=0.0, U2=0.0, rek=0.0)
    p = m.params
    x = torch.arange(p.nx, dtype=torch.float64) * p.dx
    k, l_ = 2 * math.pi * 3 / p.L, 2 * math.pi * 1 / p.L
    psi = torch.cos(k * x[None, :] + l_ * x[:, None]).expand(1, 2, -1, -1)
    q = -(k**2 + l_**2) * psi
    dq = m.to_physical(m.tendency(m.to_spectral(q)))
    expected = p.beta * k * torch.sin(k * x[None, :] + l_ * x[:, None])
    torch.testing.assert_close(dq[0, 0], expected, rtol=0, atol=1e-13 * expected.abs().max())


@pytest.mark.parametrize(
    ("preset", "energy", "enstrophy", "q_35"),
    [
        ("eddy", 0.03606988622121353, 2.06519159567929e-11, 1.7943473533338274e-05),
        ("jet", 0.055847467432865866, 2.2696190770073214e-11, 1.8810208753658702e-05),
    ],
)
def test_golden_output(preset, energy, enstrophy, q_35):
    # Values recorded from this implementation (2026-11-22, torch 2.13 CPU); rtol 1e-9 leaves room
    # for FFT round-off across platforms but not for any change of the equations or parameters.
    m = QGModel(preset, nx=16, dt=7200.0)
    q = m.run(m.initial_pv(1, seed=0, amplitude=1e-5), 48, every=48)[:, -1]
    assert m.energy(q).item() == pytest.approx(energy, rel=1e-9)
    assert m.enstrophy(q).item() == pytest.approx(enstrophy, rel=1e-9)
    assert q[0, 0, 3, 5].item() == pytest.approx(q_35, rel=1e-9)
