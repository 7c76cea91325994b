"""Ensembles of trained models as one model: semantic members' class probabilities averaged; instance members'
detections merged (weighted box and mask fusion: the detections of one class that overlap are one object, whose
box and mask are the score-weighted means of theirs and whose score is the members' agreement).

``evaluate ensemble`` writes it as an ordinary checkpoint (``model_spec`` name ``ensemble``, the members' specs as
its arguments, their weights under ``members.<i>.``), so every reader of a run (``evaluate run``, the report, the
app, ``evaluate predict``, triage) takes it as it takes one model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from train.models.heads import SigmoidDecoding, decoding_of
from train.models.registry import INSTANCE_MODELS, SEMANTIC_MODELS


class Ensemble(nn.Module):
    """Members of one decoding (softmax over the same classes, or one sigmoid logit) whose probabilities are
    averaged; the output is the logits of that mean (log-probabilities, or the sigmoid's logit), so the decoding
    of the first member reads it as it reads one model's."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.decoding = decoding_of(members[0])
        kinds = {(type(decoding_of(m)).__name__, decoding_of(m).num_classes) for m in members}
        if len(kinds) > 1:
            raise ValueError(f"the members decode differently ({sorted(kinds)}): their probabilities do not average")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.decoding, SigmoidDecoding):
            p = torch.stack([torch.sigmoid(m(x).float()) for m in self.members]).mean(0).clamp(1e-6, 1 - 1e-6)
            return torch.log(p) - torch.log1p(-p)
        p = torch.stack([torch.softmax(m(x).float(), 1) for m in self.members]).mean(0)
        return torch.log(p.clamp_min(1e-12))


@SEMANTIC_MODELS.register("ensemble")
def ensemble(num_classes: int, members: list[dict[str, Any]]) -> Ensemble:
    """Mean of several models' class probabilities (python -m evaluate ensemble makes one of trained runs).

    Args:
        num_classes: the taxonomy's classes (set by SegLoop)
        members: the members' model specs ({name, args}), as their checkpoints record them
    """
    if not isinstance(members, list) or not members or not all(
            isinstance(m, dict) and isinstance(m.get("name"), str) and m["name"] != "ensemble" for m in members):
        raise ValueError("members must be a list of model specs ({name, args}) of trained models")
    built = []
    for spec in members:
        args = {k: v for k, v in (spec.get("args") or {}).items() if k not in SEMANTIC_MODELS.init_only(spec["name"])}
        built.append(SEMANTIC_MODELS.build(spec["name"], args, num_classes=num_classes))
    return Ensemble(built)


class InstanceEnsemble(nn.Module):
    """Instance models (torchvision-style: images in, one dict of boxes, labels, scores, masks per image out) whose
    detections are fused: per image and class, detections are taken in order of score, each either joins the first
    kept object whose box overlaps it by ``iou`` or more, or starts one; an object's box and mask are the
    score-weighted means of its detections', and its score is the sum of each member's best score in it over the
    number of members (an object all members found keeps its score, one only a single member found is divided)."""

    def __init__(self, members: list[nn.Module], iou: float = 0.55, max_det: int = 100) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.iou, self.max_det = iou, max_det

    def forward(self, images: list[torch.Tensor], targets: Any = None) -> list[dict[str, torch.Tensor]]:
        if targets is not None or self.training:
            raise RuntimeError("an ensemble predicts only: its members are trained runs")
        outputs = [m(images) for m in self.members]
        return [self._fuse(list(per_image)) for per_image in zip(*outputs, strict=True)]

    def _fuse(self, dets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        from torchvision.ops import box_iou

        device = dets[0]["boxes"].device  # the clustering runs on the CPU (a Python loop), masks stay on the device
        boxes = torch.cat([d["boxes"].float() for d in dets]).cpu()
        scores = torch.cat([d["scores"].float() for d in dets]).cpu()
        labels = torch.cat([d["labels"] for d in dets]).cpu()
        masks = torch.cat([d["masks"].float() for d in dets])
        member = torch.cat([torch.full((len(d["scores"]),), i, dtype=torch.long) for i, d in enumerate(dets)])
        order = scores.argsort(descending=True)
        clusters: list[list[int]] = []
        heads: list[int] = []
        iou = box_iou(boxes, boxes) if len(boxes) else boxes.new_zeros((0, 0))
        for i in order.tolist():
            match = next((c for c, h in enumerate(heads) if labels[h] == labels[i] and iou[h, i] >= self.iou), None)
            if match is None:
                clusters.append([i])
                heads.append(i)
            else:
                clusters[match].append(i)
        out_boxes, out_scores, out_labels, out_masks = [], [], [], []
        for c in clusters:
            idx = torch.tensor(c)
            w = scores[idx]
            out_boxes.append((boxes[idx] * w[:, None]).sum(0) / w.sum())
            out_masks.append((masks[idx.to(masks.device)] * w.to(masks.device)[:, None, None, None]).sum(0) / w.sum())
            best = torch.zeros(len(dets))
            for j in c:
                best[member[j]] = max(best[member[j]], scores[j])
            out_scores.append(best.sum() / len(dets))
            out_labels.append(labels[c[0]])
        if not clusters:
            return {k: v[:0].to(device) for k, v in {"boxes": boxes, "labels": labels, "scores": scores,
                                                      "masks": masks}.items()}
        result = {"boxes": torch.stack(out_boxes), "labels": torch.stack(out_labels),
                  "scores": torch.stack(out_scores), "masks": torch.stack(out_masks)}
        keep = result["scores"].argsort(descending=True)[: self.max_det]
        return {k: v[keep.to(v.device)].to(device) for k, v in result.items()}


@INSTANCE_MODELS.register("ensemble")
def instance_ensemble(num_classes: int, members: list[dict[str, Any]], iou: float = 0.55) -> InstanceEnsemble:
    """Several instance models' detections fused into one set (python -m evaluate ensemble makes one of runs).

    Args:
        num_classes: the taxonomy's classes (set by SegLoop)
        members: the members' model specs ({name, args}), as their checkpoints record them
        iou: box overlap at which two detections of one class are one object
    """
    if not isinstance(members, list) or not members or not all(
            isinstance(m, dict) and isinstance(m.get("name"), str) and m["name"] != "ensemble" for m in members):
        raise ValueError("members must be a list of model specs ({name, args}) of trained models")
    if not 0 < iou < 1:
        raise ValueError(f"iou must be between 0 and 1, got {iou!r}")
    built = []
    for spec in members:
        args = {k: v for k, v in (spec.get("args") or {}).items() if k not in INSTANCE_MODELS.init_only(spec["name"])}
        built.append(INSTANCE_MODELS.build(spec["name"], args, num_classes=num_classes))
    return InstanceEnsemble(built, iou)
