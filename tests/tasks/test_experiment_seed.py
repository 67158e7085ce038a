"""``experiment.seed`` is read by every task: it offsets the learned methods' ``train.seed``
(initial weights, data order) and enters their stage keys, while the simulated data keep their own
seeds (a new training seed does not re-simulate)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geodl.pipeline import run_experiment, stage_key
from geodl.tasks import load_config

CONFIGS = {
    "configs/ssh_mapping_quick.yaml": (
        ["train_unet", "train_fourdvarnet"],
        ["simulate", "train_oi"],
    ),
    "configs/l63_dynamics_quick.yaml": (["train"], ["simulate"]),
    "configs/qg_emulation_quick.yaml": (["train_cnn"], ["simulate"]),
    "configs/l63_assimilation_quick.yaml": (["train"], ["simulate", "observe"]),
}


def _keys(config: str, overrides: list[str]) -> dict[str, str]:
    cfg, exp = load_config(config, overrides)
    stages = exp.resolve(cfg).stages
    upstream = {s.name: "same upstream" for s in stages}
    return {s.name: stage_key(s, cfg, Path("unused"), upstream) for s in stages}


@pytest.mark.parametrize("config", CONFIGS)
def test_the_experiment_seed_keys_the_training_stages_only(config):
    trained, untouched = CONFIGS[config]
    base, other = _keys(config, []), _keys(config, ["experiment.seed=7"])
    for name in trained:
        assert other[name] != base[name], name
    for name in untouched:
        assert other[name] == base[name], name


def test_the_experiment_seed_changes_the_trained_dynamics_model(tmp_path):
    tiny = [
        "simulate.n_steps=200",
        "simulate.n_train_trajectories=2",
        "train.max_epochs=1",
        "model.lbfgs_iter=0",
    ]

    def weights(name: str, seed: int) -> dict:
        cfg, exp = load_config(
            "configs/l63_dynamics_quick.yaml", [*tiny, f"experiment.seed={seed}"]
        )
        out = tmp_path / name
        for stage in ("simulate", "train"):
            run_experiment(cfg, exp, out, only=stage, echo=lambda s: None)
        return torch.load(out / "model" / "model.pt", weights_only=False)["state_dict"]

    a, b, c = weights("a", 0), weights("b", 0), weights("c", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)  # one seed, one model
    assert not all(torch.equal(a[k], c[k]) for k in a)  # another seed, another model
