"""Experiments: each task's config schema and stages, registered by task name."""

from geodl.tasks import assimilation  # noqa: F401  (registers the task)
from geodl.tasks.registry import TASKS, ExperimentSection, get_task, load_config, register

__all__ = ["TASKS", "ExperimentSection", "get_task", "load_config", "register"]
