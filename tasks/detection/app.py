"""What the model demo page shows of a detection run: the boxes scored at least the chosen threshold, filled in
their class colour and outlined with their class and score, an uncertainty map where each box holds 1 - its score,
and the detections table (the instance app's, with boxes where it has masks)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.detection.evaluate import DetectionEvaluation
from tasks.detection.results import box_mask
from tasks.instance.app import InstanceApp


class DetectionApp(InstanceApp):
    uncertainty_caption = "1 - score of each box"
    evaluation = DetectionEvaluation

    def drawn(self, result: dict[str, Any]) -> bool:
        return "bbox" in result

    def mask(self, result: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
        return box_mask(result["bbox"], shape)
