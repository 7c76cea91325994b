"""The model registries, one per task. A model module registers itself with a decorator:

    @SEMANTIC_MODELS.register("resunet")
    class ResUNet(nn.Module): ...

and becomes selectable as ``model.name=resunet`` with its own ``model.args``; nothing else changes.
"""

from __future__ import annotations

from torch import nn

from train.registry import Registry

# semantic: (N, 3, H, W) normalised images -> (N, C, H, W) logits at the input size
SEMANTIC_MODELS: Registry[nn.Module] = Registry("semantic model", "model.name")
# instance: torchvision detection API (list of images [+ targets]) -> losses in training, detections in eval
INSTANCE_MODELS: Registry[nn.Module] = Registry("instance model", "model.name")

# arguments that only initialise weights (a file to start from): a checkpoint's own weights replace what they load,
# so they are not part of the architecture a checkpoint must match, and a run is rebuilt without them
INIT_ONLY_ARGS = frozenset({"weights_backbone"})
