"""An instance prediction as Label Studio pre-annotations: one polygon per confident detection (its mask's
largest object; a brush when the project has no polygon tool), scored by the detection's own score."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from annotate.regions import mask_polygons, region_base
from core.errors import SegLoopError
from core.fsio import read_json, read_label
from ingest.coco import decode_rle, train_index
from ingest.ls_brush import encode_mask
from ingest.taxonomy import Taxonomy


def instance_regions(results: list[dict], width: int, height: int, taxonomy: Taxonomy,
                     tools: list[str]) -> tuple[list[dict], float]:
    """Label Studio regions for one image's detections (COCO results with RLE masks)."""
    out: list[dict] = []
    for k, r in enumerate(sorted(results, key=lambda r: -r["score"])):
        mask = decode_rle(r["segmentation"])
        name = taxonomy.classes[train_index(r["category_id"])].name
        base = region_base(width, height, float(r["score"]))
        if "polygon" in tools:
            parts = mask_polygons(mask, width, height)
            if not parts:
                continue
            poly, _ = max(parts, key=lambda p: int(p[1].sum()))
            out.append({**base, "from_name": "polygon", "type": "polygonlabels", "id": f"inst{k}",
                        "value": {"points": poly, "polygonlabels": [name], "closed": True}})
        else:
            out.append({**base, "from_name": "brush", "type": "brushlabels", "id": f"inst{k}",
                        "value": {"format": "rle", "rle": encode_mask(mask), "brushlabels": [name]}})
    return out, float(np.mean([r["score"] for r in out])) if out else 0.0


class InstanceRegions:
    convert = staticmethod(instance_regions)  # one image's confident results -> (regions, score)

    def __init__(self) -> None:
        self._by_folder: dict[Path, dict[int, list[dict]]] = {}  # instances.json read once per folder

    def _results(self, folder: Path) -> dict[int, list[dict]]:
        if folder not in self._by_folder:
            by_image: dict[int, list[dict]] = {}
            for r in read_json(folder / "instances.json", "instance predictions (COCO results)"):
                by_image.setdefault(r["image_id"], []).append(r)
            self._by_folder[folder] = by_image
        return self._by_folder[folder]

    def regions(self, folder: Path, entry: dict[str, Any], taxonomy: Taxonomy, tools: list[str]
                ) -> tuple[list[dict], float]:
        """One image's regions: its detections scored at least the threshold its prediction set was written with."""
        if "image_id" not in entry:
            raise SegLoopError("instance prediction index entry has no image_id", path=folder / "index.json",
                               fix="re-run the command that wrote it (python -m evaluate run / predict)")
        threshold = entry.get("score_threshold", 0.5)
        dets = [r for r in self._results(folder).get(entry["image_id"], []) if r["score"] >= threshold]
        h, w = read_label(folder / entry["prediction"]).shape
        return self.convert(dets, w, h, taxonomy, tools)

    def margin_problem(self, entry: dict[str, Any]) -> str | None:
        return ("it is an instance model: its predictions have no class margin; use --strategy entropy "
                "(1 - the mean score of its detections)")
