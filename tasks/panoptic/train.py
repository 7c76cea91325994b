"""Panoptic segmentation: DETR's mask head (``train.models.detr.DetrPanoptic``) on a detector, usually started with
``model.init_from`` a detection run; trained on the detection task's targets with their masks (thing instances and
stuff regions), validated by PQ over the validation images.

The loop's side is the detection task's; what differs is the targets (masks kept), the score (PQ, SQ, RQ over all
classes, things and stuff, per-class PQ), and the panels (class colours of the panoptic map)."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from evaluate.panoptic import ground_truth_instances
from ingest.coco import by_image
from ingest.version import DatasetVersion
from metrics.panoptic import PanopticEvaluator
from tasks.detection.train import DetectionDataset, DetectionTask
from tasks.panoptic.results import panoptic_maps
from train.models import PANOPTIC_MODELS

PQ_NAMES = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")


class PanopticDataset(DetectionDataset):
    """The detection targets with their masks (the mask head's loss reads them)."""

    keep_masks = True


def outputs_to_maps(out: dict[str, Any], is_thing: list[bool], ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """A model output's (semantic, instance-id) maps as numpy arrays."""
    return panoptic_maps(out["semantic"].cpu().numpy(), out["segments"].cpu().numpy(), is_thing, ignore_index)


class PanopticValidation:
    """PQ of a validation pass (detectron2's evaluator protocol), against the labels and the version's instances
    (crowds as their class's crowd region)."""

    def __init__(self, version: DatasetVersion, split: str, val_set: PanopticDataset) -> None:
        tax = version.taxonomy
        self.version, self.val_set, self.tax = version, val_set, tax
        self.is_thing = [c.has_instances for c in tax.classes]
        self.anns = by_image(version.coco(split)["annotations"])
        self.pq = PanopticEvaluator(tax.names, self.is_thing, tax.ignore_index)

    def reset(self) -> None:
        self.pq.reset()

    def process(self, inputs: dict[str, Any], outputs: list[dict[str, Any]]) -> None:
        for i, out in zip(inputs["index"].tolist(), outputs, strict=True):
            im = self.val_set.records[i]
            label = self.version.load_semantic(im)
            sem, inst = outputs_to_maps(out, self.is_thing, self.tax.ignore_index)
            self.pq.process(label, ground_truth_instances(self.anns.get(int(im["id"]), []), label.shape), sem, inst)

    def evaluate(self) -> dict[str, Any]:
        return self.pq.evaluate()


class PanopticTask(DetectionTask):
    name = "panoptic"
    models = PANOPTIC_MODELS
    best_metric = "PQ"
    metric_names = PQ_NAMES

    def datasets(self, version: DatasetVersion, train_ids: list[int] | None, val_split: str,
                 val_ids: list[int] | None, augment: bool = True) -> tuple[Dataset, Dataset]:
        cfg = self.cfg
        aug = {**cfg["augment"], "copy_paste": 0.0} if augment else None
        train_set = PanopticDataset(version, cfg["data"]["train_split"], aug, train_ids, self.progress,
                                    *self.targets)
        train_set.set_random_seed(cfg["train"]["seed"])
        return train_set, self.validation_set(version, val_split, val_ids)

    def validation_set(self, version: DatasetVersion, split: str, ids: list[int] | None) -> PanopticDataset:
        self.val_set = PanopticDataset(version, split, None, ids, self.progress, *self.targets)
        return self.val_set

    def evaluator(self, version: DatasetVersion, split: str) -> PanopticValidation:
        return PanopticValidation(version, split, self.val_set)

    def record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """``val_PQ``, ``val_SQ``, ... (0 where no class could be scored) and per-class PQ as ``val_pq``."""
        rec: dict[str, Any] = {f"val_{k}": float(metrics[k]) if metrics.get(k) is not None else 0.0
                               for k in PQ_NAMES}
        rec["val_pq"] = {n: (v["PQ"] if v else None) for n, v in metrics.get("per_class", {}).items()}
        return rec

    def summary(self, record: dict[str, Any]) -> str:
        return (f"val PQ {record['val_PQ']:.4f}  things {record['val_PQ_th']:.4f}  stuff "
                f"{record['val_PQ_st']:.4f}")

    def panels(self, batch: dict[str, Any], outputs: list[dict[str, Any]], limit: int) -> list[np.ndarray]:
        """image | ground-truth classes | panoptic classes, each thing outlined."""
        from evaluate.gallery import outline

        out = []
        for i, o in enumerate(outputs[:limit]):
            k = int(batch["index"][i])
            img = self.val_set.images[k]
            label = self._val_label(k)
            sem = o["semantic"].cpu().numpy()
            segs = o["segments"].cpu().numpy()
            gt_masks = list(self.val_set.raw(k)[1])
            pred_masks = [segs == s for s in np.unique(segs) if s]
            out.append(np.concatenate([img, outline(self._colour(img, label), gt_masks),
                                       outline(self._colour(img, sem), pred_masks)], 1))
        return out

    def _val_label(self, k: int) -> np.ndarray:
        labels = self.val_set.labels
        return labels[k] if labels is not None else np.full(self.val_set.images[k].shape[:2], 255, np.uint8)


__all__ = ["PQ_NAMES", "PanopticDataset", "PanopticTask", "PanopticValidation", "outputs_to_maps"]
