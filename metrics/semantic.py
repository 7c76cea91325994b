"""A detectron2-style evaluator (reset / process / evaluate) for semantic segmentation.

It keeps the dataset-level confusion matrix and, from each image's own small matrix, per-image scores, so the
worst images can be found without a second pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from core.metrics import ConfusionMatrix, confusion, scores_from_matrix


class SemSegEvaluator:
    def __init__(self, class_names: list[str], ignore_index: int = 255) -> None:
        self.class_names = list(class_names)
        self.cm = ConfusionMatrix(len(class_names), ignore_index, class_names)
        self.rows: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.cm.reset()
        self.rows = []

    def process(self, pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor, meta: dict[str, Any]) -> None:
        """Add one image; ``meta`` (id, key, file, ...) is copied into its per-image row."""
        self.process_matrix(confusion(pred, label, self.cm.num_classes, self.cm.ignore_index), meta)

    def process_matrix(self, mat: np.ndarray, meta: dict[str, Any]) -> None:
        """Add one image given its confusion matrix (computed elsewhere, e.g. in a worker process)."""
        self.cm.mat += mat
        s = scores_from_matrix(mat)
        self.rows.append({**meta, "pixel_acc": s.pixel_acc, "mIoU": s.miou, "mDice": s.mdice,
                          "valid_pixels": int(mat.sum())})

    def evaluate(self) -> dict[str, Any]:
        scores = self.cm.scores()
        out = scores.to_dict()
        order = np.argsort(np.where(np.isnan(scores.iou), np.inf, scores.iou))
        out["worst_classes"] = [self.class_names[i] for i in order if not np.isnan(scores.iou[i])]
        out["confusion_matrix"] = self.cm.mat.tolist()
        return out
