"""Dynamics-learning benchmarks on Lorenz-63: identification from clean and from noisy data.

Usage (from the repository root):

    .venv/bin/python benchmarks/dynamics.py --case bilinear_clean   # the identification target
    .venv/bin/python benchmarks/dynamics.py --case bilinear_noisy   # noise std 0.5 on the train data
    .venv/bin/python benchmarks/dynamics.py --case bilinear_noisy_states  # + joint state estimation
    .venv/bin/python benchmarks/dynamics.py --case node_rk4_clean   # MLP neural ODE, RK4
    .venv/bin/python benchmarks/dynamics.py --case bilinear_clean --set evaluate.lyapunov_steps=20000

Each case runs the dynamics experiment (geodl.tasks.dynamics) from configs/l63_dynamics.yaml with
the overrides below into ``--out`` (default ``runs/bench_dynamics/CASE``), then prints the scores
against the targets (forecast RMSE < 1e-3 at 8 steps; learned leading Lyapunov exponent within 5%
of 0.906), the wall time of each stage and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from geodl.pipeline import run_experiment
from geodl.tasks import load_config

CONFIG = "configs/l63_dynamics.yaml"
CASES = {
    "bilinear_clean": [],
    "bilinear_noisy": ["simulate.noise_std=0.5"],
    "bilinear_noisy_states": ["simulate.noise_std=0.5", "model.estimate_states=true"],
    "node_rk4_clean": [
        "model.kind=neural_ode",
        "model.method=rk4",
        "model.init_scale=0.01",
        "model.lbfgs_iter=300",
    ],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=sorted(CASES), required=True)
    p.add_argument("--out", default=None)
    p.add_argument("--set", action="append", default=[], dest="overrides")
    args = p.parse_args()
    overrides = [*CASES[args.case], *args.overrides]
    cfg, exp = load_config(CONFIG, overrides)
    out = Path(args.out or f"runs/bench_dynamics/{args.case}")
    t0 = time.perf_counter()
    result = run_experiment(cfg, exp, out)
    wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    (name, m), *_ = metrics["methods"].items()
    stages = {s["name"]: s["duration_s"] for s in result.manifest["stages"]}
    print(f"\n## {args.case}: {CONFIG} {' '.join(overrides)}\n")
    print(f"| metric ({name}) | value | target |")
    print("|---|---|---|")
    print(f"| forecast RMSE, 1 step | {m['rmse_step_1']:.3g} | |")
    print(f"| forecast RMSE, 8 steps | {m['rmse_step_8']:.3g} | < 1e-3 |")
    for key in ("rmse_0.5lt", "rmse_1lt", "rmse_2lt"):
        if key in m:
            print(f"| forecast RMSE, {key[5:-2]} Lyapunov times | {m[key]:.3g} | |")
    lam = m.get("lyapunov")
    shown = f"{lam:.4f} ({100 * m['lyapunov_rel_error']:.1f}% from 0.906)" if lam else "undefined"
    print(f"| leading Lyapunov exponent | {shown} | within 5% of 0.906 |")
    print(f"| same estimator on the true model | {m['lyapunov_true_estimate']:.4f} | |")
    print(
        f"| histogram distance (mean over variables) | {m['hist_distance_mean']:.3f} "
        f"(truth vs truth: {m.get('hist_distance_truth_halves', float('nan')):.3f}) | |"
    )
    truth = m.get("on_attractor_fraction_truth")
    print(
        f"| fraction of rollout on the attractor | {m['on_attractor_fraction']:.4f}"
        + (f" (true states: {truth:.4f})" if truth is not None else "")
        + " | |"
    )
    left = m.get("left_attractor_at_step")
    print(
        f"| left the attractor | {'at step ' + str(left) if left else 'no'} "
        f"({m['rollout_steps']} steps kept) | |"
    )
    if "train_states_rmse" in m:
        print(
            f"| training states vs clean: noisy data / estimated | {m['train_data_rmse']:.3g} / "
            f"{m['train_states_rmse']:.3g} | |"
        )
    print("\nstage wall times (s):", stages, f"total {wall:.1f}")
    print(
        json.dumps({"case": args.case, "metrics": m, "stages_s": stages, "wall_s": round(wall, 1)})
    )


if __name__ == "__main__":
    main()
