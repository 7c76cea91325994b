"""The model registries, one per task. A model module registers itself with a decorator:

    @SEMANTIC_MODELS.register("resunet")
    class ResUNet(nn.Module): ...

and becomes selectable as ``model.name=resunet`` with its own ``model.args``; nothing else changes. Every model is
built with ``num_classes``, the taxonomy's classes: how many outputs that takes is the model's own business (a
sigmoid head's one logit, Mask R-CNN's added background).
"""

from __future__ import annotations

from torch import nn

from train.registry import Registry

# semantic: (N, 3, H, W) normalised images -> logits at the input size, decoded by the model's SegmentationHead
SEMANTIC_MODELS: Registry[nn.Module] = Registry("semantic model", "model.name")
# instance: torchvision detection API (list of images [+ targets]) -> losses in training, detections in eval
INSTANCE_MODELS: Registry[nn.Module] = Registry("instance model", "model.name")
# detection: the same API as instance models (list of images [+ targets]) -> losses, or boxes, labels and scores
DETECTION_MODELS: Registry[nn.Module] = Registry("detection model", "model.name")
# panoptic: the detection API with masks in the targets -> losses, or per image a panoptic map (classes + ids)
PANOPTIC_MODELS: Registry[nn.Module] = Registry("panoptic model", "model.name")
