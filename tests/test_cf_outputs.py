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


#: The grid mapping of a geographic input that has none (CF 1.8, section 5.6, WGS 84).
LATLON = {
    "grid_mapping_name": "latitude_longitude",
    "semi_major_axis": 6378137.0,
    "inverse_flattening": 298.257223563,
}
#: A polar stereographic mapping as products give it (NSIDC's north grid).
STEREO = {
    "grid_mapping_name": "polar_stereographic",
    "straight_vertical_longitude_from_pole": -45.0,
    "latitude_of_projection_origin": 90.0,
    "standard_parallel": 70.0,
    "false_easting": 0.0,
    "false_northing": 0.0,
}


def _data(standard_name=SN, grid="latlon", mapping=None):
    """The mapping data of a small field; ``mapping``: the attributes of the input's grid-mapping
    variable ``polar`` (which ``ssh`` names), or None (no mapping in the input)."""
    ds = make_field(nt=30, ny=24, nx=24, grid=grid, land=True, seed=3)
    ds["ssh"].attrs.update(units="m", **({"standard_name": standard_name} if standard_name else {}))
    if mapping is not None:
        ds["polar"] = xr.DataArray(np.int32(0), attrs=mapping)
        ds["ssh"].attrs["grid_mapping"] = "polar"
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


def _check_grid_mapping(ds: xr.Dataset, name: str | None, attrs: dict | None) -> None:
    """``ssh`` (and ``ssh_std``) point at the scalar variable ``name`` with ``attrs`` (None:
    neither an attribute nor a mapping variable)."""
    fields = [n for n in ("ssh", "ssh_std") if n in ds]
    if name is None:
        assert all("grid_mapping" not in ds[n].attrs for n in fields)
        assert not [v for v in ds.data_vars if "grid_mapping_name" in ds[v].attrs]
        return
    assert all(ds[n].attrs["grid_mapping"] == name for n in fields), fields
    assert ds[name].ndim == 0
    for key, value in (attrs or {}).items():
        assert ds[name].attrs[key] == value, key


def _check_cf(
    path: Path,
    *,
    std: bool,
    standard_name: str | None = SN,
    mapping: str | None = "crs",
    mapping_attrs: dict | None = LATLON,
) -> None:
    with xr.open_dataset(path) as ds:
        assert ds.attrs["Conventions"] == "CF-1.8" and "geodl" in ds.attrs["history"]
        _check_grid_mapping(ds, mapping, mapping_attrs)
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
        for c in nc.dimensions:
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


def _oi():
    return validate({"lx_km": 30.0, "lt_days": 3.0, "tune": {"enabled": False}}, methods.OISection)


@pytest.mark.parametrize("method", ["const", "oi"])
@pytest.mark.parametrize(
    ("grid", "given", "expected", "attrs"),
    [
        ("projected", STEREO, "polar", STEREO),  # the input's own mapping, copied
        ("latlon", STEREO, "polar", STEREO),  # the input's own wins over latitude_longitude
        ("latlon", None, "crs", LATLON),  # geographic without one: latitude_longitude
        ("projected", None, None, None),  # projected without one: none invented
    ],
    ids=["projected-given", "latlon-given", "latlon-none", "projected-none"],
)
def test_outputs_carry_the_input_grid_mapping(
    tmp_path, const_method, method, grid, given, expected, attrs
):
    """In memory (const) and streamed region by region (OI): the same grid mapping."""
    data = _data(grid=grid, mapping=given)
    section = _Const() if method == "const" else _oi()
    artifact = tmp_path / "a.json"
    methods.get_method(method).fit(section, data, artifact)
    out = methods.write_reconstruction(
        method, section, data, artifact, (20, 30), tmp_path / "p.nc", units="m", experiment="t"
    )
    _check_cf(out, std=True, mapping=expected, mapping_attrs=attrs)


def test_a_learned_output_never_names_a_missing_mapping(tmp_path):
    """The stitched output starts from the input's attributes: a ``grid_mapping`` that names no
    variable of a projected input is dropped, not copied."""
    section = validate(
        {"model": {"depth": 1, "width": 4}, "train": {"max_steps": 1, "progress_bar": False}},
        methods.METHODS["unet"].section,
    )
    data = _data(grid="projected")
    data.source.attrs["ssh"]["grid_mapping"] = "nowhere"
    artifact = tmp_path / "unet.ckpt"
    common = {"work_dir": tmp_path / "work", "key": "unet", "metadata": {}}
    methods.METHODS["unet"].fit(section, data, artifact, **common)
    out = methods.write_reconstruction(
        "unet", section, data, artifact, (20, 30), tmp_path / "p.nc", units="m", experiment="t"
    )
    _check_cf(out, std=False, mapping=None)
