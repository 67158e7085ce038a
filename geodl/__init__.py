"""geodl: deep learning on gridded ocean and atmosphere data.

Public API (xarray in, xarray out); the ``geodl`` command wraps the same functions. One module
per job: :mod:`geodl.mapping` (fit / reconstruct), :mod:`geodl.dynamics` (fit / forecast /
Lyapunov exponent) and :mod:`geodl.assimilation` (assimilate / score); whole experiments run with
:func:`load_config` and :func:`run_experiment`.
"""

__version__ = "0.1.0"

from geodl.data import describe, find_axes, open_dataset  # noqa: E402
from geodl.errors import ConfigError, DataError, UserInputError  # noqa: E402
from geodl.pipeline import run_experiment  # noqa: E402
from geodl.tasks import load_config  # noqa: E402

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
