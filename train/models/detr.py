"""DETR detectors from Hugging Face ``transformers``, built from a config with random weights and nothing fetched.

Three variants, one set of arguments: ``conditional_detr`` (Meng et al., 2021: conditional spatial queries, which
converge several times faster than DETR's), ``detr`` (Carion et al., 2020; its paper trains 500 epochs from an
ImageNet backbone) and ``deformable_detr`` (Zhu et al., 2021: multi-scale deformable attention over three backbone
stages). The backbone is a ResNet given by an explicit ``ResNetConfig`` (transformers 5 names a timm backbone by
default, and a backbone named without a config asks the hub); its weights are random, or a local torchvision
ResNet state dict (``weights_backbone=PATH``) mapped onto Hugging Face's layer names.

Two things of transformers' DETR backbone are set here rather than taken as they come: its batch norms are frozen
(statistics of ImageNet weights; from scratch a frozen random norm normalises nothing), so ``norm`` chooses
GroupNorm, BatchNorm or the frozen ones; and which backbone stages train is ``trainable_layers`` (transformers'
own rule matches no parameter name of its ResNet backbone and freezes all of it).

The wrapper speaks torchvision's detection API, as Mask R-CNN does, so the instance and detection tasks share
their evaluator and readers: ``model(images)`` with a list of CHW float images in [0, 1] returns per image
``boxes`` (xyxy pixels of the image as given), ``labels`` (COCO category ids = train index + 1) and ``scores``;
``model(images, targets)`` with torchvision-style targets (``boxes`` xyxy pixels, ``labels`` category ids) returns
the weighted loss terms, which sum to transformers' own loss. Images are resized (shorter side ``min_size``, longer
at most ``max_size``; a list of ``min_size`` is multi-scale training), normalised with ImageNet statistics and
padded into one batch with a pixel mask; boxes are normalised by each image's own size, as DETR's image processor
does.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from train.models.maskrcnn import _ints, norm_layer
from train.models.registry import DETECTION_MODELS, PANOPTIC_MODELS
from train.models.weights import load_weights_file

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# name -> (ResNet depths, layer type, hidden sizes)
BACKBONES = {"resnet18": ([2, 2, 2, 2], "basic", [64, 128, 256, 512]),
             "resnet34": ([3, 4, 6, 3], "basic", [64, 128, 256, 512]),
             "resnet50": ([3, 4, 6, 3], "bottleneck", [256, 512, 1024, 2048])}
NORMS = ("group", "batch", "frozen")
VARIANTS = {  # model.name -> (transformers config class, model class, how its logits decode)
    "conditional_detr": ("ConditionalDetrConfig", "ConditionalDetrForObjectDetection", "sigmoid"),
    "detr": ("DetrConfig", "DetrForObjectDetection", "softmax"),
    "deformable_detr": ("DeformableDetrConfig", "DeformableDetrForObjectDetection", "sigmoid"),
}


def torchvision_resnet_key(key: str) -> str:
    """The Hugging Face ResNet backbone's name of a torchvision ResNet state dict key (``layer2.0.conv1.weight`` ->
    ``encoder.stages.1.layers.0.layer.0.convolution.weight``)."""
    if key.startswith("conv1."):
        return "embedder.embedder.convolution." + key.removeprefix("conv1.")
    if key.startswith("bn1."):
        return "embedder.embedder.normalization." + key.removeprefix("bn1.")
    m = re.match(r"layer(\d)\.(\d+)\.(.+)", key)
    if not m:
        return key
    stage, block, rest = int(m.group(1)) - 1, m.group(2), m.group(3)
    prefix = f"encoder.stages.{stage}.layers.{block}."
    m2 = re.match(r"(conv|bn)(\d)\.(.+)", rest)
    if m2:
        part = "convolution" if m2.group(1) == "conv" else "normalization"
        return f"{prefix}layer.{int(m2.group(2)) - 1}.{part}.{m2.group(3)}"
    m3 = re.match(r"downsample\.([01])\.(.+)", rest)
    if m3:
        return f"{prefix}shortcut.{'convolution' if m3.group(1) == '0' else 'normalization'}.{m3.group(2)}"
    return key


def _replace_frozen_norms(module: nn.Module, norm: str) -> None:
    """Put a trainable norm in place of each of transformers' frozen batch norms (``norm`` batch or group)."""
    make = norm_layer(norm)
    for name, child in module.named_children():
        if type(child).__name__.endswith("FrozenBatchNorm2d"):
            setattr(module, name, make(child.weight.numel()))
        else:
            _replace_frozen_norms(child, norm)


