"""Map a sparsely observed field with geodl's Python API (xarray in, xarray out).

Run: python examples/mapping_api.py [--epochs N]
A synthetic moving-wave field stands in for SSH; 15% of its points are observed each day with
noise. Optimal interpolation and DINCAE are fitted on the first 60 days and reconstruct the last 20,
and both are scored the same way with geodl.metrics.score.
"""

import argparse
import warnings

import numpy as np

import geodl.mapping
import geodl.metrics
from geodl.testing import make_field


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args()
    truth = make_field(nt=80, ny=32, nx=32, grid="projected", land=False)["ssh"]  # (time, y, x)
    rng = np.random.default_rng(0)
    noisy = truth + 0.05 * rng.standard_normal(truth.shape)
    obs = noisy.where(rng.random(truth.shape) < 0.15)  # NaN where unobserved

    train, test = slice(0, 60), slice(60, 80)
    models = {
        "oi": geodl.mapping.fit(
            obs[train],
            truth[train],
            method="oi",
            noise_std=0.05,
            max_obs=500,  # scales tuned on the last 20% of the training days
        ),
        "dincae": geodl.mapping.fit(
            obs[train],
            truth[train],
            method="dincae",
            noise_std=0.05,
            patch={"time": 4, "y": 32, "x": 32},
            model={"depth": 2, "width": 8},
            mask_swap=0.5,
            train={"max_epochs": args.epochs, "batch_size": 8, "lr": 3e-3},
        ),
    }
    for name, model in models.items():
        out = model.reconstruct(obs[test])  # xr.Dataset: mean, std
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # resolution bounds on this tiny domain
            s = geodl.metrics.score(out["mean"], truth[test], std=out["std"])
        print(
            f"{name:7s} rmse {s['rmse']:.3f}  mu {s['mu']:.3f}  coverage_68 {s['coverage_68']:.2f}"
        )


if __name__ == "__main__":
    main()
