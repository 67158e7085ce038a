"""Score another DA tool's twin experiment with geodl: convert its arrays to a twin file.

Run: python examples/twin_file.py [--out DIR]

A DA package such as DAPPER gives a twin experiment as two arrays: the truth ``xx`` at every model
step, shape ``(K + 1, D)``, and the observations ``yy`` at the observation times only, shape
``(Ko, P)``, every ``dko`` steps from step ``dko``, of the components ``obs_inds``. A geodl twin
file holds both on the model's time grid: ``truth(time, component)`` and ``obs(time, component)``
with NaN wherever nothing was observed, the model step in the global attribute ``dt`` (an
optional leading ``trajectory`` dim holds several experiments). This script makes such arrays
(here with geodl's own simulator, standing in for the other tool's output), converts them, writes
``twin.nc`` and scores it with the assimilation task: ``--set data.path=twin.nc``.
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from geodl.pipeline import run_experiment
from geodl.sim import simulate_lorenz
from geodl.tasks import load_config


def to_twin_file(
    xx: np.ndarray, yy: np.ndarray, dko: int, obs_inds: list[int], dt: float, path: Path
) -> Path:
    """Write the twin file of truth ``xx`` ``(K + 1, D)`` and observations ``yy`` ``(Ko, P)``."""
    obs = np.full_like(xx, np.nan)
    steps = dko * np.arange(1, len(yy) + 1)  # observation k is at model step dko (k + 1)
    obs[np.ix_(steps, obs_inds)] = yy
    ds = xr.Dataset(
        {
            "truth": (("time", "component"), xx, {"long_name": "true state"}),
            "obs": (("time", "component"), obs, {"long_name": "observations (NaN: none)"}),
        },
        coords={"time": ("time", dt * np.arange(len(xx)), {"units": "1"})},
        attrs={"dt": dt, "source": "converted from another DA tool's (xx, yy) arrays"},
    )
    ds.to_netcdf(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    # Stand-in for the other tool: Lorenz-63, dt 0.01, all components every 25 steps, R = 2 I.
    dt, dko, inds = 0.01, 25, [0, 1, 2]
    xx = simulate_lorenz("lorenz63", n_steps=2000, dt=dt, spinup_steps=1000, seed=42)[0].numpy()
    rng = np.random.default_rng(5)
    yy = xx[dko::dko][:, inds] + 2**0.5 * rng.standard_normal((len(xx[dko::dko]), len(inds)))
    path = to_twin_file(xx, yy, dko, inds, dt, out / "twin.nc")
    cfg, exp = load_config(
        "configs/l63_assimilation_quick.yaml",
        [
            f"data.path={path}",
            "observe.noise_std=1.4142135623730951",
            "evaluate.methods=[linear, threedvar, enkf_n, enks]",
            "evaluate.burn_in=200",
            "evaluate.enkf.lag=25",
        ],
    )
    run_experiment(cfg, exp, out / "run", echo=lambda s: None)
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    for name, m in metrics["methods"].items():
        if name == "observations":
            continue
        scores = " ".join(f"{k} {m[k]:.3f}" for k in ("rmse_a", "rmse_s") if k in m)
        print(name, scores)


if __name__ == "__main__":
    main()
