"""Label Studio region geometry shared by every task's pre-annotations: a mask's objects as polygons in Label
Studio's percent coordinates, and a region's common fields."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ingest.geometry import mask_components


def mask_polygons(mask: np.ndarray, width: int, height: int) -> list[tuple[list[list[float]], np.ndarray]]:
    """Outer contours of a mask's objects (``ingest.geometry.mask_components``, the rule triage counts instances
    by) as Label Studio polygons, each with the component's own pixels (for its score); a component whose contour
    encloses no area (a one-pixel-wide line) is left out, since Label Studio cannot draw it."""
    out = []
    for part in mask_components(mask):
        contours, _ = cv2.findContours(part.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        c = max(contours, key=cv2.contourArea)
        if cv2.contourArea(c) <= 0 or len(c) < 3:
            continue
        pts = c[:, 0, :].astype(np.float64)
        out.append(([[float(x) * 100 / width, float(y) * 100 / height] for x, y in pts], part))
    return out


def region_base(width: int, height: int, score: float) -> dict[str, Any]:
    return {"to_name": "image", "original_width": width, "original_height": height, "image_rotation": 0,
            "score": score}
