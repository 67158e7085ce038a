"""A learned method's std is scaled on the validation period after training (``calibrate``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from geodl.cli import main
from geodl.methods.mapping import MappingData, get_method
from geodl.tasks import load_config
from geodl.testing import gaussian_twin

CONFIG = """experiment: {{name: cal, task: mapping, seed: 0}}
data: {{path: {tmp}/truth.nc, variable: ssh}}
obs: {{kind: file, path: {tmp}/obs.nc, variable: ssh, noise_std: 0.05}}
split: {{train: [0, 89], val: [95, 104], test: [110, 119]}}
patch: {{time: 4, y: 16, x: 16}}
methods: [dincae]
dincae:
  model: {{depth: 1, width: 8}}
  train: {{max_epochs: 2, batch_size: 8, lr: 5.0e-3, progress_bar: false}}
{extra}report: {{days: [0]}}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cal")
    truth, obs = gaussian_twin()
    truth.to_netcdf(tmp / "truth.nc")
    obs.to_netcdf(tmp / "obs.nc")
    (tmp / "c.yaml").write_text(CONFIG.format(tmp=tmp, extra=""))
    assert main(["run", str(tmp / "c.yaml"), "--out", str(tmp / "run")]) == 0
    return tmp / "run"


def test_checkpoint_carries_the_scale_and_predictions_use_it(run):
    ckpt = torch.load(run / "models" / "dincae.ckpt", weights_only=True)
    scales = ckpt["geodl"]["calibration"]
    assert scales["factor"] == 1.0 and 0.2 < scales["diag"] < 5 and scales["diag"] != 1.0
    raw = dict(ckpt, geodl={k: v for k, v in ckpt["geodl"].items() if k != "calibration"})
    torch.save(raw, run / "raw.ckpt")

    cfg, _ = load_config(run / "config.yaml")
    prep = json.loads((run / "prepare.json").read_text())
    data = MappingData.from_prepare(
        prep, Path(cfg.data.path), run / "obs.nc", variable="ssh", patch=cfg.patch
    )
    method = get_method("dincae")
    split = data.splits["val"]
    mean, std = method.reconstruct(cfg.dincae, data, run / "models" / "dincae.ckpt", split)
    mean0, std0 = method.reconstruct(cfg.dincae, data, run / "raw.ckpt", split)
    assert float(abs(mean - mean0).max()) == 0.0  # the mean is untouched
    ratio = (std / std0).values
    assert abs(ratio - scales["diag"]).max() < 1e-5


def test_calibrate_false_leaves_the_model_as_trained(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(tmp=tmp_path, extra="  calibrate: false\n"))
    assert load_config(path)[0].dincae.calibrate is False
    path.write_text(CONFIG.format(tmp=tmp_path, extra=""))
    cfg, _ = load_config(path)
    assert cfg.dincae.calibrate is True and cfg.unet.calibrate is True
