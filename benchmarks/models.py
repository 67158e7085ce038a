"""Model throughput on CPU: mapping models forward+backward, and L63 neural-ODE training steps.

Usage (from the repository root):

    .venv/bin/python benchmarks/models.py                 # both parts, defaults below
    .venv/bin/python benchmarks/models.py --part mapping --batch 2 --iters 3
    .venv/bin/python benchmarks/models.py --part ode --ode-iters 30

Part "mapping": samples/s of one training step (forward, masked MSE or Gaussian NLL, backward) of
unet, dincae and fourdvarnet on 15x128x128 patches (T=15 time steps, one channel, 40% observed),
default sizes of each model. Part "ode": training steps/s of an MLP neural ODE fitted to Lorenz-63
segments, fixed-step RK4 vs torchdiffeq dopri5, where the RK4 step is the largest one whose
integration error on the true Lorenz-63 field is no larger than dopri5's at the chosen tolerance
(matched accuracy). Prints a Markdown table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from geodl import losses
from geodl.models import build_model
from geodl.models.neural_ode import NeuralODE, rk4_odeint
from geodl.sim.lorenz import lorenz63_rhs

MAPPING = {
    "unet": {"in_channels": 1, "n_times": 15},
    "dincae": {"in_channels": 1, "n_times": 15},
    "fourdvarnet": {"in_channels": 1, "n_times": 15},
}


def _mapping_step(model: torch.nn.Module, target: torch.Tensor, mask: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    out = model(target, mask)
    if out.log_var is not None:
        loss = losses.gaussian_nll(out.mean, target, log_var=out.log_var, mask=mask)
    else:
        loss = losses.mse(out.mean, target)
    loss.backward()


def _ode_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, truth: torch.Tensor, t: torch.Tensor
) -> None:
    opt.zero_grad(set_to_none=True)
    loss = losses.mse(model(truth[:, 0], t), truth)
    loss.backward()
    opt.step()


def bench_mapping(batch: int, iters: int, size: int, n_times: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(batch, n_times, 1, size, size, generator=gen)
    mask = (torch.rand(target.shape, generator=gen) < 0.4).float()
    rows = []
    for name, kwargs in MAPPING.items():
        torch.manual_seed(0)
        model = build_model(name, **{**kwargs, "n_times": n_times}).train()
        n_params = sum(p.numel() for p in model.parameters())

        _mapping_step(model, target, mask)  # warm-up (allocator, kernels)
        start = time.perf_counter()
        for _ in range(iters):
            _mapping_step(model, target, mask)
        seconds = (time.perf_counter() - start) / iters
        rows.append(
            {
                "model": name,
                "params": n_params,
                "s_per_step": seconds,
                "samples_per_s": batch / seconds,
            }
        )
        print(f"  {name}: {batch / seconds:.2f} samples/s ({seconds:.2f} s/step)", flush=True)
    return rows


class _Hybrid(torch.nn.Module):
    """Normalised L63 (state / 10) plus a learnable MLP correction: a field with the time scales of
    the learnt dynamics, as late in training (an untrained MLP field is slow and smooth, and lets
    dopri5 take steps that no trained model allows)."""

    def __init__(self) -> None:
        super().__init__()
        self.correction = build_model(
            "mlp", in_features=3, out_features=3, hidden=(64, 64), act="tanh"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lorenz63_rhs(10.0 * x) / 10.0 + self.correction(x)


def _max_error(
    field: torch.nn.Module, x0: torch.Tensor, t: torch.Tensor, ref: torch.Tensor, **kw
) -> float:
    with torch.no_grad():
        return float((NeuralODE(field, **kw)(x0, t) - ref).abs().max())


def bench_ode(iters: int, rtol: float) -> dict:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.tensor([1.0, 1.0, 25.0]) + 5 * torch.randn(64, 3, generator=gen)
    t = torch.linspace(0, 0.5, 11)  # 10 intervals of 0.05 time units
    truth = rk4_odeint(lorenz63_rhs, x0, t, 0.001) / 10.0  # (B, T, 3), normalised
    torch.manual_seed(0)
    field = _Hybrid().double()
    with torch.no_grad():
        ref = NeuralODE(field, method="dopri5", rtol=1e-12, atol=1e-12)(
            truth[:, 0].double(), t.double()
        )
    field, ref = field.float(), ref.float()
    # Matched accuracy: the largest RK4 step whose error on this field is <= dopri5's at rtol.
    dopri_err = _max_error(field, truth[:, 0], t, ref, method="dopri5", rtol=rtol, atol=rtol)
    step = rk4_err = None
    for h in (0.05, 0.025, 0.0167, 0.0125, 0.01, 0.005, 0.0025):
        err = _max_error(field, truth[:, 0], t, ref, method="rk4", step_size=h)
        if err <= dopri_err:
            step, rk4_err = h, err
            break
    if step is None:
        raise SystemExit(
            f"no RK4 step matches dopri5 rtol={rtol} (error {dopri_err:.2e}); loosen --rtol"
        )
    results = {
        "dopri5_rtol": rtol,
        "dopri5_error": dopri_err,
        "rk4_step": step,
        "rk4_error": rk4_err,
    }
    initial = {k: v.clone() for k, v in field.state_dict().items()}
    for label, kw in (
        ("rk4", {"method": "rk4", "step_size": step}),
        ("dopri5", {"method": "dopri5", "rtol": rtol, "atol": rtol}),
    ):
        field.load_state_dict(initial)
        model = build_model("neural_ode", vector_field=field, **kw)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        _ode_step(model, opt, truth, t)  # warm-up
        model.func.n_evals = 0
        start = time.perf_counter()
        for _ in range(iters):
            _ode_step(model, opt, truth, t)
        seconds = (time.perf_counter() - start) / iters
        results[f"{label}_steps_per_s"] = 1.0 / seconds
        results[f"{label}_evals_per_step"] = model.func.n_evals / iters
        print(f"  {label}: {1.0 / seconds:.2f} training steps/s", flush=True)
    results["rk4_over_dopri5"] = results["rk4_steps_per_s"] / results["dopri5_steps_per_s"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("all", "mapping", "ode"), default="all")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n-times", type=int, default=15)
    parser.add_argument("--ode-iters", type=int, default=20)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    print(f"torch {info['torch']}, {info['threads']} threads")
    out: dict = {"info": info, "args": vars(args)}
    if args.part in ("all", "mapping"):
        print(
            f"mapping, batch {args.batch}, {args.n_times}x{args.size}x{args.size}, {args.iters} timed steps"
        )
        out["mapping"] = bench_mapping(args.batch, args.iters, args.size, args.n_times)
        print("\n| model | parameters | s / step | samples / s |\n|---|---:|---:|---:|")
        for r in out["mapping"]:
            print(
                f"| {r['model']} | {r['params']:,} | {r['s_per_step']:.2f} | {r['samples_per_s']:.2f} |"
            )
    if args.part in ("all", "ode"):
        print(f"L63 neural ODE, {args.ode_iters} timed steps")
        r = bench_ode(args.ode_iters, args.rtol)
        out["ode"] = r
        print(
            "\n| solver | setting | max error | f evals / step | training steps / s |\n"
            "|---|---|---:|---:|---:|\n"
            f"| rk4 (geodl) | step {r['rk4_step']} | {r['rk4_error']:.1e} | "
            f"{r['rk4_evals_per_step']:.0f} | {r['rk4_steps_per_s']:.2f} |\n"
            f"| dopri5 (torchdiffeq) | rtol=atol={r['dopri5_rtol']:g} | {r['dopri5_error']:.1e} | "
            f"{r['dopri5_evals_per_step']:.0f} | {r['dopri5_steps_per_s']:.2f} |\n\n"
            f"rk4 / dopri5 = {r['rk4_over_dopri5']:.2f}x"
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
