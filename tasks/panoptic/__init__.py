"""Panoptic segmentation: every pixel a class, and each thing its own id (DETR's mask head), scored by PQ."""

from typing import ClassVar

from tasks.base import TaskPlugin, standard_parts


class PanopticPlugin(TaskPlugin):
    name = "panoptic"
    description = "panoptic segmentation: things with ids, stuff by class (DETR's mask head; PQ, mask and box AP)"
    parts: ClassVar[dict[str, str]] = standard_parts("tasks.panoptic", "Panoptic")
    per_class_metric = ("val_pq", "PQ")


PLUGIN = PanopticPlugin()
