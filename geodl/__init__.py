"""geodl: deep learning on gridded ocean and atmosphere data.

Public API (xarray in, xarray out); the ``geodl`` command wraps the same functions. One module
per job: :mod:`geodl.mapping` (fit / reconstruct), :mod:`geodl.dynamics` (fit / forecast /
Lyapunov exponent) and :mod:`geodl.assimilation` (assimilate / score); whole experiments run with
:func:`load_config` and :func:`run_experiment`.

Importing :mod:`geodl` is cheap: the functions below are loaded from their modules (with torch,
xarray and Lightning behind them) on first access, so ``geodl --help`` starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from geodl.errors import ConfigError, DataError, UserInputError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from geodl.data import describe, find_axes, open_dataset
    from geodl.pipeline import run_experiment
    from geodl.tasks import load_config

#: Public names loaded on first access: name -> the module that defines it.
_LAZY = {
    "describe": "geodl.data",
    "find_axes": "geodl.data",
    "open_dataset": "geodl.data",
    "run_experiment": "geodl.pipeline",
    "load_config": "geodl.tasks",
}

__all__ = [
    "ConfigError",
    "DataError",
    "UserInputError",
    "__version__",
    "describe",
    "find_axes",
    "load_config",
    "open_dataset",
    "run_experiment",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'geodl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
