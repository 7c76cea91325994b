"""COCO instance evaluation (mask and box AP / AR, per-class AP, per-image TP / FP / FN), equal to pycocotools.

Why our own: SegLoop reports COCO AP for every instance model, and its numbers must be the ones anyone gets from
pycocotools' ``COCOeval`` on the same files (to 1e-6: the test compares every stat and every per-class AP). But
``COCOeval.evaluateImg`` walks thresholds x detections x ground truths in Python once per image, class and area
range, and dominates the evaluation time. Here the same greedy matching runs once for all images, classes, area
ranges and IoU thresholds at the same time: groups (image, class) are padded into buckets of similar size and the
matching advances one detection rank per step over the whole bucket. Mask IoUs still come from pycocotools'
``mask.iou`` (the same C code, so the same doubles); box IoUs are the same arithmetic as its ``bbIou``, in numpy.

The rules reproduced (pycocotools 2.0.x ``COCOeval``, iouType ``segm`` or ``bbox``, default parameters):

- images: every image of the ground truth; classes: every category of the ground truth (stuff classes have no
  instances, so they are -1 in the precision array and left out of every mean, as in COCOeval);
- detections per (image, class) sorted by descending score with a stable sort (``mergesort`` on ``-score``), the
  first 100 kept; the 1 / 10 / 100 maxDets cut-offs apply per (image, class);
- ground truth ``iscrowd`` is ignored (a detection matched to it is neither TP nor FP; crowd IoU is intersection over
  the detection's area, and a crowd region can absorb several detections); ground truth outside an area range is
  ignored for that range, detections outside it are ignored when unmatched;
- greedy matching: a detection takes the best (ties: the last) unmatched, non-ignored ground truth with IoU >= t,
  else the best ignored one;
- the 101-point interpolated precision, the detections of all images merged with a stable sort on ``-score``
  (image order, then rank within the image, breaks ties exactly as pycocotools does).

Areas (which only decide the small / medium / large ranges): ground truth uses the annotation's ``area``. A result
that carries a ``bbox`` is placed by the box's ``w * h`` in both mask and box evaluation, one that carries only a mask
by its mask area (and, for box evaluation, the mask's bounding box): exactly what pycocotools' ``loadRes`` does, so
the numbers are COCOeval's on the same results file. (detectron2 drops ``bbox`` before mask evaluation to place
results by mask area; pass mask-only results for that convention.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from core.errors import SegLoopError

IOU_TYPES = ("segm", "bbox")
# the exact parameter arrays of pycocotools' Params.setDetParams (the linspace values, not rounded literals)
IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = ((0 ** 2, 1e5 ** 2), (0 ** 2, 32 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e5 ** 2))
AREA_LABELS = ("all", "small", "medium", "large")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
TRIAGE_IOU = 0.5  # per-image TP / FP / FN use the first threshold, area "all", 100 detections

_RLE_COUNTS = re.compile(rb"[0-o]*[0-O]")  # LEB128-style characters of a compressed RLE; the last one ends a number
_RLE_COUNTS_STR = re.compile(r"[0-o]*[0-O]")
_BUCKET_ELEMENTS = 1 << 22  # cap on groups x areas x thresholds x ground truths per matching step (memory)


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


# ---------------------------------------------------------------------------------------------- ground truth


@dataclass
class CocoGroundTruth:
    """A COCO ground truth parsed once into arrays (reused by mask and box evaluation, and by every evaluate())."""

    image_ids: np.ndarray  # sorted, unique (pycocotools evaluates images in this order; it breaks score ties)
    image_sizes: dict[int, tuple[int, int] | None]  # image id -> (height, width) when the file gives them
    category_ids: np.ndarray  # sorted, unique
    category_names: list[str]
    isthing: np.ndarray  # bool per category
    ann_image: np.ndarray  # index into image_ids, in annotation order
    ann_category: np.ndarray  # index into category_ids
    ann_id: np.ndarray
    ann_area: np.ndarray  # float64, the annotation's own ``area`` (as COCOeval uses it)
    ann_crowd: np.ndarray  # bool
    ann_bbox: np.ndarray | None  # (N, 4) float64 xywh; None when some annotation has neither bbox nor mask
    ann_segm: list[Any]  # segmentations as given (RLE, uncompressed RLE or polygons); None where absent
    path: str | None = None
    _rles: list[dict[str, Any]] | None = field(default=None, repr=False)

    @classmethod
    def from_dict(cls, gt: Mapping[str, Any], path: str | Path | None = None) -> CocoGroundTruth:
        """Parse and check a COCO dict (a dataset version's ``<split>.json``)."""
        where = str(path) if path is not None else "ground truth"
        fix = "rebuild the dataset version (python -m ingest build ...)"
        if not isinstance(gt, Mapping) or not isinstance(gt.get("images"), list) \
                or not isinstance(gt.get("categories"), list):
            raise SegLoopError("not a COCO ground truth (needs 'images' and 'categories' lists)", path=where, fix=fix)
        sizes: dict[int, tuple[int, int] | None] = {}
        for img in gt["images"]:
            if not isinstance(img, Mapping) or not _is_int(img.get("id")):
                raise SegLoopError(f"an image without an integer id: {str(img)[:120]}", path=where, fix=fix)
            h, w = img.get("height"), img.get("width")
            sizes[int(img["id"])] = (int(h), int(w)) if _is_int(h) and _is_int(w) else None
        cats = {}
        for c in gt["categories"]:
            if not isinstance(c, Mapping) or not _is_int(c.get("id")):
                raise SegLoopError(f"a category without an integer id: {str(c)[:120]}", path=where, fix=fix)
            cats[int(c["id"])] = c
        image_ids = np.array(sorted(sizes), dtype=np.int64)
        category_ids = np.array(sorted(cats), dtype=np.int64)
        img_pos = {int(i): k for k, i in enumerate(image_ids)}
        cat_pos = {int(c): k for k, c in enumerate(category_ids)}
        anns = gt.get("annotations", [])
        if not isinstance(anns, list):
            raise SegLoopError("'annotations' is not a list", path=where, fix=fix)
        n = len(anns)
        ann_image = np.empty(n, np.int64)
        ann_category = np.empty(n, np.int64)
        ann_id = np.empty(n, np.int64)
        ann_area = np.empty(n, np.float64)
        ann_crowd = np.empty(n, bool)
        boxes: list[Any] = []
        segms: list[Any] = []
        seen: set[int] = set()
        for k, a in enumerate(anns):
            try:
                ann_image[k] = img_pos[a["image_id"]]
                ann_category[k] = cat_pos[a["category_id"]]
                ann_id[k] = a["id"]
                ann_area[k] = a["area"]
            except (KeyError, TypeError, ValueError) as exc:
                raise SegLoopError(f"annotation {k} has a missing or unknown id, image_id, category_id or area "
                                   f"({exc!r})", path=where, fix=fix) from None
            if ann_id[k] in seen:
                raise SegLoopError(f"annotation id {ann_id[k]} is used twice", path=where, fix=fix)
            seen.add(int(ann_id[k]))
            ann_crowd[k] = bool(a.get("iscrowd", 0))
            boxes.append(a.get("bbox"))
            segms.append(a.get("segmentation"))
        bbox = None
        if all(b is not None for b in boxes):
            bbox = _boxes(boxes, where, fix) if n else np.zeros((0, 4))
        elif all(b is not None or s is not None for b, s in zip(boxes, segms, strict=True)):
            bbox = np.zeros((n, 4))
            given = [k for k, b in enumerate(boxes) if b is not None]
            if given:
                bbox[given] = _boxes([boxes[k] for k in given], where, fix)
            missing = [k for k, b in enumerate(boxes) if b is None]
            rles = [_gt_rle(segms[k], sizes, int(image_ids[ann_image[k]]), where, fix) for k in missing]
            bbox[missing] = mask_utils.toBbox(rles)
        names = [str(cats[int(c)].get("name", int(c))) for c in category_ids]
        isthing = np.array([bool(cats[int(c)].get("isthing", 1)) for c in category_ids], bool)
        return cls(image_ids, sizes, category_ids, names, isthing, ann_image, ann_category, ann_id, ann_area,
                   ann_crowd, bbox, segms, where)

    @classmethod
    def load(cls, path: str | Path) -> CocoGroundTruth:
        from core.fsio import read_json

        return cls.from_dict(read_json(Path(path), "COCO ground truth"), path)

    def rles(self) -> list[dict[str, Any]]:
        """Every annotation's mask as a compressed RLE (polygons and uncompressed RLE converted as COCO.annToRLE)."""
        if self._rles is None:
            fix = "rebuild the dataset version (python -m ingest build ...)"
            self._rles = [_gt_rle(s, self.image_sizes, int(self.image_ids[i]), self.path, fix)
                          for s, i in zip(self.ann_segm, self.ann_image, strict=True)]
        return self._rles

    def subset(self, image_ids: Iterable[int]) -> CocoGroundTruth:
        """The same ground truth restricted to some images (COCOeval's ``params.imgIds``): what a validation pass
        over part of a split, or over one process's shard, is scored against."""
        wanted = {int(i) for i in image_ids}
        unknown = wanted - set(self.image_sizes)
        if unknown:
            raise SegLoopError(f"image ids {sorted(unknown)[:10]} are not images of the split", path=self.path,
                               fix="evaluate the images of the split the ground truth was written for")
        keep_img = np.isin(self.image_ids, np.fromiter(wanted, np.int64, len(wanted)))
        new_pos = np.cumsum(keep_img) - 1
        keep = keep_img[self.ann_image]
        idx = np.nonzero(keep)[0]
        return CocoGroundTruth(
            self.image_ids[keep_img], {i: s for i, s in self.image_sizes.items() if i in wanted}, self.category_ids,
            self.category_names, self.isthing, new_pos[self.ann_image[keep]], self.ann_category[keep],
            self.ann_id[keep], self.ann_area[keep], self.ann_crowd[keep],
            None if self.ann_bbox is None else self.ann_bbox[keep], [self.ann_segm[k] for k in idx], self.path,
            None if self._rles is None else [self._rles[k] for k in idx])

    def thing_categories(self) -> list[int]:
        """Positions of the categories that have instances (per-class AP is reported for these)."""
        return [k for k in range(len(self.category_ids)) if self.isthing[k]]


def _boxes(boxes: Sequence[Any], where: str | None, fix: str) -> np.ndarray:
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 2 or arr.shape[1] != 4 or not np.isfinite(arr).all():
        raise SegLoopError("a bbox is not four finite numbers [x, y, width, height]", path=where, fix=fix)
    return arr


def _gt_rle(segm: Any, sizes: Mapping[int, tuple[int, int] | None], image_id: int, where: str | None,
            fix: str) -> dict[str, Any]:
    if isinstance(segm, Mapping) and isinstance(segm.get("counts"), str | bytes):
        return _check_rle(segm, sizes.get(image_id), where, "a ground-truth annotation", fix)
    size = sizes.get(image_id)
    try:
        if isinstance(segm, list):
            if size is None:
                raise ValueError("polygons need the image's height and width")
            return mask_utils.merge(mask_utils.frPyObjects(segm, *size))
        if isinstance(segm, Mapping) and isinstance(segm.get("counts"), list):
            return mask_utils.frPyObjects(dict(segm), *segm["size"])
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise SegLoopError(f"image {image_id}: a segmentation that is not RLE or polygons ({exc})", path=where,
                           fix=fix) from None
    raise SegLoopError(f"image {image_id}: an annotation without a segmentation cannot be mask-evaluated",
                       path=where, fix=fix)


def _check_rle(rle: Mapping[str, Any], size: tuple[int, int] | None, where: str | None, what: str,
               fix: str) -> dict[str, Any]:
    counts, rsize = rle.get("counts"), rle.get("size")
    if not (isinstance(rsize, list | tuple) and len(rsize) == 2 and all(_is_int(v) and v >= 0 for v in rsize)):
        raise SegLoopError(f"{what} has an RLE without a valid 'size' [height, width]: {str(rsize)[:60]}",
                           path=where, fix=fix)
    raw = counts.encode("ascii", "replace") if isinstance(counts, str) else counts
    if not isinstance(raw, bytes) or (raw and _RLE_COUNTS.fullmatch(raw) is None):
        raise SegLoopError(f"{what} has malformed RLE counts (not pycocotools' compressed string)", path=where,
                           fix=fix)
    if size is not None and tuple(rsize) != size:
        raise SegLoopError(f"{what} has an RLE of size {list(rsize)}, its image is {list(size)} (height, width)",
                           path=where, fix=fix)
    return rle if isinstance(rle, dict) else dict(rle)


# ---------------------------------------------------------------------------------------------- results


@dataclass
class _Detections:
    image: np.ndarray  # index into the ground truth's image_ids
    category: np.ndarray  # index into category_ids
    score: np.ndarray
    index: np.ndarray  # position in the caller's results list
    rles: list[dict[str, Any] | None]
    bbox: np.ndarray  # (N, 4) xywh, NaN where a result has no bbox
    has_bbox: np.ndarray


def _parse_results(gt: CocoGroundTruth, results: Sequence[Mapping[str, Any]], where: str | None) -> _Detections:
    """Check a COCO results list against the ground truth (raising SegLoopError on anything COCOeval would
    silently drop or crash on) and turn it into arrays. The loop takes a fast path for well-formed results (plain
    dicts, str counts of the image's size) and leaves the diagnosis to the slow path."""
    fix = "write results for the images and categories of this split (COCO results: image_id, category_id, score, " \
          "segmentation as compressed RLE and/or bbox [x, y, w, h])"
    if not isinstance(results, Sequence) or isinstance(results, str | bytes | Mapping):
        raise SegLoopError("instance results are not a list of COCO results", path=where, fix=fix)
    img_pos = {int(i): k for k, i in enumerate(gt.image_ids)}
    cat_pos = {int(c): k for k, c in enumerate(gt.category_ids)}
    sizes = {i: (list(s) if s is not None else None) for i, s in gt.image_sizes.items()}
    n = len(results)
    image = np.empty(n, np.int64)
    category = np.empty(n, np.int64)
    score = np.empty(n, np.float64)
    rles: list[dict[str, Any] | None] = [None] * n
    boxes: list[Any] = [None] * n
    fullmatch = _RLE_COUNTS_STR.fullmatch
    for k, r in enumerate(results):
        if not isinstance(r, Mapping):
            raise SegLoopError(f"result {k} is not an object", path=where, fix=fix)
        iid, cid, s = r.get("image_id"), r.get("category_id"), r.get("score")
        if iid not in img_pos:
            raise SegLoopError(f"result {k}: image_id {iid!r} is not an image of the split {gt.path or ''}".rstrip(),
                               path=where, fix=fix)
        if cid not in cat_pos:
            raise SegLoopError(f"result {k}: unknown category_id {cid!r} (the split's ids are "
                               f"{[int(c) for c in gt.category_ids]})", path=where, fix=fix)
        if type(s) is not float and not _is_number(s):
            raise SegLoopError(f"result {k}: score {s!r} is not a number", path=where, fix=fix)
        image[k], category[k], score[k] = img_pos[iid], cat_pos[cid], s
        seg = r.get("segmentation")
        if seg is not None:
            if not (type(seg) is dict and type(c := seg.get("counts")) is str and seg.get("size") == sizes[iid]
                    and (not c or fullmatch(c))):
                seg = _result_rle(seg, gt.image_sizes.get(iid), where, f"result {k} (image {iid})", fix)
            rles[k] = seg
        b = r.get("bbox")
        if b is None and seg is None:
            raise SegLoopError(f"result {k} has neither a segmentation nor a bbox", path=where, fix=fix)
        boxes[k] = b
    bad = ~np.isfinite(score)
    if bad.any():
        k = int(np.argmax(bad))
        raise SegLoopError(f"result {k}: score {score[k]!r} is not a finite number", path=where, fix=fix)
    has_box = np.array([b is not None for b in boxes], bool)
    bbox = np.full((n, 4), np.nan)
    if has_box.any():
        given = [boxes[k] for k in np.nonzero(has_box)[0]]
        try:
            arr = np.asarray(given)
            ok = arr.dtype.kind in "iuf" and arr.ndim == 2 and arr.shape[1] == 4 and bool(np.isfinite(arr).all())
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            for k in np.nonzero(has_box)[0]:
                b = boxes[k]
                if not (isinstance(b, Sequence | np.ndarray) and len(b) == 4
                        and all(_is_number(v) and math.isfinite(v) for v in b)):
                    raise SegLoopError(f"result {k}: bbox {str(b)[:60]} is not four finite numbers [x, y, w, h]",
                                       path=where, fix=fix)
            arr = np.asarray(given, dtype=np.float64)
        bbox[has_box] = arr
    return _Detections(image, category, score, np.arange(n), rles, bbox, has_box)


def _result_rle(seg: Any, size: tuple[int, int] | None, where: str | None, what: str, fix: str) -> dict[str, Any]:
    if not isinstance(seg, Mapping):
        raise SegLoopError(f"{what}: segmentation is not an RLE object (polygons are not results)", path=where,
                           fix=fix)
    if isinstance(seg.get("counts"), list):
        try:
            seg = mask_utils.frPyObjects(dict(seg), *seg["size"])
        except (TypeError, ValueError, KeyError, IndexError):
            raise SegLoopError(f"{what}: malformed uncompressed RLE", path=where, fix=fix) from None
    return _check_rle(seg, size, where, what, fix)


# ---------------------------------------------------------------------------------------------- matching


def match_groups(ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray,
                 thresholds: Sequence[float] | np.ndarray = IOU_THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """COCO's greedy matching for many groups at once: the one implementation behind AP and per-image triage.

    ``ious``: (B, D, G) detection x ground-truth IoU per group, detections in descending score order, padding < 0.
    ``gt_ignore``: (B, A, G) ground truth ignored per area range (crowd or out of range; padding True).
    ``gt_crowd``: (B, G) crowd regions, which may absorb any number of detections.
    Returns ``match`` (B, A, T, D): the ground-truth index each detection took (-1: none), and ``taken`` (B, A, T, G).

    Per detection and threshold t, the rule of ``COCOeval.evaluateImg``: among the ground truths not yet taken
    (crowd regions are never used up) with IoU >= min(t, 1 - 1e-10), the best non-ignored one (ties: the last),
    and only when there is none, the best ignored one (ties: the last).
    """
    ious = np.asarray(ious, dtype=np.float64)
    B, D, G = ious.shape
    A = gt_ignore.shape[1]
    thr = np.minimum(np.asarray(thresholds, dtype=np.float64), 1 - 1e-10)
    T = len(thr)
    taken = np.zeros((B, A, T, G), bool)
    match = np.full((B, A, T, D), -1, np.int64)
    if B == 0 or D == 0 or G == 0:
        return match, taken
    ign = gt_ignore[:, :, None, :]
    free_crowd = gt_crowd[:, None, None, :]
    for d in range(D):
        row = ious[:, d, :]
        if not (row >= thr.min()).any():
            continue
        reach = row[:, None, :] >= thr[None, :, None]  # (B, T, G)
        elig = reach[:, None] & (~taken | free_crowd)  # (B, A, T, G)
        vals = np.where(elig, row[:, None, None, :], -1.0)
        best = np.empty((2, B, A, T), np.int64)
        found = np.empty((2, B, A, T), bool)
        for k, pool in enumerate((np.where(ign, -1.0, vals), np.where(ign, vals, -1.0))):
            last = G - 1 - np.argmax(pool[..., ::-1], axis=-1)  # argmax takes the first maximum: reversed, the last
            best[k] = last
            found[k] = np.take_along_axis(pool, last[..., None], -1)[..., 0] >= 0
        m = np.where(found[0], best[0], np.where(found[1], best[1], -1))
        match[..., d] = m
        hit = m >= 0
        if hit.any():
            b, a, t = np.nonzero(hit)
            taken[b, a, t, m[hit]] = True
    return match, taken


def greedy_match(ious: np.ndarray, gt_ignore: Sequence[bool] | np.ndarray, gt_crowd: Sequence[bool] | np.ndarray,
                 thresholds: Sequence[float] | np.ndarray = (TRIAGE_IOU,)) -> np.ndarray:
    """One group of :func:`match_groups`: (D, G) IoUs, detections in score order -> (T, D) matched index or -1."""
    ious = np.asarray(ious, dtype=np.float64).reshape(len(ious), len(gt_crowd))
    ign = np.asarray(gt_ignore, bool).reshape(1, 1, -1)
    crowd = np.asarray(gt_crowd, bool).reshape(1, -1)
    return match_groups(ious[None], ign, crowd, thresholds)[0][0, 0]


def mask_areas(rles: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Pixel areas of compressed RLEs. In chunks of 255: pycocotools 2.0.11's ``mask.area`` overflows a uint8
    on longer lists (OverflowError at 256 objects)."""
    if not rles:
        return np.zeros(0)
    return np.concatenate([mask_utils.area(list(rles[i:i + 255])) for i in range(0, len(rles), 255)]).astype(
        np.float64)


def _bucket_sizes(n: np.ndarray) -> np.ndarray:
    return 1 << np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64)


def _box_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """pycocotools' bbIou, broadcast: (..., D, 4) x (..., G, 4) -> (..., D, G), same operations in the same order."""
    dx, dy, dw, dh = (d[..., :, None, k] for k in range(4))
    gx, gy, gw, gh = (g[..., None, :, k] for k in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
        h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
        i = w * h
        u = np.where(crowd[..., None, :], dw * dh, dw * dh + gw * gh - i)
        return np.where((w > 0) & (h > 0), i / u, 0.0)


# ---------------------------------------------------------------------------------------------- evaluation


@dataclass
class CocoEvalResult:
    """What one COCO evaluation (one IoU type) produced; ``stats`` is COCOeval.stats, the arrays COCOeval.eval's."""

    iou_type: str
    stats: np.ndarray  # (12,) in STAT_NAMES order; -1 where undefined, as COCOeval
    precision: np.ndarray  # (T, R, K, A, M)
    recall: np.ndarray  # (T, K, A, M)
    category_ids: list[int]
    category_names: list[str]
    per_class: dict[str, float | None]  # AP per thing class (IoU .50:.95, area all, 100 dets); None: no ground truth
    per_image: list[dict[str, int]]  # image_id, tp, fp, fn at IoU 0.5 (area all, 100 dets per class)
    result_status: list[str]  # per input result at IoU 0.5: "tp", "fp", "ignored" (crowd) or "unranked" (> 100)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: named stats (None where COCOeval gives -1), the raw ``stats`` list and per-class AP."""
        out: dict[str, Any] = {n: (None if v == -1 else float(v)) for n, v in zip(STAT_NAMES, self.stats,
                                                                                  strict=True)}
        out["stats"] = [float(v) for v in self.stats]
        out["per_class"] = dict(self.per_class)
        return out


def evaluate_coco(gt: CocoGroundTruth | Mapping[str, Any], results: Sequence[Mapping[str, Any]],
                  iou_type: str = "segm", *, results_path: str | Path | None = None) -> CocoEvalResult:
    """Evaluate COCO results against a ground truth for one IoU type ("segm" or "bbox"), as COCOeval does."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, not {iou_type!r}")
    if not isinstance(gt, CocoGroundTruth):
        gt = CocoGroundTruth.from_dict(gt)
    where = str(results_path) if results_path is not None else "instance results"
    dets = _parse_results(gt, results, where)
    return _evaluate(gt, dets, iou_type, where)


def evaluate_instances(gt: CocoGroundTruth | Mapping[str, Any], results: Sequence[Mapping[str, Any]],
                       iou_types: Iterable[str] = IOU_TYPES, *,
                       results_path: str | Path | None = None) -> dict[str, CocoEvalResult]:
    """Mask and box evaluation of the same results (the results are checked and parsed once)."""
    if not isinstance(gt, CocoGroundTruth):
        gt = CocoGroundTruth.from_dict(gt)
    where = str(results_path) if results_path is not None else "instance results"
    dets = _parse_results(gt, results, where)
    return {t: _evaluate(gt, dets, t, where) for t in iou_types}


def _evaluate(gt: CocoGroundTruth, dets: _Detections, iou_type: str, where: str) -> CocoEvalResult:
    dt_box, dt_area = _geometry(gt, dets, iou_type, where)
    groups = _Groups.build(gt, dets)
    lo = np.array([r[0] for r in AREA_RANGES], np.float64)
    hi = np.array([r[1] for r in AREA_RANGES], np.float64)
    gt_ign = gt.ann_crowd[:, None] | (gt.ann_area[:, None] < lo) | (gt.ann_area[:, None] > hi)  # (N_gt, A)
    dt_out = (dt_area[:, None] < lo) | (dt_area[:, None] > hi)  # (N_det, A)
    match_gt, gt_taken = _match_all(gt, dets, groups, gt_ign, iou_type, dt_box)
    # matched: to a ground truth whose id is not 0 (COCOeval tests the matched id for truth); ignored: matched to
    # an ignored ground truth, or unmatched and outside the area range
    has = match_gt >= 0
    mi = np.maximum(match_gt, 0)
    matched = has & (gt.ann_id[mi] != 0)
    ignored = (has & gt_ign[mi, np.arange(len(AREA_RANGES))[None, :, None]]) | (~matched & dt_out[:, :, None])
    precision, recall = _accumulate(gt, dets, groups, matched, ignored, gt_ign)
    per_class: dict[str, float | None] = {}
    for k in gt.thing_categories():
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[gt.category_names[k]] = float(np.mean(p)) if p.size else None
    per_image, status = _triage(gt, dets, matched, ignored, gt_taken, gt_ign, groups.rank)
    return CocoEvalResult(iou_type, _summarize(precision, recall), precision, recall,
                          [int(c) for c in gt.category_ids], list(gt.category_names), per_class, per_image, status)


def _geometry(gt: CocoGroundTruth, dets: _Detections, iou_type: str,
              where: str) -> tuple[np.ndarray | None, np.ndarray]:
    """Each result's box (box evaluation only) and the area that puts it in an area range (module docstring)."""
    if iou_type == "segm":
        missing = [k for k, r in enumerate(dets.rles) if r is None]
        if missing:
            raise SegLoopError(f"result {missing[0]} has no segmentation: mask AP needs one per result",
                               path=where, fix="write a segmentation (compressed RLE) for every result")
        # as pycocotools' loadRes: a result that carries a bbox is put in an area range by the box's w * h, one
        # without by its mask area; SegLoop's results files carry both, so their numbers are COCOeval's on the file
        area = mask_areas(dets.rles)
        area[dets.has_bbox] = dets.bbox[dets.has_bbox, 2] * dets.bbox[dets.has_bbox, 3]
        return None, area
    if gt.ann_bbox is None:
        raise SegLoopError("some ground-truth annotations have neither a bbox nor a segmentation", path=gt.path,
                           fix="rebuild the dataset version (python -m ingest build ...)")
    dt_box = dets.bbox.copy()
    dt_area = dt_box[:, 2] * dt_box[:, 3]
    derived = np.nonzero(~dets.has_bbox)[0].tolist()
    if derived:
        rl = [dets.rles[k] for k in derived]
        dt_box[derived] = mask_utils.toBbox(rl)
        dt_area[derived] = mask_areas(rl)
    return dt_box, dt_area


@dataclass
class _Groups:
    """The (category, image) groups that need matching, and each result's rank within its group."""

    rank: np.ndarray  # per result: 0 = highest score of its (category, image), ties in input order
    keep: np.ndarray  # results of rank < 100, grouped by (category, image) and in rank order
    gt_order: np.ndarray  # ground truth grouped by (category, image), file order within a group
    keys: np.ndarray  # groups with both results and ground truth: category * n_images + image
    d_lo: np.ndarray  # their slices of keep
    d_hi: np.ndarray
    g_lo: np.ndarray  # and of gt_order
    g_hi: np.ndarray

    @classmethod
    def build(cls, gt: CocoGroundTruth, dets: _Detections) -> _Groups:
        n_img, n_cat, n_det = len(gt.image_ids), len(gt.category_ids), len(dets.score)
        gt_key = gt.ann_category * n_img + gt.ann_image
        gt_order = np.argsort(gt_key, kind="stable")
        dt_key = dets.category * n_img + dets.image
        dt_order = np.lexsort((-dets.score, dt_key))  # stable: equal scores keep the input order, as mergesort
        sorted_key = dt_key[dt_order]
        rank_sorted = np.arange(n_det) - np.searchsorted(sorted_key, sorted_key, side="left")
        rank = np.empty(n_det, np.int64)
        rank[dt_order] = rank_sorted
        keep = dt_order[rank_sorted < MAX_DETS[-1]]
        keep_key = dt_key[keep]
        gt_sorted_key = gt_key[gt_order]
        keys, = np.nonzero(np.bincount(keep_key, minlength=n_cat * n_img)[:n_cat * n_img] > 0)
        g_lo = np.searchsorted(gt_sorted_key, keys, "left")
        g_hi = np.searchsorted(gt_sorted_key, keys, "right")
        d_lo = np.searchsorted(keep_key, keys, "left")
        d_hi = np.searchsorted(keep_key, keys, "right")
        both = g_hi > g_lo
        return cls(rank, keep, gt_order, keys[both], d_lo[both], d_hi[both], g_lo[both], g_hi[both])


def _match_all(gt: CocoGroundTruth, dets: _Detections, groups: _Groups, gt_ign: np.ndarray, iou_type: str,
               dt_box: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of every group, bucket by bucket (groups padded to the same power-of-two sizes).

    Returns, per result, the ground-truth annotation it matched per area range and threshold (-1: none), shape
    (N_det, A, T), and per ground truth whether it was taken, (N_gt, A, T)."""
    A, T, n_img = len(AREA_RANGES), len(IOU_THRESHOLDS), len(gt.image_ids)
    keep, gt_order = groups.keep, groups.gt_order
    match_gt = np.full((len(dets.score), A, T), -1, np.int64)
    gt_taken = np.zeros((len(gt.ann_id), A, T), bool)
    n_d, n_g = groups.d_hi - groups.d_lo, groups.g_hi - groups.g_lo
    pad_d, pad_g = _bucket_sizes(n_d), _bucket_sizes(n_g)
    if iou_type == "segm":
        flat, det_local, gt_local, offset, width = _image_mask_ious(gt, dets, keep, np.unique(groups.keys % n_img))
    for pd, pg in sorted(set(zip(pad_d.tolist(), pad_g.tolist(), strict=True))):
        members, = np.nonzero((pad_d == pd) & (pad_g == pg))
        step = max(1, _BUCKET_ELEMENTS // (A * T * pg))
        for c0 in range(0, len(members), step):
            sel = members[c0:c0 + step]
            jd, jg = np.arange(pd), np.arange(pg)
            dv, gv = jd < n_d[sel, None], jg < n_g[sel, None]
            d_idx = np.where(dv, keep[np.minimum(groups.d_lo[sel, None] + jd, len(keep) - 1)], -1)
            g_idx = np.where(gv, gt_order[np.minimum(groups.g_lo[sel, None] + jg, len(gt_order) - 1)], -1)
            di, gi = np.maximum(d_idx, 0), np.maximum(g_idx, 0)
            ign = np.where(gv[:, None, :], gt_ign[gi].transpose(0, 2, 1), True)
            crowd = gv & gt.ann_crowd[gi]
            pair = dv[:, :, None] & gv[:, None, :]
            if iou_type == "segm":
                img = groups.keys[sel] % n_img
                at = offset[img][:, None, None] + det_local[di][:, :, None] * width[img][:, None, None] \
                    + gt_local[gi][:, None, :]
                ious = np.where(pair, flat[np.where(pair, at, 0)], -1.0)
            else:
                ious = np.where(pair, _box_iou(dt_box[di], gt.ann_bbox[gi], crowd), -1.0)
            m, taken = match_groups(ious, ign, crowd)
            mg = np.where(m >= 0, g_idx[np.arange(len(sel))[:, None, None, None], np.maximum(m, 0)], -1)
            match_gt[d_idx[dv]] = mg.transpose(0, 3, 1, 2)[dv]
            gt_taken[g_idx[gv]] = taken.transpose(0, 3, 1, 2)[gv]
    return match_gt, gt_taken


def _accumulate(gt: CocoGroundTruth, dets: _Detections, groups: _Groups, matched: np.ndarray, ignored: np.ndarray,
                gt_ign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.accumulate's precision (T, R, K, A, M) and recall (T, K, A, M), one category at a time.

    A result cut by maxDets or ignored contributes neither TP nor FP; keeping it in the cumulative sums as a zero
    repeats the previous recall / precision point, which changes neither the envelope nor the first index reaching
    a recall threshold, so one sort per category serves all three maxDets."""
    T, R, K, A, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(gt.category_ids), len(AREA_RANGES), len(MAX_DETS)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    npig = np.zeros((K, A), np.int64)
    for a in range(A):
        npig[:, a] = np.bincount(gt.ann_category[~gt_ign[:, a]], minlength=K)[:K]
    keep, rank = groups.keep, groups.rank
    # all images' results of a category by descending score, ties in (image, rank) order: COCOeval's concatenation
    # over sorted image ids followed by its mergesort
    order = keep[np.lexsort((rank[keep], dets.image[keep], -dets.score[keep], dets.category[keep]))]
    bounds = np.searchsorted(dets.category[order], np.arange(K + 1))
    maxdets = np.array(MAX_DETS)
    for k in range(K):
        if not (npig[k] > 0).any():
            continue  # no ground truth in any range: -1, left out of the means
        sel = order[bounds[k]:bounds[k + 1]]
        nd = len(sel)
        if nd == 0:
            has_gt = npig[k] > 0
            precision[:, :, k, has_gt, :] = 0.0
            recall[:, k, has_gt, :] = 0.0
            continue
        ok = ~ignored[sel]  # (N, A, T)
        within = (rank[sel][:, None] < maxdets[None, :])[:, :, None, None]  # (N, M, 1, 1)
        tp_sum = np.cumsum((matched[sel] & ok)[:, None] & within, axis=0).astype(float)  # (N, M, A, T)
        fp_sum = np.cumsum((~matched[sel] & ok)[:, None] & within, axis=0).astype(float)
        pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
        env = np.maximum.accumulate(pr[::-1], axis=0)[::-1]  # precision made non-increasing from the right
        for a in range(A):
            if npig[k, a] == 0:
                continue
            rc = tp_sum[:, :, a, :] / npig[k, a]  # (N, M, T)
            recall[:, k, a, :] = rc[-1].T
            for mm in range(M):
                for t in range(T):
                    pi = np.searchsorted(rc[:, mm, t], RECALL_THRESHOLDS, side="left")
                    precision[t, :, k, a, mm] = np.where(pi < nd, env[np.minimum(pi, nd - 1), mm, a, t], 0.0)
    return precision, recall


def _image_mask_ious(gt: CocoGroundTruth, dets: _Detections, keep: np.ndarray,
                     images: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mask IoUs of every kept detection with every ground truth of its image, one pycocotools call per image
    (not per image and class: the call's fixed cost dominates on small groups; pairs of different classes cost
    little, pycocotools skips pairs whose boxes do not overlap). Returns the matrices flattened one after the other
    and, to index them, each detection's and ground truth's position in its image and each image's offset and
    width (number of ground truths)."""
    n_img = len(gt.image_ids)
    gt_rles = gt.rles()
    kd = keep[np.argsort(dets.image[keep], kind="stable")]
    gd = np.argsort(gt.ann_image, kind="stable")
    d_bounds = np.searchsorted(dets.image[kd], np.arange(n_img + 1))
    g_bounds = np.searchsorted(gt.ann_image[gd], np.arange(n_img + 1))
    det_local = np.zeros(len(dets.score), np.int64)
    gt_local = np.zeros(len(gt.ann_id), np.int64)
    offset = np.zeros(n_img, np.int64)
    width = np.zeros(n_img, np.int64)
    chunks, pos = [], 0
    for i in images.tolist():
        ds, gs = kd[d_bounds[i]:d_bounds[i + 1]], gd[g_bounds[i]:g_bounds[i + 1]]
        det_local[ds] = np.arange(len(ds))
        gt_local[gs] = np.arange(len(gs))
        m = np.asarray(mask_utils.iou([dets.rles[j] for j in ds], [gt_rles[j] for j in gs],
                                      gt.ann_crowd[gs].astype(np.uint8).tolist()), np.float64)
        offset[i], width[i] = pos, len(gs)
        chunks.append(m.reshape(-1))
        pos += len(ds) * len(gs)
    flat = np.concatenate(chunks) if chunks else np.zeros(0)
    return flat, det_local, gt_local, offset, width


def _summarize(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """COCOeval.summarize's twelve figures from the accumulated arrays (same selections, same means)."""

    def one(ap: bool, iou: float | None = None, area: str = "all", max_dets: int = 100) -> float:
        a, m = AREA_LABELS.index(area), MAX_DETS.index(max_dets)
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, a, m] if ap else s[:, :, a, m]
        return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

    return np.array([one(True), one(True, .5), one(True, .75), one(True, area="small"),
                     one(True, area="medium"), one(True, area="large"), one(False, max_dets=1),
                     one(False, max_dets=10), one(False), one(False, area="small"), one(False, area="medium"),
                     one(False, area="large")])


def _triage(gt: CocoGroundTruth, dets: _Detections, matched: np.ndarray, ignored: np.ndarray, gt_taken: np.ndarray,
            gt_ign: np.ndarray, rank: np.ndarray) -> tuple[list[dict[str, int]], list[str]]:
    """Per-image TP / FP / FN and a status per result, from the matching at IoU 0.5 over area "all"."""
    n_img = len(gt.image_ids)
    ranked = rank < MAX_DETS[-1]
    tp = ranked & matched[:, 0, 0] & ~ignored[:, 0, 0]
    fp = ranked & ~matched[:, 0, 0] & ~ignored[:, 0, 0]
    fn = ~gt_ign[:, 0] & ~gt_taken[:, 0, 0]
    tps = np.bincount(dets.image[tp], minlength=n_img)
    fps = np.bincount(dets.image[fp], minlength=n_img)
    fns = np.bincount(gt.ann_image[fn], minlength=n_img)
    per_image = [{"image_id": int(i), "tp": int(a), "fp": int(b), "fn": int(c)}
                 for i, a, b, c in zip(gt.image_ids, tps, fps, fns, strict=True)]
    status = np.where(~ranked, "unranked", np.where(tp, "tp", np.where(fp, "fp", "ignored")))
    return per_image, status.tolist()


# ---------------------------------------------------------------------------------------------- evaluator


def _numpy(x: Any) -> np.ndarray:
    """A numpy array from numpy or a torch tensor (without importing torch: evaluation imports no model code)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def outputs_to_results(image_id: int, output: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                       mask_threshold: float = 0.5) -> list[dict[str, Any]]:
    """COCO results of one image from a model's output.

    ``output`` is either already a list of COCO results, or a torchvision-style dict: ``scores`` (N,), ``labels``
    (N,) as COCO category ids (train index + 1; torchvision keeps 0 for the background), optional ``boxes`` (N, 4)
    x0 y0 x1 y1 and optional ``masks`` (N, H, W) or (N, 1, H, W), probabilities (> ``mask_threshold`` is the
    object) or booleans. numpy arrays or torch tensors (on any device).
    """
    if isinstance(output, Sequence) and not isinstance(output, str | bytes):
        return [{**r, "image_id": image_id} if "image_id" not in r else dict(r) for r in output]
    scores = _numpy(output["scores"]).astype(np.float64).reshape(-1)
    labels = _numpy(output["labels"]).astype(np.int64).reshape(-1)
    n = len(scores)
    out = [{"image_id": int(image_id), "category_id": int(c), "score": float(s)} for c, s in zip(labels, scores,
                                                                                             strict=True)]
    if output.get("boxes") is not None:
        b = _numpy(output["boxes"]).astype(np.float64).reshape(n, 4)
        xywh = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
        for r, box in zip(out, xywh.tolist(), strict=True):
            r["bbox"] = box
    if output.get("masks") is not None and n:
        m = _numpy(output["masks"])
        m = m.reshape(n, m.shape[-2], m.shape[-1])
        m = m if m.dtype == bool else m > mask_threshold  # as torchvision's COCO reference scripts
        rles = mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0).astype(np.uint8)))
        for r, rle in zip(out, rles, strict=True):
            r["segmentation"] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return out


class CocoInstanceEvaluator:
    """detectron2-style evaluator (reset / process / evaluate) for instance models: COCO mask and box AP.

    ``process(inputs, outputs)`` takes a batch: ``inputs`` are dicts with the ground truth's ``image_id``;
    ``outputs`` the model's outputs for them (see :func:`outputs_to_results`). Only the images processed are scored.
    The state (``results()`` and the images seen) is plain data, for a distributed run to gather. ``evaluate()`` returns
    ``{"AP": mask AP (the metric that picks the best checkpoint), "segm": {...}, "bbox": {...}, "per_image": [...],
    "num_images": int, "num_results": int}`` where each IoU type holds AP, AP50, AP75, APs, APm, APl, AR1, AR10,
    AR100, ARs, ARm, ARl (fractions, as COCOeval.stats; None where undefined), ``stats`` and ``per_class`` AP.
    """

    def __init__(self, ground_truth: CocoGroundTruth | Mapping[str, Any] | str | Path,
                 iou_types: Sequence[str] = IOU_TYPES, mask_threshold: float = 0.5) -> None:
        if isinstance(ground_truth, str | Path):
            ground_truth = CocoGroundTruth.load(ground_truth)
        elif not isinstance(ground_truth, CocoGroundTruth):
            ground_truth = CocoGroundTruth.from_dict(ground_truth)
        bad = [t for t in iou_types if t not in IOU_TYPES]
        if bad:
            raise ValueError(f"unknown IoU types {bad}; valid: {IOU_TYPES}")
        self.gt = ground_truth
        self.iou_types = tuple(iou_types)
        self.mask_threshold = mask_threshold
        self._results: list[dict[str, Any]] = []
        self._seen: set[int] = set()

    def reset(self) -> None:
        self._results = []
        self._seen = set()

    def process(self, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Any]) -> None:
        """Add one batch of predictions (converted to COCO results right away: masks are small as RLE)."""
        for inp, out in zip(inputs, outputs, strict=True):
            iid = int(inp["image_id"])
            if iid not in self.gt.image_sizes:
                raise SegLoopError(f"image_id {iid} is not an image of the split", path=self.gt.path,
                                   fix="evaluate a model on the split whose ground truth the evaluator was given")
            self._seen.add(iid)
            self._results.extend(outputs_to_results(iid, out, self.mask_threshold))

    def add_results(self, results: Iterable[Mapping[str, Any]], image_ids: Iterable[int]) -> None:
        """Add COCO results gathered elsewhere (another process of a distributed run, or a results file) and the
        images they were predicted on (an image with no result still counts: its objects were missed)."""
        self._results.extend(dict(r) for r in results)
        self._seen.update(int(i) for i in image_ids)

    @property
    def image_ids(self) -> list[int]:
        """The images processed so far, sorted (what another process sends along with ``results()``)."""
        return sorted(self._seen)

    def results(self) -> list[dict[str, Any]]:
        """The COCO results gathered so far (what ``eval/<split>/instances.json`` holds)."""
        return list(self._results)

    def evaluate(self) -> dict[str, Any]:
        # a box-only model has no mask AP; a model that gave masks for some results only is an error (raised)
        boxes_only = bool(self._results) and not any("segmentation" in r for r in self._results)
        types = [t for t in self.iou_types if not (t == "segm" and boxes_only)]
        # only the images seen are scored (as detectron2 sets COCOeval's imgIds): a partial pass is not penalised
        # for the images it never looked at
        evals = evaluate_instances(self.gt.subset(self._seen), self._results, types)
        out: dict[str, Any] = {t: e.to_dict() for t, e in evals.items()}
        first = evals.get("segm") or evals.get("bbox")
        out["AP"] = out["segm"]["AP"] if "segm" in out else out.get("bbox", {}).get("AP")
        out["per_image"] = first.per_image if first is not None else []
        out["num_images"] = len(self._seen)
        out["num_results"] = len(self._results)
        return out
