"""COCO instance evaluation: SegLoop (metrics.coco) vs pycocotools' COCOeval on the same ground truth and
results, mask and box AP.

Inputs are generated: ``--n`` street-sized images (default 500 at 256x512) with 10-20 objects each (rectangles and
ellipses of 8 classes, some crowd regions, a few images without objects), and results that a fair instance model
could give: most objects found with a shifted or eroded mask and a score, some missed, some false positives, and
scores rounded to two decimals so that ties are common. Both sides start from the same Python dicts (a deep copy
each, outside the timing: pycocotools edits what it is given) and are timed end to end: pycocotools' COCO index,
loadRes, evaluate, accumulate and summarize, per IoU type; SegLoop's ground-truth parse and one evaluate_instances
call for both types. All twelve stats and every per-class AP must agree to 1e-6.

  python bench/coco_eval.py [--n 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import time

import _common  # noqa: F401 - the project root on sys.path, offline environment
import cv2
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from metrics.coco import CocoGroundTruth, evaluate_instances

CLASSES = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]


def _rle(m: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(m))
    r["counts"] = r["counts"].decode("ascii")
    return r


def _shape(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    ry, rx = int(rng.integers(2, h // 4)), int(rng.integers(2, w // 6))
    if rng.random() < 0.5:
        cv2.rectangle(m, (cx - rx, cy - ry), (cx + rx, cy + ry), 1, -1)
    else:
        cv2.ellipse(m, (cx, cy), (rx, ry), 0, 0, 360, 1, -1)
    if not m.any():
        m[min(cy, h - 1), min(cx, w - 1)] = 1
    return m


def generate(n: int, seed: int = 0, size: tuple[int, int] = (256, 512)) -> tuple[dict, list[dict]]:
    """Ground truth (a dataset version's COCO layout) and results of a plausible model."""
    rng = np.random.default_rng(seed)
    h, w = size
    cats = [{"id": 1, "name": "road", "isthing": 0}] + [{"id": k + 2, "name": c, "isthing": 1}
                                                          for k, c in enumerate(CLASSES)]
    images, anns, results = [], [], []
    kernel = np.ones((3, 3), np.uint8)
    for i in range(1, n + 1):
        images.append({"id": i, "width": w, "height": h, "file_name": f"{i}.png"})
        n_obj = 0 if i % 50 == 0 else int(rng.integers(10, 21))
        for _ in range(n_obj):
            m = _shape(rng, h, w)
            cat = int(rng.integers(2, 2 + len(CLASSES)))
            r = _rle(m)
            crowd = int(rng.random() < 0.05)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "segmentation": r,
                         "area": float(mask_utils.area(r)), "bbox": mask_utils.toBbox(r).tolist(), "iscrowd": crowd})
            if rng.random() < 0.2:
                continue  # missed
            p = np.roll(m, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
            if rng.random() < 0.3:
                p = cv2.erode(p, kernel) if p.sum() > 40 else p
            results.append({"image_id": i, "category_id": cat if rng.random() < 0.9 else int(rng.integers(2, 10)),
                            "segmentation": _rle(p), "score": round(float(rng.uniform(0.3, 1.0)), 2)})
        for _ in range(int(rng.integers(0, 6))):
            results.append({"image_id": i, "category_id": int(rng.integers(2, 2 + len(CLASSES))),
                            "segmentation": _rle(_shape(rng, h, w)), "score": round(float(rng.uniform(0, 0.6)), 2)})
    for r in results:
        r["bbox"] = mask_utils.toBbox(r["segmentation"]).tolist()
    return {"images": images, "categories": cats, "annotations": anns}, results


def pycocotools_eval(gt: dict, results: list[dict], iou_type: str) -> tuple[np.ndarray, dict[int, float | None]]:
    """COCOeval end to end on the same results (loadRes places results with a box by its area, as SegLoop)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    per_class = {}
    for k, cid in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        p = p[p > -1]
        per_class[int(cid)] = float(np.mean(p)) if p.size else None
    return ev.stats, per_class


def timed(fn, make_args, repeat: int) -> tuple[tuple[float, float], object]:
    """Fastest wall and CPU times of ``repeat`` runs of ``fn(*make_args())``, the arguments built outside the
    timing. CPU time as well: on a shared machine the wall time of one side can be stretched by other work."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        args = make_args()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args)
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return (wall, cpu), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500, help="images")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per side (the fastest counts)")
    args = p.parse_args()
    gt, results = generate(args.n)
    n_inst = len(gt["annotations"])
    ref: dict[str, tuple] = {}
    t_ref = {}
    for t in ("segm", "bbox"):
        t_ref[t], ref[t] = timed(lambda g, r, t=t: pycocotools_eval(g, r, t),
                                 lambda: (copy.deepcopy(gt), copy.deepcopy(results)), args.repeat)

    def ours(g: dict, r: list[dict], types: tuple[str, ...]) -> dict:
        return evaluate_instances(CocoGroundTruth.from_dict(g), r, types)

    t_ours = {}
    mine = {}
    for t in ("segm", "bbox"):
        t_ours[t], mine[t] = timed(lambda g, r, t=t: ours(g, r, (t,))[t], lambda: (gt, results), args.repeat)
    t_both, _ = timed(lambda g, r: ours(g, r, ("segm", "bbox")), lambda: (gt, results), args.repeat)
    worst = 0.0
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for t in ("segm", "bbox"):
        stats, per_class = ref[t]
        worst = max(worst, float(np.max(np.abs(mine[t].stats - stats))))
        for cid, ap in per_class.items():
            if names[cid] not in mine[t].per_class:
                assert ap is None, names[cid]
                continue
            m = mine[t].per_class[names[cid]]
            assert (m is None) == (ap is None), (t, names[cid])
            if ap is not None:
                worst = max(worst, abs(m - ap))
    assert worst < 1e-6, worst
    print(f"coco_eval: {args.n} images {gt['images'][0]['height']}x{gt['images'][0]['width']}, {n_inst} ground-truth "
          f"instances, {len(results)} results; mask AP {mine['segm'].stats[0]:.4f}, box AP "
          f"{mine['bbox'].stats[0]:.4f} both sides, largest difference {worst:.1e} (12 stats + per-class AP)")
    for t, label in (("segm", "mask"), ("bbox", "box ")):
        (rw, rc), (ow, oc) = t_ref[t], t_ours[t]
        print(f"  {label} AP  pycocotools {rw:7.3f} s   SegLoop {ow:7.3f} s   speed-up {rw / ow:5.1f}x "
              f"(CPU time {rc:.3f} / {oc:.3f} s: {rc / oc:.1f}x; target >= 2x)")
    rw, rc = t_ref["segm"][0] + t_ref["bbox"][0], t_ref["segm"][1] + t_ref["bbox"][1]
    ow, oc = t_both
    print(f"  both      pycocotools {rw:7.3f} s   SegLoop {ow:7.3f} s   speed-up {rw / ow:5.1f}x "
          f"(CPU time {rc / oc:.1f}x; SegLoop parses the results once for both)")


if __name__ == "__main__":
    main()
