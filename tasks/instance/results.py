"""What an instance model's detections mean to the readers, without torch: the score cut for what is painted and
counted, the painted class map, the image's one uncertainty number, and the thing classes' IoU of painted maps
(the number semantic and instance runs share in one comparison).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.metrics import ConfusionMatrix, confusion, scores_from_matrix
from ingest.coco import decode_rle, train_index
from ingest.taxonomy import Taxonomy

SCORE_THRESHOLD = 0.5  # detections below this are scored by AP but neither painted nor counted as TP / FP


def paint_instances(results: list[dict[str, Any]], shape: tuple[int, int], ignore_index: int = 255,
                    score_threshold: float = SCORE_THRESHOLD) -> np.ndarray:
    """A train-index map of one image's instances: higher scores painted last (on top), ``ignore_index`` where no
    instance is."""
    out = np.full(shape, ignore_index, np.uint8)
    for r in sorted((r for r in results if r["score"] >= score_threshold and "segmentation" in r),
                    key=lambda r: r["score"]):
        out[decode_rle(r["segmentation"])] = train_index(r["category_id"])
    return out


def instance_uncertainty(results: list[dict[str, Any]], score_threshold: float = SCORE_THRESHOLD) -> float:
    """1 - the mean score of an image's confident detections; 1 when the model finds nothing (worth labelling)."""
    scores = [r["score"] for r in results if r["score"] >= score_threshold]
    return float(1 - np.mean(scores)) if scores else 1.0


class ThingIoU:
    """IoU of the thing classes from painted instances: ground-truth stuff and unpainted pixels both count as
    'other', so a thing class's IoU is exactly what a semantic model's confusion matrix gives for it."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        self.things = [c.index for c in taxonomy.classes if c.has_instances]
        self.names = [taxonomy.classes[i].name for i in self.things]
        other = len(self.things)
        self.lut = np.full(256, other, np.uint8)
        self.lut[self.things] = np.arange(other)
        self.lut[taxonomy.ignore_index] = 255
        self.cm = ConfusionMatrix(other + 1, 255)

    def process(self, pred: np.ndarray, label: np.ndarray) -> float:
        """Add one image; its own thing-class mIoU."""
        p = self.lut[pred]
        p[p == 255] = len(self.things)  # unpainted prediction pixels are 'other', not ignored
        mat = confusion(p, self.lut[label], len(self.things) + 1, 255)
        self.cm.mat += mat
        return _mean(scores_from_matrix(mat).iou[:-1])

    def evaluate(self) -> dict[str, Any]:
        s = scores_from_matrix(self.cm.mat)
        return {"things_mIoU": _mean(s.iou[:-1]),
                "thing_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(self.names, s.iou[:-1],
                                                                                     strict=True)}}


def _mean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
