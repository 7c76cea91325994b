"""COCO instance evaluation (mask and box AP) of results against a dataset version's COCO split."""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def coco_scores(gt: dict[str, Any], results: list[dict[str, Any]], image_ids: set[int] | None = None,
                iou_types: tuple[str, ...] = ("segm", "bbox")) -> dict[str, Any]:
    """COCOeval's stats per IoU type (``segm_AP``, ``bbox_AP50``, ...) and per-class AP (``segm_per_class``)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = copy.deepcopy(gt)
    if image_ids is not None:
        gt["images"] = [im for im in gt["images"] if im["id"] in image_ids]
        gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in image_ids]
    ids = [im["id"] for im in gt["images"]]
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = gt
        cg.createIndex()
    out: dict[str, Any] = {}
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for t in iou_types:
        rs = [r for r in results if (t != "segm" or "segmentation" in r)]
        if not rs:
            out.update({f"{t}_{n}": 0.0 for n in STAT_NAMES})
            out[f"{t}_per_class"] = {}
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            cd = cg.loadRes(copy.deepcopy(rs))
            ev = COCOeval(cg, cd, t)
            ev.params.imgIds = ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out.update({f"{t}_{n}": max(float(v), 0.0) for n, v in zip(STAT_NAMES, ev.stats, strict=True)})
        prec = ev.eval["precision"][:, :, :, 0, -1]  # iou, recall, class, area all, maxDets 100
        per = {}
        for k, cid in enumerate(ev.params.catIds):
            p = prec[:, :, k]
            if (p > -1).any() and cid in names:
                per[names[cid]] = float(np.mean(p[p > -1]))
        out[f"{t}_per_class"] = per
    return out


class CocoEvaluator:
    """Collects COCO results image by image; ``evaluate`` scores them against the split's ground truth."""

    def __init__(self, gt: dict[str, Any], image_ids: set[int] | None = None) -> None:
        self.gt, self.image_ids = gt, image_ids
        self.results: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.results = []

    def process(self, inputs: Any, outputs: list[dict[str, Any]]) -> None:
        """``outputs``: COCO result dicts (image_id, category_id, score, bbox, segmentation RLE)."""
        self.results.extend(outputs)

    def evaluate(self) -> dict[str, Any]:
        return coco_scores(self.gt, self.results, self.image_ids)
