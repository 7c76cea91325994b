"""What the model demo page shows of a panoptic run: the panoptic map's classes over the image, each thing outlined
with its class and score, the uncertainty map (1 - each pixel's segment score) and the things table."""

from __future__ import annotations

import numpy as np

from evaluate.demo_app import DemoModel, Prediction
from ingest.taxonomy import Taxonomy
from tasks.instance.app import InstanceApp
from tasks.panoptic.evaluate import PanopticEvaluation
from tasks.panoptic.results import segment_uncertainty, thing_results


class PanopticApp(InstanceApp):
    empty_message = "no segment at this score threshold"
    uncertainty_caption = "1 - score of each pixel's segment"
    evaluation = PanopticEvaluation

    def predict(self, dm: DemoModel, image: np.ndarray) -> Prediction:
        times: list[float] = []
        part = self.evaluation()
        out = dm.inference.timed(lambda: part.predict(dm.inference, image), times)
        results = thing_results(0, out["segments"], out["labels"], out["scores"], part._is_thing(dm.inference))
        return Prediction(image, out["semantic"], segment_uncertainty(out["segments"], out["scores"]), times[0],
                          dm.task, results)

    def with_threshold(self, pred: Prediction, taxonomy: Taxonomy, score_threshold: float) -> Prediction:
        """The same map (its segments were cut by the model's segment_score); the threshold picks the things
        outlined and listed."""
        return Prediction(pred.image, pred.labels, pred.uncertainty, pred.seconds, pred.task, pred.results,
                          score_threshold)

    def image_uncertainty(self, pred: Prediction) -> float:
        return float(pred.uncertainty.mean())
