"""COCO files of a dataset version: categories from the taxonomy, instances as RLE.

Category ids are train index + 1 (COCO reserves 0); ``category_id`` / ``train_index`` convert, and nothing else
in SegLoop should do that arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from ingest.records import Instance
from ingest.taxonomy import Taxonomy


def category_id(train_index: int) -> int:
    return train_index + 1


def train_index(cat_id: int) -> int:
    return cat_id - 1


def categories(taxonomy: Taxonomy) -> list[dict[str, Any]]:
    return [{"id": category_id(c.index), "name": c.name, "isthing": int(c.has_instances), "color": list(c.color),
             "supercategory": "thing" if c.has_instances else "stuff"} for c in taxonomy.classes]


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def by_image(items: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """COCO annotations or results grouped by their ``image_id`` (in file order)."""
    out: dict[int, list[dict[str, Any]]] = {}
    for a in items:
        out.setdefault(int(a["image_id"]), []).append(a)
    return out


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    r = dict(rle)
    if isinstance(r["counts"], str):
        r["counts"] = r["counts"].encode("ascii")
    return mask_utils.decode(r).astype(bool)


def instance_annotation(inst: Instance, ann_id: int, image_id: int) -> dict[str, Any]:
    rle = encode_rle(inst.mask)
    ann = {
        "id": ann_id, "image_id": image_id, "category_id": category_id(inst.category), "segmentation": rle,
        "area": int(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": int(inst.iscrowd),
    }
    if inst.score is not None:
        ann["score"] = float(inst.score)
    return ann


def empty_coco(taxonomy: Taxonomy, info: dict[str, Any]) -> dict[str, Any]:
    return {"info": info, "licenses": [], "categories": categories(taxonomy), "images": [], "annotations": []}
