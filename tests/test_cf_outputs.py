"""CF conventions of the prediction files, for a method written in memory (a toy one, as OI) and
for a streamed learned method with a std (DINCAE)."""

from __future__ import annotations

import json
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from geodl.config import Section, validate
from geodl.data import GriddedSource, compute_stats
from geodl.methods import mapping as methods
from geodl.testing import make_field

SN = "sea_surface_height_above_geoid"


class _Const(Section):
    pass


def _fit(section, data, artifact, **_):
    Path(artifact).write_text(json.dumps({"value": 0.5}))
    return {}


def _reconstruct(section, data, artifact, split):
    obs = data.obs(split)
    return xr.full_like(obs, 0.5).assign_attrs(standard_name="wrong"), xr.full_like(obs, 0.1)


@pytest.fixture
def const_method():
    methods.register(methods.MappingMethod("const", _Const, _fit, _reconstruct, learned=False))
    yield "const"
    del methods.METHODS["const"]


def _data(standard_name=SN):
    ds = make_field(nt=30, ny=24, nx=24, grid="latlon", land=True, seed=3)
    ds["ssh"].attrs.update(units="m", **({"standard_name": standard_name} if standard_name else {}))
    ds["ssh_obs"] = ds["ssh"].where(np.random.default_rng(3).random(ds["ssh"].shape) < 0.2)
    stats = compute_stats(ds, ["ssh"], time_range=(0, 20))
    stats["variables"]["ssh_obs"] = stats["variables"]["ssh"]
    return methods.MappingData(
        source=GriddedSource(ds, target="ssh", obs="ssh_obs"),
        splits={"train": (0, 20), "val": (24, 30)},
        normalizer=stats,
        patch=validate({"time": 4, "y": 16, "x": 16}, methods.PatchSection),
        noise_std=0.01,
        obs_std=float(ds["ssh_obs"].std()),
        obs_mean=0.0,
    )


def _check_cf(path: Path, *, std: bool, standard_name: str | None = SN) -> None:
    with xr.open_dataset(path) as ds:
        assert ds.attrs["Conventions"] == "CF-1.8" and "geodl" in ds.attrs["history"]
        mean = ds["ssh"].attrs
        assert mean["units"] == "m"
        assert mean.get("standard_name") == standard_name
        if std:
            s = ds["ssh_std"].attrs
            assert mean["ancillary_variables"] == "ssh_std"
            assert s["units"] == "m" and s["long_name"].startswith("standard deviation")
            expected = f"{standard_name} standard_error" if standard_name else None
            assert s.get("standard_name") == expected  # never the field's own name
        else:
            assert "ssh_std" not in ds and "ancillary_variables" not in mean
    with netCDF4.Dataset(path) as nc:  # coordinates have no missing values: no _FillValue
        for c in ("time", "lat", "lon"):
            assert "_FillValue" not in nc[c].ncattrs(), c


@pytest.mark.parametrize("standard_name", [SN, None])
def test_in_memory_method_file_is_cf(tmp_path, const_method, standard_name):
    data = _data(standard_name)
    artifact = tmp_path / "c.json"
    methods.get_method("const").fit(_Const(), data, artifact)
    out = methods.write_reconstruction(
        "const", _Const(), data, artifact, (20, 30), tmp_path / "p.nc", units="m", experiment="t"
    )
    _check_cf(out, std=True, standard_name=standard_name)


@pytest.mark.parametrize("name", ["unet", "dincae"])
def test_streamed_learned_method_file_is_cf(tmp_path, name):
    section = validate(
        {"model": {"depth": 1, "width": 4}, "train": {"max_steps": 2, "progress_bar": False}},
        methods.METHODS[name].section,
    )
    data = _data()
    artifact = tmp_path / f"{name}.ckpt"
    common = {"work_dir": tmp_path / "work", "key": name, "metadata": {}}
    methods.METHODS[name].fit(section, data, artifact, **common)
    out = methods.write_reconstruction(
        name, section, data, artifact, (20, 30), tmp_path / "p.nc", units="m", experiment="t"
    )
    _check_cf(out, std=name == "dincae")
