"""Benchmark the embedded simulators (geodl.sim) on CPU.

Measures, in one run:

- two-layer QG steps per second at nx = 64, 128, 256 (torch, float64, one member) against a plain
  NumPy FFT implementation of the same AB3 step written below (checked to agree first);
- QG ensemble throughput (member-steps per second) for 1, 8, 32 members at nx = 64;
- Lorenz-63 / Lorenz-96 trajectories per second (1000 RK4 steps each, batches of 1 and 256);
- optionally (``--demo``) the default demo data: 64x64 eddy regime, 3 years of spin-up and 2 years
  of daily fields, with its wall time, the KE levelling-off ratio and the SSH proxy std.

Usage::

    python benchmarks/simulators.py [--threads 1] [--demo] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from geodl.sim import QGModel, simulate_lorenz


class NumpyQG:
    """The same two-layer QG step as :class:`geodl.sim.QGModel`, in NumPy (float64, one member)."""

    def __init__(self, m: QGModel) -> None:
        p = m.params
        self.p = p
        n = p.nx
        k = 2 * np.pi * np.fft.rfftfreq(n, d=p.dx)
        l_ = 2 * np.pi * np.fft.fftfreq(n, d=p.dx)
        kk, ll = np.meshgrid(k, l_)
        wv2 = kk**2 + ll**2
        det = wv2 * (wv2 + p.F1 + p.F2)
        inv = np.divide(1.0, det, out=np.zeros_like(det), where=det > 0)
        self.a = np.array([[-(wv2 + p.F2) * inv, -p.F1 * inv], [-p.F2 * inv, -(wv2 + p.F1) * inv]])
        self.ik, self.il = 1j * kk, 1j * ll
        qy = np.array([p.beta + p.F1 * (p.U1 - p.U2), p.beta - p.F2 * (p.U1 - p.U2)])
        ubg = np.array([p.U1, p.U2])
        self.lin_q = -ubg[:, None, None] * 1j * kk
        self.lin_psi = -qy[:, None, None] * 1j * kk
        self.drag = np.stack([np.zeros_like(wv2), p.rek * wv2])
        wvx = np.sqrt((kk * p.dx) ** 2 + (ll * p.dx) ** 2)
        cphi = 0.65 * np.pi
        self.filtr = np.where(
            wvx <= cphi, 1.0, np.exp(-p.filterfac * np.clip(wvx - cphi, 0, None) ** 4)
        )
        self.n = n
        self.d1 = self.d2 = None

    def tendency(self, qh: np.ndarray) -> np.ndarray:
        ph = np.einsum("ijyx,jyx->iyx", self.a, qh)
        stack = np.stack([-self.il * ph, self.ik * ph, qh])  # (3, 2, y, x//2+1)
        u, v, q = np.fft.irfft2(stack, s=(self.n, self.n))
        flux = np.fft.rfft2(np.stack([u * q, v * q]))
        return (
            self.lin_q * qh
            + self.lin_psi * ph
            - (self.ik * flux[0] + self.il * flux[1])
            + (self.drag * ph)
        )

    def step(self, qh: np.ndarray) -> np.ndarray:
        dt = self.p.dt
        d = self.tendency(qh)
        if self.d1 is None:
            inc = dt * d
        elif self.d2 is None:
            inc = dt * (1.5 * d - 0.5 * self.d1)
        else:
            inc = dt * (23 / 12 * d - 16 / 12 * self.d1 + 5 / 12 * self.d2)
        self.d2, self.d1 = self.d1, d
        return self.filtr * (qh + inc)


def _rate(fn: Callable[[], None], min_time: float = 1.0, max_iter: int = 100000) -> float:
    """Calls per second of ``fn`` (after a warm-up), timed for at least ``min_time`` s."""
    for _ in range(3):
        fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or n >= max_iter:
            return n / elapsed


def _spun_up_pv(m: QGModel, batch: int) -> torch.Tensor:
    return m.initial_pv(batch, seed=0, amplitude=1e-5)


def bench_qg(sizes: tuple[int, ...]) -> list[dict]:
    rows = []
    for nx in sizes:
        m = QGModel(nx=nx)
        state = m.start(_spun_up_pv(m, 1))
        ref = NumpyQG(m)
        qh_np = state.qh[0].numpy().copy()
        # Agreement check: 10 steps of each from the same state.
        s, q_np = state, qh_np
        for _ in range(10):
            s, q_np = m.step(s), ref.step(q_np)
        diff = float(np.abs(s.qh[0].numpy() - q_np).max() / np.abs(q_np).max())
        ref.d1 = ref.d2 = None
        box = {"s": state, "q": qh_np}

        def torch_step(box=box, m=m):
            box["s"] = m.step(box["s"])

        def numpy_step(box=box, ref=ref):
            box["q"] = ref.step(box["q"])

        with torch.no_grad():
            t_rate = _rate(torch_step)
        n_rate = _rate(numpy_step)
        rows.append(
            {
                "nx": nx,
                "torch_steps_per_s": t_rate,
                "numpy_steps_per_s": n_rate,
                "torch_over_numpy": t_rate / n_rate,
                "max_rel_diff_after_10_steps": diff,
            }
        )
        print(
            f"qg nx={nx:4d}: torch {t_rate:8.1f} steps/s, numpy {n_rate:8.1f} steps/s, "
            f"ratio {t_rate / n_rate:5.2f} (agreement {diff:.1e})"
        )
    return rows


def bench_ensemble(members: tuple[int, ...], nx: int = 64) -> list[dict]:
    rows = []
    m = QGModel(nx=nx)
    base = None
    for b in members:
        box = {"s": m.start(_spun_up_pv(m, b))}

        def step(box=box):
            box["s"] = m.step(box["s"])

        with torch.no_grad():
            rate = _rate(step)
        member_steps = rate * b
        base = base or member_steps
        rows.append(
            {
                "members": b,
                "steps_per_s": rate,
                "member_steps_per_s": member_steps,
                "speedup_vs_1": member_steps / base,
            }
        )
        print(
            f"qg ensemble nx={nx} members={b:3d}: {rate:8.1f} steps/s = {member_steps:9.1f} "
            f"member-steps/s ({member_steps / base:5.2f}x one member)"
        )
    return rows


def bench_lorenz() -> list[dict]:
    rows = []
    for system in ("lorenz63", "lorenz96"):
        for batch in (1, 256):
            start = time.perf_counter()
            simulate_lorenz(system, n_trajectories=batch, n_steps=1000, spinup_steps=0)
            elapsed = time.perf_counter() - start
            rows.append(
                {
                    "system": system,
                    "batch": batch,
                    "steps": 1000,
                    "trajectories_per_s": batch / elapsed,
                }
            )
            print(f"{system} batch={batch:3d}: {batch / elapsed:9.1f} trajectories/s (1000 steps)")
    return rows


def bench_demo() -> dict:
    from geodl.sim.qg import QGModel as Model

    m = Model("eddy", nx=64)
    spin, days = 1095, 730  # the defaults of `geodl simulate qg`
    start = time.perf_counter()
    with torch.no_grad():
        state = m.advance(m.start(m.initial_pv(1, seed=0, amplitude=1e-6)), spin * 24)
        snaps = [m.to_physical(s.qh) for s in m.trajectory(state, days * 24, every=24)]
    elapsed = time.perf_counter() - start
    q = torch.stack(snaps, 1)[0]
    ke = m.kinetic_energy(q)
    ratio = float(ke[365:].mean() / ke[:365].mean())
    ssh_std_cm = float(100 * m.ssh(q).std())
    print(
        f"demo 64x64 eddy, {spin} d spin-up + {days} daily fields: {elapsed:.1f} s; KE(2nd year) / "
        f"KE(1st year) = {ratio:.2f}; SSH proxy std = {ssh_std_cm:.2f} cm"
    )
    return {
        "seconds": elapsed,
        "spinup_days": spin,
        "days": days,
        "ke_year2_over_year1": ratio,
        "ssh_std_cm": ssh_std_cm,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch and NumPy-side threads")
    ap.add_argument("--demo", action="store_true", help="also time the default demo data")
    ap.add_argument("--json", help="write results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "qg": bench_qg((64, 128, 256)),
        "qg_ensemble": bench_ensemble((1, 8, 32)),
        "lorenz": bench_lorenz(),
    }
    if args.demo:
        results["demo"] = bench_demo()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=lambda v: None if math.isnan(v) else v)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
