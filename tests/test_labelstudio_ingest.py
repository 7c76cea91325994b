"""Label Studio export snapshots as an ingest source: exact masks from polygons and brushes, and bad exports.

The exports here are written in Label Studio's JSON export format from known masks; the round trip through a
running Label Studio server belongs to the labeling-loop tests.
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from core.errors import SegLoopError
from core.fsio import sha256_file
from ingest.ls_brush import encode_mask
from ingest.polygons import polygons_to_images
from ingest.taxonomy import load_taxonomy
from ingest.version import DatasetVersion, build, load_data_config
from tests.conftest import ROOT

TAX = load_taxonomy("cityscapes")


def _frames(demo_city, n=6):
    return sorted(demo_city.glob("leftImg8bit/*/*/*.png"))[:n]


def _polygon_task(i, img, poly_file, root):
    ann = json.loads(poly_file.read_text())
    w, h = ann["imgWidth"], ann["imgHeight"]
    result = []
    for k, obj in enumerate(ann["objects"]):
        if obj["label"] not in TAX.names:
            continue
        result.append({"id": f"p{k}", "type": "polygonlabels", "from_name": "label", "to_name": "image",
                       "original_width": w, "original_height": h, "image_rotation": 0,
                       "value": {"points": [[x * 100 / w, y * 100 / h] for x, y in obj["polygon"]],
                                 "polygonlabels": [obj["label"]], "closed": True}})
    return _task(i, img, root, result)


def _task(i, img, root, result, cancelled=False):
    rel = img.relative_to(root)
    return {"id": i, "data": {"image": f"/data/local-files/?d={rel}", "sha256": sha256_file(img)},
            "annotations": [{"id": 100 + i, "was_cancelled": cancelled, "updated_at": "2026-11-24T08:00:00Z",
                             "result": result}], "predictions": []}


def _brush_task(i, img, semantic, root):
    h, w = semantic.shape
    result = []
    for cls in np.unique(semantic):
        if cls == 255:
            continue
        result.append({"id": f"b{cls}", "type": "brushlabels", "from_name": "label", "to_name": "image",
                       "original_width": w, "original_height": h, "image_rotation": 0,
                       "value": {"format": "rle", "rle": encode_mask(semantic == cls),
                                 "brushlabels": [TAX.names[cls]]}})
    return _task(i, img, root, result)


def _cfg(snapshot, images_root, out, *extra):
    return load_data_config(ROOT / "configs/data/default.yaml", [
        "name=ls", f"output={out}", "split.mode=ratio",
        f"sources=[{{type: labelstudio, name: proj, root: '{snapshot}', images_root: '{images_root}', "
        "group: '(.*)'}]", *extra])


def _polygon_expected(poly_file):
    ann = json.loads(poly_file.read_text())
    ann["objects"] = [o for o in ann["objects"] if o["label"] in TAX.names]
    tmp = poly_file.parent / "_filtered_polygons.json"
    tmp.write_text(json.dumps(ann))
    label_ids, _ = polygons_to_images(tmp)
    tmp.unlink()
    lut = np.full(256, 255, np.uint8)
    for lb in TAX.labels:
        if 0 <= lb.trainId < 255:
            lut[lb.id] = lb.trainId
    return lut[label_ids]


@pytest.fixture()
def snapshot(demo_city, tmp_path):
    root = tmp_path / "city"
    shutil.copytree(demo_city, root)
    tasks = []
    for i, img in enumerate(_frames(root)):
        rel = img.relative_to(root / "leftImg8bit")
        poly = root / "gtFine" / str(rel).replace("_leftImg8bit.png", "_gtFine_polygons.json")
        if i % 2 == 0:
            tasks.append(_polygon_task(i, img, poly, root))
        else:
            tasks.append(_brush_task(i, img, _polygon_expected(poly), root))
    snap = tmp_path / "labelstudio" / "proj" / "20261124T080000Z.json"
    snap.parent.mkdir(parents=True)
    snap.write_text(json.dumps({"project": "proj", "tasks": tasks}))
    return snap, root, tasks


def test_polygons_and_brushes_give_identical_masks(snapshot, tmp_path):
    snap, root, tasks = snapshot
    ds = DatasetVersion(build(_cfg(snap.parent, root, tmp_path / "v"), progress=False).path)
    images = [im for s in ("train", "val", "test") for im in ds.images(s)]
    assert len(images) == len(tasks)
    for im in images:
        img = ds.image_path(im)
        rel = img.relative_to(root / "leftImg8bit")
        poly = root / "gtFine" / str(rel).replace("_leftImg8bit.png", "_gtFine_polygons.json")
        np.testing.assert_array_equal(ds.load_semantic(im), _polygon_expected(poly), err_msg=im["key"])
        assert im["annotation_files"][0].endswith("20261124T080000Z.json")  # which snapshot it came from
    anns = [a for s in ("train", "val", "test") for a in ds.coco(s)["annotations"]]
    assert anns and all(not a["iscrowd"] for a in anns)


def test_cancelled_and_skipped_tasks_are_left_out(snapshot, tmp_path):
    snap, root, tasks = snapshot
    tasks[0]["annotations"][0]["was_cancelled"] = True
    tasks[1]["annotations"] = []
    snap.write_text(json.dumps(tasks))  # a bare Label Studio export (list of tasks) works too
    ds = DatasetVersion(build(_cfg(snap, root, tmp_path / "v"), progress=False).path)
    assert sum(len(ds.images(s)) for s in ("train", "val", "test")) == len(tasks) - 2


@pytest.mark.parametrize("breakage,message", [
    ("label", "unknown label 'spaceship'"),
    ("points", "outside 0..100"),
    ("size", "export says the image is"),
    ("rle", "width x height x 4"),
    ("noimage", "has no image"),
    ("hash", "image changed on disk since it was labelled"),
])
def test_bad_exports(snapshot, tmp_path, breakage, message):
    snap, root, tasks = snapshot
    t_poly, t_brush = tasks[0], tasks[1]
    if breakage == "label":
        t_poly["annotations"][0]["result"][0]["value"]["polygonlabels"] = ["spaceship"]
    elif breakage == "points":
        t_poly["annotations"][0]["result"][0]["value"]["points"][0] = [101.5, 3.0]
    elif breakage == "size":
        t_poly["annotations"][0]["result"][0]["original_width"] = 999
    elif breakage == "rle":
        r = t_brush["annotations"][0]["result"][0]
        r["value"]["rle"] = encode_mask(np.ones((4, 4), bool))
    elif breakage == "noimage":
        del t_poly["data"]["image"]
    elif breakage == "hash":
        img = root / t_poly["data"]["image"].split("?d=")[1]
        Image.fromarray(np.zeros((128, 256, 3), np.uint8)).save(img)
    snap.write_text(json.dumps({"tasks": tasks}))
    with pytest.raises(SegLoopError, match=message) as e:
        build(_cfg(snap, root, tmp_path / "v"), progress=False)
    assert str(snap) in str(e.value)
    assert not (tmp_path / "v").exists() or not list((tmp_path / "v").iterdir())
