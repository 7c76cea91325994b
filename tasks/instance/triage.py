"""What triage (triptychs, FiftyOne) shows of an instance run's evaluated split: the thing classes' IoU of its
painted map, TP / FP / FN per image, the ground truth's and the model's confident instances outlined, and every
detection the evaluation scored (with its confidence) as FiftyOne's predicted instances."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from evaluate.instances import coco_instances, load_instance_results
from evaluate.results import EvalResults
from ingest.coco import by_image, decode_rle
from ingest.records import Instance


class InstanceTriage:
    things_only = True  # the painted map predicts thing classes only
    instance_source = "instances.json"

    def __init__(self, results: EvalResults) -> None:
        self.res = results

    @property
    def score_threshold(self) -> float | None:
        return self.res.metrics.get("score_threshold")

    @cached_property
    def _results(self) -> dict[int, list[dict[str, Any]]]:
        """Every scored detection of the split by image id."""
        return load_instance_results(self.res.dir) or {}

    @cached_property
    def _gt(self) -> dict[int, list[dict[str, Any]]]:
        return by_image(self.res.version.coco(self.res.split)["annotations"])

    def title(self, row: dict[str, Any], score: float) -> str:
        return f"{row['key']}   thing-class mIoU {score:.3f}   TP {row['tp']}  FP {row['fp']}  FN {row['fn']}"

    def outlines(self, im: dict[str, Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The ground truth's instances and the model's confident ones (those its painted map shows)."""
        cut = self.score_threshold or 0.0
        return ([decode_rle(a["segmentation"]) for a in self._gt.get(int(im["id"]), [])],
                [decode_rle(r["segmentation"]) for r in self._results.get(int(im["id"]), []) if r["score"] >= cut])

    def ground_truth_instances(self, im: dict[str, Any], annotations: list[dict[str, Any]]) -> list[Instance]:
        """The image's ground-truth instances, as the evaluation matched them (the version's annotations)."""
        return coco_instances(annotations)

    def predicted_instances(self, im: dict[str, Any], pred: np.ndarray, uncertainty: np.ndarray | None
                            ) -> list[Instance]:
        """Every detection the evaluation scored, with its confidence: FiftyOne's users filter by it in the App."""
        return coco_instances(self._results.get(int(im["id"]), []))

    def summary(self) -> str:
        m = self.res.metrics
        ap = m["segm"]["AP"]
        return (f"Instance outlines in white. Split mask AP {ap if ap is None else f'{ap:.4f}'}, thing-class mIoU "
                f"{m['things_mIoU']:.4f}")

    def headline(self) -> dict[str, Any]:
        return {"split_mIoU": self.res.metrics.get("things_mIoU"),
                "split_mask_AP": self.res.metrics.get("segm", {}).get("AP")}
