"""Models by name, per task: ``SEMANTIC_MODELS.build('resunet', {'width': 24}, num_classes=19)``.

Importing this package registers every model module below; an unknown name or argument lists the valid ones.
"""

from __future__ import annotations

from train.models import detr, ensemble, linknet, maskrcnn, unet, yolo  # noqa: F401  (registration)
from train.models.encoders import ENCODERS
from train.models.registry import DETECTION_MODELS, INSTANCE_MODELS, PANOPTIC_MODELS, SEMANTIC_MODELS

__all__ = ["DETECTION_MODELS", "ENCODERS", "INSTANCE_MODELS", "PANOPTIC_MODELS", "SEMANTIC_MODELS"]
