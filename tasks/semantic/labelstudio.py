"""A semantic prediction as Label Studio pre-annotations: one brush per class, and one polygon per object of each
thing class when the project has the polygon tool, each scored by 1 - its mean normalised entropy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from annotate.regions import mask_polygons, region_base
from core.fsio import read_label
from ingest.ls_brush import encode_mask
from ingest.taxonomy import Taxonomy


def semantic_regions(pred: np.ndarray, uncertainty: np.ndarray | None, taxonomy: Taxonomy,
                     tools: list[str]) -> tuple[list[dict], float]:
    """Label Studio result regions for a class map and its uncertainty map (0-255).

    Classes with instances (cars, persons, ...) become one polygon per object when the project has the polygon
    tool; other classes become one brush per class (polygons per object when the project has no brush)."""
    h, w = pred.shape
    conf = 1 - (uncertainty.astype(np.float32) / 255 if uncertainty is not None else np.zeros_like(pred, np.float32))
    result: list[dict] = []
    for cls in np.unique(pred):
        if cls >= taxonomy.num_classes:
            continue
        mask = pred == cls
        name = taxonomy.classes[int(cls)].name
        base = region_base(w, h, float(conf[mask].mean()))
        as_polygons = "polygon" in tools and (taxonomy.has_instances(int(cls)) or "brush" not in tools)
        if not as_polygons:
            result.append({**base, "from_name": "brush", "type": "brushlabels", "id": f"seg{cls}",
                           "value": {"format": "rle", "rle": encode_mask(mask), "brushlabels": [name]}})
            continue
        for k, (poly, part) in enumerate(mask_polygons(mask, w, h)):
            result.append({**base, "score": float(conf[part].mean()), "from_name": "polygon",
                           "type": "polygonlabels", "id": f"ins{cls}_{k}",
                           "value": {"points": poly, "polygonlabels": [name], "closed": True}})
    return result, float(conf.mean())


class SemanticRegions:
    def regions(self, folder: Path, entry: dict[str, Any], taxonomy: Taxonomy, tools: list[str]
                ) -> tuple[list[dict], float]:
        """One image's regions from its ``index.json`` entry in a prediction folder."""
        pred = read_label(folder / entry["prediction"])
        unc = read_label(folder / entry["uncertainty"]) if entry.get("uncertainty") else None
        return semantic_regions(pred, unc, taxonomy, tools)

    def margin_problem(self, entry: dict[str, Any]) -> str | None:
        """Why ``--strategy margin`` cannot rank this prediction set, or None."""
        return None if "mean_margin" in entry else "its predictions were written without a class margin"
