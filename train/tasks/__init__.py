"""Tasks by name (``task: semantic | instance`` in the training config)."""

from __future__ import annotations

from train.registry import Registry
from train.tasks.base import DatasetEvaluator, Task
from train.tasks.instance import InstanceTask
from train.tasks.semantic import SemanticTask

TASKS: Registry[Task] = Registry("task", "task")
TASKS.register("semantic")(SemanticTask)
TASKS.register("instance")(InstanceTask)

__all__ = ["TASKS", "DatasetEvaluator", "Task"]
