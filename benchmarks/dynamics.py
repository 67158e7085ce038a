"""Dynamics-learning benchmarks on Lorenz-63: identification from clean and from noisy data.

Usage (from the repository root):

    .venv/bin/python benchmarks/dynamics.py --case bilinear_clean   # the identification target
    .venv/bin/python benchmarks/dynamics.py --case bilinear_noisy   # noise std 0.5 on the train data
    .venv/bin/python benchmarks/dynamics.py --case bilinear_noisy_states  # + joint state estimation
    .venv/bin/python benchmarks/dynamics.py --case node_rk4_clean   # MLP neural ODE, RK4
    .venv/bin/python benchmarks/dynamics.py --case bilinear_clean --set evaluate.lyapunov_steps=20000
    # known physics on noisy, sparse data: pure MLP field vs + the known linear terms vs + the
    # physics residual, 3 seeds each (mean +- std)
    .venv/bin/python benchmarks/dynamics.py --case node_sparse node_sparse_linear \
        node_sparse_residual node_sparse_linear_residual --seeds 0 1 2
    # the physics residual from half the data against the pure fit from all of it
    .venv/bin/python benchmarks/dynamics.py --case node_sparse node_sparse_half \
        node_sparse_residual_half --seeds 0 1 2

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

import numpy as np

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
#: noisy, sparse data (noise std 0.5, two training trajectories of 1000 steps) for an MLP neural
#: ODE: alone, with the known linear terms of Lorenz-63 (model.physics), with the physics residual
#: in the loss (model.residual_weight), and with both
SPARSE = [
    "simulate.noise_std=0.5",
    "simulate.n_train_trajectories=2",
    "simulate.n_steps=1000",
    "model.kind=neural_ode",
    "model.init_scale=0.01",
    "model.lbfgs_iter=300",
]
CASES |= {
    "node_sparse": SPARSE,
    "node_sparse_linear": [*SPARSE, "model.physics=lorenz63"],
    "node_sparse_residual": [*SPARSE, "model.residual_weight=1.0"],
    "node_sparse_linear_residual": [*SPARSE, "model.physics=lorenz63", "model.residual_weight=1.0"],
    # half the data (one training trajectory instead of two): does the residual make up for it?
    "node_sparse_half": [*SPARSE, "simulate.n_train_trajectories=1"],
    "node_sparse_residual_half": [
        *SPARSE,
        "simulate.n_train_trajectories=1",
        "model.residual_weight=1.0",
    ],
}
SUMMARY = ("rmse_step_1", "rmse_step_8", "lyapunov", "hist_distance_mean", "on_attractor_fraction")


def _run(case: str, overrides: list[str], out: Path) -> tuple[dict, dict, float]:
    cfg, exp = load_config(CONFIG, overrides)
    t0 = time.perf_counter()
    result = run_experiment(cfg, exp, out)
    wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    (name, m), *_ = metrics["methods"].items()
    stages = {s["name"]: s["duration_s"] for s in result.manifest["stages"]}
    return {**m, "method": name}, stages, wall


def _summary(rows: dict[str, list[dict]]) -> None:
    print("\n| case | " + " | ".join(SUMMARY) + " |")
    print("|---|" + "---|" * len(SUMMARY))
    for case, ms in rows.items():
        cells = []
        for key in SUMMARY:
            v = np.array([np.nan if m.get(key) is None else m[key] for m in ms], dtype=float)
            cells.append(
                f"{np.nanmean(v):.4g} ± {np.nanstd(v):.2g}" if len(v) > 1 else f"{v[0]:.4g}"
            )
        print(f"| {case} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=sorted(CASES), required=True, nargs="+")
    p.add_argument("--out", default=None)
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="one run per seed (experiment.seed and simulate.seed), then mean ± std per case",
    )
    args = p.parse_args()
    if args.seeds is None and len(args.case) == 1:
        _report(args.case[0], args)
        return
    rows: dict[str, list[dict]] = {}
    for case in args.case:
        for seed in args.seeds or [0]:
            seeded = [f"experiment.seed={seed}", f"simulate.seed={seed}"]
            out = Path(args.out or "runs/bench_dynamics") / case / f"seed{seed}"
            m, stages, wall = _run(case, [*CASES[case], *args.overrides, *seeded], out)
            rows.setdefault(case, []).append(m)
            print(json.dumps({"case": case, "seed": seed, "metrics": m, "wall_s": round(wall, 1)}))
    _summary(rows)


def _report(case: str, args: argparse.Namespace) -> None:
    overrides = [*CASES[case], *args.overrides]
    out = Path(args.out or f"runs/bench_dynamics/{case}")
    m, stages, wall = _run(case, overrides, out)
    name = m["method"]
    print(f"\n## {case}: {CONFIG} {' '.join(overrides)}\n")
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
    print(json.dumps({"case": case, "metrics": m, "stages_s": stages, "wall_s": round(wall, 1)}))


if __name__ == "__main__":
    main()
