"""Task registry and experiment loading: YAML file + ``--set`` overrides -> validated config.

Why a table of module paths: a task module imports its whole stack (torch, Lightning, xarray), so
it is imported on first use by :func:`get_task`, not when :mod:`geodl` or the CLI starts. Its
import registers it (:func:`register`); tasks defined elsewhere (tests, plug-ins) register the
same way.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from geodl.config import Section, apply_overrides, blame, read_yaml, validate
from geodl.errors import ConfigError
from geodl.pipeline import Experiment

__all__ = [
    "ExperimentSection",
    "TASKS",
    "TASK_MODULES",
    "get_task",
    "load_config",
    "register",
    "task_names",
]

#: Registered experiments by task name (a built-in task appears once :func:`get_task` loaded it).
TASKS: dict[str, Experiment] = {}

#: Built-in tasks: task name -> the module whose import registers it.
TASK_MODULES: dict[str, str] = {
    "assimilation": "geodl.tasks.assimilation",
    "dynamics": "geodl.tasks.dynamics",
    "emulation": "geodl.tasks.emulation",
    "mapping": "geodl.tasks.mapping",
}


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


class ExperimentSection(Section):
    """Identity of an experiment: its name (the default run directory is ``runs/NAME``) and task.

    ``seed`` is the training seed of the run: every task adds it to its learned methods'
    ``train.seed`` (initial weights, data order) and keys their training stages on it; simulated
    truths and observations keep their own seeds (``simulate.seed``, ``obs.seed``). ``threads``
    sets torch's CPU threads (:mod:`geodl.training.threads`); it changes speed, not results, and
    enters no stage key.
    """

    name: str
    task: str
    seed: int = 0
    threads: int | None = Field(
        None,
        gt=0,
        description="torch CPU threads of every stage; default: the cores this process may use "
        "(affinity, cgroup quota, SLURM_CPUS_PER_TASK), or OMP_NUM_THREADS when set",
    )
    description: str = ""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        """The name becomes the folder ``runs/NAME``: no path in it (``../x``, ``a/b``)."""
        if not _NAME.fullmatch(value) or set(value) == {"."}:
            raise ValueError(  # the error line shows the value once, after this
                "expected a plain name of letters, digits, '.', '_' and '-' (no path separators, "
                "no '..'), as it names the run directory runs/NAME"
            )
        return value


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to the registry under its task name."""
    TASKS[experiment.task] = experiment
    return experiment


def task_names() -> list[str]:
    """Names of the built-in and the registered tasks, sorted."""
    return sorted({*TASK_MODULES, *TASKS})


def get_task(name: Any, source: str = "config") -> Experiment:
    """The experiment of task ``name``, importing its module on first use."""
    if isinstance(name, str) and name not in TASKS and name in TASK_MODULES:
        importlib.import_module(TASK_MODULES[name])
    if not isinstance(name, str) or name not in TASKS:
        raise ConfigError(
            f"{source}: key 'experiment.task' is {name!r}; expected one of {task_names()}"
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
            f"{path}: missing required key 'experiment.task'; expected one of {task_names()}"
        )
    task = section["task"]
    experiment = get_task(task, str(path))
    raw = apply_overrides(raw, list(overrides), experiment.schema)
    after = raw.get("experiment")
    if isinstance(after, dict) and "task" in after and after["task"] != task:
        # the file's other sections are those of its task: they would fail another task's
        # schema one unknown key at a time, blamed on the file
        who = blame(str(path), overrides, "experiment.task", "")
        raise ConfigError(
            f"{who}: experiment.task cannot be changed by --set (the file's sections are those "
            f"of task {task!r}, not {after['task']!r}); to run another task, start from a config "
            f"file of that task (tasks: {', '.join(task_names())}; see configs/)"
        )
    cfg = validate(raw, experiment.schema, str(path), overrides)
    try:  # a task's stage factory checks across sections (e.g. the emulation's split lengths)
        experiment.resolve(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{blame(str(path), overrides, '', str(exc))}: {exc}") from None
    return cfg, experiment
