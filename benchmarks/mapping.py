"""Mapping benchmark: run (or read) a mapping experiment and check the issue's targets.

Usage::

    python benchmarks/mapping.py --config configs/ssh_mapping_quick.yaml --out runs/bench_quick \
        [--set key=value ...] [--json OUT]
    python benchmarks/mapping.py --run-dir runs/bench_quick          # an existing run, no re-run

Prints the metrics table (every method, test period), each stage's wall time from the manifest, the
learned methods' training throughput, and whether each target holds:

- 4DVarNet mu >= OI mu + 0.05 and lambda_x <= 0.6 x OI's lambda_x;
- every method with a std: 68% coverage in [0.63, 0.73], 95% coverage in [0.92, 0.97];
- the whole run under 10 minutes (quick config).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def _run(config: str, out: Path, sets: list[str]) -> float:
    cmd = [sys.executable, "-m", "geodl.cli", "run", config, "--out", str(out), "--force"]
    for item in sets:
        cmd += ["--set", item]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def targets(metrics: dict, wall_s: float | None) -> list[tuple[str, bool | None, str]]:
    """(target, met?, detail) for every target of the issue."""
    m = metrics["methods"]
    out: list[tuple[str, bool | None, str]] = []
    if "oi" in m and "fourdvarnet" in m:
        oi, fv = m["oi"], m["fourdvarnet"]
        gain = fv["mu"] - oi["mu"]
        out.append(("4DVarNet mu >= OI mu + 0.05", gain >= 0.05, f"gain {gain:+.3f}"))
        ratio = fv["lambda_x"] / oi["lambda_x"]
        out.append(("4DVarNet lambda_x <= 0.6 x OI", ratio <= 0.6, f"ratio {ratio:.2f}"))
    for name, values in m.items():
        if "coverage_68" in values:
            c68, c95 = values["coverage_68"], values["coverage_95"]
            out.append((f"{name} coverage_68 in [0.63, 0.73]", 0.63 <= c68 <= 0.73, f"{c68:.3f}"))
            out.append((f"{name} coverage_95 in [0.92, 0.97]", 0.92 <= c95 <= 0.97, f"{c95:.3f}"))
    if wall_s is not None:
        out.append(("end to end under 10 min", wall_s < 600, f"{wall_s:.0f} s"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config")
    p.add_argument("--out", type=Path)
    p.add_argument("--run-dir", type=Path)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.run_dir is None and not (args.config and args.out):
        p.error("give --config and --out (run it) or --run-dir (read an existing run)")
    wall = None
    run_dir = args.run_dir or args.out
    if args.run_dir is None:
        wall = _run(args.config, args.out, args.set)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    if wall is None:
        wall = sum(s["duration_s"] for s in manifest["stages"])
    units = metrics["units"]
    cols = ["rmse", "mu", "mu_std", "lambda_x", "lambda_t", "coverage_68", "coverage_95", "crps"]
    header = " | ".join(f"{c} [{units.get(c, '')}]" for c in cols)
    print(f"| method | {header} |")
    print(f"|---|{'---|' * len(cols)}")
    for name, values in metrics["methods"].items():
        cells = [f"{values[c]:.4g}" if c in values else "" for c in cols]
        print(f"| {name} | {' | '.join(cells)} |")
    print("\n| stage | status | seconds |\n|---|---|---|")
    for stage in manifest["stages"]:
        print(f"| {stage['name']} | {stage['status']} | {stage['duration_s']:.1f} |")
    print(f"\nwall time: {wall:.0f} s on {manifest['environment']['cpu']}")
    checks = targets(metrics, wall)
    print("\n| target | met | measured |\n|---|---|---|")
    for name, met, detail in checks:
        print(f"| {name} | {'yes' if met else 'NO'} | {detail} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "metrics": metrics,
                    "stages": manifest["stages"],
                    "wall_s": wall,
                    "environment": manifest["environment"],
                    "targets": [{"target": n, "met": m, "measured": d} for n, m, d in checks],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