class DetrDetector(nn.Module):
    """A transformers DETR model behind torchvision's detection API (see the module's docstring)."""

    def __init__(self, variant: str, num_classes: int, backbone: str, norm: str, trainable_layers: int,
                 weights_backbone: str | None, num_queries: int, d_model: int, encoder_layers: int,
                 decoder_layers: int, heads: int, ffn_dim: int, dropout: float, aux_loss: bool,
                 min_size: int | list[int], max_size: int, backbone_lr_scale: float, detections_per_img: int,
                 score_thresh: float, stuff: bool, min_stuff_area: int) -> None:
        super().__init__()
        import transformers

        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if weights_backbone and norm == "group":
            raise ValueError("weights_backbone holds BatchNorm statistics: use norm=frozen (or batch) with it")
        self.min_sizes = tuple(_ints("min_size", min_size if isinstance(min_size, (list, tuple)) else [min_size], 1))
        _ints("max_size", [max_size], 1)
        if max_size < max(self.min_sizes):
            raise ValueError(f"min_size {min_size} must be at most max_size {max_size}")
        _ints("trainable_layers", [trainable_layers], 0, 5)
        for key, value in (("num_queries", num_queries), ("d_model", d_model), ("encoder_layers", encoder_layers),
                           ("decoder_layers", decoder_layers), ("heads", heads), ("ffn_dim", ffn_dim),
                           ("detections_per_img", detections_per_img)):
            _ints(key, [value], 1)
        _ints("min_stuff_area", [min_stuff_area], 1)
        if d_model % heads:
            raise ValueError(f"d_model {d_model} must be a multiple of heads {heads}")
        for key, value, high in (("dropout", dropout, 1.0), ("score_thresh", score_thresh, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < high:
                raise ValueError(f"model.args.{key} must be a number in [0, {high:g}), got {value!r}")
        if isinstance(backbone_lr_scale, bool) or not isinstance(backbone_lr_scale, (int, float)) or not (
                0 <= backbone_lr_scale <= 1):
            raise ValueError(f"model.args.backbone_lr_scale must be a number in [0, 1], got {backbone_lr_scale!r}")
        config_cls, model_cls, self.decoding = VARIANTS[variant]
        depths, layer_type, hidden = BACKBONES[backbone]
        multi_scale = variant == "deformable_detr"
        bb = transformers.ResNetConfig(depths=depths, layer_type=layer_type, hidden_sizes=hidden,
                                       out_features=self.stages(multi_scale))
        extra = {"num_feature_levels": 4} if multi_scale else {}
        config = getattr(transformers, config_cls)(
            backbone_config=bb, num_labels=num_classes, num_queries=num_queries, d_model=d_model,
            encoder_layers=encoder_layers, decoder_layers=decoder_layers, encoder_attention_heads=heads,
            decoder_attention_heads=heads, encoder_ffn_dim=ffn_dim, decoder_ffn_dim=ffn_dim, dropout=dropout,
            auxiliary_loss=aux_loss, **extra)
        self.detr = self._build(transformers, model_cls, config)
        if norm != "frozen":
            _replace_frozen_norms(self.backbone, norm)
        self.pretrained = (load_weights_file(self.backbone, weights_backbone, "backbone weights",
                                             drop=("fc.",), rename=torchvision_resnet_key,
                                             fix="give a torchvision ResNet state dict of the same depth "
                                                 f"({backbone})") if weights_backbone else None)
        # trainable_layers counts from the top as torchvision's: 5 = stem and all four stages, 0 = none
        trainable = [f"encoder.stages.{i}." for i in range(4)][::-1][:trainable_layers] + (
            ["embedder."] if trainable_layers == 5 else [])
        for name, p in self.backbone.named_parameters():
            p.requires_grad_(any(name.startswith(t) for t in trainable))
        self.num_classes, self.max_size = num_classes, max_size
        self.backbone_lr_scale = float(backbone_lr_scale)
        self.detections_per_img, self.score_thresh = detections_per_img, float(score_thresh)
        self.stuff, self.min_stuff_area = stuff, min_stuff_area  # what the targets were; read by the task
        self.register_buffer("mean", torch.tensor(MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(3, 1, 1), persistent=False)
        w = self.detr.config  # transformers weighs its classification term 1 for every variant (its loss functions)
        self.weights = {"ce": 1.0, "bbox": float(w.bbox_loss_coefficient), "giou": float(w.giou_loss_coefficient)}

    @property
    def backbone(self) -> nn.Module:
        """The ResNet (a transformers ResNetBackbone); a property, not a second registration, so that checkpoints
        hold its tensors once."""
        return self.detr.model.backbone.model

    def stages(self, multi_scale: bool) -> list[str]:
        """The backbone stages whose features the model reads (the last one; three for deformable attention)."""
        return ["stage2", "stage3", "stage4"] if multi_scale else ["stage4"]

    def _build(self, transformers: Any, model_cls: str, config: Any) -> nn.Module:
        return getattr(transformers, model_cls)(config)

    def class_rows(self) -> dict[str, list[int]]:
        """The class layers' state-dict keys and the class of each row (DETR's no-object row is none), for transfer
        between taxonomies (``model.init_from``): rows are mapped by class name."""
        out = {}
        for name, m in self.detr.named_modules():
            if isinstance(m, nn.Linear) and re.fullmatch(r"(class_labels_classifier|class_embed(\.\d+)?)", name):
                for k in ("weight", "bias"):
                    out[f"detr.{name}.{k}"] = list(range(self.num_classes))
        return out

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """The optimiser's groups: the backbone at ``lr * backbone_lr_scale`` (DETR's 1e-5 against 1e-4), the
        transformer and heads at ``lr``; frozen parameters in neither."""
        bb = {id(p) for p in self.backbone.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in bb]
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        groups = [{"params": rest, "lr": lr}]
        if backbone and self.backbone_lr_scale > 0:
            groups.append({"params": backbone, "lr": lr * self.backbone_lr_scale})
        return groups

    def _batch(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Resized, normalised images padded into one tensor, and the mask of their real pixels."""
        if self.training and len(self.min_sizes) > 1:
            size = self.min_sizes[int(torch.randint(len(self.min_sizes), (1,)))]
        else:
            size = self.min_sizes[-1]
        resized = []
        for im in images:
            h, w = im.shape[-2:]
            scale = min(size / min(h, w), self.max_size / max(h, w))
            out = (max(1, round(h * scale)), max(1, round(w * scale)))
            x = im if out == (h, w) else F.interpolate(im[None], size=out, mode="bilinear", align_corners=False)[0]
            resized.append((x - self.mean) / self.std)
        hh, ww = max(r.shape[-2] for r in resized), max(r.shape[-1] for r in resized)
        batch = resized[0].new_zeros((len(resized), 3, hh, ww))
        mask = torch.zeros((len(resized), hh, ww), dtype=torch.long, device=batch.device)
        for i, r in enumerate(resized):
            batch[i, :, : r.shape[-2], : r.shape[-1]] = r
            mask[i, : r.shape[-2], : r.shape[-1]] = 1
        return batch, mask

    def _labels(self, images: Sequence[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]]) -> list[dict]:
        out = []
        for im, t in zip(images, targets, strict=True):
            h, w = im.shape[-2:]
            b = t["boxes"].float().reshape(-1, 4)
            cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                                  (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], 1)
            out.append({"class_labels": t["labels"].long() - 1, "boxes": cxcywh.clamp(0, 1)})
        return out

    def _losses(self, out: Any) -> dict[str, torch.Tensor]:
        """The weighted terms; ``aux`` is the decoder's intermediate layers' share (with ``aux_loss``)."""
        terms = {k: out.loss_dict[f"loss_{k}"] * w for k, w in self.weights.items()}
        if not any(k.endswith("_0") for k in out.loss_dict):  # no intermediate layer's loss was computed
            return terms
        return {**terms, "aux": out.loss - sum(terms.values())}

    def detections(self, out: Any, images: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Boxes, labels and scores per image, as DETR's post-processing: the best class of each query (softmax
        without the no-object class), or the top scores over queries x classes (sigmoid variants)."""
        logits, boxes = out.logits.float(), out.pred_boxes.float()
        results = []
        for k, im in enumerate(images):
            if self.decoding == "softmax":
                scores, labels = logits[k].softmax(-1)[:, :-1].max(-1)
                query = torch.arange(len(scores), device=scores.device)
            else:
                prob = logits[k].sigmoid().flatten()
                scores, idx = prob.topk(min(self.detections_per_img, prob.numel()))
                query, labels = idx // logits.shape[-1], idx % logits.shape[-1]
            h, w = im.shape[-2:]
            cx, cy, bw, bh = boxes[k, query].unbind(-1)
            xyxy = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], -1)
            xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, w)
            xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, h)
            keep = scores >= self.score_thresh
            scores, labels, xyxy = scores[keep], labels[keep], xyxy[keep]
            order = scores.argsort(descending=True)[: self.detections_per_img]
            results.append({"boxes": xyxy[order], "labels": labels[order] + 1, "scores": scores[order]})
        return results

    def forward(self, images: Sequence[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]] | None = None,
                with_detections: bool = False) -> Any:
        """Losses (with ``targets``), detections (without), or both as ``(losses, detections)``."""
        pixels, mask = self._batch(images)
        labels = self._labels(images, targets) if targets is not None else None
        out = self.detr(pixel_values=pixels, pixel_mask=mask, labels=labels)
        if targets is None:
            return self.detections(out, images)
        losses = self._losses(out)
        return (losses, self.detections(out, images)) if with_detections else losses


