"""A panoptic prediction as Label Studio pre-annotations: one brush per stuff class of its map (polygons without a
brush tool), and one polygon per thing (its own segment, so touching cars stay two), as the semantic and instance
tasks send them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.fsio import read_label
from ingest.taxonomy import Taxonomy
from tasks.instance.labelstudio import InstanceRegions, instance_regions
from tasks.semantic.labelstudio import semantic_regions


class PanopticRegions(InstanceRegions):
    def regions(self, folder: Path, entry: dict[str, Any], taxonomy: Taxonomy, tools: list[str]
                ) -> tuple[list[dict], float]:
        pred = read_label(folder / entry["prediction"])
        unc = read_label(folder / entry["uncertainty"]) if entry.get("uncertainty") else None
        thing = np.zeros(256, bool)
        thing[: taxonomy.num_classes] = [c.has_instances for c in taxonomy.classes]
        stuff, _ = semantic_regions(np.where(thing[pred], 255, pred).astype(np.uint8), unc, taxonomy, tools)
        things, _ = instance_regions(self._results(folder).get(entry["image_id"], []), pred.shape[1], pred.shape[0],
                                     taxonomy, tools)
        conf = 1 - (unc.astype(np.float32) / 255 if unc is not None else np.zeros(pred.shape, np.float32))
        return stuff + things, float(conf.mean())

    def margin_problem(self, entry: dict[str, Any]) -> str | None:
        return ("it is a panoptic model: its predictions have no class margin; use --strategy entropy "
                "(1 - the mean score of its segments)")
