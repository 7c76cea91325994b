"""What triage (triptychs, FiftyOne) shows of a semantic run's evaluated split: per-image mIoU and pixel accuracy
over every class, and as instances the connected components of its thing classes (what a user sees as "the model
found this car"), scored by 1 - their mean normalised entropy."""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluate.instances import coco_instances, components_as_instances
from evaluate.results import EvalResults
from ingest.records import Instance


class SemanticTriage:
    things_only = False  # per-image scores over every class of the map
    instance_source = "semantic components"
    score_threshold = None  # components are not cut by a score

    def __init__(self, results: EvalResults) -> None:
        self.res = results

    def title(self, row: dict[str, Any], score: float) -> str:
        return f"{row['key']}   mIoU {score:.3f}   pixel acc {float(row['pixel_acc']):.3f}"

    def outlines(self, im: dict[str, Any]) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
        """Masks outlined on the ground-truth and prediction panels: none, the class maps say it all."""
        return None

    def ground_truth_instances(self, im: dict[str, Any], annotations: list[dict[str, Any]]) -> list[Instance]:
        """The image's ground-truth instances, as the evaluation matched them (the version's annotations)."""
        return coco_instances(annotations)

    def predicted_instances(self, im: dict[str, Any], pred: np.ndarray, uncertainty: np.ndarray | None
                            ) -> list[Instance]:
        return components_as_instances(pred, self.res.version.taxonomy, uncertainty)

    def summary(self) -> str:
        m = self.res.metrics
        return f"Split mIoU {m['mIoU']:.4f}, pixel accuracy {m['pixel_acc']:.4f}"

    def headline(self) -> dict[str, Any]:
        """The split's figures FiftyOne records in the dataset's info."""
        return {"split_mIoU": self.res.metrics.get("mIoU"), "split_mask_AP": None}
