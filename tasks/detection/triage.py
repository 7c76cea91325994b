"""What triage (triptychs, FiftyOne) shows of a detection run's evaluated split: the boxes it was scored against
(``ground_truth.json``: things, and stuff regions where the run detects them) and its confident boxes outlined,
TP / FP / FN and box F1 per image, and every scored box (with its confidence) as FiftyOne's predicted instances."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from core.errors import SegLoopError
from core.fsio import read_json
from evaluate.results import EvalResults
from ingest.coco import by_image
from ingest.records import Instance
from tasks.detection.results import box_instances
from tasks.instance.triage import InstanceTriage


def _by_image(items: Any, path: Any, what: str) -> dict[int, list[dict[str, Any]]]:
    if not isinstance(items, list) or any(not isinstance(r, dict) or "bbox" not in r or "image_id" not in r
                                          for r in items):
        raise SegLoopError(f"{what} is not a COCO list with boxes", path=path,
                           fix="re-run the evaluation that wrote it (python -m evaluate run)")
    return by_image(items)


class DetectionTriage(InstanceTriage):
    things_only = False  # stuff regions are boxes too: the painted boxes are scored over every class
    instance_source = "instances.json (boxes)"

    def __init__(self, results: EvalResults) -> None:
        super().__init__(results)

    @cached_property
    def _results(self) -> dict[int, list[dict[str, Any]]]:
        path = self.res.dir / "instances.json"
        return _by_image(read_json(path, "detections (COCO results)"), path, "the detections file")

    @cached_property
    def _gt(self) -> dict[int, list[dict[str, Any]]]:
        """The box ground truth the evaluation scored against (not the version's masks)."""
        path = self.res.dir / "ground_truth.json"
        gt = read_json(path, "box ground truth (COCO)")
        return _by_image(gt.get("annotations") if isinstance(gt, dict) else None, path, "the box ground truth")

    @staticmethod
    def _shape(im: dict[str, Any]) -> tuple[int, int]:
        return int(im["height"]), int(im["width"])

    def title(self, row: dict[str, Any], score: float) -> str:
        return f"{row['key']}   box F1 {score:.3f}   TP {row['tp']}  FP {row['fp']}  FN {row['fn']}"

    def outlines(self, im: dict[str, Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The target boxes and the model's confident ones (those its painted map shows)."""
        cut = self.score_threshold or 0.0
        shape = self._shape(im)
        gt = [i.mask for i in box_instances(self._gt.get(int(im["id"]), []), shape) if not i.iscrowd]
        pred = [r for r in self._results.get(int(im["id"]), []) if r["score"] >= cut]
        return gt, [i.mask for i in box_instances(pred, shape)]

    def ground_truth_instances(self, im: dict[str, Any], annotations: list[dict[str, Any]]) -> list[Instance]:
        """The target boxes of the image (crowds as crowds), whatever the version's annotations hold."""
        return box_instances(self._gt.get(int(im["id"]), []), self._shape(im))

    def predicted_instances(self, im: dict[str, Any], pred: np.ndarray, uncertainty: np.ndarray | None
                            ) -> list[Instance]:
        return box_instances(self._results.get(int(im["id"]), []), self._shape(im))

    def summary(self) -> str:
        ap = self.res.metrics["bbox"]["AP"]
        return f"Boxes outlined in white. Split box AP {ap if ap is None else f'{ap:.4f}'}"

    def headline(self) -> dict[str, Any]:
        return {"split_mIoU": None, "split_mask_AP": None, "split_box_AP": self.res.metrics.get("bbox", {}).get("AP")}
