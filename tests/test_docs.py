"""Every module's docstring Examples run and give what they show.

The modules are found by walking the package, not listed by hand, so that a new module's Examples
cannot be forgotten (before, about 25 modules' Examples were never executed).
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pathlib
import pkgutil

import pytest

import geodl


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(geodl.__path__, "geodl."):
        origin = importlib.util.find_spec(info.name).origin
        if ">>> " in pathlib.Path(origin).read_text(encoding="utf-8"):
            names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_the_walk_finds_every_layer():
    layers = {name.split(".")[1] for name in MODULES}
    assert {"baselines", "data", "methods", "models", "obs", "sim", "metrics"} <= layers
    assert len(MODULES) >= 40


@pytest.mark.parametrize("name", MODULES)
def test_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has '>>> ' in its source but no example ran"
    assert result.failed == 0
