"""Detection: DETR-family models (``train.models.detr``) trained on thing boxes and stuff-region boxes, scored by
COCO box AP with the evaluator every instance model uses.

The models speak torchvision's detection API, so the loop's side of this task is the instance task's (batches of
images and targets, aspect-ratio groups, the named losses); what differs is the targets (boxes of things and of
stuff regions, no masks), the score (box AP) and the panels (boxes drawn)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from core.errors import SegLoopError
from ingest.coco import category_id
from ingest.version import DatasetVersion
from metrics.coco import STAT_NAMES, CocoInstanceEvaluator
from tasks.detection.results import SCORE_THRESHOLD, box_mask
from tasks.detection.targets import box_ground_truth, mask_box, stuff_regions
from tasks.instance.results import paint_masks
from tasks.instance.train import SEMANTIC_ONLY, InstanceTask, _BatchEvaluator
from train.infer import autocast_for
from train.instance_data import InstanceDataset
from train.models import DETECTION_MODELS


def target_settings(args: dict[str, Any], taxonomy: Any) -> tuple[bool, int]:
    """(stuff, min_stuff_area) of a model's arguments, with the registry's defaults; stuff targets only where the
    taxonomy has a stuff class (a things-only taxonomy trains things with the default ``stuff: true``)."""
    defaults = DETECTION_MODELS.defaults("conditional_detr")
    stuff = bool(args.get("stuff", defaults["stuff"])) and not all(c.has_instances for c in taxonomy.classes)
    return stuff, int(args.get("min_stuff_area", defaults["min_stuff_area"]))


class DetectionDataset(InstanceDataset):
    """An instance dataset whose items also hold, with ``stuff``, one target per stuff region (a mask, so the
    geometric augmentations move it as they move the instances; its box is recomputed afterwards)."""

    keep_masks = False  # a detector's targets are boxes; the panoptic task's keep their masks

    def __init__(self, version: DatasetVersion, split: str, augment: dict[str, Any] | None, image_ids: list[int] |
                 None, progress: bool, stuff: bool, min_area: int) -> None:
        super().__init__(version, split, augment, image_ids, progress)
        self.taxonomy, self.stuff, self.min_area = version.taxonomy, stuff, min_area
        self.labels = [version.load_semantic(im) for im in self.records] if stuff else None

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img, masks, labels = super().raw(i)
        if not self.stuff:
            return img, masks, labels
        regions = stuff_regions(self.labels[i], self.taxonomy, self.min_area)
        if not regions:
            return img, masks, labels
        return (img, np.concatenate([masks, np.stack([m for _, m in regions])]),
                np.concatenate([labels, np.array([category_id(c) for c, _ in regions], np.int64)]))

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = super().__getitem__(i)
        if not self.keep_masks:
            item["target"].pop("masks")  # boxes are the targets: no mask goes to the model
        return item


class DetectionTask(InstanceTask):
    name = "detection"
    models = DETECTION_MODELS
    best_metric = "bbox_AP"
    metric_names = tuple(f"bbox_{n}" for n in STAT_NAMES)

    @classmethod
    def unused_settings(cls, cfg: dict[str, Any]) -> dict[str, str]:
        why = "DETR trains with its own set-prediction loss (classes, L1 and GIoU of matched boxes)"
        return {"loss.name": why, "loss.args": why, "loss.class_weights": why, **SEMANTIC_ONLY,
                "augment.copy_paste": "copy-paste pastes instance masks; a detection model's targets are boxes",
                "augment.scale": "DETR's scale jitter is model.args.min_size (a list)"}

    @classmethod
    def delegated_trainer(cls, cfg: dict[str, Any]) -> type | None:
        return None

    @property
    def targets(self) -> tuple[bool, int]:
        return target_settings(self.model_args(), self.taxonomy)

    def check_dataset(self, version: DatasetVersion, split: str) -> None:
        """Refuse a version with nothing to detect: without stuff targets, one with no instance; stuff asked for
        by a taxonomy without a stuff class."""
        tax = self.taxonomy
        stuff, _ = self.targets
        if all(c.has_instances for c in tax.classes):
            if (self.cfg["model"]["args"] or {}).get("stuff") is True:
                raise SegLoopError(f"model.args.stuff is true, but taxonomy '{tax.name}' has no stuff class to "
                                   f"combine with the things", path=version.path,
                                   fix="set model.args.stuff=false (thing boxes only), or use a taxonomy with "
                                       "stuff classes")
            stuff = False
        if not stuff:
            super().check_dataset(version, split)

    def datasets(self, version: DatasetVersion, train_ids: list[int] | None, val_split: str,
                 val_ids: list[int] | None, augment: bool = True) -> tuple[Dataset, Dataset]:
        cfg = self.cfg
        aug = {**cfg["augment"], "copy_paste": 0.0} if augment else None
        train_set = DetectionDataset(version, cfg["data"]["train_split"], aug, train_ids, self.progress,
                                     *self.targets)
        train_set.set_random_seed(cfg["train"]["seed"])
        return train_set, self.validation_set(version, val_split, val_ids)

    def validation_set(self, version: DatasetVersion, split: str, ids: list[int] | None) -> DetectionDataset:
        self.val_set = DetectionDataset(version, split, None, ids, self.progress, *self.targets)
        self._val_version, self._val_split = version, split
        return self.val_set

    def evaluator(self, version: DatasetVersion, split: str) -> CocoInstanceEvaluator:
        """COCO box AP over the validation images, against the box targets (things, and stuff regions)."""
        ids = {int(r["id"]) for r in self.val_set.records}
        gt = box_ground_truth(version, split, *self.targets, image_ids=ids)
        return _BatchEvaluator(gt, iou_types=("bbox",))

    def validation_step(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Any, dict[str, torch.Tensor]]:
        """Detections and the validation losses from one forward pass (the model in eval mode: no dropout)."""
        with autocast_for(self.device, self.amp):
            losses, dets = model(self._images(batch), self._targets(batch), with_detections=True)
        return dets, {k: v.float() for k, v in losses.items()}

    def validation_loss(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with autocast_for(self.device, self.amp):
            return {k: v.float() for k, v in model(self._images(batch), self._targets(batch)).items()}

    def record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """``val_bbox_AP``, ``val_bbox_AP50``, ... (0 where COCO leaves a figure undefined) and per-class box AP
        as ``val_ap``."""
        box = metrics.get("bbox", {})
        rec: dict[str, Any] = {f"val_bbox_{k}": float(v) if v is not None else 0.0 for k, v in box.items()
                               if k not in ("stats", "per_class")}
        rec["val_ap"] = box.get("per_class", {})
        return rec

    def summary(self, record: dict[str, Any]) -> str:
        return (f"val box AP {record['val_bbox_AP']:.4f}  AP50 {record['val_bbox_AP50']:.4f}  "
                f"AP75 {record['val_bbox_AP75']:.4f}")

    def panels(self, batch: dict[str, Any], outputs: list[dict[str, torch.Tensor]], limit: int) -> list[np.ndarray]:
        """image | ground-truth boxes | predicted boxes (score >= 0.5), each filled in its class colour."""
        out = []
        for i, det in enumerate(outputs[:limit]):
            img, masks, labels = self.val_set.raw(int(batch["index"][i]))
            shape = img.shape[:2]
            gt = paint_masks([box_mask(mask_box(m), shape) for m in masks], labels, np.ones(len(labels)), shape,
                             self.taxonomy.ignore_index)
            keep = det["scores"] >= SCORE_THRESHOLD
            boxes = det["boxes"][keep].float().cpu().numpy()
            pred = paint_masks([box_mask([b[0], b[1], b[2] - b[0], b[3] - b[1]], shape) for b in boxes],
                               det["labels"][keep].cpu().numpy(), det["scores"][keep].float().cpu().numpy(), shape,
                               self.taxonomy.ignore_index)
            out.append(np.concatenate([img, self._colour(img, gt), self._colour(img, pred)], 1))
        return out
