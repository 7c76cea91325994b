"""Semantic segmentation: per-pixel classes, models mapping images to (N, C, H, W) logits, scored by mIoU."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ingest.version import DatasetVersion
from metrics.semantic import SemSegEvaluator
from train.data import SplitDataset, build_augment, collate, normalize, resize_image
from train.infer import autocast_for, predict_logits, use_channels_last
from train.losses import build_loss
from train.models import SEMANTIC_MODELS
from train.task import Task


class BatchSemSegEvaluator(SemSegEvaluator):
    """The semantic evaluator fed with a validation batch and its predicted maps."""

    def process(self, inputs: dict[str, Any], outputs: list[torch.Tensor]) -> None:  # type: ignore[override]
        for pred, label in zip(outputs, inputs["label"], strict=True):
            super().process(pred, label.to(pred.device), {})


class SemanticTask(Task):
    name = "semantic"
    models = SEMANTIC_MODELS
    best_metric = "mIoU"
    metric_names = ("mIoU", "pixel_acc", "mDice")

    @classmethod
    def unused_settings(cls, cfg: dict[str, Any]) -> dict[str, str]:
        return {"augment.copy_paste": "copy-paste pastes another image's instances: an instance-task augmentation"}

    def datasets(self, version: DatasetVersion, train_ids: list[int] | None, val_split: str,
                 val_ids: list[int] | None) -> tuple[Dataset, Dataset]:
        cfg = self.cfg
        hw = tuple(cfg["data"]["image_size"])
        aug = build_augment(cfg["augment"], hw, self.taxonomy.ignore_index)
        aug.set_random_seed(cfg["train"]["seed"])
        train_set = SplitDataset(version, cfg["data"]["train_split"], hw, aug, image_ids=train_ids,
                                 progress=self.progress)
        self.val_set = SplitDataset(version, val_split, hw, None, full_labels=True, image_ids=val_ids,
                                    progress=self.progress)
        return train_set, self.val_set

    def collate(self, batch: list[Any]) -> Any:
        return collate(batch)

    def start_epoch(self, train_set: Dataset, seed: int) -> None:
        train_set.set_random_seed(seed)

    @classmethod
    def num_outputs(cls, num_classes: int) -> int:
        return num_classes

    def channels_last(self, model: nn.Module, requested: bool) -> bool:
        self.use_cl = use_channels_last(model, self.device, requested)
        return self.use_cl

    def setup_loss(self, train_set: Dataset) -> None:
        pixels = train_set.pixels_per_class(self.taxonomy.num_classes)
        self.loss_fn = build_loss(self.cfg["loss"], self.taxonomy.num_classes, self.taxonomy.ignore_index,
                                  pixels).to(self.device)

    def train_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = normalize(batch["image"].to(self.device, non_blocking=True))
        # the NHWC->NCHW permute leaves channels_last strides: make the layout explicit either way
        x = x.contiguous(memory_format=torch.channels_last if self.use_cl else torch.contiguous_format)
        y = batch["label"].to(self.device, non_blocking=True)
        with autocast_for(self.device, self.amp):
            loss = self.loss_fn(model(x), y)
        return {self.cfg["loss"]["name"]: loss}

    def evaluator(self, version: DatasetVersion, split: str) -> BatchSemSegEvaluator:
        return BatchSemSegEvaluator(self.taxonomy.names, self.taxonomy.ignore_index)

    def _logits(self, model: nn.Module, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Logits at each label's own resolution, one tensor per batch (labels of different sizes one by one)."""
        labels = batch["label"]
        if isinstance(labels, torch.Tensor):
            return [predict_logits(model, batch["image"], tuple(labels.shape[-2:]), self.device, self.amp,
                                   self.use_cl)]
        return [predict_logits(model, batch["image"][i:i + 1], tuple(lb.shape), self.device, self.amp, self.use_cl)
                for i, lb in enumerate(labels)]

    @torch.no_grad()
    def inference(self, model: nn.Module, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Argmax maps at each label's own resolution."""
        return [m for logits in self._logits(model, batch) for m in logits.argmax(1)]

    @torch.no_grad()
    def validation_step(self, model: nn.Module, batch: dict[str, Any]
                        ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor] | None]:
        """Argmax maps and the training loss (same weights, smoothing, ignore value) from one forward pass, on the
        logits upsampled to each label's full resolution, as the validation metrics see them."""
        labels = batch["label"]
        chunks = self._logits(model, batch)
        targets = [labels] if isinstance(labels, torch.Tensor) else [lb[None] for lb in labels]
        ignore = self.taxonomy.ignore_index
        # an image with no labelled pixel has no loss (cross-entropy over no pixel is NaN): it is left out
        terms = [self.loss_fn(logits, y.to(self.device).long()).float()
                 for logits, y in zip(chunks, targets, strict=True) if bool((y != ignore).any())]
        losses = {self.cfg["loss"]["name"]: torch.stack(terms).mean()} if terms else None
        return [m for logits in chunks for m in logits.argmax(1)], losses

    @torch.no_grad()
    def validation_loss(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        return self.validation_step(model, batch)[1]

    def record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"val_mIoU": metrics["mIoU"], "val_pixel_acc": metrics["pixel_acc"], "val_mDice": metrics["mDice"],
                "val_iou": {n: v["iou"] for n, v in metrics["per_class"].items()}}

    def summary(self, record: dict[str, Any]) -> str:
        return f"val mIoU {record['val_mIoU']:.4f}  pixel acc {record['val_pixel_acc']:.4f}"

    def panels(self, batch: dict[str, Any], outputs: list[torch.Tensor], limit: int) -> list[np.ndarray]:
        out = []
        for i, pred in enumerate(outputs[:limit]):
            index = int(batch["index"][i])
            label = self.val_set.labels[index]
            img = resize_image(self.val_set.images[index], label.shape)
            out.append(np.concatenate([img, self.taxonomy.colorize(label),
                                       self.taxonomy.colorize(pred.cpu().numpy().astype(np.uint8))], 1))
        return out
