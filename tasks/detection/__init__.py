"""Detection: a box, class and score per object, things and (optionally) stuff regions, scored by COCO box AP."""

from typing import ClassVar

from tasks.base import TaskPlugin, standard_parts


class DetectionPlugin(TaskPlugin):
    name = "detection"
    description = "detection: a box, class and score per thing and per stuff region (DETR; COCO box AP)"
    parts: ClassVar[dict[str, str]] = standard_parts("tasks.detection", "Detection")
    per_class_metric = ("val_ap", "box AP")


PLUGIN = DetectionPlugin()
