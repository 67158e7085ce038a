"""Every stage of the assimilation, dynamics and emulation tasks is keyed on what it reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from geodl.pipeline import stage_key
from geodl.tasks import load_config

QUICK = {
    "assimilation": "configs/l63_assimilation_quick.yaml",
    "dynamics": "configs/l63_dynamics_quick.yaml",
    "emulation": "configs/qg_emulation_quick.yaml",
}


def _keys(task, overrides=()):
    cfg, exp = load_config(QUICK[task], list(overrides))
    stages = exp.resolve(cfg).stages
    upstream = {s.name: "same upstream" for s in stages}
    return {s.name: stage_key(s, cfg, Path("unused"), upstream) for s in stages}


@pytest.mark.parametrize("task", sorted(QUICK))
def test_every_declared_section_exists(task):
    keys = _keys(task)  # a section the config lacks raises
    assert keys and len(set(keys.values())) == len(keys)


@pytest.mark.parametrize(
    ("task", "override", "changed"),
    [
        ("dynamics", "evaluate.lead_steps=7", {"evaluate"}),
        ("dynamics", "train.lr=0.5", {"train"}),
        ("dynamics", "experiment.seed=3", {"train"}),  # the training seed (initial weights)
        ("emulation", "evaluate.threads=2", {"evaluate"}),  # speed only: no retraining
        ("emulation", "cnn.width=4", {"train_cnn", "evaluate"}),
        ("emulation", "evaluate.bound=50", {"evaluate"}),
        ("assimilation", "evaluate.enkf.n_members=5", {"evaluate"}),
        ("assimilation", "fourdvarnet.window=100", {"train", "evaluate"}),
    ],
)
def test_a_setting_changes_the_keys_of_the_stages_that_read_it(task, override, changed):
    base, new = _keys(task), _keys(task, [override])
    assert {name for name in base if base[name] != new[name]} == changed


def test_a_data_path_glob_is_keyed_on_the_files_it_matches(tmp_path):
    """``data.path: dir/*.nc``: a new file in the pattern re-runs ``prepare`` (the pattern's own
    text, which does not change, is not what is fingerprinted)."""
    from geodl.testing import make_field

    ds = make_field(nt=20, ny=16, nx=16, grid="projected", land=False, seed=0)
    ds.isel(time=slice(0, 10)).to_netcdf(tmp_path / "part0.nc")
    sets = [f"data.path={tmp_path / 'part*.nc'}", "data.variable=ssh"]

    def prepare_key():
        cfg, exp = load_config("configs/ssh_mapping_quick.yaml", sets)
        stages = {s.name: s for s in exp.resolve(cfg).stages}
        upstream = dict.fromkeys(stages, "same upstream")
        return stage_key(stages["prepare"], cfg, tmp_path / "run", upstream)

    before = prepare_key()
    assert prepare_key() == before
    ds.isel(time=slice(10, 20)).to_netcdf(tmp_path / "part1.nc")
    assert prepare_key() != before
