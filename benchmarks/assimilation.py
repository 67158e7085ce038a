"""Twin data-assimilation benchmarks: L63 (Sakov 2012 and 4DVarNet protocols) and L96.

Usage (from the repository root):

    .venv/bin/python benchmarks/assimilation.py --case l63_sakov     # every 25 steps, noise var 2
    .venv/bin/python benchmarks/assimilation.py --case l63_4dvarnet  # every 8 steps, windows 200
    .venv/bin/python benchmarks/assimilation.py --case l96           # 40 vars, every 0.05, unit noise
    .venv/bin/python benchmarks/assimilation.py --case l63_sakov --seeds 0 1 2 --baselines

Each seed is an independent experiment: a new truth, new observations, new training data and
initial weights for the learned method, a new initial ensemble and a new tuning twin (the seeds
of every simulated set move together, so that none equals another). Each runs the assimilation
task (geodl.tasks.assimilation) from its config into ``--out/seed<k>`` (default
``runs/bench_assimilation/CASE``); the script then prints, in DAPPER's convention, the filters'
``rmse_a`` and the smoothers' ``rmse_s`` as mean ± std over the experiments, the tuned
parameters of each experiment, the wall time of each stage, and a JSON line. ``--baselines``
leaves the learned methods out (no training).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from geodl.methods.assimilation import METHODS
from geodl.pipeline import run_experiment
from geodl.tasks import load_config

CASES = {
    "l63_sakov": ("configs/l63_assimilation.yaml", []),
    "l63_4dvarnet": (
        "configs/l63_assimilation.yaml",
        ["observe.every=8", "experiment.name=l63_assimilation_every8"],
    ),
    "l96": ("configs/l96_assimilation.yaml", []),
}


def seed_overrides(k: int) -> list[str]:
    """The seeds of independent experiment ``k``: every seed moves by 10 k, so the truth
    (multiples of 10) never meets the other sets (which are not)."""
    return [
        f"simulate.seed={10 * k}",
        f"observe.seed={10 * k + 1}",
        f"fourdvarnet.seed={100 + 10 * k + 3}",
        f"train.seed={k}",
        f"evaluate.enkf.seed={k}",
        f"evaluate.tuning_seed={777 + 10 * k}",
        f"evaluate.threedvar.clim_seed={12345 + 10 * k}",
    ]


def summary(runs: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{method: {score: (mean, std over experiments)}}`` for rmse_a, rmse_s, rmse_u, spread_a."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name in runs[0]["methods"]:
        if name == "observations":
            continue
        for key in ("rmse_a", "rmse_s", "rmse_u", "spread_a"):
            vals = [r["methods"][name][key] for r in runs if key in r["methods"][name]]
            if len(vals) == len(runs):
                out.setdefault(name, {})[key] = (float(np.mean(vals)), float(np.std(vals)))
    return out


def tables(stats: dict[str, dict[str, tuple[float, float]]], n: int) -> str:
    def cell(s: dict[str, tuple[float, float]], key: str) -> str:
        return f"{s[key][0]:.3f} ± {s[key][1]:.3f}" if key in s else "-"

    lines = [f"Filters, rmse_a (mean ± std over {n} experiments):", ""]
    lines += ["| method | rmse_a | spread_a |", "|---|---|---|"]
    lines += [
        f"| {k} | {cell(s, 'rmse_a')} | {cell(s, 'spread_a')} |"
        for k, s in stats.items()
        if "rmse_a" in s
    ]
    lines += ["", f"Smoothers, rmse_s (mean ± std over {n} experiments):", ""]
    lines += ["| method | rmse_s | rmse_u |", "|---|---|---|"]
    lines += [
        f"| {k} | {cell(s, 'rmse_s')} | {cell(s, 'rmse_u')} |"
        for k, s in stats.items()
        if "rmse_s" in s
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=sorted(CASES), required=True)
    p.add_argument("--out", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--baselines", action="store_true", help="leave the learned methods out")
    p.add_argument("--set", action="append", default=[], dest="overrides")
    args = p.parse_args()
    path, overrides = CASES[args.case]
    root = Path(args.out or f"runs/bench_assimilation/{args.case}")
    runs, walls, tuned = [], [], []
    for k in args.seeds:
        cfg, exp = load_config(path, [*overrides, *seed_overrides(k), *args.overrides])
        if args.baselines:
            methods = [m for m in cfg.evaluate.methods if not METHODS[m].learned]
            cfg = cfg.model_copy(
                update={"evaluate": cfg.evaluate.model_copy(update={"methods": methods})}
            )
        out = root / f"seed{k}"
        t0 = time.perf_counter()
        result = run_experiment(cfg, exp, out, force_all=True)
        walls.append(round(time.perf_counter() - t0, 1))
        metrics = json.loads((out / "metrics.json").read_text())
        runs.append(metrics)
        stages = {s["name"]: s["duration_s"] for s in result.manifest["stages"]}
        params = {
            name: {p: m[p] for p in ("inflation", "background_scale") if p in m}
            for name, m in metrics["methods"].items()
        }
        tuned.append({k2: v for k2, v in params.items() if v})
        print(f"seed {k}: stages (s) {stages}; tuned {tuned[-1]} on {metrics['tuned_on']}")
        print("  tuning scores:", metrics["tuning"])
    stats = summary(runs)
    print(f"\n## {args.case}: {path} {' '.join(overrides + args.overrides)}; seeds {args.seeds}\n")
    print(tables(stats, len(runs)))
    print("wall times per experiment (s):", walls)
    print(
        json.dumps(
            {
                "case": args.case,
                "seeds": args.seeds,
                "scores": stats,
                "tuned": tuned,
                "wall_s": walls,
            }
        )
    )


if __name__ == "__main__":
    main()
