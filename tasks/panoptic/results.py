"""What a panoptic model's output means to the readers, without torch: the instance-id map of its segments (things
an id each, stuff one segment per class, as the panoptic format and PQ read them) and its things as COCO results
(mask and box AP, FiftyOne's instances, Label Studio's regions)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ingest.coco import encode_rle
from tasks.detection.targets import mask_box


def panoptic_maps(semantic: np.ndarray, segments: np.ndarray, is_thing: list[bool],
                  ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """(semantic map, instance-id map): a thing segment keeps its id, a stuff segment gets 0 (its class's one
    segment), void stays ``ignore_index`` / 0."""
    thing = np.zeros(256, bool)
    thing[: len(is_thing)] = is_thing
    inst = np.where(thing[semantic] & (semantic != ignore_index), segments, 0).astype(np.int32)
    return semantic, inst


def segment_count(semantic: np.ndarray, instances: np.ndarray, is_thing: list[bool], ignore_index: int = 255) -> int:
    """The panoptic segments of an image: its thing instances and its stuff classes (one segment each)."""
    classes = [int(c) for c in np.unique(semantic) if c != ignore_index and c < len(is_thing)]
    return len(np.unique(instances[instances > 0])) + sum(not is_thing[c] for c in classes)


def thing_results(image_id: int, segments: np.ndarray, labels: list[int], scores: list[float],
                  is_thing: list[bool]) -> list[dict[str, Any]]:
    """COCO results (RLE mask, box, score) of the thing segments of one image (segment k has ``labels[k-1]``)."""
    out = []
    for k, (cat, score) in enumerate(zip(labels, scores, strict=True), 1):
        if not is_thing[int(cat) - 1]:
            continue
        m = segments == k
        if not m.any():
            continue
        rle = encode_rle(m)
        out.append({"image_id": int(image_id), "category_id": int(cat), "score": float(score), "bbox": mask_box(m),
                    "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]}})
    return out


def segment_uncertainty(segments: np.ndarray, scores: list[float]) -> np.ndarray:
    """Each pixel's 1 - its segment's score (1 on void): the panoptic map's uncertainty as a picture."""
    lut = np.array([1.0, *[1 - s for s in scores]], np.float32)
    return lut[segments]
