"""What the model demo page shows of a semantic run: the argmax classes over the image and the normalised softmax
entropy (as ``evaluate run`` writes it), from the same inference as ``evaluate run``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from evaluate.demo_app import DemoModel, Prediction
from evaluate.inference import normalised_entropy
from ingest.taxonomy import Taxonomy
from tasks.semantic.evaluate import SemanticEvaluation


class SemanticApp:
    empty_message = "no class predicted"
    uncertainty_caption = "softmax entropy / ln C"
    has_detections = False

    def predict(self, dm: DemoModel, image: np.ndarray) -> Prediction:
        times: list[float] = []
        logits = dm.inference.timed(lambda: SemanticEvaluation().logits(dm.inference, image, image.shape[:2]),
                                    times)
        probs = logits.softmax(1)[0]
        labels = probs.argmax(0).byte().cpu().numpy()
        ent = normalised_entropy(probs, math.log(dm.taxonomy.num_classes)).float().cpu().numpy()
        return Prediction(image, labels, ent, times[0], dm.task)

    def with_threshold(self, pred: Prediction, taxonomy: Taxonomy, score_threshold: float) -> Prediction:
        return pred  # a class map has no scores to cut

    def image_uncertainty(self, pred: Prediction) -> float:
        return float(pred.uncertainty.mean())

    def decorate(self, out: np.ndarray, pred: Prediction, taxonomy: Taxonomy, scores: bool) -> np.ndarray:
        return out

    def detections(self, pred: Prediction, taxonomy: Taxonomy) -> list[dict[str, Any]]:
        return []
