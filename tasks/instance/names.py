"""The YOLO-seg model names, apart from the models themselves: readers of run folders (the report's and the
comparison's words for a run) tell a YOLO run from a Mask R-CNN one without importing torch."""

from __future__ import annotations

FAMILIES = {"yolov8": "YOLOv8 (2023)", "yolo11": "YOLO11 (2024)", "yolo26": "YOLO26 (2025, NMS-free head)"}
SCALES = "nsmlx"
MODEL_NAMES = tuple(f"{family}{scale}-seg" for family in FAMILIES for scale in SCALES)


def is_yolo(name: str) -> bool:
    return name in MODEL_NAMES
