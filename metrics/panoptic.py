"""Panoptic Quality (PQ = SQ x RQ; per class, things, stuff), as the COCO panoptic API and cityscapesScripts'
evalPanopticSemanticLabeling compute it, from semantic + instance maps.

Why from maps: SegLoop's ground truth is a semantic PNG plus COCO instances, and its models give a semantic map and
/ or instances; the panoptic PNG + JSON pair of the COCO format would be one more file format to write and read
back. The segments are built in memory instead (:func:`panoptic_segments`) and scored with the reference rules:

- a ground-truth and a predicted segment of the same class match when IoU > 0.5 (strictly), where the union leaves
  out the predicted pixels that are void in the ground truth; at most one match per segment follows from > 0.5;
- unmatched non-crowd ground truth is a FN; crowd regions are never matched nor missed;
- an unmatched prediction is a FP unless more than half of it lies on void or on the crowd region of its class;
- per class PQ = sum IoU / (TP + FP/2 + FN/2), SQ = sum IoU / TP, RQ = TP / (TP + FP/2 + FN/2); the All / Things /
  Stuff figures average the classes that have any TP, FP or FN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

VOID = 0
MATCH_IOU = 0.5


@dataclass
class PanopticSegments:
    """One image's segments: ``ids`` (H, W) with 0 = void and 1..N the segments; per segment its class (train
    index) and whether it is a crowd region."""

    ids: np.ndarray
    category: np.ndarray
    iscrowd: np.ndarray


def panoptic_segments(semantic: np.ndarray, instance: np.ndarray | None, is_thing: Sequence[bool],
                      ignore_index: int = 255, unassigned_is_crowd: bool = True) -> PanopticSegments:
    """Segments of a semantic map (train indices, ``ignore_index`` = void) and an instance map (0 = no instance).

    A stuff class is one segment (its instance ids are ignored); a thing class gives one segment per instance id.
    Thing pixels without an instance id are the class's crowd region in ground truth (``unassigned_is_crowd``, as
    cityscapesScripts' createPanopticImgs treats Cityscapes' group regions) and one ordinary segment in a
    prediction (``unassigned_is_crowd=False``). Classes >= len(is_thing) are void.
    """
    sem = np.asarray(semantic)
    things = np.asarray(is_thing, bool)
    num_classes = len(things)
    if instance is not None and np.shape(instance) != sem.shape:
        raise ValueError(f"instance map {np.shape(instance)} and semantic map {sem.shape} differ in shape")
    # int32 arithmetic over the pixels (int64 doubles the memory traffic of every step)
    cls = sem.astype(np.int32)
    valid = (cls >= 0) & (cls < num_classes) & (cls != ignore_index)
    cls[~valid] = 0
    inst = np.zeros(sem.shape, np.int32) if instance is None else np.asarray(instance).astype(np.int32)
    inst[~(valid & things[cls]) | (inst < 0)] = 0  # 0: stuff or unassigned thing pixels
    width = int(inst.max()) + 1
    wide = num_classes * width + 1 >= 2**31  # ids so large that the key overflows int32
    key = cls.astype(np.int64) * width + inst + 1 if wide else cls * width + inst + 1
    key[~valid] = 0  # 0 stays void
    top = int(key.max())
    if top <= 4 * key.size + 1024:
        # the segments in increasing key order, numbered from 1 through a lookup table (keys are small: a bincount
        # finds them in one pass, where np.unique would sort every pixel)
        present = np.flatnonzero(np.bincount(key.reshape(-1)))
        present = present[present != 0]
        lut = np.zeros(top + 1, np.int32)
        lut[present] = np.arange(1, len(present) + 1)
        ids = lut[key]
    else:  # sparse, large ids (panopticapi RGB ids, say): sort instead of a table of every key
        present, ids = np.unique(key, return_inverse=True)
        ids = ids.reshape(key.shape).astype(np.int32)
        if present[0] != 0:
            ids += 1
        else:
            present = present[1:]
    seg = present - 1
    category = seg // width
    unassigned = seg % width == 0
    iscrowd = unassigned & things[category] & unassigned_is_crowd
    return PanopticSegments(ids, category.astype(np.int64), iscrowd)


@dataclass
class PQCounts:
    """Per-class sums over images: TP, FP, FN and the IoU sum of the TPs (what PQStat holds in the references)."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou: np.ndarray

    @classmethod
    def zeros(cls, num_classes: int) -> PQCounts:
        z = np.zeros(num_classes, np.int64)
        return cls(z.copy(), z.copy(), z.copy(), np.zeros(num_classes))

    def __iadd__(self, other: PQCounts) -> PQCounts:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou += other.iou
        return self


