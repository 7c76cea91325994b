"""Semantic segmentation: one class per pixel, scored by mIoU from one confusion matrix."""

from typing import ClassVar

from tasks.base import TaskPlugin, standard_parts


class SemanticPlugin(TaskPlugin):
    name = "semantic"
    description = "semantic segmentation: a class for every pixel (mIoU, pixel accuracy, Dice)"
    parts: ClassVar[dict[str, str]] = standard_parts("tasks.semantic", "Semantic")
    per_class_metric = ("val_iou", "IoU")


PLUGIN = SemanticPlugin()
