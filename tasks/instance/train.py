"""Instance segmentation: torchvision-style detection models (Mask R-CNN), scored by COCO mask AP."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, DistributedSampler, Sampler

from core.errors import SegLoopError
from ingest.version import DatasetVersion
from metrics.coco import STAT_NAMES, CocoInstanceEvaluator
from tasks.instance.results import SCORE_THRESHOLD, paint_masks
from train.infer import autocast_for
from train.instance_data import GroupedBatchSampler, InstanceDataset, aspect_groups, collate_instances
from train.models import INSTANCE_MODELS
from train.task import Task

MASK_THRESHOLD = 0.5  # mask probability above which a pixel belongs to the instance (torchvision's convention)


class _BatchEvaluator(CocoInstanceEvaluator):
    """Fed with a validation batch: its targets carry the image ids."""

    def process(self, inputs: dict[str, Any], outputs: list[dict[str, torch.Tensor]]) -> None:
        super().process(inputs["target"], outputs)


# the augmentation settings of semantic training, which no instance trainer reads
SEMANTIC_ONLY = {**{f"augment.copy_blob.{k}": "CopyBlob pastes class regions into class maps: semantic training only"
                    for k in ("p", "classes", "max_blobs", "band")},
                 "augment.transforms": "albumentations transforms by name are applied to semantic training only",
                 "augment.preview": "the augmentation preview shows semantic training samples"}


class InstanceTask(Task):
    name = "instance"
    models = INSTANCE_MODELS
    best_metric = "segm_AP"
    metric_names = tuple(f"{t}_{n}" for t in ("segm", "bbox") for n in STAT_NAMES)

    @classmethod
    def unused_settings(cls, cfg: dict[str, Any]) -> dict[str, str]:
        why = "Mask R-CNN trains with its own five losses"
        return {"loss.name": why, "loss.args": why, "loss.class_weights": why, **SEMANTIC_ONLY,
                "augment.scale": "Mask R-CNN's scale jitter is model.args.min_size (a list)"}

    @classmethod
    def delegated_trainer(cls, cfg: dict[str, Any]) -> type | None:
        """YOLO-seg models train in Ultralytics' own trainer (``tasks.instance.yolo.YoloFit``)."""
        from train.models.yolo import is_yolo

        if not is_yolo(cfg["model"]["name"]):
            return None
        from tasks.instance.yolo import YoloFit

        return YoloFit

    def check_dataset(self, version: DatasetVersion, split: str) -> None:
        """Refuse a version whose training split has no instance at all; name thing classes without any."""
        things = [c.name for c in self.taxonomy.classes if c.has_instances]
        counts = version.manifest.get("counts", {}).get(split, {}).get("instances_per_class", {})
        if not things:
            raise SegLoopError(f"taxonomy '{self.taxonomy.name}' has no class with instances", path=version.path,
                               fix="use a taxonomy whose thing classes have instances: true, or task=semantic")
        empty = [n for n in things if not counts.get(n)]
        if len(empty) == len(things):
            raise SegLoopError(f"dataset {version.version} has no instances in split '{split}' (none of "
                               f"{', '.join(things)})", path=version.path,
                               fix="build the version from sources with instance annotations (Cityscapes "
                                   "instanceIds or polygons, Label Studio polygons), or train task=semantic")
        if empty:
            print(f"note: no training instances of {', '.join(empty)} in {version.version}; those classes "
                  f"cannot be learned")

    def datasets(self, version: DatasetVersion, train_ids: list[int] | None, val_split: str,
                 val_ids: list[int] | None, augment: bool = True) -> tuple[Dataset, Dataset]:
        cfg = self.cfg
        aug = {**cfg["augment"]} if augment else None
        train_set = InstanceDataset(version, cfg["data"]["train_split"], aug, train_ids, self.progress)
        train_set.set_random_seed(cfg["train"]["seed"])
        return train_set, self.validation_set(version, val_split, val_ids)

    def validation_set(self, version: DatasetVersion, split: str, ids: list[int] | None) -> InstanceDataset:
        """The images validation scores (labels at full resolution, no augmentation); the evaluator's ground
        truth is restricted to them."""
        self.val_set = InstanceDataset(version, split, None, ids, self.progress)
        return self.val_set

    def collate(self, batch: list[Any]) -> Any:
        return collate_instances(batch)

    def batch_sampler(self, dataset: Dataset, sampler: Sampler, batch_size: int) -> Sampler | None:
        """Aspect-ratio groups on one process; under DDP plain batches, because grouped shards would give the
        ranks different numbers of batches (and the gradient all-reduce would wait forever)."""
        if isinstance(sampler, DistributedSampler):
            return None
        return GroupedBatchSampler(sampler, aspect_groups(dataset.aspect_ratios()), batch_size)

    def start_epoch(self, train_set: Dataset, seed: int) -> None:
        train_set.set_random_seed(seed)

    def channels_last(self, model: nn.Module, requested: bool) -> bool:
        return requested and self.device.type == "cuda"

    def _images(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        return [im.to(self.device, non_blocking=True).float().div_(255) for im in batch["image"]]

    def _targets(self, batch: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                 for k, v in t.items()} for t in batch["target"]]

    def train_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with autocast_for(self.device, self.amp):
            losses = model(self._images(batch), self._targets(batch))
        return {k.removeprefix("loss_"): v.float() for k, v in losses.items()}

    @torch.no_grad()
    def validation_loss(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Mask R-CNN's losses on a validation batch. torchvision's detectors only compute losses in train mode, so
        the model runs in train mode without gradients, its normalisation and dropout layers kept in eval so that no
        running statistic moves; proposal sampling draws from the torch RNG, which the caller isolates."""
        was_training = model.training
        model.train()
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.Dropout)):
                m.eval()
        try:
            with autocast_for(self.device, self.amp):
                losses = model(self._images(batch), self._targets(batch))
        finally:
            model.train(was_training)
        return {k.removeprefix("loss_"): v.float() for k, v in losses.items()}

    def evaluator(self, version: DatasetVersion, split: str) -> CocoInstanceEvaluator:
        """COCO AP over the validation images only (a fold validates on part of the train split)."""
        coco = version.coco(split)
        ids = {int(r["id"]) for r in self.val_set.records}
        if len(ids) != len(coco["images"]):
            coco = {**coco, "images": [im for im in coco["images"] if im["id"] in ids],
                    "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
        return _BatchEvaluator(coco, mask_threshold=MASK_THRESHOLD)

    @torch.no_grad()
    def inference(self, model: nn.Module, batch: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        with autocast_for(self.device, self.amp):
            return model(self._images(batch))

    def record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """``val_segm_AP``, ``val_segm_AP50``, ..., ``val_bbox_AP``, ... (0 where COCO leaves a figure undefined)
        and per-class mask AP as ``val_ap``."""
        rec: dict[str, Any] = {}
        for t in ("segm", "bbox"):
            for k, v in metrics.get(t, {}).items():
                if k not in ("stats", "per_class"):
                    rec[f"val_{t}_{k}"] = float(v) if v is not None else 0.0
        rec["val_ap"] = metrics.get("segm", {}).get("per_class", {})
        return rec

    def summary(self, record: dict[str, Any]) -> str:
        return (f"val mask AP {record['val_segm_AP']:.4f}  AP50 {record['val_segm_AP50']:.4f}  "
                f"box AP {record['val_bbox_AP']:.4f}")

    def panels(self, batch: dict[str, Any], outputs: list[dict[str, torch.Tensor]], limit: int) -> list[np.ndarray]:
        """image | ground-truth instances | predicted instances (score >= 0.5), each instance in its class colour."""
        out = []
        for i, det in enumerate(outputs[:limit]):
            img, masks, labels = self.val_set.raw(int(batch["index"][i]))
            keep = det["scores"] >= SCORE_THRESHOLD
            pmasks = (det["masks"][keep, 0] > MASK_THRESHOLD).cpu().numpy()
            gt = paint_masks(masks, labels, np.ones(len(labels)), img.shape[:2], self.taxonomy.ignore_index)
            pred = paint_masks(pmasks, det["labels"][keep].cpu().numpy(), det["scores"][keep].float().cpu().numpy(),
                               img.shape[:2], self.taxonomy.ignore_index)
            out.append(np.concatenate([img, self._colour(img, gt), self._colour(img, pred)], 1))
        return out

    def _colour(self, img: np.ndarray, painted: np.ndarray) -> np.ndarray:
        canvas = (img * 0.4).astype(np.uint8)
        shown = painted != self.taxonomy.ignore_index
        canvas[shown] = self.taxonomy.palette()[painted[shown]]
        return canvas