def pq_image(gt: PanopticSegments, pred: PanopticSegments, num_classes: int) -> PQCounts:
    """One image's TP / FP / FN / IoU sums per class (pq_compute_single_core's rules, with one bincount)."""
    if gt.ids.shape != pred.ids.shape:
        raise ValueError(f"ground truth {gt.ids.shape} and prediction {pred.ids.shape} differ in shape")
    ng, npred = len(gt.category), len(pred.category)
    pair = gt.ids.astype(np.int32) * (npred + 1) + pred.ids if (ng + 1) * (npred + 1) < 2**31 else \
        gt.ids.astype(np.int64) * (npred + 1) + pred.ids
    inter = np.bincount(pair.reshape(-1), minlength=(ng + 1) * (npred + 1)).reshape(ng + 1, npred + 1)
    gt_area, pred_area = inter.sum(1), inter.sum(0)
    out = PQCounts.zeros(num_classes)
    # matches: same class, ground truth not crowd, IoU > 0.5 (the union without the prediction's void pixels)
    g, p = np.nonzero(inter[1:, 1:])
    same = (gt.category[g] == pred.category[p]) & ~gt.iscrowd[g]
    g, p = g[same], p[same]
    i = inter[g + 1, p + 1]
    union = pred_area[p + 1] + gt_area[g + 1] - i - inter[VOID, p + 1]
    iou = i / union
    hit = iou > MATCH_IOU
    g, p, iou = g[hit], p[hit], iou[hit]
    np.add.at(out.tp, gt.category[g], 1)
    np.add.at(out.iou, gt.category[g], iou)
    gt_matched = np.zeros(ng, bool)
    gt_matched[g] = True
    pred_matched = np.zeros(npred, bool)
    pred_matched[p] = True
    fn = ~gt_matched & ~gt.iscrowd
    np.add.at(out.fn, gt.category[fn], 1)
    # the crowd region of each class (the last one, as the reference's dict keeps it)
    crowd_of = np.full(num_classes, -1, np.int64)
    crowd_idx, = np.nonzero(gt.iscrowd)
    crowd_of[gt.category[crowd_idx]] = crowd_idx
    q, = np.nonzero(~pred_matched)
    ignored = inter[VOID, q + 1].astype(np.float64)
    cq = crowd_of[pred.category[q]]
    ignored += np.where(cq >= 0, inter[np.maximum(cq, 0) + 1, q + 1], 0)
    fp = q[~(ignored / pred_area[q + 1] > MATCH_IOU)]
    np.add.at(out.fp, pred.category[fp], 1)
    return out


def pq_summary(counts: PQCounts, class_names: Sequence[str], is_thing: Sequence[bool]) -> dict[str, Any]:
    """PQ / SQ / RQ over all classes, things (``_th``) and stuff (``_st``), with ``n`` the classes averaged, and
    per class (None for a class with no TP, FP or FN: it is left out of the averages, as in the references)."""
    things = np.asarray(is_thing, bool)
    tp, fp, fn, iou = counts.tp, counts.fp, counts.fn, counts.iou
    present = tp + fp + fn > 0
    denom = np.where(present, tp + 0.5 * fp + 0.5 * fn, 1.0)
    pq = iou / denom
    sq = np.where(tp > 0, iou / np.maximum(tp, 1), 0.0)
    rq = tp / denom
    out: dict[str, Any] = {}
    for suffix, sel in (("", np.ones_like(things)), ("_th", things), ("_st", ~things)):
        use = sel & present
        n = int(use.sum())
        for name, v in (("PQ", pq), ("SQ", sq), ("RQ", rq)):
            out[name + suffix] = float(np.mean(v[use])) if n else None
        out["n" + suffix] = n
    out["per_class"] = {
        name: ({"PQ": float(pq[k]), "SQ": float(sq[k]), "RQ": float(rq[k]), "tp": int(tp[k]), "fp": int(fp[k]),
                "fn": int(fn[k])} if present[k] else None)
        for k, name in enumerate(class_names)}
    return out


class PanopticEvaluator:
    """detectron2-style evaluator (reset / process / evaluate) for Panoptic Quality from semantic + instance maps.

    ``process(gt_semantic, gt_instance, pred_semantic, pred_instance)`` adds one image (instance maps: 0 = none;
    ``None`` for a model without instances: each thing class is then one predicted segment); ``evaluate()`` returns
    :func:`pq_summary`'s dict (fractions, not percentages)."""

    def __init__(self, class_names: Sequence[str], is_thing: Sequence[bool], ignore_index: int = 255) -> None:
        if len(class_names) != len(is_thing):
            raise ValueError("class_names and is_thing differ in length")
        self.class_names = list(class_names)
        self.is_thing = [bool(t) for t in is_thing]
        self.ignore_index = ignore_index
        self.counts = PQCounts.zeros(len(self.class_names))

    def reset(self) -> None:
        self.counts = PQCounts.zeros(len(self.class_names))

    def process(self, gt_semantic: np.ndarray, gt_instance: np.ndarray | None, pred_semantic: np.ndarray,
                pred_instance: np.ndarray | None) -> PQCounts:
        """Add one image; returns its own counts (per-image PQ for triage)."""
        gt = panoptic_segments(gt_semantic, gt_instance, self.is_thing, self.ignore_index, unassigned_is_crowd=True)
        pred = panoptic_segments(pred_semantic, pred_instance, self.is_thing, self.ignore_index,
                                 unassigned_is_crowd=False)
        counts = pq_image(gt, pred, len(self.class_names))
        self.counts += counts
        return counts

    def evaluate(self) -> dict[str, Any]:
        return pq_summary(self.counts, self.class_names, self.is_thing)


def pq(images: Iterable[tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]],
       class_names: Sequence[str], is_thing: Sequence[bool], ignore_index: int = 255) -> dict[str, Any]:
    """Panoptic Quality of ``(gt_semantic, gt_instance, pred_semantic, pred_instance)`` tuples, one per image."""
    ev = PanopticEvaluator(class_names, is_thing, ignore_index)
    for item in images:
        ev.process(*item)
    return ev.evaluate()
