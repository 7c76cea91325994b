"""What the model demo page shows of an instance run: the detections scored at least the chosen threshold, painted
and outlined with their class and score, an uncertainty map where each detection's pixels hold 1 - its score, and
the detections table. The image's one uncertainty figure is ``instance_uncertainty``, as the labeling loop's."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from evaluate.demo_app import DemoModel, Prediction
from evaluate.gallery import _font, outline
from ingest.coco import decode_rle, train_index
from ingest.taxonomy import Taxonomy
from tasks.instance.evaluate import InstanceEvaluation
from tasks.instance.results import instance_uncertainty


class InstanceApp:
    empty_message = "no detection at this score threshold"
    uncertainty_caption = "1 - score of each detection"
    has_detections = True
    evaluation = InstanceEvaluation

    def drawn(self, result: dict[str, Any]) -> bool:
        """Whether a result has a shape to draw (a mask)."""
        return "segmentation" in result

    def mask(self, result: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
        """The pixels of one result."""
        return decode_rle(result["segmentation"])

    def predict(self, dm: DemoModel, image: np.ndarray) -> Prediction:
        times: list[float] = []
        results = dm.inference.timed(lambda: self.evaluation().results(dm.inference, image, 0), times)
        return Prediction(image, np.empty(0, np.uint8), np.empty(0, np.float32), times[0], dm.task, results)

    def with_threshold(self, pred: Prediction, taxonomy: Taxonomy, score_threshold: float) -> Prediction:
        """The detections re-painted at another score threshold (no second pass through the model)."""
        shape = pred.image.shape[:2]
        labels = self.evaluation().paint(pred.results, shape, taxonomy.ignore_index, score_threshold)
        unc = np.zeros(shape, np.float32)
        for r in sorted(pred.results, key=lambda r: r["score"]):  # higher scores on top, as painted
            if r["score"] >= score_threshold and self.drawn(r):
                unc[self.mask(r, shape)] = 1 - r["score"]
        return Prediction(pred.image, labels, unc, pred.seconds, pred.task, pred.results, score_threshold)

    def image_uncertainty(self, pred: Prediction) -> float:
        return instance_uncertainty(pred.results, pred.score_threshold)

    def decorate(self, out: np.ndarray, pred: Prediction, taxonomy: Taxonomy, scores: bool) -> np.ndarray:
        """Each kept detection outlined in white, with its class and score at its box."""
        kept = [r for r in pred.results if r["score"] >= pred.score_threshold and self.drawn(r)]
        out = outline(out, [self.mask(r, out.shape[:2]) for r in kept])
        if not scores or not kept:
            return out
        canvas = Image.fromarray(out)
        draw = ImageDraw.Draw(canvas)
        font = _font()
        for r in kept:
            x, y = r.get("bbox", [0, 0, 0, 0])[:2]
            name = taxonomy.classes[train_index(r["category_id"])].name
            draw.text((x + 2, y + 1), f"{name} {r['score']:.2f}", fill=(255, 255, 255), font=font, stroke_width=2,
                      stroke_fill=(0, 0, 0))
        return np.asarray(canvas)

    def detections(self, pred: Prediction, taxonomy: Taxonomy) -> list[dict[str, Any]]:
        """The detections at or above the threshold, highest score first."""
        rows = [{"class": taxonomy.classes[train_index(r["category_id"])].name, "score": round(r["score"], 3),
                 "pixels": int(self.mask(r, pred.image.shape[:2]).sum()) if self.drawn(r) else 0}
                for r in pred.results if r["score"] >= pred.score_threshold]
        return sorted(rows, key=lambda r: -r["score"])
