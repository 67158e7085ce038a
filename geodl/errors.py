"""Errors a user can cause.

Every error raised for bad user input (config, files, variables, grids, data) derives from
:class:`UserInputError`. The CLI turns it into one line on stderr and exit code 2; anything else is an
internal error (exit code 1). ``UserInputError`` subclasses :class:`ValueError`, so library users can
catch the built-in type.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from the user: the message says what, where, what was expected and how to fix it."""


class ConfigError(UserInputError):
    """Invalid experiment configuration (file, YAML syntax, key, type, override)."""


class DataError(UserInputError):
    """Unusable data: missing file or variable, wrong dims, bad grid, all-NaN values."""


class RunDirError(UserInputError):
    """The run directory cannot be used (not writable, or belongs to another experiment)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (how SLURM and other schedulers stop or pre-empt a job): the run stops as on
    Ctrl-C, and a re-run of the same command resumes training from its last checkpoint."""
