"""geodl.metrics is one package of scores: every public name importable from it, one copy each."""

from __future__ import annotations

import importlib

import pytest

from geodl import metrics as M

FAMILIES = (
    "mapping",
    "spectral",
    "calibration",
    "forecast",
    "assimilation",
    "distributions",
    "ensemble",
)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_name_is_exported(family):
    module = importlib.import_module(f"geodl.metrics.{family}")
    assert module.__doc__, f"geodl.metrics.{family} has no module docstring"
    for name in module.__all__:
        assert getattr(M, name) is getattr(module, name)
        assert name in M.__all__


def test_package_exports_only_family_names():
    by_family = set().union(
        *(importlib.import_module(f"geodl.metrics.{f}").__all__ for f in FAMILIES)
    )
    assert set(M.__all__) == by_family


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("geodl.methods.assimilation", ["twin_scores"]),
        (
            "geodl.methods.dynamics",
            ["denoise_scores", "histogram_distance", "leave_step", "near_fraction"],
        ),
        ("geodl.methods.emulation", ["first_bad_step", "forecast_rmse", "ke_spectrum"]),
    ],
)
def test_methods_keep_the_old_names_of_the_one_copy(module, names):
    methods = importlib.import_module(module)
    for name in names:
        assert getattr(methods, name) is getattr(M, name), f"{module}.{name}"
