"""Experiments: each task's config schema and stages, registered by task name."""

from geodl.tasks import assimilation, dynamics, emulation, mapping  # noqa: F401  (register the tasks)
from geodl.tasks.registry import TASKS, ExperimentSection, get_task, load_config, register

__all__ = ["TASKS", "ExperimentSection", "get_task", "load_config", "register"]
