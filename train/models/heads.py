"""How a semantic model's logits decode: the model owns its output.

A semantic model ends in a ``SegmentationHead``, whose ``decoding`` says how many logits it emits and how they
become class probabilities, a class map and an uncertainty map. Validation, ``evaluate run``, ``evaluate predict``,
the demo page and the Label Studio pre-annotations all ask the model's decoding (``decoding_of(model)``); nothing
outside this module applies a softmax, a sigmoid or an argmax to a model's logits.

- ``softmax``: one logit per class, probabilities by softmax, the class by argmax (any number of classes);
- ``sigmoid``: one logit for a two-class taxonomy (background and one foreground class, as
  ``configs/taxonomy/person.yaml``), its sigmoid the foreground probability, the class by a threshold. The loss
  sees one channel (binary mode: BCE, binary Dice ...), every reader sees the two classes.

Uncertainty is the entropy of the class probabilities over ln C (ln 2 for a binary head), in [0, 1], so a pool of
softmax and sigmoid predictions ranks on one scale.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

HEADS = ("softmax", "sigmoid")


class Decoding:
    """Logits (N, outputs, H, W) -> probabilities (N, C, H, W), labels (N, H, W), uncertainty (N, H, W)."""

    name: ClassVar[str]
    loss_mode: ClassVar[str]  # segmentation_models_pytorch's loss mode: 'multiclass' or 'binary'

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    @property
    def outputs(self) -> int:
        """Channels the model's last layer emits."""
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def labels(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def uncertainty(self, probs: torch.Tensor) -> torch.Tensor:
        """Per-pixel entropy of (N, C, H, W) probabilities over ln C, in [0, 1]."""
        ent = -(probs * probs.clamp_min(1e-12).log()).sum(1)
        return (ent / math.log(self.num_classes)).clamp(0, 1)

    @staticmethod
    def margin(probs: torch.Tensor) -> torch.Tensor:
        """Per-pixel difference of the two most likely classes' probabilities (N, H, W): small where it hesitates."""
        top2 = probs.topk(2, dim=1).values
        return top2[:, 0] - top2[:, 1]

    def describe(self) -> str:
        raise NotImplementedError


class SoftmaxDecoding(Decoding):
    name = "softmax"
    loss_mode = "multiclass"

    @property
    def outputs(self) -> int:
        return self.num_classes

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(1)

    def labels(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(1)

    def describe(self) -> str:
        return f"softmax over {self.num_classes} classes, argmax"


class SigmoidDecoding(Decoding):
    name = "sigmoid"
    loss_mode = "binary"

    def __init__(self, num_classes: int, threshold: float = 0.5) -> None:
        super().__init__(num_classes)
        self.threshold = threshold
        self._logit_threshold = math.log(threshold / (1 - threshold))

    @property
    def outputs(self) -> int:
        return 1

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        p = logits.float().sigmoid()
        return torch.cat([1 - p, p], 1)

    def labels(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, 0] > self._logit_threshold).long()

    def describe(self) -> str:
        return f"one logit, sigmoid, foreground above {self.threshold}"


def head_problem(head: str, threshold: float, num_classes: int) -> str | None:
    """Why this head cannot decode this taxonomy, or None."""
    if head not in HEADS:
        return f"head must be one of {', '.join(HEADS)}, got {head!r}"
    if not 0 < threshold < 1:
        return f"threshold must be between 0 and 1 (exclusive), got {threshold!r}"
    if head == "sigmoid" and num_classes != 2:
        return (f"a sigmoid head decodes two classes (background and one foreground class); this taxonomy has "
                f"{num_classes}: use head=softmax")
    return None


def build_decoding(head: str, num_classes: int, threshold: float = 0.5) -> Decoding:
    problem = head_problem(head, threshold, num_classes)
    if problem:
        raise ValueError(problem)
    return SigmoidDecoding(num_classes, threshold) if head == "sigmoid" else SoftmaxDecoding(num_classes)


class SegmentationHead(nn.Module):
    """Optional dropout and a 1x1 convolution to the decoding's outputs; carries the decoding for every reader."""

    def __init__(self, cin: int, num_classes: int, head: str = "softmax", threshold: float = 0.5,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.decoding = build_decoding(head, num_classes, threshold)
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.conv = nn.Conv2d(cin, self.decoding.outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.dropout(x))

    def rows(self) -> list[int]:
        """The taxonomy class of each output channel: every class for softmax, the foreground for sigmoid."""
        return [1] if self.decoding.outputs == 1 else list(range(self.decoding.num_classes))


def class_rows(model: nn.Module) -> dict[str, list[int]]:
    """The state-dict keys of ``model`` whose first dimension is indexed by class, with the taxonomy class of each
    row: what transfer learning maps by class name between taxonomies (the head's 1x1 convolution)."""
    out: dict[str, list[int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, SegmentationHead):
            for k in ("weight", "bias"):
                out[f"{name}.conv.{k}" if name else f"conv.{k}"] = m.rows()
    own = getattr(model, "class_rows", None)  # a model whose class layers are not SegmentationHeads names them
    if callable(own):
        out.update(own())
    return out


def source_rows(n_rows: int, n_classes: int) -> list[int] | None:
    """The class of each row of a checkpoint's head tensor with ``n_rows`` rows over ``n_classes`` classes."""
    if n_rows == n_classes:
        return list(range(n_classes))
    if n_rows == 1 and n_classes == 2:
        return [1]
    return None


def decoding_of(model: nn.Module) -> Decoding:
    """The decoding of a semantic model (unwrapped from DDP), from its ``SegmentationHead``."""
    model = getattr(model, "module", model)
    dec = getattr(model, "decoding", None)
    if dec is None:
        dec = next((m.decoding for m in model.modules() if isinstance(m, SegmentationHead)), None)
    if dec is None:
        raise TypeError(f"{type(model).__name__} has no SegmentationHead: a semantic model must end in one")
    return dec
