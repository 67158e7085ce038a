"""Twin data-assimilation benchmarks: L63 (Sakov 2012 and 4DVarNet protocols) and L96.

Usage (from the repository root):

    .venv/bin/python benchmarks/assimilation.py --case l63_sakov     # every 25 steps, noise var 2
    .venv/bin/python benchmarks/assimilation.py --case l63_4dvarnet  # every 8 steps, windows 200
    .venv/bin/python benchmarks/assimilation.py --case l96           # 40 vars, every 0.05, unit noise
    .venv/bin/python benchmarks/assimilation.py --case l63_sakov --set train.max_epochs=5

Each case runs the assimilation experiment (geodl.tasks.assimilation) from its config with the
overrides below into ``--out`` (default ``runs/bench_assimilation/CASE``), then prints the
DAPPER-style table (RMSE mean ± std over trajectories, at analysis times and over the window, after
the burn-in), the tuned EnKF inflation and 3D-Var background scale (all scores tried), the wall
time of each stage, and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from geodl.pipeline import run_experiment
from geodl.tasks import load_config
from geodl.tasks.assimilation_report import dapper_table

CASES = {
    "l63_sakov": ("configs/l63_assimilation.yaml", []),
    "l63_4dvarnet": (
        "configs/l63_assimilation.yaml",
        ["observe.every=8", "experiment.name=l63_assimilation_every8"],
    ),
    "l96": ("configs/l96_assimilation.yaml", []),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=sorted(CASES), required=True)
    p.add_argument("--out", default=None)
    p.add_argument("--set", action="append", default=[], dest="overrides")
    args = p.parse_args()
    path, overrides = CASES[args.case]
    cfg, exp = load_config(path, [*overrides, *args.overrides])
    out = Path(args.out or f"runs/bench_assimilation/{args.case}")
    t0 = time.perf_counter()
    result = run_experiment(cfg, exp, out, force_all=True)
    wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"\n## {args.case}: {path} {' '.join(overrides + args.overrides)}\n")
    print(dapper_table(metrics))
    stages = {s["name"]: s["duration_s"] for s in result.manifest["stages"]}
    print("stage wall times (s):", stages, f"total {wall:.1f}")
    enkf = metrics["methods"].get("enkf", {})
    print("enkf inflation / 3D-Var B scale tuning (analysis RMSE):", metrics.get("enkf_tuning"))
    print(
        json.dumps(
            {
                "case": args.case,
                "methods": {
                    k: {
                        m: v[m] for m in ("rmse", "rmse_analysis", "rmse_analysis_dapper") if m in v
                    }
                    for k, v in metrics["methods"].items()
                },
                "enkf_inflation": enkf.get("inflation"),
                "threedvar_scale": metrics["methods"].get("threedvar", {}).get("background_scale"),
                "stages_s": stages,
                "wall_s": round(wall, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
