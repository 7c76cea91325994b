"""The detection evaluation part: COCO box AP against the box targets, painted boxes, per-image TP / FP / FN.

``evaluate run`` output, under ``runs/<run>/eval/<split>/`` (replaced atomically): ``ground_truth.json`` (the COCO
box ground truth the run was scored against: thing instances, crowds as crowds, and with stuff targets one box per
stuff region; ``tasks.detection.targets``), ``instances.json`` (COCO results: boxes and scores), ``metrics.json``
(box AP, AP50, AP75, APs/m/l, AR, per-class AP; pycocotools' COCOeval on the two files gives the same figures),
``per_class.csv``, ``per_image.csv`` (TP / FP / FN at IoU 0.5 of the boxes scored at least ``SCORE_THRESHOLD``, and
their F1, the per-image score triage ranks by), ``pred/<image>.png`` (the confident boxes painted as train
indices, higher scores on top, 255 elsewhere) and ``index.json``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from core.fsio import save_png, write_json_atomic
from core.runs import write_index
from evaluate.inference import Inference, figures_problem, fmt, show
from evaluate.instances import match_instances
from ingest.coco import by_image, train_index
from ingest.version import DatasetVersion
from metrics.coco import CocoInstanceEvaluator
from tasks.detection.results import SCORE_THRESHOLD, box_instances, paint_boxes
from tasks.detection.targets import box_classes, box_ground_truth
from tasks.detection.train import target_settings
from tasks.instance.evaluate import InstanceEvaluation
from tasks.instance.results import instance_uncertainty


def box_f1(tp: int, fp: int, fn: int) -> float:
    """2 TP / (2 TP + FP + FN): one image's detection score (NaN when it has neither boxes nor targets)."""
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan


class DetectionEvaluation(InstanceEvaluation):
    task = "detection"
    headline: tuple[str, tuple[str, ...]] = ("box AP", ("bbox", "AP"))
    tta_problem = ("a detection model's boxes of an image and of its mirror image are not averaged (that needs box "
                   "matching, which SegLoop does not do)")

    def paint(self, results: list[dict[str, Any]], shape: tuple[int, int], ignore_index: int,
              score_threshold: float = SCORE_THRESHOLD) -> np.ndarray:
        return paint_boxes(results, shape, ignore_index, score_threshold)

    def evaluate_split(self, inf: Inference, ds: DatasetVersion, split: str, tmp: Path, run_name: str,
                       tta: bool = False, uncertainty: bool = True, progress: bool = True) -> dict[str, Any]:
        """Predict, score and write a split into ``tmp`` (the folder that becomes ``eval/<split>/``)."""
        tax = ds.taxonomy
        spec = inf.ckpt["model_spec"]["args"]
        stuff, min_area = target_settings(spec, tax)
        gt = box_ground_truth(ds, split, stuff, min_area, progress=progress)
        write_json_atomic(tmp / "ground_truth.json", gt, indent=None)
        evaluator = CocoInstanceEvaluator(gt, iou_types=("bbox",))
        gt_by_image = by_image(gt["annotations"])
        (tmp / "pred").mkdir()
        times: list[float] = []
        rows: list[dict[str, Any]] = []
        index: dict[str, dict[str, Any]] = {}
        for im in tqdm(gt["images"], desc=f"evaluating {run_name} on {split}", disable=not progress):
            img = ds.load_image(im)
            shape = img.shape[:2]
            results = inf.timed(lambda img=img, im=im: self.results(inf, img, im["id"]), times)
            evaluator.process([{"image_id": im["id"]}], [results])
            name = im["key"].replace("/", "__") + ".png"
            save_png(tmp / "pred" / name, self.paint(results, shape, tax.ignore_index))
            confident = [r for r in results if r["score"] >= SCORE_THRESHOLD]
            m = match_instances(box_instances(gt_by_image.get(int(im["id"]), []), shape),
                                box_instances(confident, shape))
            rows.append({"image_id": im["id"], "key": im["key"], "file": im["file_name"],
                         "prediction": f"pred/{name}", "tp": m.tp, "fp": m.fp, "fn": m.fn,
                         "instance_errors": m.fp + m.fn, "detections": len(confident),
                         "box_f1": box_f1(m.tp, m.fp, m.fn)})
            index[im["sha256"]] = {"image": str(ds.image_path(im)), "prediction": f"pred/{name}",
                                   "uncertainty": None, "mean_uncertainty": instance_uncertainty(results),
                                   "image_id": im["id"], "score_threshold": SCORE_THRESHOLD}
        metrics = evaluator.evaluate()
        metrics.pop("per_image")
        per_class = metrics["bbox"]["per_class"]
        counts: dict[str, int] = {}
        for a in gt["annotations"]:
            if not a.get("iscrowd"):
                n = tax.classes[train_index(a["category_id"])].name
                counts[n] = counts.get(n, 0) + 1
        metrics.update({"score_threshold": SCORE_THRESHOLD, "per_image_score": "box_f1",
                        "targets": {"stuff": stuff, "min_stuff_area": min_area, "classes": box_classes(tax, stuff),
                                    "boxes": counts}})
        metrics["worst_classes"] = sorted((n for n, v in per_class.items() if v is not None),
                                          key=lambda n: per_class[n])
        write_json_atomic(tmp / "instances.json", evaluator.results(), indent=None)
        write_index(tmp, run_name, self.task, tax.names, index)
        with open(tmp / "per_class.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["class", "kind", "box_ap", "boxes"])
            for n in metrics["worst_classes"] + [n for n in per_class if n not in metrics["worst_classes"]]:
                kind = "thing" if tax.has_instances(tax.names.index(n)) else "stuff region"
                w.writerow([n, kind, fmt(per_class[n]), counts.get(n, 0)])
        with open(tmp / "per_image.csv", "w", newline="") as fh:
            fields = ["image_id", "key", "file", "prediction", "tp", "fp", "fn", "instance_errors", "detections",
                      "box_f1"]
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            for row in sorted(rows, key=lambda r: (-r["instance_errors"], r["key"])):
                w.writerow({k: (fmt(v) if isinstance(v, float) else v) for k, v in row.items()})
        return {**metrics, "times": times,
                "input_size": {"min_size": spec.get("min_size"), "max_size": spec.get("max_size")}}

    def result_problem(self, result: dict[str, Any]) -> str | None:
        missing = [k for k in ("bbox", "worst_classes") if k not in result]
        if missing:
            return f"lacks {', '.join(missing)}"
        if not isinstance(result["bbox"], dict):
            return "has 'bbox' that is not a JSON object"
        return figures_problem(result["bbox"], ("AP", "AP50"), "per_class", result["worst_classes"], "bbox.",
                               (int, float, type(None)))

    def summary_lines(self, result: dict[str, Any]) -> list[str]:
        bb = result["bbox"]
        t = result.get("targets") or {}
        what = "things and stuff regions" if t.get("stuff") else "things"
        lines = [f"box AP {show(bb['AP'])}  AP50 {show(bb['AP50'])}  AP75 {show(bb['AP75'])}   ({what})",
                 "per-class box AP (worst first):"]
        return lines + [f"  {n:16} {show(bb['per_class'][n])}" for n in result["worst_classes"]]
