"""The panoptic evaluation part: PQ / SQ / RQ in the panopticapi format, mask and box AP of the things, and the
class map's mIoU, so a panoptic run sits in the comparison table beside semantic and instance runs.

``evaluate run`` output, under ``runs/<run>/eval/<split>/`` (replaced atomically): ``panoptic/`` (``pred/`` and
``gt/`` PNGs with segment id = R + 256 G + 256^2 B, ``predictions.json`` and ``ground_truth.json`` in the COCO
panoptic format; ``metrics.panoptic`` on them equals cityscapesScripts' ``evalPanopticSemanticLabeling``),
``instances.json`` (the thing segments as COCO results: RLE masks, boxes, scores), ``metrics.json`` (PQ, SQ, RQ
overall / things / stuff and per class, mask and box AP, mIoU), ``per_class.csv``, ``per_image.csv`` (each image's
PQ, the score triage ranks by, and its mIoU), ``pred/<image>.png`` (the panoptic map's classes as train indices, 255
void), ``uncertainty/<image>.png`` (1 - each pixel's segment score, as 0-255) and ``index.json``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.fsio import read_image, save_png, sha256_file, write_json_atomic
from core.metrics import ConfusionMatrix, thing_iou
from core.runs import write_index
from evaluate.inference import Inference, figures_problem, fmt, show
from evaluate.panoptic import PanopticFiles, ground_truth_instances
from ingest.coco import by_image
from ingest.version import DatasetVersion
from metrics.coco import CocoInstanceEvaluator
from metrics.panoptic import pq_summary
from tasks.detection.evaluate import DetectionEvaluation
from tasks.panoptic.results import panoptic_maps, segment_count, segment_uncertainty, thing_results


class PanopticEvaluation(DetectionEvaluation):
    task = "panoptic"
    headline: tuple[str, tuple[str, ...]] = ("PQ", ("PQ",))
    tta_problem = ("a panoptic model's segments of an image and of its mirror image are not averaged (that needs "
                   "segment matching, which SegLoop does not do)")

    @torch.no_grad()
    def predict(self, inf: Inference, image: np.ndarray) -> dict[str, np.ndarray | list]:
        """One HWC uint8 image's panoptic output at its own size: ``semantic``, ``segments``, ``labels``,
        ``scores``."""
        from train.infer import autocast_for

        x = torch.from_numpy(image).permute(2, 0, 1).to(inf.device).float().div_(255)
        with autocast_for(inf.device, inf.amp):
            out = inf.model([x])[0]
        return {"semantic": out["semantic"].cpu().numpy(), "segments": out["segments"].cpu().numpy(),
                "labels": out["labels"].tolist(), "scores": out["scores"].tolist()}

    def results(self, inf: Inference, image: np.ndarray, image_id: int) -> list[dict[str, Any]]:
        """The thing segments of one image as COCO results (what ``instances.json`` holds)."""
        out = self.predict(inf, image)
        return thing_results(image_id, out["segments"], out["labels"], out["scores"], self._is_thing(inf))

    @staticmethod
    def _is_thing(inf: Inference) -> list[bool]:
        return [bool(c.get("instances")) for c in inf.ckpt["taxonomy"]["classes"]]

    def evaluate_split(self, inf: Inference, ds: DatasetVersion, split: str, tmp: Path, run_name: str,
                       tta: bool = False, uncertainty: bool = True, progress: bool = True) -> dict[str, Any]:
        tax = ds.taxonomy
        is_thing = [c.has_instances for c in tax.classes]
        coco = ds.coco(split)
        gt_by_image = by_image(coco["annotations"])
        files = PanopticFiles(tmp / "panoptic", tax)
        instances = CocoInstanceEvaluator(coco)
        n = tax.num_classes
        every = list(range(n))
        cm = ConfusionMatrix(n + 1, tax.ignore_index)  # void (no segment) predicts an extra class no label has
        for folder in ("pred", "uncertainty"):
            (tmp / folder).mkdir()
        times: list[float] = []
        rows, index = [], {}
        for im in tqdm(coco["images"], desc=f"evaluating {run_name} on {split}", disable=not progress):
            img = ds.load_image(im)
            out = inf.timed(lambda img=img: self.predict(inf, img), times)
            label = ds.load_semantic(im)
            sem, inst = panoptic_maps(out["semantic"], out["segments"], is_thing, tax.ignore_index)
            name = im["key"].replace("/", "__") + ".png"
            counts = files.add(im["key"], name, label, ground_truth_instances(gt_by_image.get(int(im["id"]), []),
                                                                           label.shape), sem, inst)
            instances.process([{"image_id": im["id"]}],
                              [thing_results(im["id"], out["segments"], out["labels"], out["scores"], is_thing)])
            mat = cm.update(np.where(sem == tax.ignore_index, n, sem), label)
            own = pq_summary(counts, tax.names, is_thing)
            unc = segment_uncertainty(out["segments"], out["scores"])
            save_png(tmp / "pred" / name, sem)
            save_png(tmp / "uncertainty" / name, np.round(unc * 255).astype(np.uint8))
            rows.append({"image_id": im["id"], "key": im["key"], "file": im["file_name"], "prediction": f"pred/{name}",
                         "PQ": own["PQ"], "segments": segment_count(sem, inst, is_thing, tax.ignore_index),
                         "mIoU": thing_iou(mat, tax.names, every)[1]})
            index[im["sha256"]] = {"image": str(ds.image_path(im)), "prediction": f"pred/{name}",
                                   "uncertainty": f"uncertainty/{name}", "mean_uncertainty": float(unc.mean()),
                                   "image_id": im["id"]}
        pq = files.finish()
        ap = instances.evaluate()
        iou, miou = thing_iou(cm.mat, tax.names, every)
        metrics = {**{k: v for k, v in pq.items() if k != "per_class"}, "per_class_pq": pq["per_class"],
                   "segm": ap.get("segm", {}), "bbox": ap.get("bbox", {}), "mIoU": None if np.isnan(miou) else miou,
                   "pixel_acc": float(np.trace(cm.mat[:n, :n]) / max(cm.mat.sum(), 1)), "class_iou": iou,
                   "per_image_score": "PQ"}
        per_class = {n: (v["PQ"] if v else None) for n, v in pq["per_class"].items()}
        metrics["worst_classes"] = sorted((n for n, v in per_class.items() if v is not None),
                                          key=lambda n: per_class[n])
        write_json_atomic(tmp / "instances.json", instances.results(), indent=None)
        write_index(tmp, run_name, self.task, tax.names, index)
        mask_ap = (metrics["segm"] or {}).get("per_class", {})
        with open(tmp / "per_class.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["class", "pq", "sq", "rq", "mask_ap", "iou"])
            for n in metrics["worst_classes"] + [n for n in per_class if n not in metrics["worst_classes"]]:
                v = pq["per_class"][n] or {}
                w.writerow([n, fmt(v.get("PQ")), fmt(v.get("SQ")), fmt(v.get("RQ")), fmt(mask_ap.get(n)),
                            fmt(metrics["class_iou"].get(n))])
        with open(tmp / "per_image.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["image_id", "key", "file", "prediction", "PQ", "segments", "mIoU"])
            w.writeheader()
            for row in sorted(rows, key=lambda r: (r["PQ"] if r["PQ"] is not None else 2.0, r["key"])):
                w.writerow({k: (fmt(v) if isinstance(v, float) or v is None else v) for k, v in row.items()})
        spec = inf.ckpt["model_spec"]["args"]
        return {**metrics, "times": times,
                "input_size": {"min_size": spec.get("min_size"), "max_size": spec.get("max_size")}}

    def predict_images(self, inf: Inference, files: list[Path], tmp: Path, run_name: str, desc: str,
                       progress: bool = True) -> None:
        """The panoptic maps' classes in ``pred/``, 1 - segment score in ``uncertainty/``, the things as COCO
        results in ``instances.json`` (``image_id`` = the image's position), into ``tmp``."""
        is_thing = self._is_thing(inf)
        index: dict[str, Any] = {}
        results: list[dict[str, Any]] = []
        for folder in ("pred", "uncertainty"):
            (tmp / folder).mkdir()
        for image_id, f in enumerate(tqdm(files, desc=desc, disable=not progress)):
            img = read_image(f, upright=True)
            sha = sha256_file(f)
            out = self.predict(inf, img)
            results += thing_results(image_id, out["segments"], out["labels"], out["scores"], is_thing)
            unc = segment_uncertainty(out["segments"], out["scores"])
            save_png(tmp / "pred" / f"{sha}.png", out["semantic"])
            save_png(tmp / "uncertainty" / f"{sha}.png", np.round(unc * 255).astype(np.uint8))
            index[sha] = {"image": str(f.resolve()), "prediction": f"pred/{sha}.png",
                          "uncertainty": f"uncertainty/{sha}.png", "mean_uncertainty": float(unc.mean()),
                          "image_id": image_id}
        write_json_atomic(tmp / "instances.json", results, indent=None)
        write_index(tmp, run_name, self.task, inf.class_names, index)

    def result_problem(self, result: dict[str, Any]) -> str | None:
        missing = [k for k in ("PQ", "per_class_pq", "worst_classes") if k not in result]
        if missing:
            return f"lacks {', '.join(missing)}"
        return figures_problem(result, ("PQ", "mIoU"), "per_class_pq", [], "", (int, float, type(None), dict))

    def summary_lines(self, result: dict[str, Any]) -> list[str]:
        def pct(v: float | None) -> str:
            return show(v)

        sg, bb = result.get("segm") or {}, result.get("bbox") or {}
        lines = [f"PQ {pct(result['PQ'])}  SQ {pct(result['SQ'])}  RQ {pct(result['RQ'])}   things PQ "
                 f"{pct(result['PQ_th'])}  stuff PQ {pct(result['PQ_st'])}",
                 f"mask AP {show(sg.get('AP'))}  box AP {show(bb.get('AP'))}  mIoU {show(result['mIoU'])}",
                 "per-class PQ (worst first):"]
        pc = result["per_class_pq"]
        return lines + [f"  {n:16} {show((pc[n] or {}).get('PQ'))}" for n in result["worst_classes"]]
