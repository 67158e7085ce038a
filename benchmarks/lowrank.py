"""Likelihood with a structured covariance on the mapping twin: DINCAE with a diagonal Gaussian
(``nll``) against DINCAE with a rank-R covariance factor over each patch (``lowrank_nll``).

Usage (from the repository root):

    python benchmarks/lowrank.py --seeds 0 1 2 --out /tmp/lr --json /tmp/lr.json

For each seed (``experiment.seed``, ``simulate.seed``, ``obs.seed``) the quick mapping config
runs with ``methods: [dincae]`` once per variant in one run directory (simulate and prepare are
computed once). Besides the pipeline's scores (RMSE, mu, the Gaussian-marginal coverage and CRPS
of ``metrics.json``), each trained model draws ``--members`` maps per test patch
(:func:`geodl.methods.mapping.patch_ensembles`: non-overlapping 64 x 64 patches, 29-day windows
every ``--time-stride`` days) and the ensembles are scored with
:func:`geodl.metrics.ensemble_scores`: ensemble CRPS, coverage, spread-skill ratio, energy
score and variogram score (joint scores: they see whether errors are coherent over a patch).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/ssh_mapping_quick.yaml"
VARIANTS = {
    "diagonal": ["dincae.loss={nll: 1.0}"],
    "lowrank": [
        "dincae.loss={mse: 1.0, lowrank_nll: 1.0}",
        "dincae.model={depth: 2, width: 16, rank: 4}",
    ],
}
PIPELINE = ("rmse", "mu", "coverage_68", "coverage_95", "crps")


def ensemble(
    out: Path, members: int, time_stride: int, seed: int, artifact: str = "dincae.ckpt"
) -> dict[str, float]:
    from geodl.methods.mapping import MappingData, patch_ensembles
    from geodl.metrics import ensemble_scores
    from geodl.tasks import load_config

    cfg, _ = load_config(out / "config.yaml")
    prep = json.loads((out / "prepare.json").read_text())
    data = MappingData.from_prepare(
        prep, out / "truth.nc", out / "obs.nc", variable="ssh", patch=cfg.patch
    )
    ens, truth, shape = patch_ensembles(
        "dincae",
        cfg.dincae,
        data,
        out / "models" / artifact,
        data.splits["test"],
        n_members=members,
        time_stride=time_stride,
        seed=seed,
    )
    return {f"ens_{k}": v for k, v in ensemble_scores(ens, truth, shape).items()}


def factor_off(out: Path, members: int, time_stride: int, seed: int) -> dict[str, float]:
    """The trained low-rank model's ensemble scores with its factor switched off (scale 0) and
    its diagonal std re-scaled on validation alone: the same mean, so the difference to the
    full model is what the factor's coherent errors buy."""
    import torch

    from geodl.data import Normalizer, PatchDataset
    from geodl.methods.mapping import MappingData, _build, _calibrate, patch_geometry
    from geodl.models.outputs import MappingOutput
    from geodl.tasks import load_config
    from geodl.training.checkpoints import load_checkpoint, load_model_weights

    cfg, _ = load_config(out / "config.yaml")
    prep = json.loads((out / "prepare.json").read_text())
    data = MappingData.from_prepare(
        prep, out / "truth.nc", out / "obs.nc", variable="ssh", patch=cfg.patch
    )
    ckpt = load_checkpoint(out / "models" / "dincae.ckpt")
    model = load_model_weights(_build("dincae", cfg.dincae, data), ckpt).eval()

    class Diagonal(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: torch.Tensor) -> MappingOutput:
            o = self.inner(*args)
            return MappingOutput(o.mean, o.log_var)

    size, stride = patch_geometry(data.patch)
    val = PatchDataset(
        data.source, size, stride, split=data.splits["val"], normalizer=Normalizer(data.normalizer)
    )
    scales = _calibrate(Diagonal(model), val, cfg.dincae, 8)
    ckpt["geodl"]["calibration"] = {"diag": scales["diag"], "factor": 0.0}
    torch.save(ckpt, out / "models" / "dincae_factor_off.ckpt")
    scores = ensemble(out, members, time_stride, seed, "dincae_factor_off.ckpt")
    return {**scores, "scale_diag": scales["diag"], "scale_factor": 0.0}


def run(seed: int, variant: str, out: Path, extra: list[str], members: int, stride: int) -> dict:
    sets = [f"experiment.seed={seed}", f"simulate.seed={seed}", f"obs.seed={seed}"]
    sets += ["methods=[dincae]", *VARIANTS[variant], *extra]
    cmd = [sys.executable, "-m", "geodl.cli", "run", CONFIG, "--out", str(out)]
    subprocess.run([*cmd, *(x for s in sets for x in ("--set", s))], check=True, cwd=ROOT)
    m = json.loads((out / "metrics.json").read_text())["methods"]["dincae"]
    import torch

    ckpt = torch.load(out / "models" / "dincae.ckpt", weights_only=True)["geodl"]
    scales = ckpt.get("calibration") or {"diag": 1.0, "factor": 1.0}  # fitted on validation
    return {
        **{k: m[k] for k in PIPELINE},
        **ensemble(out, members, stride, seed),
        **{f"scale_{k}": v for k, v in scales.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--time-stride", type=int, default=14)
    ap.add_argument("--out", default="runs/bench_lowrank")
    ap.add_argument("--json", default=None)
    ap.add_argument("--set", action="append", default=[], dest="extra", help="for every variant")
    ap.add_argument(
        "--factor-off",
        action="store_true",
        help="only score the trained low-rank models in --out with their factor switched off",
    )
    args = ap.parse_args()
    if args.factor_off:
        for seed in args.seeds:
            r = factor_off(Path(args.out) / f"seed{seed}", args.members, args.time_stride, seed)
            print(json.dumps({"seed": seed, "variant": "lowrank, factor off", **r}), flush=True)
        return
    rows: dict[str, list[dict]] = {v: [] for v in args.variants}
    for seed in args.seeds:
        for v in args.variants:
            out = Path(args.out) / f"seed{seed}"
            r = run(seed, v, out, args.extra, args.members, args.time_stride)
            rows[v].append(r)
            print(json.dumps({"seed": seed, "variant": v, **r}), flush=True)
    keys = list(next(iter(rows.values()))[0])
    print("\n| covariance | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for v, rs in rows.items():
        cells = [
            f"{np.mean([r[k] for r in rs]):.4g} ± {np.std([r[k] for r in rs]):.2g}" for k in keys
        ]
        print(f"| {v} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
