"""Mapping benchmark: run a mapping experiment over several seeds and check the issue's targets.

Usage::

    python benchmarks/mapping.py --config configs/ssh_mapping_quick.yaml --out runs/bench_quick \
        [--seeds 0 1 2] [--regime quick|literature] [--set key=value ...] [--json OUT]
    python benchmarks/mapping.py --run-dir runs/bench_quick/seed0 [--run-dir ...]   # no re-run

Each seed sets ``experiment.seed``, ``simulate.seed`` and ``obs.seed``: another QG realisation,
other observation noise and another training initialisation, so the figures are not tied to one
twin. Prints, for every method, the test-period metrics as mean +- std over the seeds, the ratios
of RMSE and lambda_x to the tuned OI of the same run, the OI's tuned scales, each stage's wall
time, and whether each target holds (on the seed means):

- quick regime: best learned mu >= tuned OI mu + 0.03;
- literature regime: best learned RMSE <= 0.6 x tuned OI's and lambda_x <= 0.7 x tuned OI's;
- both: 4DVarNet mu >= UNet mu; every method with a std: 68% coverage in [0.63, 0.73], 95%
  coverage in [0.92, 0.97]; the quick regime end to end under 10 minutes (per seed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

COLS = ["rmse", "mu", "lambda_x", "lambda_t", "coverage_68", "coverage_95", "crps"]
RATIOS = ["rmse_ratio_oi", "lambda_x_ratio_oi", "mu_gain_oi"]


def _run(config: str, out: Path, sets: list[str]) -> float:
    cmd = [sys.executable, "-m", "geodl.cli", "run", config, "--out", str(out), "--force"]
    for item in sets:
        cmd += ["--set", item]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def _stats(runs: list[dict], method: str, key: str) -> tuple[float, float] | None:
    values = [r["methods"][method][key] for r in runs if key in r["methods"].get(method, {})]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values))


def targets(runs: list[dict], walls: list[float], regime: str) -> list[tuple[str, bool, str]]:
    """(target, met?, detail) on the means over seeds."""
    out: list[tuple[str, bool, str]] = []
    methods = runs[0]["methods"]
    learned = [m for m in methods if m != "oi"]

    def mean(m: str, k: str) -> float:
        return _stats(runs, m, k)[0]  # type: ignore[index]

    if "oi" in methods and learned:
        best = max(learned, key=lambda m: mean(m, "mu"))
        if regime == "quick":
            gain = mean(best, "mu") - mean("oi", "mu")
            out.append(("best learned mu >= tuned OI + 0.03", gain >= 0.03, f"{best} {gain:+.3f}"))
        else:
            r = mean(best, "rmse_ratio_oi")
            out.append(("best learned RMSE <= 0.6 x tuned OI", r <= 0.6, f"{best} {r:.2f}"))
            lam = min(mean(m, "lambda_x_ratio_oi") for m in learned)
            out.append(("best learned lambda_x <= 0.7 x tuned OI", lam <= 0.7, f"{lam:.2f}"))
    if "fourdvarnet" in methods and "unet" in methods:
        d = mean("fourdvarnet", "mu") - mean("unet", "mu")
        out.append(("4DVarNet mu >= UNet mu", d >= 0, f"{d:+.3f}"))
    for name, values in methods.items():
        if "coverage_68" in values:
            c68, c95 = mean(name, "coverage_68"), mean(name, "coverage_95")
            out.append((f"{name} coverage_68 in [0.63, 0.73]", 0.63 <= c68 <= 0.73, f"{c68:.3f}"))
            out.append((f"{name} coverage_95 in [0.92, 0.97]", 0.92 <= c95 <= 0.97, f"{c95:.3f}"))
    if regime == "quick" and walls:
        w = max(walls)
        out.append(("end to end under 10 min (slowest seed)", w < 600, f"{w:.0f} s"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config")
    p.add_argument("--out", type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--regime", choices=["quick", "literature"], default="quick")
    p.add_argument("--run-dir", type=Path, action="append", default=[])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if not args.run_dir and not (args.config and args.out):
        p.error("give --config and --out (run it) or --run-dir (read existing runs)")
    dirs, walls = list(args.run_dir), []
    if not dirs:
        for seed in args.seeds:
            run = args.out / f"seed{seed}"
            sets = [f"experiment.seed={seed}", f"simulate.seed={seed}", f"obs.seed={seed}"]
            walls.append(_run(args.config, run, sets + args.set))
            dirs.append(run)
    runs = [json.loads((d / "metrics.json").read_text()) for d in dirs]
    manifests = [json.loads((d / "manifest.json").read_text()) for d in dirs]
    if not walls:
        walls = [sum(s["duration_s"] for s in m["stages"]) for m in manifests]
    units = runs[0]["units"]
    print(f"{len(runs)} run(s): {', '.join(map(str, dirs))}\n")
    cols = COLS + RATIOS
    print("| method | " + " | ".join(f"{c} [{units.get(c, '')}]" for c in cols) + " |")
    print(f"|---|{'---|' * len(cols)}")
    for name in runs[0]["methods"]:
        cells = []
        for c in cols:
            s = _stats(runs, name, c)
            cells.append("" if s is None else f"{s[0]:.4g} ± {s[1]:.2g}")
        print(f"| {name} | {' | '.join(cells)} |")
    for d, r in zip(dirs, runs, strict=True):
        if "oi_tuning" in r:
            t = r["oi_tuning"]
            chosen = t["params"]
            edge = t.get("tuning", {}).get("on_edge")
            print(
                f"\n{d}: OI lx {chosen['lx']:.1f} km, lt {chosen['lt']:.1f} days, noise "
                f"{chosen['noise_std']:.3g} (estimated lx {t['estimated'].get('lx', 0):.1f}, lt "
                f"{t['estimated'].get('lt', 0):.1f}; {len(t.get('tuning', {}).get('grid', []))} "
                f"points searched, on edge: {edge})"
            )
    print("\n| stage | seconds (mean over seeds) |\n|---|---|")
    for i, stage in enumerate(manifests[0]["stages"]):
        secs = [m["stages"][i]["duration_s"] for m in manifests]
        print(f"| {stage['name']} | {np.mean(secs):.1f} |")
    print(
        f"\nwall time per seed: {', '.join(f'{w:.0f}' for w in walls)} s on "
        f"{manifests[0]['environment']['cpu']}"
    )
    checks = targets(runs, walls, args.regime)
    print("\n| target | met | measured |\n|---|---|---|")
    for name, met, detail in checks:
        print(f"| {name} | {'yes' if met else 'NO'} | {detail} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "runs": [str(d) for d in dirs],
                    "metrics": runs,
                    "wall_s": walls,
                    "environment": manifests[0]["environment"],
                    "targets": [{"target": n, "met": m, "measured": d} for n, m, d in checks],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
