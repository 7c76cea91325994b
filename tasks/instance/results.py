"""What an instance model's detections mean to the readers, without torch: the score cut for what is painted and
counted, the painted class map, the image's one uncertainty number, and the thing classes' IoU of painted maps
(the number semantic and instance runs share in one comparison).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.metrics import ConfusionMatrix, thing_iou
from ingest.coco import decode_rle, train_index
from ingest.taxonomy import Taxonomy

SCORE_THRESHOLD = 0.5  # detections below this are scored by AP but neither painted nor counted as TP / FP


def paint_masks(masks: list[np.ndarray] | np.ndarray, category_ids: list[int] | np.ndarray,
                scores: list[float] | np.ndarray, shape: tuple[int, int], ignore_index: int = 255) -> np.ndarray:
    """The one painting of instances into a train-index map: higher scores painted last (on top), ``ignore_index``
    where no instance is. Ground truth paints the same way with equal scores."""
    out = np.full(shape, ignore_index, np.uint8)
    for i in np.argsort(np.asarray(scores, np.float64), kind="stable"):
        out[np.asarray(masks[i], bool)] = train_index(int(category_ids[i]))
    return out


def paint_instances(results: list[dict[str, Any]], shape: tuple[int, int], ignore_index: int = 255,
                    score_threshold: float = SCORE_THRESHOLD) -> np.ndarray:
    """The painted map of an image's COCO results scored at least ``score_threshold``."""
    kept = [r for r in results if r["score"] >= score_threshold and "segmentation" in r]
    return paint_masks([decode_rle(r["segmentation"]) for r in kept], [r["category_id"] for r in kept],
                       [r["score"] for r in kept], shape, ignore_index)


def instance_uncertainty(results: list[dict[str, Any]], score_threshold: float = SCORE_THRESHOLD) -> float:
    """1 - the mean score of an image's confident detections; 1 when the model finds nothing (worth labelling)."""
    scores = [r["score"] for r in results if r["score"] >= score_threshold]
    return float(1 - np.mean(scores)) if scores else 1.0


class ThingIoU:
    """IoU of the thing classes from painted instances, accumulated over a split: unpainted pixels predict 'no
    instance', an extra class no ground truth has (``core.metrics.thing_iou``)."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        self.names = taxonomy.names
        self.things = [c.index for c in taxonomy.classes if c.has_instances]
        self.n, self.ignore = taxonomy.num_classes, taxonomy.ignore_index
        self.cm = ConfusionMatrix(self.n + 1, self.ignore)

    def process(self, pred: np.ndarray, label: np.ndarray) -> float:
        """Add one image; its own thing-class mIoU."""
        mat = self.cm.update(np.where(pred == self.ignore, self.n, pred), label)
        return thing_iou(mat, self.names, self.things)[1]

    def evaluate(self) -> dict[str, Any]:
        per_class, mean = thing_iou(self.cm.mat, self.names, self.things)
        return {"things_mIoU": mean, "thing_iou": per_class}
