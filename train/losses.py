"""Losses by name. All take logits (N, C, H, W) and targets (N, H, W) with the ignore value 255."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import SegLoopError


class CrossEntropy(nn.Module):
    def __init__(self, ignore_index: int = 255, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight if weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=self.ignore_index,
                               label_smoothing=self.label_smoothing)


class DiceLoss(nn.Module):
    """Soft Dice over the classes present in the batch (Milletari et al., 2016), ignoring ignored pixels."""

    def __init__(self, ignore_index: int = 255, eps: float = 1.0) -> None:
        super().__init__()
        self.ignore_index, self.eps = ignore_index, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c = logits.shape[1]
        prob = logits.float().softmax(1)
        valid = (target != self.ignore_index).unsqueeze(1)
        onehot = F.one_hot(target.clamp(max=c - 1) * valid.squeeze(1), c).permute(0, 3, 1, 2).float() * valid
        prob = prob * valid
        inter = (prob * onehot).sum((0, 2, 3))
        denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        present = onehot.sum((0, 2, 3)) > 0
        dice = (2 * inter + self.eps) / (denom + self.eps)
        return (1 - dice[present]).mean() if present.any() else logits.sum() * 0


class CEDice(nn.Module):
    def __init__(self, ignore_index: int = 255, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.ce = CrossEntropy(ignore_index, weight, label_smoothing)
        self.dice = DiceLoss(ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target) + self.dice(logits, target)


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "cross_entropy": CrossEntropy,
    "dice": lambda ignore_index, weight=None, label_smoothing=0.0: DiceLoss(ignore_index),
    "ce_dice": CEDice,
}


def class_weights_from_pixels(pixels: np.ndarray) -> np.ndarray:
    """ENet's weighting 1 / ln(1.02 + p): rare classes count more, without exploding for very rare ones."""
    p = pixels / max(pixels.sum(), 1)
    return (1.0 / np.log(1.02 + p)).astype(np.float32)


def build_loss(cfg: dict[str, Any], num_classes: int, ignore_index: int,
               pixels_per_class: np.ndarray | None) -> nn.Module:
    name = cfg["name"]
    if name not in LOSSES:
        raise SegLoopError(f"unknown loss '{name}'", fix=f"loss.name must be one of: {', '.join(sorted(LOSSES))}")
    cw = cfg["class_weights"]
    weight = None
    if cw == "auto":
        weight = torch.from_numpy(class_weights_from_pixels(pixels_per_class))
    elif isinstance(cw, list):
        if len(cw) != num_classes:
            raise SegLoopError(f"loss.class_weights has {len(cw)} values for {num_classes} classes",
                               fix="give one weight per class, or 'auto'")
        weight = torch.tensor(cw, dtype=torch.float32)
    elif cw is not None:
        raise SegLoopError(f"loss.class_weights must be null, 'auto' or a list, got {cw!r}")
    return LOSSES[name](ignore_index=ignore_index, weight=weight, label_smoothing=cfg["label_smoothing"])
