"""Tasks by name: each task is one package here, from training to every reader of its outputs.

A task (``task: semantic | instance | detection | panoptic`` in the training config) keeps together, as Ultralytics'
``task_map`` does, its training part (``train.py``: datasets, models, train step, validation), its evaluation part
(``evaluate.py``: the one inference that ``evaluate run``, ``evaluate predict`` and the app call, and the writer of
``eval/<split>/``), and what each reader shows of its predictions (``app.py``, ``triage.py`` for triptychs and
FiftyOne, ``labelstudio.py`` for pre-annotations, ``report.py``). This module and each package's ``__init__`` import
no torch: the labeling loop, triage and reports find a run's task without loading model code, and each part is
imported when first asked for.
A new task is one package plus its line in ``TASKS``.
"""

from __future__ import annotations

import importlib

from core.errors import SegLoopError
from core.runs import DEFAULT_TASK
from tasks.base import TaskPlugin

TASKS: dict[str, str] = {  # name -> the package whose PLUGIN it is
    "semantic": "tasks.semantic",
    "instance": "tasks.instance",
    "detection": "tasks.detection",
    "panoptic": "tasks.panoptic",
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get(name: str | None) -> TaskPlugin:
    """The plugin of task ``name`` (None: the default task of runs written before tasks were recorded)."""
    name = DEFAULT_TASK if name is None else name
    if name not in TASKS:
        raise SegLoopError(f"unknown task '{name}'", fix=f"use one of: {', '.join(TASK_NAMES)}")
    return importlib.import_module(TASKS[name]).PLUGIN


__all__ = ["DEFAULT_TASK", "TASKS", "TASK_NAMES", "TaskPlugin", "get"]
