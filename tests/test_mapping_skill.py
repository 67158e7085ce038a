"""Skill test: on a small seeded twin, a learned method beats the tuned OI of the same run.

The truth is a field of sharp travelling fronts (tanh profiles a few cells wide): far from the
Gaussian covariance that OI assumes, so that OI, tuned on the validation period, smooths them, and
a UNet that has seen such fields restores their sharpness from the same sparse, noisy points. The
margin is stated below; the test takes about a minute on 2 CPU cores.
"""

import json

import numpy as np
import xarray as xr

from geodl.cli import main

MARGIN = 0.05  # the UNet's mu must exceed the tuned OI's by this much


def _fronts(nt=160, n=32, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(nt)[:, None, None]
    y = np.arange(n)[None, :, None] * 10.0
    x = np.arange(n)[None, None, :] * 10.0
    field = np.zeros((nt, n, n))
    for _ in range(6):  # fronts of random direction, speed and position, re-drawn every 40 days
        theta = rng.uniform(0, 2 * np.pi, size=(nt // 40, 1, 1, 1)).repeat(40, 0)[:, 0]
        speed = rng.uniform(2, 6)
        x0 = rng.uniform(0, 320)
        d = (x * np.cos(theta) + y * np.sin(theta) - speed * t - x0) % 320.0 - 160.0
        field += np.tanh(d / 8.0)
    return xr.Dataset(
        {"ssh": (("time", "y", "x"), field.astype(np.float32), {"units": "m"})},
        coords={
            "time": np.arange(nt, dtype=float),
            "y": ("y", np.arange(n) * 10.0, {"units": "km"}),
            "x": ("x", np.arange(n) * 10.0, {"units": "km"}),
        },
    )


def test_learned_method_beats_tuned_oi(tmp_path):
    _fronts().to_netcdf(tmp_path / "truth.nc")
    cfg = tmp_path / "skill.yaml"
    cfg.write_text(
        f"""experiment: {{name: skill, task: mapping, seed: 0}}
data: {{path: {tmp_path / "truth.nc"}, variable: ssh}}
obs: {{kind: clouds, cover: 0.9, length_scale_km: 20.0, persistence: 0.0, noise_std: 0.05}}
split: {{train: [0, 109], val: [115, 134], test: [140, 159]}}
patch: {{time: 3, y: 32, x: 32, train_stride_time: 1}}
methods: [oi, unet]
oi: {{max_obs: 300}}
unet:
  model: {{depth: 2, width: 16}}
  mask_swap: 0.5
  train: {{max_epochs: 8, batch_size: 8, lr: 3.0e-3, progress_bar: false}}
"""
    )
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    oi, unet = metrics["methods"]["oi"], metrics["methods"]["unet"]
    assert not metrics["oi_tuning"]["tuning"]["on_edge"]  # OI tuned with its optimum inside
    assert unet["mu"] >= oi["mu"] + MARGIN, (unet["mu"], oi["mu"])
    assert unet["rmse_ratio_oi"] < 1.0
