"""A detection prediction as Label Studio pre-annotations: each confident box as a four-corner polygon (a brush of
the box when the project has no polygon tool), scored by the box's own score; the labeler refines it into the
object's outline."""

from __future__ import annotations

import numpy as np

from annotate.regions import region_base
from ingest.coco import train_index
from ingest.ls_brush import encode_mask
from ingest.taxonomy import Taxonomy
from tasks.detection.results import box_mask
from tasks.instance.labelstudio import InstanceRegions


def box_regions(results: list[dict], width: int, height: int, taxonomy: Taxonomy,
                tools: list[str]) -> tuple[list[dict], float]:
    """Label Studio regions for one image's boxes (COCO results, xywh in pixels; Label Studio's points are
    percentages of the image)."""
    out: list[dict] = []
    for k, r in enumerate(sorted(results, key=lambda r: -r["score"])):
        name = taxonomy.classes[train_index(r["category_id"])].name
        base = region_base(width, height, float(r["score"]))
        if "polygon" in tools:
            x, y, w, h = (float(v) for v in r["bbox"])
            x0, x1 = (min(max(v, 0.0), width) * 100 / width for v in (x, x + w))
            y0, y1 = (min(max(v, 0.0), height) * 100 / height for v in (y, y + h))
            out.append({**base, "from_name": "polygon", "type": "polygonlabels", "id": f"box{k}",
                        "value": {"points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "polygonlabels": [name],
                                  "closed": True}})
        else:
            out.append({**base, "from_name": "brush", "type": "brushlabels", "id": f"box{k}",
                        "value": {"format": "rle", "rle": encode_mask(box_mask(r["bbox"], (height, width))),
                                  "brushlabels": [name]}})
    return out, float(np.mean([r["score"] for r in out])) if out else 0.0


class DetectionRegions(InstanceRegions):
    convert = staticmethod(box_regions)

    def margin_problem(self, entry: dict) -> str | None:
        return ("it is a detection model: its predictions have no class margin; use --strategy entropy "
                "(1 - the mean score of its boxes)")
