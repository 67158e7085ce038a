"""Experiments: each task's config schema and stages, registered by task name.

The task modules are imported on first use (:func:`get_task`, :func:`load_config`), not here.
"""

from geodl.tasks.registry import (
    TASK_MODULES,
    TASKS,
    ExperimentSection,
    get_task,
    load_config,
    register,
    task_names,
)

__all__ = [
    "TASKS",
    "TASK_MODULES",
    "ExperimentSection",
    "get_task",
    "load_config",
    "register",
    "task_names",
]
