"""What the model demo page shows of a semantic run: the classes its head decodes over the image and the normalised
entropy of their probabilities (as ``evaluate run`` writes them), from the same inference as ``evaluate run``."""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluate.demo_app import DemoModel, Prediction
from ingest.taxonomy import Taxonomy
from tasks.semantic.evaluate import SemanticEvaluation
from train.models.heads import decoding_of


class SemanticApp:
    empty_message = "no class predicted"
    uncertainty_caption = "entropy of the class probabilities / ln C"
    has_detections = False

    def predict(self, dm: DemoModel, image: np.ndarray) -> Prediction:
        times: list[float] = []
        logits = dm.inference.timed(lambda: SemanticEvaluation().logits(dm.inference, image, image.shape[:2]),
                                    times)
        dec = decoding_of(dm.inference.model)
        labels = dec.labels(logits)[0].byte().cpu().numpy()
        ent = dec.uncertainty(dec.probabilities(logits))[0].float().cpu().numpy()
        return Prediction(image, labels, ent, times[0], dm.task)

    def with_threshold(self, pred: Prediction, taxonomy: Taxonomy, score_threshold: float) -> Prediction:
        return pred  # a class map has no scores to cut

    def image_uncertainty(self, pred: Prediction) -> float:
        return float(pred.uncertainty.mean())

    def decorate(self, out: np.ndarray, pred: Prediction, taxonomy: Taxonomy, scores: bool) -> np.ndarray:
        return out

    def detections(self, pred: Prediction, taxonomy: Taxonomy) -> list[dict[str, Any]]:
        return []
