"""Models by name. ``build_model('resunet', num_classes=19, width=24)``; an unknown name lists the valid ones.

Every model maps a normalised image batch (N, 3, H, W) to logits (N, C, H, W) at the input size, whatever H and W.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from core.errors import SegLoopError
from train.models.linknet import LinkNet
from train.models.resunet import ResUNet

MODELS: dict[str, type[nn.Module]] = {
    "resunet": ResUNet,
    "linknet": LinkNet,
}


def build_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    if name not in MODELS:
        raise SegLoopError(f"unknown model '{name}'", fix=f"model.name must be one of: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes, **kwargs)


def model_kwargs(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments a model config implies (everything but its name and initial weights)."""
    return {k: v for k, v in model_cfg.items() if k not in ("name", "weights")}
