"""Learn Lorenz-63 from noisy trajectories, then assimilate observations with the learned model.

Run: python examples/dynamics_api.py [--epochs N] [--lbfgs N]
The dynamics are learned from trajectories with noise std 0.5 (the clean states are estimated
jointly with the model); the learned model then serves as the forecast model of an ETKF on a new,
sparsely observed trajectory, scored against the same ETKF with the true model.
"""

import argparse
import warnings

import numpy as np

import geodl.assimilation
import geodl.dynamics
from geodl.tasks.simulate import lorenz_dataset


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lbfgs", type=int, default=200)
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    rng = np.random.default_rng(0)
    clean = lorenz_dataset("lorenz63", n_trajectories=4, n_steps=1000, dt=0.01, seed=1)["state"]
    noisy = clean + 0.5 * rng.standard_normal(clean.shape)
    model = geodl.dynamics.fit(
        noisy,
        model={"estimate_states": True, "lbfgs_iter": args.lbfgs, "stride": 2},
        train={"max_epochs": args.epochs},
    )
    err = lambda a, b: float(np.sqrt(((a - b) ** 2).mean()))  # noqa: E731
    print(
        f"states   rmse noisy {err(noisy[:3], clean[:3]):.3f} estimated "
        f"{err(model.states.values, clean[:3].values):.3f}"
    )
    print(f"lyapunov learned {model.lyapunov(n_steps=3000, n_transient=500):.3f} (true 0.906)")

    truth = lorenz_dataset("lorenz63", n_trajectories=1, n_steps=2000, dt=0.01, seed=2)["state"]
    truth = truth.isel(trajectory=0)
    every = np.arange(truth.sizes["time"]) % 8 == 0
    obs = (truth + 2**0.5 * rng.standard_normal(truth.shape)).where(every[:, None])
    obs.attrs["dt"] = 0.01
    for name, dyn in (("true", "lorenz63"), ("learned", model)):
        out = geodl.assimilation.assimilate(
            obs, obs_std=2**0.5, model=dyn, method="enkf", inflation=1.05
        )
        s = geodl.assimilation.score(out["analysis"], truth, obs=obs, burn_in=200)
        print(f"enkf-{name} rmse {s['rmse']:.3f} rmse_analysis {s['rmse_analysis']:.3f}")


if __name__ == "__main__":
    main()
