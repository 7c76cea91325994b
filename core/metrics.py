"""Segmentation scores from one confusion matrix.

Pixel accuracy, IoU and Dice all derive from a single ``num_classes x num_classes`` matrix (rows: ground truth,
columns: prediction), accumulated with one ``bincount`` per batch. Pixels whose ground truth is the ignore value
never enter the matrix, which is exactly the Cityscapes rule (cityscapesScripts' evalPixelLevelSemanticLabeling):
a prediction on an ignored pixel is neither a true nor a false positive. A class with no ground-truth pixel and no
prediction has an undefined (NaN) IoU and is left out of the mean, again as cityscapesScripts does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass
class Scores:
    """Scores derived from a confusion matrix; per-class arrays are indexed by train index."""

    pixel_acc: float
    miou: float
    mdice: float
    iou: np.ndarray
    dice: np.ndarray
    support: np.ndarray  # ground-truth pixels per class
    class_names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        names = self.class_names or [str(i) for i in range(len(self.iou))]
        return {
            "pixel_acc": self.pixel_acc,
            "mIoU": self.miou,
            "mDice": self.mdice,
            "per_class": {
                n: {"iou": _nan_to_none(i), "dice": _nan_to_none(d), "gt_pixels": int(s)}
                for n, i, d, s in zip(names, self.iou, self.dice, self.support, strict=True)
            },
        }


def _nan_to_none(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches of integer label maps (numpy arrays or torch tensors)."""

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: list[str] | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names or [])
        self.mat = np.zeros((num_classes, num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.mat[:] = 0

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> np.ndarray:
        """Add one batch; returns that batch's own matrix (handy for per-image scores)."""
        batch = confusion(pred, target, self.num_classes, self.ignore_index)
        self.mat += batch
        return batch

    def scores(self) -> Scores:
        return scores_from_matrix(self.mat, self.class_names)


def confusion(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, num_classes: int,
              ignore_index: int = 255) -> np.ndarray:
    """Confusion matrix of one batch. Predictions outside ``[0, num_classes)`` are an error, not silently dropped."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != ground truth shape {tuple(target.shape)}")
    n = num_classes
    # a tensor exists only where torch is loaded: readers of painted maps (labeling, triage) never load it
    torch = sys.modules.get("torch")
    if torch is not None and (isinstance(pred, torch.Tensor) or isinstance(target, torch.Tensor)):
        p = torch.as_tensor(pred).reshape(-1).long()
        t = torch.as_tensor(target, device=p.device).reshape(-1).long()
        keep = t != ignore_index
        p, t = p[keep], t[keep]
        if p.numel() and (int(p.max()) >= n or int(p.min()) < 0 or int(t.max()) >= n):
            raise ValueError(f"labels outside 0..{n - 1} (and ignore {ignore_index})")
        return torch.bincount(t * n + p, minlength=n * n).reshape(n, n).cpu().numpy().astype(np.int64)
    t = np.asarray(target).reshape(-1)
    p = np.asarray(pred).reshape(-1)
    if t.dtype == np.uint8 and p.dtype == np.uint8:
        # 8-bit labels: one 16-bit key per pixel and one bincount, no masking pass (the ignore row is sliced off)
        key = t.astype(np.uint16)
        key <<= 8
        key |= p
        full = np.bincount(key, minlength=65536).reshape(256, 256)
        bad_gt = full[n:].sum(1)
        if 0 <= ignore_index - n < len(bad_gt):
            bad_gt[ignore_index - n] = 0
        if full[:n, n:].any() or bad_gt.any():
            raise ValueError(f"labels outside 0..{n - 1} (and ignore {ignore_index})")
        return full[:n, :n].astype(np.int64)
    keep = t != ignore_index
    # int32 keeps the multiply-add cheap; n*n is far below its range.
    idx = t[keep].astype(np.int32) * n + p[keep].astype(np.int32)
    if idx.size and (idx.max() >= n * n or idx.min() < 0 or p[keep].max() >= n):
        raise ValueError(f"labels outside 0..{n - 1} (and ignore {ignore_index})")
    return np.bincount(idx, minlength=n * n).reshape(n, n).astype(np.int64)


def scores_from_matrix(mat: np.ndarray, class_names: list[str] | None = None) -> Scores:
    """IoU = TP / (TP + FP + FN), Dice = 2TP / (2TP + FP + FN), per class; means over the defined classes."""
    mat = mat.astype(np.float64)
    tp = np.diag(mat)
    gt = mat.sum(1)
    pr = mat.sum(0)
    fp = pr - tp
    fn = gt - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (tp + fp + fn)
        dice = 2 * tp / (2 * tp + fp + fn)
    total = mat.sum()
    acc = float(tp.sum() / total) if total else float("nan")
    miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    mdice = float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan")
    return Scores(acc, miou, mdice, iou, dice, gt.astype(np.int64), list(class_names or []))


def thing_iou(mat: np.ndarray, names: list[str], things: list[int]) -> tuple[dict[str, float | None], float]:
    """The IoU of each thing class (``things``: train indices) from a confusion matrix over the taxonomy's classes,
    with possibly one more, last class that no ground truth has ('no instance', the unpainted pixels of an instance
    model's map), and their mean over the classes that occur (NaN when none does). A thing class's IoU does not
    depend on how the other pixels are split, so a semantic map and painted instances score on the same figure: the
    comparison column of ``evaluate run``, the report and FiftyOne."""
    s = scores_from_matrix(mat)
    iou = {names[i]: _nan_to_none(s.iou[i]) for i in things}
    seen = [v for v in iou.values() if v is not None]
    return iou, float(np.mean(seen)) if seen else float("nan")
