"""Task registry and experiment loading: YAML file + ``--set`` overrides -> validated config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geodl.config import Section, apply_overrides, read_yaml, validate
from geodl.errors import ConfigError
from geodl.pipeline import Experiment

__all__ = ["ExperimentSection", "TASKS", "get_task", "load_config", "register"]

TASKS: dict[str, Experiment] = {}


class ExperimentSection(Section):
    """Identity of an experiment: its name (the default run directory is ``runs/NAME``) and task."""

    name: str
    task: str
    seed: int = 0
    description: str = ""


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to the registry under its task name."""
    TASKS[experiment.task] = experiment
    return experiment


def get_task(name: Any, source: str = "config") -> Experiment:
    if not isinstance(name, str) or name not in TASKS:
        raise ConfigError(
            f"{source}: key 'experiment.task' is {name!r}; expected one of {sorted(TASKS)}"
        )
    return TASKS[name]


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> tuple[Any, Experiment]:
    """Read, override and validate an experiment file; return ``(config, experiment)``.

    Examples
    --------
    >>> cfg, exp = load_config("configs/l63_assimilation_quick.yaml", ["observe.every=4"])
    >>> cfg.observe.every, exp.task
    (4, 'assimilation')
    """
    raw = read_yaml(path)
    section = raw.get("experiment")
    if not isinstance(section, dict) or "task" not in section:
        raise ConfigError(
            f"{path}: missing required key 'experiment.task'; expected one of {sorted(TASKS)}"
        )
    experiment = get_task(section["task"], str(path))
    raw = apply_overrides(raw, list(overrides), experiment.schema)
    experiment = get_task(raw["experiment"].get("task"), str(path))
    return validate(raw, experiment.schema, str(path)), experiment
