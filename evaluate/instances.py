"""Per-image instance scoring: ground-truth instances against predicted ones, matched COCO-style.

Predicted instances come from ``eval/<split>/instances.json`` (COCO results: ``image_id``, ``category_id``,
``segmentation`` as RLE, ``score``) when an instance model wrote one; for a semantic model they are the connected
components of each instance class in the semantic prediction, scored by 1 - their mean normalised entropy. That is
what a user sees as "the model found this car", so false positives and misses are counted the same way for both.

Matching follows COCO's rule at one IoU threshold, with the same code as COCO AP (``metrics.coco``):
predictions in decreasing score order take the unmatched non-crowd ground truth of their class with the highest
mask IoU >= the threshold; a prediction that falls mostly inside a crowd region (intersection over the prediction's
area >= the threshold) is neither a TP nor an FP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from core.errors import SegLoopError
from core.fsio import read_json
from ingest.coco import decode_rle, train_index
from ingest.geometry import MIN_COMPONENT_PIXELS, mask_components
from ingest.records import Instance
from ingest.taxonomy import Taxonomy
from metrics.coco import greedy_match


def components_as_instances(pred: np.ndarray, taxonomy: Taxonomy, uncertainty: np.ndarray | None = None,
                            min_pixels: int = MIN_COMPONENT_PIXELS) -> list[Instance]:
    """Instances of a semantic prediction: each component of an instance class (``ingest.geometry``)."""
    conf = None if uncertainty is None else 1 - uncertainty.astype(np.float32) / 255
    out: list[Instance] = []
    for cls in np.unique(pred):
        if cls >= taxonomy.num_classes or not taxonomy.has_instances(int(cls)):
            continue
        for part in mask_components(pred == cls, min_pixels):
            score = float(conf[part].mean()) if conf is not None else None
            out.append(Instance(int(cls), part, 0, score))
    return out


def coco_instances(annotations: list[dict[str, Any]]) -> list[Instance]:
    """Instances of COCO annotations or results (RLE segmentations, category id = train index + 1)."""
    return [Instance(train_index(a["category_id"]), decode_rle(a["segmentation"]), int(a.get("iscrowd", 0)),
                     a.get("score")) for a in annotations]


def load_instance_results(eval_dir: Path, min_score: float | None = None) -> dict[int, list[dict[str, Any]]] | None:
    """COCO results of an instance model grouped by image id, or None when the run has none; with ``min_score``,
    only the detections the evaluation counted as confident (its per-image TP / FP use the same cut)."""
    path = eval_dir / "instances.json"
    if not path.is_file():
        return None
    results = read_json(path, "instance predictions (COCO results)")
    if not isinstance(results, list) or any("segmentation" not in r or "image_id" not in r for r in results):
        raise SegLoopError("instance predictions are not a COCO results list with RLE segmentations", path=path,
                           fix="re-run the evaluation that wrote it")
    by_image: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        if min_score is None or r.get("score", 1.0) >= min_score:
            by_image.setdefault(int(r["image_id"]), []).append(r)
    return by_image


@dataclass
class InstanceMatch:
    """Outcome of matching one image: a status per prediction ("tp", "fp" or "crowd") and per ground truth
    ("tp", "fn" or "crowd"), with the IoU of each match."""

    pred_status: list[str] = field(default_factory=list)
    gt_status: list[str] = field(default_factory=list)
    pred_iou: list[float] = field(default_factory=list)

    @property
    def tp(self) -> int:
        return self.pred_status.count("tp")

    @property
    def fp(self) -> int:
        return self.pred_status.count("fp")

    @property
    def fn(self) -> int:
        return self.gt_status.count("fn")


def _rles(instances: list[Instance]) -> list[dict]:
    return [mask_utils.encode(np.asfortranarray(i.mask.astype(np.uint8))) for i in instances]


def match_instances(gt: list[Instance], pred: list[Instance], iou_threshold: float = 0.5) -> InstanceMatch:
    """Greedy COCO matching of one image's predictions to its ground truth, class by class.

    The matching itself is ``metrics.coco.greedy_match``, the implementation behind COCO AP, so that triage
    counts and AP never disagree on what a match is (ties between equal IoUs go to the later ground truth, as in
    COCOeval). Unlike COCOeval, every prediction is counted (no cut at 100 per class), and a missing score ranks
    first."""
    m = InstanceMatch(["fp"] * len(pred), ["crowd" if g.iscrowd else "fn" for g in gt], [0.0] * len(pred))
    if not gt or not pred:
        return m
    ious = np.asarray(mask_utils.iou(_rles(pred), _rles(gt), [int(g.iscrowd) for g in gt]), dtype=np.float64)
    ious = ious.reshape(len(pred), len(gt))
    crowd = np.array([bool(g.iscrowd) for g in gt])
    gt_cat = np.array([g.category for g in gt])
    pred_cat = np.array([p.category for p in pred])
    scores = np.array([-(p.score if p.score is not None else 1.0) for p in pred])
    for cls in np.unique(pred_cat):
        gi, = np.nonzero(gt_cat == cls)
        if not len(gi):
            continue
        pi, = np.nonzero(pred_cat == cls)
        pi = pi[np.argsort(scores[pi], kind="stable")]
        taken = greedy_match(ious[np.ix_(pi, gi)], crowd[gi], crowd[gi], (iou_threshold,))[0]
        for i, j in zip(pi.tolist(), taken.tolist(), strict=True):
            if j < 0:
                continue
            if crowd[gi[j]]:
                m.pred_status[i] = "crowd"
            else:
                m.gt_status[gi[j]], m.pred_status[i], m.pred_iou[i] = "tp", "tp", float(ious[i, gi[j]])
    return m
