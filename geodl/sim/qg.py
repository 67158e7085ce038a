"""Two-layer quasi-geostrophic model in torch: doubly periodic, pseudo-spectral, batched.

The formulation and the default ("eddy") parameters follow pyqg's ``QGModel`` (Abernathey et al.,
pyqg; Ross et al. 2023, JAMES, doi:10.1029/2022MS003258):

.. math::

    q_1 = \\nabla^2\\psi_1 + F_1(\\psi_2 - \\psi_1), \\qquad
    q_2 = \\nabla^2\\psi_2 + F_2(\\psi_1 - \\psi_2),

    \\partial_t q_i + J(\\psi_i, q_i) + U_i\\,\\partial_x q_i + Q_{y,i}\\,\\partial_x\\psi_i
        = -\\delta_{i2}\\, r_{ek} \\nabla^2\\psi_2 + \\text{filter},

with :math:`F_1 = r_d^{-2}/(1+\\delta)`, :math:`F_2 = \\delta F_1`, :math:`\\delta = H_1/H_2`,
:math:`Q_{y,1} = \\beta + F_1(U_1-U_2)`, :math:`Q_{y,2} = \\beta - F_2(U_1-U_2)`. The Jacobian is
computed in flux form, :math:`\\partial_x(uq) + \\partial_y(vq)`, with products in physical space;
time stepping is third-order Adams-Bashforth, started with Euler and AB2, with pyqg's exponential
small-scale filter applied to ``q`` after every step.

State tensors: PV ``q`` has shape ``(batch, layer=2, y, x)`` in s^-1; its spectrum ``qh`` has shape
``(batch, 2, y, x // 2 + 1)`` (``torch.fft.rfft2``). Batch members are independent ensemble members.

Design notes
------------
- Everything is plain torch on the model's device and dtype, with no in-place updates of tensors in
  the autograd graph, so a short rollout is differentiable with respect to the initial state.
- One ``irfft2`` (of ``u, v, q`` stacked) and one ``rfft2`` (of ``uq, vq`` stacked) per step: the
  per-step cost is dominated by these two calls, not by Python overhead, from ``nx = 64`` up.
- On CPU the step is FFT-bound and runs at NumPy speed; on a shared machine use one torch thread
  for nx <= 128 (two threads were 7x slower when the cores were busy; BENCHMARKS.md).
- The 2/3 dealiasing rule is optional (off by default, as in pyqg, where the filter controls
  aliasing); with it on and the filter off the nonlinear term conserves energy and enstrophy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor

from geodl.errors import UserInputError

__all__ = ["PRESETS", "QGModel", "QGParams", "QGState"]

# Gravity and Coriolis parameter of the SSH proxy eta = (f0 / g) psi_1.
F0 = 1.0e-4
GRAVITY = 9.81
# Advective CFL number above which a run is refused (AB3 is stable for CFL below ~0.72).
MAX_CFL = 0.5


@dataclass(frozen=True)
class QGParams:
    """Physical and numerical parameters of :class:`QGModel` (SI units; defaults: pyqg "eddy").

    Attributes
    ----------
    nx : int
        Grid points per side (even, >= 8); the grid is ``nx x nx`` over a square of side ``L``.
    L : float
        Domain side (m).
    beta : float
        Meridional gradient of the Coriolis parameter (m^-1 s^-1); 0 allowed.
    rd : float
        First baroclinic deformation radius (m).
    delta : float
        Layer thickness ratio ``H1 / H2``.
    H1 : float
        Upper layer thickness (m).
    U1, U2 : float
        Mean zonal velocity of each layer (m/s).
    rek : float
        Linear bottom drag (s^-1); 0 allowed.
    dt : float
        Time step (s).
    filterfac : float
        Strength of the exponential small-scale filter (pyqg's 23.6); 0 turns the filter off.
    """

    nx: int = 64
    L: float = 1.0e6
    beta: float = 1.5e-11
    rd: float = 15.0e3
    delta: float = 0.25
    H1: float = 500.0
    U1: float = 0.025
    U2: float = 0.0
    rek: float = 5.787e-7
    dt: float = 3600.0
    filterfac: float = 23.6

    @property
    def H2(self) -> float:
        return self.H1 / self.delta

    @property
    def F1(self) -> float:
        return self.rd**-2 / (1.0 + self.delta)

    @property
    def F2(self) -> float:
        return self.delta * self.F1

    @property
    def dx(self) -> float:
        return self.L / self.nx

    def describe(self) -> str:
        """One line with every parameter, for the ``source`` attribute of output files."""
        return ", ".join(f"{k}={v!r}" for k, v in asdict(self).items())


#: Named parameter sets: pyqg's eddy regime (the default) and jet regime (Ross et al. 2023).
PRESETS: dict[str, QGParams] = {
    "eddy": QGParams(),
    "jet": QGParams(beta=1.0e-11, rek=7.0e-8, delta=0.1, rd=15.0e3, H1=500.0, U1=0.025, U2=0.0),
}


def _check_params(p: QGParams) -> None:
    if not isinstance(p.nx, int) or p.nx < 8 or p.nx % 2:
        raise UserInputError(
            f"qg nx must be an even integer >= 8 (the spectral grid needs a Nyquist mode), got "
            f"{p.nx!r}; use e.g. nx=64"
        )
    for name in ("L", "rd", "delta", "H1", "dt"):
        value = getattr(p, name)
        if not (math.isfinite(value) and value > 0):
            raise UserInputError(f"qg parameter {name} must be > 0, got {value!r}")
    for name in ("beta", "rek", "filterfac"):
        value = getattr(p, name)
        if not (math.isfinite(value) and value >= 0):
            raise UserInputError(f"qg parameter {name} must be >= 0, got {value!r}")
    for name in ("U1", "U2"):
        if not math.isfinite(getattr(p, name)):
            raise UserInputError(f"qg parameter {name} must be finite, got {getattr(p, name)!r}")
    cfl = max(abs(p.U1), abs(p.U2)) * p.dt / p.dx
    if cfl > MAX_CFL:
        raise UserInputError(
            f"qg time step too large: mean-flow CFL = max|U| dt / dx = {cfl:.2f} > {MAX_CFL}; "
            f"use dt <= {_suggest_dt(max(abs(p.U1), abs(p.U2)), p.dx):g} s"
        )


def _suggest_dt(speed: float, dx: float) -> float:
    """A round time step giving CFL <= MAX_CFL / 2 at ``speed`` (m/s)."""
    dt = 0.5 * MAX_CFL * dx / max(speed, 1e-12)
    return float(f"{dt:.1g}")


@dataclass(frozen=True)
class QGState:
    """PV spectrum ``qh`` ``(batch, 2, y, x//2+1)`` with the two previous tendencies for AB3."""

    qh: Tensor
    dqh1: Tensor | None = None
    dqh2: Tensor | None = None
    step: int = 0


class QGModel:
    """Two-layer QG model on an ``nx x nx`` doubly periodic grid (see the module docstring).

    Parameters
    ----------
    params : QGParams or str, optional
        Parameters, or a preset name from :data:`PRESETS` ("eddy", "jet"). Default "eddy".
    dealias : bool
        Apply the 2/3 rule to the nonlinear term (off in pyqg; needed for exact conservation).
    dtype : torch.dtype
        ``torch.float64`` (default) or ``torch.float32``.
    device : str or torch.device
        Where the state lives ("cpu", "cuda", ...).
    **overrides
        Fields of :class:`QGParams` that replace those of ``params`` (e.g. ``nx=32, dt=1800``).

    Examples
    --------
    >>> m = QGModel(nx=16, dt=7200.0)
    >>> q = m.run(m.initial_pv(batch=2, seed=0), n_steps=4, every=2)
    >>> tuple(q.shape)  # (batch, time, layer, y, x)
    (2, 3, 2, 16, 16)
    >>> tuple(m.ssh(q[:, -1]).shape)
    (2, 16, 16)
    """

    def __init__(
        self,
        params: QGParams | str = "eddy",
        *,
        dealias: bool = False,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        **overrides: float,
    ) -> None:
        if isinstance(params, str):
            if params not in PRESETS:
                raise UserInputError(
                    f"unknown qg preset '{params}'; choose one of {', '.join(sorted(PRESETS))}"
                )
            params = PRESETS[params]
        unknown = sorted(set(overrides) - set(asdict(params)))
        if unknown:
            raise UserInputError(
                f"unknown qg parameter(s) {unknown}; valid: {', '.join(asdict(params))}"
            )
        params = replace(params, **overrides)
        _check_params(params)
        if dtype not in (torch.float32, torch.float64):
            raise UserInputError(f"qg dtype must be torch.float32 or torch.float64, got {dtype}")
        self.params = p = params
        self.dtype = dtype
        try:
            self.device = torch.device(device)
            torch.empty(0, device=self.device)
        except (RuntimeError, AssertionError) as exc:
            raise UserInputError(
                f"qg device '{device}' is not usable here ({str(exc).splitlines()[0]}); use "
                "device='cpu' or one of the visible GPUs"
            ) from None
        self.dealias = dealias
        n = p.nx
        # Wavenumbers (rad/m) on the rfft2 grid: l along y (full), k along x (half).
        k = 2 * math.pi * torch.fft.rfftfreq(n, d=p.dx, dtype=torch.float64)
        l_ = 2 * math.pi * torch.fft.fftfreq(n, d=p.dx, dtype=torch.float64)
        kk, ll = torch.meshgrid(k, l_, indexing="xy")  # (y, x//2+1)
        wv2 = kk**2 + ll**2
        # Inversion matrix of q = M psi per wavenumber; det = K^2 (K^2 + F1 + F2), 0 at K = 0.
        det = wv2 * (wv2 + p.F1 + p.F2)
        inv_det = torch.where(det > 0, 1.0 / torch.where(det > 0, det, 1.0), 0.0)
        # psi1 = (-(K^2+F2) q1 - F1 q2) / det ; psi2 = (-F2 q1 - (K^2+F1) q2) / det
        self._a11 = (-(wv2 + p.F2) * inv_det).to(dtype)
        self._a12 = (-p.F1 * inv_det).to(dtype)
        self._a21 = (-p.F2 * inv_det).to(dtype)
        self._a22 = (-(wv2 + p.F1) * inv_det).to(dtype)
        cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        self._ik = (1j * kk).to(cdtype)
        self._il = (1j * ll).to(cdtype)
        self._wv2 = wv2.to(dtype)
        self._drag = torch.stack((torch.zeros_like(wv2), p.rek * wv2)).to(dtype)  # (2, y, x//2+1)
        # float64 on purpose: torch.tensor would default to float32 and round beta and Qy.
        qy = torch.tensor(
            [p.beta + p.F1 * (p.U1 - p.U2), p.beta - p.F2 * (p.U1 - p.U2)], dtype=torch.float64
        )
        u_bg = torch.tensor([p.U1, p.U2], dtype=torch.float64)
        # Linear operator per layer: -ik U q - ik Qy psi (background advection, beta).
        self._lin_q = (-(u_bg[:, None, None]) * 1j * kk).to(cdtype)  # (2, y, x//2+1)
        self._lin_psi = (-(qy[:, None, None]) * 1j * kk).to(cdtype)
        # pyqg's exponential filter: 1 below 0.65 pi (in grid units), exp(-a (K dx - 0.65 pi)^4) above.
        wvx = torch.sqrt((kk * p.dx) ** 2 + (ll * p.dx) ** 2)
        cphi = 0.65 * math.pi
        self._filter = torch.where(
            wvx <= cphi, 1.0, torch.exp(-p.filterfac * (wvx - cphi).clamp(min=0) ** 4)
        ).to(dtype)
        # 2/3 rule: keep |k|, |l| < (2/3) k_max.
        kmax = math.pi / p.dx
        keep = (kk.abs() < 2 / 3 * kmax) & (ll.abs() < 2 / 3 * kmax)
        self._dealias = keep.to(dtype)
        for name in (
            "_a11",
            "_a12",
            "_a21",
            "_a22",
            "_ik",
            "_il",
            "_wv2",
            "_drag",
            "_lin_q",
            "_lin_psi",
        ):
            setattr(self, name, getattr(self, name).to(self.device))
        self._filter = self._filter.to(self.device)
        self._dealias = self._dealias.to(self.device)

    # ----- grid and transforms -------------------------------------------------------------
    @property
    def nx(self) -> int:
        return self.params.nx

    def coords_km(self) -> Tensor:
        """Cell-centre coordinates along y and x (km), shape ``(nx,)``."""
        p = self.params
        return (torch.arange(p.nx, dtype=torch.float64) + 0.5) * p.dx / 1e3

    def to_spectral(self, q: Tensor) -> Tensor:
        """``rfft2`` of a field ``(..., y, x)``."""
        return torch.fft.rfft2(q)

    def to_physical(self, qh: Tensor) -> Tensor:
        """Inverse of :meth:`to_spectral`."""
        return torch.fft.irfft2(qh, s=(self.nx, self.nx))

    def invert(self, qh: Tensor) -> Tensor:
        """Streamfunction spectrum ``(batch, 2, y, x//2+1)`` from the PV spectrum."""
        q1, q2 = qh[:, 0], qh[:, 1]
        return torch.stack((self._a11 * q1 + self._a12 * q2, self._a21 * q1 + self._a22 * q2), 1)

    # ----- dynamics ------------------------------------------------------------------------
    def tendency(self, qh: Tensor) -> Tensor:
        """``d qh / dt`` (without the filter), shape ``(batch, 2, y, x//2+1)``."""
        ph = self.invert(qh)
        uh = -self._il * ph
        vh = self._ik * ph
        # One inverse transform for u, v, q of both layers: (batch, 3, 2, y, x).
        u, v, q = self.to_physical(torch.stack((uh, vh, qh), 1)).unbind(1)
        fluxh = self.to_spectral(torch.stack((u * q, v * q), 1))  # (batch, 2, 2, y, x//2+1)
        nonlinear = self._ik * fluxh[:, 0] + self._il * fluxh[:, 1]
        if self.dealias:
            nonlinear = nonlinear * self._dealias
        dqh = self._lin_q * qh + self._lin_psi * ph - nonlinear
        if self.params.rek:
            # Bottom drag -rek lap(psi_2) acts on the lower layer only.
            dqh = dqh + self._drag * ph
        return dqh

    def step(self, state: QGState) -> QGState:
        """One AB3 step (Euler, then AB2 for the first two) followed by the filter."""
        dt = self.params.dt
        dqh = self.tendency(state.qh)
        if state.dqh1 is None:
            incr = dt * dqh
        elif state.dqh2 is None:
            incr = dt * (1.5 * dqh - 0.5 * state.dqh1)
        else:
            incr = dt * (23.0 / 12.0 * dqh - 16.0 / 12.0 * state.dqh1 + 5.0 / 12.0 * state.dqh2)
        qh = state.qh + incr
        if self.params.filterfac:
            qh = qh * self._filter
        return QGState(qh, dqh, state.dqh1, state.step + 1)

    def start(self, q0: Tensor) -> QGState:
        """Initial state from PV ``q0`` ``(batch, 2, y, x)`` (moved to the model's device/dtype)."""
        q0 = self._check_q(q0)
        qh = self.to_spectral(q0)
        if self.dealias:
            qh = qh * self._dealias
        return QGState(qh)

    def trajectory(self, state: QGState, n_steps: int, every: int = 1) -> Iterator[QGState]:
        """Yield the state every ``every`` steps, ``n_steps`` steps in all (not the start)."""
        if n_steps < 0 or every < 1:
            raise UserInputError(f"qg needs n_steps >= 0 and every >= 1, got {n_steps}, {every}")
        for i in range(1, n_steps + 1):
            state = self.step(state)
            if i % every == 0:
                self._check_cfl(state)
                yield state

    def advance(self, state: QGState, n_steps: int, *, check_every: int = 240) -> QGState:
        """``state`` after ``n_steps`` steps (spin-up); the CFL is checked every ``check_every``."""
        if n_steps < 0:
            raise UserInputError(f"qg needs n_steps >= 0, got {n_steps}")
        for i in range(1, n_steps + 1):
            state = self.step(state)
            if i % check_every == 0 or i == n_steps:
                self._check_cfl(state)
        return state

    def run(
        self, q0: Tensor, n_steps: int, every: int = 1, *, include_start: bool = True
    ) -> Tensor:
        """PV snapshots ``(batch, time, 2, y, x)`` every ``every`` steps (and the start).

        Raises
        ------
        UserInputError
            If the flow becomes too fast for ``dt`` (CFL) or blows up; the message suggests a
            time step.
        """
        state = self.start(q0)
        snaps = [self.to_physical(state.qh)] if include_start else []
        snaps += [self.to_physical(s.qh) for s in self.trajectory(state, n_steps, every)]
        if not snaps:
            raise UserInputError("qg run produced no snapshot: need n_steps >= every")
        return torch.stack(snaps, 1)

    def _check_q(self, q: Tensor) -> Tensor:
        n = self.nx
        if q.ndim != 4 or q.shape[1:] != (2, n, n):
            raise UserInputError(
                f"qg PV must have shape (batch, 2, {n}, {n}), got {tuple(q.shape)}"
            )
        return q.to(device=self.device, dtype=self.dtype)

    def _check_cfl(self, state: QGState) -> None:
        p = self.params
        ph = self.invert(state.qh)
        uv = self.to_physical(torch.stack((-self._il * ph, self._ik * ph), 1))
        u_bg = torch.tensor([p.U1, p.U2], dtype=self.dtype, device=self.device)[:, None, None]
        speed = torch.maximum((uv[:, 0] + u_bg).abs().amax(), uv[:, 1].abs().amax())
        speed_f = float(speed.detach())
        cfl = speed_f * p.dt / p.dx
        if not math.isfinite(cfl) or cfl > 1.0:
            hint = (
                f"use dt <= {_suggest_dt(speed_f, p.dx):g} s"
                if math.isfinite(cfl)
                else (f"use a smaller dt than {p.dt:g} s")
            )
            raise UserInputError(
                f"qg run unstable at step {state.step}: CFL = max|u| dt / dx = {cfl:.2f} > 1 "
                f"(max |u| = {speed_f:.3g} m/s, dt = {p.dt:g} s, dx = {p.dx:g} m); {hint}"
            )

    # ----- initial conditions and diagnostics ----------------------------------------------
    def initial_pv(self, batch: int = 1, *, seed: int = 0, amplitude: float = 1e-7) -> Tensor:
        """Small random PV ``(batch, 2, y, x)`` (white noise of std ``amplitude``), as in pyqg."""
        if batch < 1:
            raise UserInputError(f"qg batch must be >= 1, got {batch}")
        if not (math.isfinite(amplitude) and amplitude > 0):
            raise UserInputError(f"qg initial PV amplitude must be > 0, got {amplitude!r}")
        gen = torch.Generator().manual_seed(seed)
        q = amplitude * torch.randn(
            (batch, 2, self.nx, self.nx), generator=gen, dtype=torch.float64
        )
        # Remove each layer's mean: the K = 0 mode is not dynamical.
        q = q - q.mean(dim=(-2, -1), keepdim=True)
        return q.to(device=self.device, dtype=self.dtype)

    def psi(self, q: Tensor) -> Tensor:
        """Streamfunction (m^2/s) ``(..., 2, y, x)`` from PV ``(..., 2, y, x)``."""
        lead = q.shape[:-3]
        qh = self.to_spectral(q.reshape(-1, 2, self.nx, self.nx))
        return self.to_physical(self.invert(qh)).reshape(*lead, 2, self.nx, self.nx)

    def ssh(self, q: Tensor) -> Tensor:
        """SSH proxy ``eta = (f0 / g) psi_1`` (m), shape ``(..., y, x)``."""
        return F0 / GRAVITY * self.psi(q)[..., 0, :, :]

    def energy(self, q: Tensor) -> Tensor:
        """Total (kinetic + available potential) energy per unit mass (m^2/s^2), shape ``(batch,)``.

        ``E = sum_i H_i/H <|grad psi_i|^2>/2 + H1/H F1 <(psi1 - psi2)^2>/2``; conserved by the
        dealiased nonlinear term.
        """
        p = self.params
        qh = self.to_spectral(q)
        ph = self.invert(qh)
        u, v, psi = self.to_physical(torch.stack((-self._il * ph, self._ik * ph, ph), 1)).unbind(1)
        h = torch.tensor([p.H1, p.H2], dtype=q.dtype, device=q.device)[:, None, None] / (
            p.H1 + p.H2
        )
        ke = 0.5 * (h * (u**2 + v**2)).sum(1).mean((-2, -1))
        ape = 0.5 * p.H1 / (p.H1 + p.H2) * p.F1 * ((psi[:, 0] - psi[:, 1]) ** 2).mean((-2, -1))
        return ke + ape

    def kinetic_energy(self, q: Tensor) -> Tensor:
        """Layer-weighted kinetic energy per unit mass (m^2/s^2), shape ``(batch,)``."""
        p = self.params
        ph = self.invert(self.to_spectral(q))
        u, v = self.to_physical(torch.stack((-self._il * ph, self._ik * ph), 1)).unbind(1)
        h = torch.tensor([p.H1, p.H2], dtype=q.dtype, device=q.device)[:, None, None] / (
            p.H1 + p.H2
        )
        return 0.5 * (h * (u**2 + v**2)).sum(1).mean((-2, -1))

    def enstrophy(self, q: Tensor) -> Tensor:
        """Layer-weighted potential enstrophy ``sum_i H_i/H <q_i^2>/2`` (s^-2), shape ``(batch,)``."""
        p = self.params
        h = torch.tensor([p.H1, p.H2], dtype=q.dtype, device=q.device)[:, None, None] / (
            p.H1 + p.H2
        )
        return 0.5 * (h * q**2).sum(1).mean((-2, -1))
