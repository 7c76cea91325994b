"""``evaluate run`` for instance models: COCO mask and box AP, painted semantic maps, per-image TP / FP / FN.

Output, under ``runs/<run>/eval/<split>/`` (replaced atomically):
``instances.json`` (COCO results: RLE masks, boxes, scores), ``metrics.json`` (mask and box AP, AP50, AP75, APs/m/l,
AR, per-class AP; the thing classes' IoU from the painted instances, so semantic and instance runs share one
comparison table), ``per_class.csv``, ``per_image.csv`` (TP / FP / FN at IoU 0.5 of the detections scored at least
``SCORE_THRESHOLD``, the image's thing-class mIoU), ``pred/<image>.png`` (the painted instances as train indices,
255 where no instance) and ``index.json`` (what ``annotate`` reads).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.fsio import save_png, write_json_atomic
from core.metrics import ConfusionMatrix, confusion, scores_from_matrix
from ingest.coco import decode_rle, train_index
from ingest.taxonomy import Taxonomy
from ingest.version import DatasetVersion
from metrics.coco import CocoInstanceEvaluator, evaluate_instances, outputs_to_results

SCORE_THRESHOLD = 0.5  # detections below this are scored by AP but neither painted nor counted as TP / FP


def paint_instances(results: list[dict[str, Any]], shape: tuple[int, int], ignore_index: int = 255,
                    score_threshold: float = SCORE_THRESHOLD) -> np.ndarray:
    """A train-index map of one image's instances: higher scores painted last (on top), ``ignore_index`` where no
    instance is."""
    out = np.full(shape, ignore_index, np.uint8)
    for r in sorted((r for r in results if r["score"] >= score_threshold and "segmentation" in r),
                    key=lambda r: r["score"]):
        out[decode_rle(r["segmentation"])] = train_index(r["category_id"])
    return out


def instance_uncertainty(results: list[dict[str, Any]], score_threshold: float = SCORE_THRESHOLD) -> float:
    """1 - the mean score of an image's confident detections; 1 when the model finds nothing (worth labelling)."""
    scores = [r["score"] for r in results if r["score"] >= score_threshold]
    return float(1 - np.mean(scores)) if scores else 1.0


class ThingIoU:
    """IoU of the thing classes from painted instances: ground-truth stuff and unpainted pixels both count as
    'other', so a thing class's IoU is exactly what a semantic model's confusion matrix gives for it."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        self.things = [c.index for c in taxonomy.classes if c.has_instances]
        self.names = [taxonomy.classes[i].name for i in self.things]
        other = len(self.things)
        self.lut = np.full(256, other, np.uint8)
        self.lut[self.things] = np.arange(other)
        self.lut[taxonomy.ignore_index] = 255
        self.cm = ConfusionMatrix(other + 1, 255)

    def process(self, pred: np.ndarray, label: np.ndarray) -> float:
        """Add one image; its own thing-class mIoU."""
        p = self.lut[pred]
        p[p == 255] = len(self.things)  # unpainted prediction pixels are 'other', not ignored
        mat = confusion(p, self.lut[label], len(self.things) + 1, 255)
        self.cm.mat += mat
        return _mean(scores_from_matrix(mat).iou[:-1])

    def evaluate(self) -> dict[str, Any]:
        s = scores_from_matrix(self.cm.mat)
        return {"things_mIoU": _mean(s.iou[:-1]),
                "thing_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(self.names, s.iou[:-1],
                                                                                     strict=True)}}


def _mean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


@torch.no_grad()
def predict_instances(model: torch.nn.Module, image: np.ndarray, device: torch.device, amp: bool) -> dict:
    """The model's detections for one HWC uint8 image (at the image's own size)."""
    from train.infer import autocast_for

    x = torch.from_numpy(image).permute(2, 0, 1).to(device).float().div_(255)
    with autocast_for(device, amp):
        return model([x])[0]


def evaluate_instance_split(model: torch.nn.Module, ds: DatasetVersion, split: str, tmp: Path, dev: torch.device,
                            amp: bool, progress: bool = True, run_name: str = "") -> tuple[dict[str, Any], list[float]]:
    """Predict, score and write a split into ``tmp`` (the folder that becomes ``eval/<split>/``); returns the
    metrics and the seconds per image."""
    tax = ds.taxonomy
    coco = ds.coco(split)
    evaluator = CocoInstanceEvaluator(coco)
    things = ThingIoU(tax)
    (tmp / "pred").mkdir()
    times: list[float] = []
    rows: list[dict[str, Any]] = []
    index: dict[str, dict[str, Any]] = {}
    for im in tqdm(coco["images"], desc=f"evaluating {run_name} on {split}", disable=not progress):
        img = ds.load_image(im)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = predict_instances(model, img, dev, amp)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        results = outputs_to_results(im["id"], out)
        evaluator.process([{"image_id": im["id"]}], [results])
        pred = paint_instances(results, img.shape[:2], tax.ignore_index)
        name = im["key"].replace("/", "__") + ".png"
        save_png(tmp / "pred" / name, pred)
        miou = things.process(pred, ds.load_semantic(im))
        rows.append({"image_id": im["id"], "key": im["key"], "file": im["file_name"], "prediction": f"pred/{name}",
                     "mIoU": miou, "detections": sum(r["score"] >= SCORE_THRESHOLD for r in results)})
        index[im["sha256"]] = {"image": str(ds.image_path(im)), "prediction": f"pred/{name}", "uncertainty": None,
                               "mean_uncertainty": instance_uncertainty(results), "image_id": im["id"],
                               "score_threshold": SCORE_THRESHOLD}
    metrics = evaluator.evaluate()
    metrics.pop("per_image")
    confident = [r for r in evaluator.results() if r["score"] >= SCORE_THRESHOLD]
    per_image = {p["image_id"]: p for p in evaluate_instances(evaluator.gt, confident, ["segm"])["segm"].per_image}
    for row in rows:
        p = per_image.get(row["image_id"], {"tp": 0, "fp": 0, "fn": 0})
        row.update(tp=p["tp"], fp=p["fp"], fn=p["fn"], instance_errors=p["fp"] + p["fn"])
    metrics.update(things.evaluate())
    metrics["score_threshold"] = SCORE_THRESHOLD
    per_class = metrics["segm"]["per_class"]
    metrics["worst_classes"] = sorted((n for n, v in per_class.items() if v is not None), key=lambda n: per_class[n])
    write_json_atomic(tmp / "instances.json", evaluator.results(), indent=None)
    write_json_atomic(tmp / "index.json", {"run": run_name, "classes": tax.names, "images": index})
    with open(tmp / "per_class.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "mask_ap", "box_ap", "iou"])
        box = metrics.get("bbox", {}).get("per_class", {})
        for n in metrics["worst_classes"] + [n for n in per_class if n not in metrics["worst_classes"]]:
            w.writerow([n, _fmt(per_class[n]), _fmt(box.get(n)), _fmt(metrics["thing_iou"].get(n))])
    with open(tmp / "per_image.csv", "w", newline="") as fh:
        fields = ["image_id", "key", "file", "prediction", "tp", "fp", "fn", "instance_errors", "detections", "mIoU"]
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for row in sorted(rows, key=lambda r: (-r["instance_errors"], r["key"])):
            w.writerow({k: (_fmt(v) if isinstance(v, float) else v) for k, v in row.items()})
    return metrics, times


def _fmt(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.6f}"
