"""Instance segmentation: one mask, class and score per object, scored by COCO mask AP (pycocotools-equal)."""

from typing import ClassVar

from tasks.base import TaskPlugin, standard_parts


class InstancePlugin(TaskPlugin):
    name = "instance"
    description = "instance segmentation: a mask, class and score per object (COCO mask and box AP)"
    parts: ClassVar[dict[str, str]] = standard_parts("tasks.instance", "Instance")
    per_class_metric = ("val_ap", "AP")


PLUGIN = InstancePlugin()
