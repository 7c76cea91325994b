"""What a detection model's boxes mean to the readers, without torch: a box as the pixels it covers (what the painted
map, the outlines, FiftyOne's instances and Label Studio's regions draw), and the painted map itself."""

from __future__ import annotations

from typing import Any

import numpy as np

from ingest.coco import train_index
from ingest.records import Instance
from tasks.instance.results import SCORE_THRESHOLD, paint_masks

__all__ = ["SCORE_THRESHOLD", "box_instances", "box_mask", "paint_boxes"]


def box_mask(bbox: list[float], shape: tuple[int, int]) -> np.ndarray:
    """The pixels of a COCO xywh box (edges rounded to the nearest pixel edge, at least one pixel), clipped to the
    image: a box drawn as a mask, so two boxes' mask IoU is their box IoU up to that rounding."""
    h, w = shape
    x, y, bw, bh = (float(v) for v in bbox)
    x0, y0 = min(max(round(x), 0), w - 1), min(max(round(y), 0), h - 1)
    x1, y1 = max(min(round(x + bw), w), x0 + 1), max(min(round(y + bh), h), y0 + 1)
    out = np.zeros(shape, bool)
    out[y0:y1, x0:x1] = True
    return out


def paint_boxes(results: list[dict[str, Any]], shape: tuple[int, int], ignore_index: int = 255,
                score_threshold: float = SCORE_THRESHOLD) -> np.ndarray:
    """The painted map of an image's boxes scored at least ``score_threshold`` (higher scores on top)."""
    kept = [r for r in results if r["score"] >= score_threshold]
    return paint_masks([box_mask(r["bbox"], shape) for r in kept], [r["category_id"] for r in kept],
                       [r["score"] for r in kept], shape, ignore_index)


def box_instances(annotations: list[dict[str, Any]], shape: tuple[int, int]) -> list[Instance]:
    """Instances of COCO box annotations or results, each box as its pixels (``box_mask``): what triage matches
    and FiftyOne shows, so that its TP / FP / FN are the evaluation's per-image ones."""
    return [Instance(train_index(a["category_id"]), box_mask(a["bbox"], shape), int(a.get("iscrowd", 0)),
                     a.get("score")) for a in annotations]
