"""Mask R-CNN (He et al., 2017) from torchvision, built to train from scratch.

torchvision's backbone helpers assume ImageNet weights: FrozenBatchNorm2d and frozen early stages. Without
pretrained weights both are wrong: frozen statistics of a random network normalise nothing, and frozen random
layers never learn. Here every layer trains, with BatchNorm or GroupNorm; GroupNorm is the default because
detection batches are small (2-8 images), where batch statistics are noisy, and "Rethinking ImageNet Pre-training"
(He, Girshick, Dollar, 2019) shows from-scratch Mask R-CNN with GroupNorm matching pre-trained baselines given
enough iterations. Nothing is downloaded: an encoder starts from a local torchvision state dict
(``weights_backbone=PATH``) or from random weights.

``min_size`` / ``max_size`` are the resize bounds of torchvision's transform. Its 800/1333 defaults would upsample
a 512x256 street image 3x (and cost 3-7x more) without a reason; the defaults here keep such images near their
size. A list of ``min_size`` values is multi-scale training (one picked per batch), torchvision's scale jitter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.ops import MultiScaleRoIAlign

from train.models.registry import INSTANCE_MODELS
from train.models.weights import load_weights_file

BACKBONES = ("resnet50", "resnet18", "resnet34", "mobilenet_v3_large")


def norm_layer(kind: str) -> type[nn.Module] | partial:
    """BatchNorm2d, or GroupNorm with 32 groups where the channel count allows (fewer for narrow layers)."""
    if kind == "batch":
        return nn.BatchNorm2d
    if kind == "group":
        return _GroupNorm
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


class _GroupNorm(nn.GroupNorm):
    def __init__(self, num_channels: int, **_: object) -> None:
        super().__init__(math.gcd(32, num_channels), num_channels)


def load_backbone_weights(body: nn.Module, path: str | Path) -> dict[str, str]:
    """Load a torchvision classification state dict into the backbone's body; name what does not fit."""
    return load_weights_file(body, path, "backbone weights", strip=("backbone.body.", "body."),
                             drop=("fc.", "classifier."),
                             fix="use weights of the same torchvision architecture, with model.args.norm=batch for "
                                 "BatchNorm weights")


def _ints(name: str, values: Sequence[object], low: int, high: int | None = None) -> list[int]:
    """``values`` as integers in [low, high], or a ValueError naming the argument (not Python's int() message)."""
    if not len(values):
        raise ValueError(f"model.args.{name} must hold at least one integer, got []")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            span = f"in {low}..{high}" if high is not None else f">= {low}"
            what = f"integers {span}, got {list(values)}" if len(values) > 1 else f"an integer {span}, got {v!r}"
            raise ValueError(f"model.args.{name} must be {what}")
        out.append(v)
    return out


@INSTANCE_MODELS.register("maskrcnn", init_only=("weights_backbone",))
def build_maskrcnn(num_classes: int, backbone: str = "resnet50", norm: str = "group",
                   min_size: int | list[int] = 256, max_size: int = 1024,
                   anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512), trainable_layers: int = 5,
                   weights_backbone: str | None = None, box_detections_per_img: int = 100,
                   box_score_thresh: float = 0.05, box_batch_size_per_image: int = 512,
                   rpn_post_nms_top_n_train: int = 2000) -> MaskRCNN:
    """Mask R-CNN with an FPN backbone, every layer trainable.

    Args:
        num_classes: the taxonomy's classes (set by SegLoop); the network adds the background (label = COCO category id)
        backbone: resnet50, resnet18, resnet34 or mobilenet_v3_large (each with an FPN)
        norm: group (GroupNorm, for small batches from scratch) or batch (BatchNorm2d)
        min_size: shorter image side after resizing; a list is multi-scale training (one value per batch)
        max_size: longer side cap after resizing
        anchor_sizes: anchor size per FPN level in pixels (5 levels for resnets, 3 for mobilenet)
        trainable_layers: backbone stages that train (5 = all; keep 5 without pretrained weights)
        weights_backbone: a local torchvision state dict for the backbone (no downloads)
        box_detections_per_img: most detections kept per image
        box_score_thresh: detections below this score are dropped at inference
        box_batch_size_per_image: RoIs sampled per image to train the box and mask heads (fewer: faster steps)
        rpn_post_nms_top_n_train: proposals kept per image in training after the RPN's NMS
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
    norm_cls = norm_layer(norm)
    min_sizes = tuple(_ints("min_size", min_size if isinstance(min_size, (list, tuple)) else [min_size], 1))
    _ints("max_size", [max_size], 1)
    if max_size < max(min_sizes):
        raise ValueError(f"min_size {min_size} must be at most max_size {max_size}")
    anchors = tuple(_ints("anchor_sizes", anchor_sizes, 1))
    _ints("trainable_layers", [trainable_layers], 0, 5)  # the same range for every backbone
    _ints("box_detections_per_img", [box_detections_per_img], 1)
    _ints("box_batch_size_per_image", [box_batch_size_per_image], 1)
    _ints("rpn_post_nms_top_n_train", [rpn_post_nms_top_n_train], 1)
    if isinstance(box_score_thresh, bool) or not isinstance(box_score_thresh, (int, float)) or not (
            0 <= box_score_thresh < 1):
        raise ValueError(f"model.args.box_score_thresh must be a score in [0, 1), got {box_score_thresh!r}")
    if backbone.startswith("resnet"):
        if len(anchors) != 5:
            raise ValueError(f"resnet FPN backbones have 5 levels: give 5 anchor_sizes, got {len(anchors)}")
        bb = resnet_fpn_backbone(backbone_name=backbone, weights=None, norm_layer=norm_cls,
                                 trainable_layers=trainable_layers)
        featmaps = ["0", "1", "2", "3"]
    else:
        if len(anchors) != 3:
            raise ValueError(f"mobilenet FPN has 3 levels: give 3 anchor_sizes, got {len(anchors)}")
        bb = mobilenet_backbone(backbone_name=backbone, weights=None, fpn=True, norm_layer=norm_cls,
                                trainable_layers=min(trainable_layers + 1, 6))
        featmaps = ["0", "1"]
    if weights_backbone:
        bb.body.pretrained = load_backbone_weights(bb.body, weights_backbone)
    anchor_gen = AnchorGenerator(tuple((a,) for a in anchors), ((0.5, 1.0, 2.0),) * len(anchors))
    return MaskRCNN(
        bb, num_classes=num_classes + 1, min_size=min_sizes, max_size=max_size, rpn_anchor_generator=anchor_gen,
        box_roi_pool=MultiScaleRoIAlign(featmaps, 7, 2), mask_roi_pool=MultiScaleRoIAlign(featmaps, 14, 2),
        box_detections_per_img=box_detections_per_img, box_score_thresh=box_score_thresh,
        box_batch_size_per_image=box_batch_size_per_image, rpn_post_nms_top_n_train=rpn_post_nms_top_n_train)
