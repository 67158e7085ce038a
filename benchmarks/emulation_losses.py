"""What the adversarial term buys the QG emulator: the same CNN, data and budget, trained with the
rollout loss alone or with a discriminator of its rolled-out states (on the fields, or on their
power spectra); scored on 10-day forecasts and on the spectrum and stability of long free
rollouts.

Usage (from the repository root):

    OMP_NUM_THREADS=1 python benchmarks/emulation_losses.py --seeds 0 1 2 --out /tmp/el
    python benchmarks/emulation_losses.py --variants rollout rollout+adversarial@0.01 \\
        rollout+adversarial_spectra@0.01 --set cnn.input_noise=0

For each seed (``experiment.seed`` and ``simulate.seed``: a new simulated run and a new
initialisation) the quick emulation config runs once per variant with ``methods: [cnn]``, each in
its own run directory. Per variant it prints the mean ± std over seeds of: the forecast RMSE at 1,
5 and 10 days (normalised: 1 = one training standard deviation), the KE-spectrum error of the
long free rollout (mean abs log10 of its KE spectrum over the truth's, days 180-360), its KE over
the truth's, and the day it left the bound (if it did), then a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/qg_emulation_quick.yaml"
DISC = "width: 16, n_layers: 2, r1_weight: 0.1"
VARIANTS = {
    "rollout": [],
    "rollout+adversarial": [f"cnn.adversarial={{weight: 0.01, {DISC}}}"],
    "rollout+adversarial_spectra": [
        "cnn.adversarial={weight: 0.01, on: spectra, width: 64, spectrum_bins: 16, r1_weight: 0.1}"
    ],
}
WEIGHTED = ("rollout+adversarial", "rollout+adversarial_spectra")
LEADS = (1, 5, 10)


def variant_sets(variant: str) -> list[str]:
    """The ``--set`` overrides of a variant: a name of :data:`VARIANTS`, or ``NAME@W`` for an
    adversarial variant with its weight set to ``W``."""
    name, _, weight = variant.partition("@")
    if name not in VARIANTS or (weight and name not in WEIGHTED):
        raise SystemExit(
            f"unknown variant '{variant}'; choose {', '.join(VARIANTS)} (@W: {WEIGHTED})"
        )
    sets = VARIANTS[name]
    return [*sets, f"cnn.adversarial.weight={float(weight)}"] if weight else sets


def run(seed: int, variant: str, out: Path, extra: list[str]) -> dict:
    """Run the emulation task for one seed and variant; the scores of its CNN."""
    sets = [f"experiment.seed={seed}", f"simulate.seed={seed}", "methods=[cnn]"]
    sets += ["evaluate.timing_repeats=1", *variant_sets(variant), *extra]
    cmd = [sys.executable, "-m", "geodl.cli", "run", CONFIG, "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run([*cmd, *(x for s in sets for x in ("--set", s))], check=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    m, lead = metrics["methods"]["cnn"], metrics["lead_days"]
    curve = metrics["rmse_vs_lead"]["cnn"]
    row = {
        f"rmse_{d}d": curve[lead.index(d)] if lead.index(d) < len(curve) else None for d in LEADS
    }
    row |= {
        "spectrum_log10_error": m.get("spectrum_log10_error"),
        "ke_ratio": m.get("ke_ratio_to_truth"),
        "diverged_at_day": m["diverged_at_day"] if m.get("diverged") else None,
        "persistence_rmse_10d": metrics["rmse_vs_lead"]["persistence"][lead.index(10)],
        "wall_s": round(wall, 1),
    }
    return row


def summary(rows: list[dict], key: str) -> str:
    vals = [r[key] for r in rows if r[key] is not None]
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.4g}"
    return f"{np.mean(vals):.4g} ± {np.std(vals, ddof=1):.2g}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_emulation_losses")
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    for v in args.variants:
        variant_sets(v)  # refuse a bad name before anything runs
    load0 = os.getloadavg()
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:
        for v in args.variants:
            row = run(seed, v, args.out / f"seed{seed}" / v.replace("@", "_"), args.overrides)
            results.setdefault(v, []).append(row | {"seed": seed})
            print(json.dumps({"variant": v, **results[v][-1]}), flush=True)
    keys = ["rmse_1d", "rmse_5d", "rmse_10d", "spectrum_log10_error", "ke_ratio"]
    print(
        f"\nseeds {args.seeds}; overrides {args.overrides}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in load0)}, at end "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )
    print(f"| variant | {' | '.join(keys)} | left the bound (day) |")
    print(f"|---|{'---|' * (len(keys) + 1)}")
    for v, rows in results.items():
        left = ", ".join(
            f"seed {r['seed']}: {r['diverged_at_day']:g}" for r in rows if r["diverged_at_day"]
        )
        print(f"| {v} | {' | '.join(summary(rows, k) for k in keys)} | {left or 'never'} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
