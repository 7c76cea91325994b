"""Cityscapes polygon annotations (``*_gtFine_polygons.json``) to labelIds / instanceIds images.

The output is pixel-identical to cityscapesScripts' ``json2labelImg`` and ``json2instanceImg`` (same PIL polygon
fill, same drawing order, same group and instance-numbering rules), but both images come from one parse and one
drawing pass: instance values are ``labelId * 1000 + n`` or a bare ``labelId``, so the labelIds image is derived
from the instanceIds image instead of being drawn a second time.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from core.errors import SegLoopError
from core.fsio import read_json
from ingest.taxonomy import CityscapesLabel, cityscapes_labels


@functools.lru_cache(maxsize=1)
def _label_index() -> dict[str, CityscapesLabel]:
    return {lb.name: lb for lb in cityscapes_labels()}


def resolve_label(label: str, origin: str | Path | None = None) -> tuple[CityscapesLabel, bool]:
    """Map a polygon's label to its Cityscapes label; ``cargroup`` -> (car, is_group=True)."""
    index = _label_index()
    is_group = False
    if label not in index and label.endswith("group"):
        label = label[: -len("group")]
        is_group = True
    if label not in index:
        raise SegLoopError(
            f"unknown Cityscapes label '{label}'", path=origin,
            fix=f"use a label of configs/taxonomy/cityscapes.yaml: {', '.join(sorted(index))}",
        )
    return index[label], is_group


def parse_polygons(path: str | Path) -> dict[str, Any]:
    """Read and validate a polygons JSON; a malformed file raises an error naming it and the bad object."""
    data = read_json(path, "Cityscapes polygons file")
    try:
        h, w = int(data["imgHeight"]), int(data["imgWidth"])
        objects = data["objects"]
    except (KeyError, TypeError, ValueError):
        raise SegLoopError("polygons file lacks imgHeight / imgWidth / objects", path=path,
                           fix="it must be a Cityscapes *_gtFine_polygons.json") from None
    for i, obj in enumerate(objects):
        poly = obj.get("polygon") if isinstance(obj, dict) else None
        if not isinstance(poly, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in poly):
            raise SegLoopError(f"object #{i} has no valid 'polygon' list of [x, y] points", path=path,
                               fix="repair or re-export the annotation")
        if "label" not in obj:
            raise SegLoopError(f"object #{i} has no 'label'", path=path, fix="repair or re-export the annotation")
    return {"height": h, "width": w, "objects": objects}


def rasterize(annotation: dict[str, Any], origin: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labelIds uint8, instanceIds int32) of a parsed polygons annotation, exactly as cityscapesScripts draws them."""
    size = (annotation["width"], annotation["height"])
    unlabeled = _label_index()["unlabeled"].id
    img = Image.new("I", size, unlabeled)
    draw = ImageDraw.Draw(img)
    counts: dict[str, int] = {}
    for obj in annotation["objects"]:
        if obj.get("deleted"):
            continue
        lb, is_group = resolve_label(obj["label"], origin)
        value = lb.id
        if lb.hasInstances and not is_group:
            value = lb.id * 1000 + counts.get(lb.name, 0)
            counts[lb.name] = counts.get(lb.name, 0) + 1
        if value < 0:
            continue
        draw.polygon([tuple(p) for p in obj["polygon"]], fill=value)
    inst = np.asarray(img, dtype=np.int32)
    label_ids = np.where(inst >= 1000, inst // 1000, inst).astype(np.uint8)
    return label_ids, inst


def polygons_to_images(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse and rasterise one polygons JSON file."""
    return rasterize(parse_polygons(path), path)


def color_image(label_ids: np.ndarray) -> np.ndarray:
    """RGBA colour image of a labelIds map with the Cityscapes colours (as json2labelImg's 'color' encoding)."""
    pal = np.zeros((256, 4), np.uint8)
    pal[:, 3] = 255
    for lb in cityscapes_labels():
        if lb.id >= 0:
            pal[lb.id, :3] = lb.color
    return pal[label_ids]