class DetrPanoptic(DetrDetector):
    """DETR's panoptic head (Carion et al., 2020, section 4.4) on a detector: a multi-head attention map of each
    decoder output over the encoder memory, upsampled with the backbone's features (an FPN-style small convolution
    stack) to a mask logit per query at a quarter of the input size. The detector's parameters keep their names, so
    ``model.init_from`` a detection run starts every one of them; ``freeze_detector`` trains the mask head alone.

    Output per image (no targets): ``segments`` (H, W) ids 1..n (0 void), each segment's ``labels`` (category ids)
    and ``scores``, and ``semantic`` (H, W) train indices (255 void). Each query scored at least ``segment_score``
    competes for the pixels where its mask probability times its score is the highest and its mask probability is at
    least ``mask_threshold``; segments under ``min_area`` pixels become void, as DETR's panoptic post-processing
    does (the task merges one stuff class's segments into one, from the taxonomy)."""

    def __init__(self, variant: str, num_classes: int, *args: Any, freeze_detector: bool, segment_score: float,
                 mask_threshold: float, min_area: int) -> None:
        super().__init__(variant, num_classes, *args)
        for key, value in (("segment_score", segment_score), ("mask_threshold", mask_threshold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"model.args.{key} must be a number in [0, 1), got {value!r}")
        _ints("min_area", [min_area], 0)
        if freeze_detector:
            for p in self.detr.parameters():
                p.requires_grad_(False)
        self.freeze_detector, self.segment_score = freeze_detector, float(segment_score)
        self.mask_threshold, self.min_area = float(mask_threshold), min_area
        self.weights.update(mask=float(self.detr.config.mask_loss_coefficient),
                            dice=float(self.detr.config.dice_loss_coefficient))

    def stages(self, multi_scale: bool) -> list[str]:
        return ["stage1", "stage2", "stage3", "stage4"]  # the mask head's FPN reads three stages below the last

    def _build(self, transformers: Any, model_cls: str, config: Any) -> nn.Module:
        if (config.d_model + config.encoder_attention_heads) % 8:
            raise ValueError(f"the mask head needs d_model + heads to be a multiple of 8, got {config.d_model} + "
                             f"{config.encoder_attention_heads}")
        try:
            seg = getattr(transformers, model_cls.replace("ForObjectDetection", "ForSegmentation"))(config)
        except ValueError as exc:  # the head's group norms over d_model / 2, / 4, ... channels
            raise ValueError(f"the mask head cannot be built with d_model {config.d_model} ({exc}): use a power of "
                             f"two such as 64, 128 or 256") from None
        self.mask_head, self.bbox_attention = seg.mask_head, seg.bbox_attention
        object.__setattr__(self, "segmenter", seg)  # not a registered child: its parts are, under their own names
        return seg.conditional_detr if hasattr(seg, "conditional_detr") else seg.detr

    def _labels(self, images: Sequence[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]]) -> list[dict]:
        """Boxes as the detector's, and each target's mask resized with its image and padded as the batch is."""
        out = super()._labels(images, targets)
        pixels, _ = self._last_batch
        hh, ww = pixels.shape[-2:]
        for lab, im, t, size in zip(out, images, targets, self._sizes, strict=True):
            m = t["masks"].float().reshape(-1, *im.shape[-2:])
            if not len(m):  # no target: an empty stack of the batch's size (transformers pads to the largest)
                lab["masks"] = m.new_zeros((0, hh, ww))
                continue
            if m.shape[-2:] != size:
                m = F.interpolate(m[None], size=size, mode="nearest")[0]
            lab["masks"] = F.pad(m, (0, ww - size[1], 0, hh - size[0]))
        return out

    def _batch(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, mask = super()._batch(images)
        self._sizes = [(int(r.sum(0).max()), int(r.sum(1).max())) for r in mask]  # (h, w) of each real image
        self._last_batch = (pixels, mask)
        return pixels, mask

    def panoptic(self, out: Any, images: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
        """Each image's panoptic map (see the class docstring) at the image's own size."""
        logits = out.logits.float()
        results = []
        for k, im in enumerate(images):
            h, w = im.shape[-2:]
            if self.decoding == "softmax":
                scores, labels = logits[k].softmax(-1)[:, :-1].max(-1)
            else:
                scores, labels = logits[k].sigmoid().max(-1)
            keep = torch.nonzero(scores >= self.segment_score).flatten()
            if not len(keep):  # no confident query: the whole image is void
                results.append(self._assign(torch.zeros((0, h, w)), scores[:0], labels[:0], (h, w)))
                continue
            sh, sw = self._sizes[k]
            masks = out.pred_masks[k, keep].float()
            ph, pw = self._last_batch[0].shape[-2:]
            masks = F.interpolate(masks[None], size=(ph, pw), mode="bilinear", align_corners=False)[0][:, :sh, :sw]
            masks = F.interpolate(masks[None], size=(h, w), mode="bilinear", align_corners=False)[0].sigmoid()
            results.append(self._assign(masks, scores[keep], labels[keep], (h, w)))
        return results

    def _assign(self, probs: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Pixels to segments: ``segments`` (H, W) 1..n in decreasing score (0 void), with each segment's
        ``labels`` (category ids) and ``scores``, and ``semantic`` (H, W) its class (255 void). Which classes are
        things (an id each) and which stuff (one segment per class) is the task's to read from the taxonomy."""
        segments = torch.zeros(shape, dtype=torch.int32)
        kept_labels, kept_scores = [], []
        if len(scores):
            owner = (probs * scores[:, None, None]).argmax(0)
            owner = torch.where(probs.gather(0, owner[None])[0] >= self.mask_threshold, owner, -1).cpu()
            for q in scores.argsort(descending=True).tolist():
                region = owner == q
                if int(region.sum()) < max(self.min_area, 1):
                    continue
                kept_labels.append(int(labels[q]) + 1)
                kept_scores.append(float(scores[q]))
                segments[region] = len(kept_labels)
        lab = torch.tensor([0, *kept_labels], dtype=torch.long)
        semantic = torch.where(segments > 0, lab[segments.long()] - 1, 255).to(torch.uint8)
        return {"segments": segments, "semantic": semantic, "labels": lab[1:],
                "scores": torch.tensor(kept_scores, dtype=torch.float32)}

    def forward(self, images: Sequence[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]] | None = None,
                with_detections: bool = False) -> Any:
        """Losses (with ``targets``, whose ``masks`` the mask loss reads), panoptic maps (without), or both."""
        pixels, mask = self._batch(images)
        labels = self._labels(images, targets) if targets is not None else None
        out = self.segmenter(pixel_values=pixels, pixel_mask=mask, labels=labels)
        if targets is None:
            return self.panoptic(out, images)
        losses = self._losses(out)
        return (losses, self.panoptic(out, images)) if with_detections else losses


def _register(variant: str, summary: str) -> None:
    def build(num_classes: int, backbone: str = "resnet18", norm: str = "group", trainable_layers: int = 5,
              weights_backbone: str | None = None, num_queries: int = 100, d_model: int = 128,
              encoder_layers: int = 3, decoder_layers: int = 3, heads: int = 8, ffn_dim: int = 512,
              dropout: float = 0.1, aux_loss: bool = True, min_size: int | list[int] = 256, max_size: int = 1024,
              backbone_lr_scale: float = 0.1, detections_per_img: int = 100, score_thresh: float = 0.0,
              stuff: bool = True, min_stuff_area: int = 64) -> DetrDetector:
        return DetrDetector(variant, num_classes, backbone, norm, trainable_layers, weights_backbone, num_queries,
                            d_model, encoder_layers, decoder_layers, heads, ffn_dim, dropout, aux_loss, min_size,
                            max_size, backbone_lr_scale, detections_per_img, score_thresh, stuff, min_stuff_area)

    build.__name__ = build.__qualname__ = f"build_{variant}"
    build.__doc__ = f"""{summary}

    Args:
        num_classes: the taxonomy's classes (set by SegLoop); label = COCO category id
        backbone: {', '.join(BACKBONES)} (a ResNetConfig; random weights unless weights_backbone)
        norm: the backbone's norm: group (from scratch), batch, or frozen (ImageNet statistics of weights_backbone)
        trainable_layers: backbone stages that train, from the top (5 = stem and all stages; 0 = frozen backbone)
        weights_backbone: a local torchvision ResNet state dict for the backbone (no downloads)
        num_queries: object queries: the most objects one image can hold
        d_model: the transformer's width
        encoder_layers: transformer encoder layers
        decoder_layers: transformer decoder layers
        heads: attention heads (a divisor of d_model)
        ffn_dim: the transformer's feed-forward width
        dropout: the transformer's dropout
        aux_loss: the loss of every decoder layer's prediction, not only the last one's (as DETR trains)
        min_size: shorter image side after resizing; a list is multi-scale training (one value per batch)
        max_size: longer side cap after resizing
        backbone_lr_scale: the backbone's learning rate as a fraction of optim.lr (DETR: 0.1)
        detections_per_img: most detections kept per image
        score_thresh: detections below this score are dropped at inference
        stuff: stuff classes are targets too, one box per 8-connected region ("things and stuff" as boxes)
        min_stuff_area: stuff regions smaller than this many pixels (at label resolution) are no target
    """
    DETECTION_MODELS.register(variant, init_only=("weights_backbone",))(build)


PANOPTIC_ARGS = {  # the panoptic head's own arguments: (default, meaning)
    "freeze_detector": (False, "train the mask head alone, the detector (from model.init_from) kept as it is"),
    "segment_score": (0.5, "queries scored at least this take part in the panoptic map"),
    "mask_threshold": (0.5, "a pixel belongs to its best query only where that query's mask probability is this"),
    "min_area": (16, "segments smaller than this many pixels become void"),
}


def _register_panoptic(variant: str, summary: str) -> None:
    """The detector's builder with the panoptic head's arguments added (one signature, checked by the registry)."""
    detector = DETECTION_MODELS.get(variant)
    sig = inspect.signature(detector)
    params = list(sig.parameters.values()) + [
        inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d,
                          annotation=type(d).__name__) for k, (d, _) in PANOPTIC_ARGS.items()]

    def build(num_classes: int, **args: Any) -> DetrPanoptic:
        bound = build.__signature__.bind(num_classes, **args)
        bound.apply_defaults()
        values = dict(bound.arguments)
        own = {k: values.pop(k) for k in PANOPTIC_ARGS}
        values.pop("num_classes")
        return DetrPanoptic(variant, num_classes, *values.values(), **own)

    build.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    build.__name__ = build.__qualname__ = f"build_{variant}_panoptic"
    extra = "".join(f"        {k}: {meaning}\n" for k, (_, meaning) in PANOPTIC_ARGS.items())
    build.__doc__ = f"{summary}\n\n" + "\n".join((detector.__doc__ or "").split("\n")[2:]).rstrip() + "\n" + extra
    PANOPTIC_MODELS.register(variant, init_only=("weights_backbone",))(build)


_register("conditional_detr", "Conditional DETR (Meng et al., 2021): DETR with conditional spatial queries, "
                              "several times faster to converge")
_register("detr", "DETR (Carion et al., 2020): a transformer over CNN features, set prediction by Hungarian "
                  "matching")
_register("deformable_detr", "Deformable DETR (Zhu et al., 2021): multi-scale deformable attention over three "
                             "backbone stages")

_register_panoptic("conditional_detr", "Conditional DETR with DETR's panoptic mask head: things with ids, stuff by "
                                      "class")
_register_panoptic("detr", "DETR with its panoptic mask head (Carion et al., 2020): things with ids, stuff by class")

__all__ = ["BACKBONES", "PANOPTIC_ARGS", "VARIANTS", "DetrDetector", "DetrPanoptic", "torchvision_resnet_key"]
