"""What each loss family buys on the mapping twin: the same UNet, data and budget, trained with
point-wise, gradient, distribution-based (sliced Wasserstein) and adversarial terms (a patch
discriminator on the fields, or one on their power spectra).

Usage (from the repository root):

    python benchmarks/loss_families.py --seeds 0 1 2 --out /tmp/lf --json /tmp/lf.json
    python benchmarks/loss_families.py --variants mse mse+adversarial@0.3 mse+sliced_wasserstein@10

For each seed (``experiment.seed``, ``simulate.seed``, ``obs.seed``) the quick mapping config
runs once per variant with ``methods: [unet]`` in one run directory (the simulate and prepare
stages are computed once and reused by the cache), and each variant's ``metrics.json`` is kept.
Besides RMSE, mu and lambda_x, it measures the small-scale energy ratio: the energy of the
reconstruction's x-spectrum in the upper half of the resolved wavenumbers over the truth's, on
the test period (MSE-trained maps are too smooth: a ratio below 1), and the CRPS of the map
as a point forecast, which is its mean absolute error (Gneiting & Raftery 2007); the UNet
gives no std, so there is no coverage to score.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/ssh_mapping_quick.yaml"
VARIANTS = {
    "mse": ["unet.loss={mse: 1.0}"],
    "mse+grad": ["unet.loss={mse: 1.0, grad: 0.1}"],
    "mse+sliced_wasserstein": ["unet.loss={mse: 1.0, sliced_wasserstein: 0.1}"],
    "mse+adversarial": [
        "unet.loss={mse: 1.0}",
        "unet.adversarial={weight: 0.01, width: 16, n_layers: 3, r1_weight: 0.1}",
    ],
    "mse+adversarial_spectra": [
        "unet.loss={mse: 1.0}",
        "unet.adversarial={weight: 0.01, on: spectra, width: 64, spectrum_bins: 16, r1_weight: 0.1}",
    ],
}

WEIGHTED = ("mse+sliced_wasserstein", "mse+adversarial", "mse+adversarial_spectra")


def small_scale_ratio(pred: np.ndarray, truth: np.ndarray) -> float:
    """Energy of the x-spectrum at the upper half of the wavenumbers, reconstruction / truth."""
    ok = np.isfinite(pred) & np.isfinite(truth)
    p, t = np.where(ok, pred, 0.0), np.where(ok, truth, 0.0)
    p, t = p - p.mean(-1, keepdims=True), t - t.mean(-1, keepdims=True)
    ep = (np.abs(np.fft.rfft(p, axis=-1)) ** 2).mean(axis=tuple(range(p.ndim - 1)))
    et = (np.abs(np.fft.rfft(t, axis=-1)) ** 2).mean(axis=tuple(range(t.ndim - 1)))
    k = len(et) // 2
    return float(ep[k:].sum() / et[k:].sum())


def variant_sets(variant: str) -> list[str]:
    """The ``--set`` overrides of a variant: a name of :data:`VARIANTS`, or ``NAME@W`` for the
    sliced-Wasserstein or adversarial variant with its term's weight set to ``W``."""
    name, _, weight = variant.partition("@")
    if name not in VARIANTS or (weight and name not in WEIGHTED):
        raise SystemExit(
            f"unknown variant '{variant}'; choose {', '.join(VARIANTS)} (@W: {WEIGHTED})"
        )
    if not weight:
        return VARIANTS[name]
    if name == "mse+sliced_wasserstein":
        return [f"unet.loss={{mse: 1.0, sliced_wasserstein: {float(weight)}}}"]
    return [*VARIANTS[name], f"unet.adversarial.weight={float(weight)}"]


def run(seed: int, variant: str, out: Path, extra: list[str]) -> dict:
    sets = [f"experiment.seed={seed}", f"simulate.seed={seed}", f"obs.seed={seed}"]
    sets += ["methods=[unet]", *variant_sets(variant), *extra]
    cmd = [sys.executable, "-m", "geodl.cli", "run", CONFIG, "--out", str(out)]
    subprocess.run([*cmd, *(x for s in sets for x in ("--set", s))], check=True, cwd=ROOT)
    m = json.loads((out / "metrics.json").read_text())["methods"]["unet"]
    with (
        xr.open_dataset(out / "predictions" / "unet.nc") as p,
        xr.open_dataset(out / "truth.nc") as t,
    ):
        pred = p["ssh"].values
        truth = t["ssh"].sel(time=p["time"]).values
    keep = ("rmse", "mu", "lambda_x")
    ok = np.isfinite(pred) & np.isfinite(truth)
    return {
        **{k: m[k] for k in keep},
        "small_scale_ratio": small_scale_ratio(pred, truth),
        "crps": float(np.abs(pred - truth)[ok].mean()),  # of a point forecast: its MAE
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        help=f"names of {', '.join(VARIANTS)}; NAME@W sets the weight of {' or '.join(WEIGHTED)}",
    )
    ap.add_argument("--out", default="runs/bench_loss_families")
    ap.add_argument("--json", default=None)
    ap.add_argument("--set", action="append", default=[], dest="extra", help="for every variant")
    args = ap.parse_args()
    rows: dict[str, list[dict]] = {v: [] for v in args.variants}
    for seed in args.seeds:
        for v in args.variants:
            r = run(seed, v, Path(args.out) / f"seed{seed}", args.extra)
            rows[v].append(r)
            print(json.dumps({"seed": seed, "variant": v, **r}), flush=True)
    keys = ("rmse", "mu", "lambda_x", "small_scale_ratio", "crps")
    print("\n| loss | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for v, rs in rows.items():
        cells = [
            f"{np.mean([r[k] for r in rs]):.4g} ± {np.std([r[k] for r in rs]):.2g}" for k in keys
        ]
        print(f"| {v} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
