"""The YOLO-seg export: filling its polygons gives back every mask (holes and split objects included)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import yaml

from ingest.coco import decode_rle, train_index
from tasks.instance.yolo_data import EXPORT_JSON, export_yolo, mask_polygons, read_label_polygons


def fill(polys: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Polygons rasterised as Ultralytics does (``cv2.fillPoly`` at pixel coordinates)."""
    out = np.zeros(shape, np.uint8)
    for p in polys:
        cv2.fillPoly(out, [np.round(p).astype(np.int32).reshape(-1, 1, 2)], 1)
    return out.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_holes_and_parts_survive_the_round_trip():
    rng = np.random.default_rng(0)
    holes_seen = parts_seen = 0
    for _ in range(200):
        m = np.zeros((64, 96), np.uint8)
        for _ in range(rng.integers(1, 4)):  # one to three parts (an object cut by an occluder)
            centre = (int(rng.integers(0, 96)), int(rng.integers(0, 64)))
            axes = (int(rng.integers(3, 24)), int(rng.integers(3, 16)))
            cv2.ellipse(m, centre, axes, float(rng.integers(0, 180)), 0, 360, 1, -1)
        for _ in range(rng.integers(0, 3)):  # holes (a window through a bus)
            cv2.circle(m, (int(rng.integers(0, 96)), int(rng.integers(0, 64))), int(rng.integers(1, 6)), 0, -1)
        mask = m.astype(bool)
        if mask.sum() < 9:
            continue
        polys, holes, dropped = mask_polygons(mask)
        holes_seen += holes
        parts_seen += len(polys) > 1
        back = fill(polys, mask.shape)
        assert not (back & ~mask).any()  # nothing outside the mask, seams and cuts included
        if not dropped:  # a one- or two-pixel speck left by a hole is dropped (and counted) instead
            assert iou(back, mask) >= 0.99
    assert holes_seen > 10 and parts_seen > 20  # the cases the test is about did occur


def test_a_ring_with_a_hole_keeps_the_hole_empty():
    mask = np.zeros((40, 40), bool)
    mask[5:31, 5:31] = True
    mask[12:20, 12:22] = False
    polys, holes, _ = mask_polygons(mask)
    assert len(polys) == 1 and holes == 1
    back = fill(polys, mask.shape)
    assert not back[12:20, 12:22].any() and np.array_equal(back, mask)


def test_specks_are_dropped_and_counted():
    mask = np.zeros((20, 20), bool)
    mask[3, 3] = True  # one pixel: no polygon Ultralytics can draw
    mask[10:16, 10:16] = True
    polys, _, dropped = mask_polygons(mask)
    assert dropped == 1 and len(polys) == 1


def test_export_of_a_version_round_trips_every_instance(demo_version, tmp_path):
    out = export_yolo(demo_version, tmp_path / "yolo", progress=False)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert "download" not in data and data["train"] == "images/train"
    # YOLO class k is train index k (category k + 1): every class is named, only thing classes have objects
    assert data["names"] == {c.index: c.name for c in demo_version.taxonomy.classes}
    things = {c.index for c in demo_version.taxonomy.classes if c.has_instances}
    record = json.loads((out / EXPORT_JSON).read_text())
    checked = crowd = dropped_total = 0
    for split in ("train", "val", "test"):
        coco = demo_version.coco(split)
        anns: dict[int, list[dict]] = {}
        for a in coco["annotations"]:
            anns.setdefault(a["image_id"], []).append(a)
        for im in coco["images"]:
            stem = im["key"].replace("/", "__")
            image = next((out / "images" / split).glob(f"{stem}.*"))
            assert image.resolve() == demo_version.image_path(im)
            lines = read_label_polygons(out / "labels" / split / f"{stem}.txt", im["width"], im["height"])
            crowd += sum(bool(a.get("iscrowd")) for a in anns.get(im["id"], []))
            objects = [a for a in anns.get(im["id"], []) if not a.get("iscrowd")
                       and train_index(a["category_id"]) in things]
            if not objects:
                assert lines == []  # a background image: an empty label file
                continue
            # each object's parts, in order; their union is the object's mask
            k = 0
            for a in objects:
                mask = decode_rle(a["segmentation"])
                parts, _, dropped = mask_polygons(mask)
                n = len(parts)
                dropped_total += dropped
                if n == 0:  # only specks: the object is dropped, and counted
                    continue
                polys = [p for cls, p in lines[k:k + n]]
                assert {cls for cls, _ in lines[k:k + n]} == {train_index(a["category_id"])}
                back = fill(polys, mask.shape)
                assert not (back & ~mask).any()
                assert iou(back, mask) >= 0.99 or dropped
                k += n
                checked += 1
            assert k == len(lines)
        counts = record["counts"][split]
        assert counts["images"] == len(coco["images"])
    assert checked > 20
    assert sum(record["counts"][s]["crowd_skipped"] for s in record["counts"]) == crowd
    assert sum(record["counts"][s]["degenerate_dropped"] for s in record["counts"]) == dropped_total
    # cached by version: a second call reuses the folder
    mtime = (out / EXPORT_JSON).stat().st_mtime_ns
    assert export_yolo(demo_version, tmp_path / "yolo", progress=False) == out
    assert (out / EXPORT_JSON).stat().st_mtime_ns == mtime
    # the cache is SegLoop's own: an edited label, a deleted one, or a broken record is rebuilt, never read as is
    labels = sorted((out / "labels" / "train").glob("*.txt"))
    original = labels[0].read_text()
    labels[0].write_text("0 0.5 0.5 abc\n")
    labels[1].unlink()
    export_yolo(demo_version, tmp_path / "yolo", progress=False)
    assert labels[0].read_text() == original and labels[1].is_file()
    (out / EXPORT_JSON).write_text('{"trunc')
    export_yolo(demo_version, tmp_path / "yolo", progress=False)
    assert json.loads((out / EXPORT_JSON).read_text())["format"] == record["format"]


@pytest.mark.parametrize("shape", [(1, 1), (5, 7)])
def test_empty_masks_give_no_polygon(shape):
    assert mask_polygons(np.zeros(shape, bool)) == ([], 0, 0)
