"""Semantic segmentation: one class per pixel, scored by mIoU from one confusion matrix."""

from typing import ClassVar

from tasks.base import TaskPlugin


class SemanticPlugin(TaskPlugin):
    name = "semantic"
    description = "semantic segmentation: a class for every pixel (mIoU, pixel accuracy, Dice)"
    parts: ClassVar[dict[str, str]] = {
        "train": "tasks.semantic.train:SemanticTask",
        "evaluate": "tasks.semantic.evaluate:SemanticEvaluation",
        "app": "tasks.semantic.app:SemanticApp",
        "triage": "tasks.semantic.triage:SemanticTriage",
        "labelstudio": "tasks.semantic.labelstudio:SemanticRegions",
        "report": "tasks.semantic.report:SemanticReport",
    }
    per_class_metric = ("val_iou", "IoU")


PLUGIN = SemanticPlugin()
