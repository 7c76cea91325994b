"""The instance evaluation part: COCO mask and box AP, painted semantic maps, per-image TP / FP / FN.

``evaluate run`` output, under ``runs/<run>/eval/<split>/`` (replaced atomically):
``instances.json`` (COCO results: RLE masks, boxes, scores), ``metrics.json`` (mask and box AP, AP50, AP75, APs/m/l,
AR, per-class AP; the thing classes' IoU from the painted instances, so semantic and instance runs share one
comparison table), ``per_class.csv``, ``per_image.csv`` (TP / FP / FN at IoU 0.5 of the detections scored at least
``SCORE_THRESHOLD``, matched by ``evaluate.instances.match_instances`` as FiftyOne's samples are, so the two never
disagree; the image's thing-class mIoU), ``pred/<image>.png`` (the painted instances as train indices,
255 where no instance) and ``index.json`` (what ``annotate`` reads).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.fsio import read_image, save_png, sha256_file, write_json_atomic
from core.runs import write_index
from evaluate.inference import Inference, figures_problem, fmt, show
from evaluate.instances import coco_instances, match_instances
from ingest.coco import by_image
from ingest.version import DatasetVersion
from metrics.coco import CocoInstanceEvaluator, outputs_to_results
from tasks.instance.results import SCORE_THRESHOLD, ThingIoU, instance_uncertainty, paint_instances


@torch.no_grad()
def predict_instances(model: torch.nn.Module, image: np.ndarray, device: torch.device, amp: bool) -> dict:
    """The model's detections for one HWC uint8 image (at the image's own size)."""
    from train.infer import autocast_for

    x = torch.from_numpy(image).permute(2, 0, 1).to(device).float().div_(255)
    with autocast_for(device, amp):
        return model([x])[0]


class InstanceEvaluation:
    task = "instance"
    headline: tuple[str, tuple[str, ...]] = ("mask AP", ("segm", "AP"))
    tta_problem = ("an instance model's detections of an image and of its mirror image are not averaged (that "
                   "needs box and mask matching, which SegLoop does not do)")

    def channels_last(self, model: torch.nn.Module, device: torch.device, requested: bool) -> bool:
        """Detection models gain from NHWC on GPUs only."""
        return requested and device.type == "cuda"

    def flops_input(self, hw: tuple[int, int]) -> Any:
        """A list of one image of the training size (backbone, FPN, RPN and the heads' fixed part are counted)."""
        return [torch.zeros(3, *hw)]

    def results(self, inf: Inference, image: np.ndarray, image_id: int) -> list[dict[str, Any]]:
        """COCO results (RLE masks, boxes, scores) of one HWC uint8 image, at its own size."""
        return outputs_to_results(image_id, predict_instances(inf.model, image, inf.device, inf.amp))

    def paint(self, results: list[dict[str, Any]], shape: tuple[int, int], ignore_index: int,
              score_threshold: float = SCORE_THRESHOLD) -> np.ndarray:
        """The painted class map of one image's results scored at least ``score_threshold`` (``pred/`` holds it)."""
        return paint_instances(results, shape, ignore_index, score_threshold)

    def evaluate_split(self, inf: Inference, ds: DatasetVersion, split: str, tmp: Path, run_name: str,
                       tta: bool = False, uncertainty: bool = True, progress: bool = True) -> dict[str, Any]:
        """Predict, score and write a split into ``tmp`` (the folder that becomes ``eval/<split>/``)."""
        tax = ds.taxonomy
        coco = ds.coco(split)
        evaluator = CocoInstanceEvaluator(coco)
        things = ThingIoU(tax)
        gt_by_image = by_image(coco["annotations"])
        (tmp / "pred").mkdir()
        times: list[float] = []
        rows: list[dict[str, Any]] = []
        index: dict[str, dict[str, Any]] = {}
        for im in tqdm(coco["images"], desc=f"evaluating {run_name} on {split}", disable=not progress):
            img = ds.load_image(im)
            results = inf.timed(lambda img=img, im=im: self.results(inf, img, im["id"]), times)
            evaluator.process([{"image_id": im["id"]}], [results])
            pred = self.paint(results, img.shape[:2], tax.ignore_index)
            name = im["key"].replace("/", "__") + ".png"
            save_png(tmp / "pred" / name, pred)
            miou = things.process(pred, ds.load_semantic(im))
            confident = [r for r in results if r["score"] >= SCORE_THRESHOLD]
            m = match_instances(coco_instances(gt_by_image.get(int(im["id"]), [])), coco_instances(confident))
            rows.append({"image_id": im["id"], "key": im["key"], "file": im["file_name"],
                         "prediction": f"pred/{name}", "tp": m.tp, "fp": m.fp, "fn": m.fn,
                         "instance_errors": m.fp + m.fn, "detections": len(confident), "mIoU": miou})
            index[im["sha256"]] = {"image": str(ds.image_path(im)), "prediction": f"pred/{name}",
                                   "uncertainty": None, "mean_uncertainty": instance_uncertainty(results),
                                   "image_id": im["id"], "score_threshold": SCORE_THRESHOLD}
        metrics = evaluator.evaluate()
        metrics.pop("per_image")
        metrics.update(things.evaluate())
        metrics["score_threshold"] = SCORE_THRESHOLD
        per_class = metrics["segm"]["per_class"]
        metrics["worst_classes"] = sorted((n for n, v in per_class.items() if v is not None),
                                          key=lambda n: per_class[n])
        write_json_atomic(tmp / "instances.json", evaluator.results(), indent=None)
        write_index(tmp, run_name, self.task, tax.names, index)
        with open(tmp / "per_class.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["class", "mask_ap", "box_ap", "iou"])
            box = metrics.get("bbox", {}).get("per_class", {})
            for n in metrics["worst_classes"] + [n for n in per_class if n not in metrics["worst_classes"]]:
                w.writerow([n, fmt(per_class[n]), fmt(box.get(n)), fmt(metrics["thing_iou"].get(n))])
        with open(tmp / "per_image.csv", "w", newline="") as fh:
            fields = ["image_id", "key", "file", "prediction", "tp", "fp", "fn", "instance_errors", "detections",
                      "mIoU"]
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            for row in sorted(rows, key=lambda r: (-r["instance_errors"], r["key"])):
                w.writerow({k: (fmt(v) if isinstance(v, float) else v) for k, v in row.items()})
        spec = inf.ckpt["model_spec"]["args"]
        return {**metrics, "times": times,
                "input_size": {"min_size": spec.get("min_size"), "max_size": spec.get("max_size")}}

    def predict_images(self, inf: Inference, files: list[Path], tmp: Path, run_name: str, desc: str,
                       progress: bool = True) -> None:
        """``instances.json`` (COCO results; ``image_id`` is the image's position in the list, and ``index.json``
        maps each image's sha256 to it), the painted instances in ``pred/`` and each image's instance uncertainty
        (1 - the mean score of its confident detections), into ``tmp``."""
        index: dict[str, Any] = {}
        results: list[dict[str, Any]] = []
        (tmp / "pred").mkdir()
        for image_id, f in enumerate(tqdm(files, desc=desc, disable=not progress)):
            img = read_image(f, upright=True)  # as the user sees the photo (EXIF orientation)
            sha = sha256_file(f)
            res = self.results(inf, img, image_id)
            results += res
            save_png(tmp / "pred" / f"{sha}.png", self.paint(res, img.shape[:2], inf.ignore_index))
            index[sha] = {"image": str(f.resolve()), "prediction": f"pred/{sha}.png", "uncertainty": None,
                          "mean_uncertainty": instance_uncertainty(res), "instances": len(res), "image_id": image_id,
                          "score_threshold": SCORE_THRESHOLD}
        write_json_atomic(tmp / "instances.json", results, indent=None)
        write_index(tmp, run_name, self.task, inf.class_names, index)

    def result_problem(self, result: dict[str, Any]) -> str | None:
        """What a ``metrics.json`` of this task lacks, or holds of the wrong kind, for its readers (the report)."""
        missing = [k for k in ("segm", "worst_classes", "thing_iou") if k not in result]
        if missing:
            return f"lacks {', '.join(missing)}"
        if not isinstance(result["segm"], dict) or not isinstance(result["thing_iou"], dict):
            return "has 'segm' or 'thing_iou' that is not a JSON object"
        return figures_problem(result["segm"], ("AP", "AP50"), "per_class", result["worst_classes"], "segm.",
                               (int, float, type(None)))

    def summary_lines(self, result: dict[str, Any]) -> list[str]:
        sg, bb = result["segm"], result.get("bbox", {})
        lines = [f"mask AP {show(sg['AP'])}  AP50 {show(sg['AP50'])}  AP75 {show(sg['AP75'])}   "
                 f"box AP {show(bb.get('AP'))}   thing-class mIoU {show(result['things_mIoU'])}",
                 "per-class mask AP (worst first):"]
        return lines + [f"  {n:16} {show(sg['per_class'][n])}" for n in result["worst_classes"]]
