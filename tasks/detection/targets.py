"""What a detection model is asked to find, without torch: thing instances as boxes and, "combined with stuff",
one box per 8-connected region of a stuff class at the label resolution (regions under ``min_area`` pixels dropped).

Crowd regions are never training targets; in the box ground truth they stay as COCO crowd annotations, which the
evaluator ignores (a detection on one is neither right nor wrong). Training and evaluation build their targets
here, from the dataset version, so the boxes a model learns are the boxes it is scored against; ``evaluate run``
writes that ground truth beside its results (``ground_truth.json``) for anyone to recompute the figures.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm import tqdm

from ingest.coco import category_id
from ingest.geometry import mask_components
from ingest.taxonomy import Taxonomy
from ingest.version import DatasetVersion


def stuff_regions(label: np.ndarray, taxonomy: Taxonomy, min_area: int) -> list[tuple[int, np.ndarray]]:
    """(train index, mask) of each 8-connected region of a stuff class of at least ``min_area`` pixels."""
    out = []
    for c in np.unique(label):
        if c < taxonomy.num_classes and not taxonomy.has_instances(int(c)):
            out += [(int(c), part) for part in mask_components(label == c, min_area)]
    return out


def mask_box(mask: np.ndarray) -> list[float]:
    """COCO xywh of the pixels of ``mask`` (edges exclusive, as the instances' own boxes)."""
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [float(xs[0]), float(ys[0]), float(xs[-1] + 1 - xs[0]), float(ys[-1] + 1 - ys[0])]


def box_ground_truth(version: DatasetVersion, split: str, stuff: bool, min_area: int,
                     image_ids: set[int] | None = None, progress: bool = False) -> dict[str, Any]:
    """The COCO box ground truth of a split (or of ``image_ids``): its thing annotations' boxes (crowds kept as
    crowds) and, with ``stuff``, a box per stuff region. Every class with box targets is a category with
    ``isthing: 1`` here, so the evaluator reports its AP; a stuff region carries ``"region": true``."""
    coco = version.coco(split)
    tax = version.taxonomy
    images = [im for im in coco["images"] if image_ids is None or im["id"] in image_ids]
    keep = {im["id"] for im in images}
    anns = [{k: a[k] for k in ("id", "image_id", "category_id", "bbox", "area", "iscrowd") if k in a}
            for a in coco["annotations"] if a["image_id"] in keep]
    next_id = max((int(a["id"]) for a in coco["annotations"]), default=0) + 1
    if stuff:
        for im in tqdm(images, desc=f"stuff regions of {split}", disable=not progress, leave=False):
            for c, part in stuff_regions(version.load_semantic(im), tax, min_area):
                anns.append({"id": next_id, "image_id": im["id"], "category_id": category_id(c),
                             "bbox": mask_box(part), "area": float(part.sum()), "iscrowd": 0, "region": True})
                next_id += 1
    cats = [{**c, "isthing": int(c.get("isthing", 0) or stuff)} for c in coco["categories"]]
    return {"images": images, "annotations": anns, "categories": cats,
            "info": {"description": f"box targets of {version.version} {split}: thing instances"
                                    + (f" and stuff regions of at least {min_area} pixels" if stuff else "")}}


def box_classes(taxonomy: Taxonomy, stuff: bool) -> list[str]:
    """The classes a detection model with these targets can find."""
    return [c.name for c in taxonomy.classes if stuff or c.has_instances]
