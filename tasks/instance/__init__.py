"""Instance segmentation: one mask, class and score per object, scored by COCO mask AP (pycocotools-equal)."""

from typing import ClassVar

from tasks.base import TaskPlugin


class InstancePlugin(TaskPlugin):
    name = "instance"
    description = "instance segmentation: a mask, class and score per object (COCO mask and box AP)"
    parts: ClassVar[dict[str, str]] = {
        "train": "tasks.instance.train:InstanceTask",
        "evaluate": "tasks.instance.evaluate:InstanceEvaluation",
        "app": "tasks.instance.app:InstanceApp",
        "triage": "tasks.instance.triage:InstanceTriage",
        "labelstudio": "tasks.instance.labelstudio:InstanceRegions",
        "report": "tasks.instance.report:InstanceReport",
    }
    per_class_metric = ("val_ap", "AP")


PLUGIN = InstancePlugin()
