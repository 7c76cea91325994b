"""What every task supplies beyond its training part, as one object per task (``tasks.get(name)``).

The plugin itself imports no torch: it names its parts by module and imports each when a stage first asks for it,
so ``annotate`` (which never loads a model) and the report's readers of ``run.json`` stay light. Each part is a
class in the task's package; the stages call them through the methods below and never ask which task they hold.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any, ClassVar


@cache
def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


PART_MODULES = {"train": "Task", "evaluate": "Evaluation", "app": "App", "triage": "Triage",
                "labelstudio": "Regions", "report": "Report"}


def standard_parts(package: str, prefix: str) -> dict[str, str]:
    """The parts of a task laid out the usual way: ``<package>.<part>:<Prefix><Kind>`` for every part."""
    return {part: f"{package}.{part}:{prefix}{kind}" for part, kind in PART_MODULES.items()}


class TaskPlugin:
    """One task, by its parts. ``parts`` maps a part's name to ``module:attribute``:

    - ``train``: the ``train.task.Task`` subclass the training loop runs;
    - ``evaluate``: the evaluation part (scores a split into ``eval/<split>/``, predicts a folder of images into
      ``predict/<name>/``, prints a summary, says how the model runs best on a device);
    - ``app``: what the model demo page predicts and draws for one image;
    - ``triage``: what the triptychs and FiftyOne show of one evaluated split;
    - ``labelstudio``: the Label Studio regions of one image's prediction files;
    - ``report``: the task's report sections (architecture diagram, coverage, worst classes).
    """

    name: ClassVar[str]
    description: ClassVar[str]  # one line, for --help and the report
    parts: ClassVar[dict[str, str]]
    per_class_metric: ClassVar[tuple[str, str]]  # (metrics.jsonl key of the per-class validation map, its label)

    def part(self, which: str) -> Any:
        return _load(self.parts[which])

    def training(self) -> Any:
        """The ``Task`` subclass the training loop runs for this task."""
        return self.part("train")

    def evaluation(self) -> Any:
        return self.part("evaluate")()

    def app(self) -> Any:
        return self.part("app")()

    def triage(self, results: Any) -> Any:
        """The triage part over one evaluated split (an ``evaluate.results.EvalResults``)."""
        return self.part("triage")(results)

    def labelstudio(self) -> Any:
        return self.part("labelstudio")()

    def report(self) -> Any:
        return self.part("report")()

    def __repr__(self) -> str:
        return f"<task {self.name}>"
