"""Label Studio export snapshots as an ingest source: exact masks from polygons and brushes, and bad exports.

The exports here are written in Label Studio's JSON export format from known masks; the round trip through a
running Label Studio server belongs to the labeling-loop tests.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import SegLoopError
from core.fsio import sha256_file
from ingest.ls_brush import encode_mask
from ingest.polygons import rasterize_polygon
from ingest.taxonomy import load_taxonomy
from ingest.version import DatasetVersion, build, load_data_config
from tests.conftest import ROOT

TAX = load_taxonomy("cityscapes")


def _frames(demo_city, n=6):
    return sorted(demo_city.glob("leftImg8bit/*/*/*.png"))[:n]


def _polygon_task(i, img, poly_file, root):
    """The scene as Label Studio polygons; the first polygon of a result is on top in the editor, so the
    Cityscapes objects (drawn later on top) are listed last first, as a labeler reproducing the scene would."""
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
    return _task(i, img, root, result[::-1])


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
    """The scene's classes as Label Studio polygons paint them: each object by the pixel-centre rule, in order."""
    ann = json.loads(poly_file.read_text())
    out = np.full((ann["imgHeight"], ann["imgWidth"]), 255, np.uint8)
    for obj in ann["objects"]:
        if obj["label"] in TAX.names:
            out[rasterize_polygon(obj["polygon"], ann["imgWidth"], ann["imgHeight"], "centre")] = \
                TAX.index_of(obj["label"])
    return out


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


@pytest.mark.parametrize("breakage,message", [
    ("two_points", "at least 3 points"),
    ("nan", "not a finite number"),
    ("strings", "not a number"),
])
def test_bad_polygon_geometry_in_exports(snapshot, tmp_path, breakage, message):
    snap, root, tasks = snapshot
    value = tasks[0]["annotations"][0]["result"][0]["value"]
    value["points"] = {"two_points": [[1, 1], [5, 5]], "nan": [[1, 1], [5, "NaN"], [9, 1]],
                       "strings": [["a", "b"], [5, 5], [9, 1]]}[breakage]
    snap.write_text(json.dumps({"tasks": tasks}).replace('"NaN"', "NaN"))
    with pytest.raises(SegLoopError, match=message) as e:
        build(_cfg(snap, root, tmp_path / "v"), progress=False)
    assert str(snap) in str(e.value) and "fix:" in str(e.value)


# ------------------------------------------------------------------------------------------------- snapshots
def test_snapshots_by_pattern_and_export_time(snapshot, tmp_path):
    from datetime import UTC, datetime

    from ingest.labelstudio import list_snapshots, snapshot_name

    snap, root, tasks = snapshot
    folder = snap.parent
    body = json.loads(snap.read_text())
    t0 = datetime(2026, 11, 24, 8, 0, 0, tzinfo=UTC)
    # same second: the older form, its collision suffix, then two microsecond-stamped exports sharing a microsecond
    names = ["20261124T080000Z.json", "20261124T080000Z-1.json", snapshot_name(t0.replace(microsecond=5)),
             snapshot_name(t0.replace(microsecond=5), 1), snapshot_name(t0.replace(microsecond=500000))]
    for k, name in enumerate(names):
        b = json.loads(json.dumps(body))
        b["tasks"] = b["tasks"][: k + 2]  # each export has a different number of labelled tasks
        (folder / name).write_text(json.dumps(b))
    (folder / "next-20991231T235959.999999Z.json").write_text(json.dumps({"picked": []}))  # not snapshots:
    (folder / "notes.json").write_text("{}")  # a batch record sorting last by name, a note
    assert [p.name for p in list_snapshots(folder)] == names
    assert sorted(p.name for p in list_snapshots(folder)) != names  # name order would pick the wrong one
    ds = DatasetVersion(build(_cfg(folder, root, tmp_path / "v"), progress=False).path)
    images = [im for s in ("train", "val", "test") for im in ds.images(s)]
    assert len(images) == 6 and all(im["annotation_files"][0].endswith(names[-1]) for im in images)


def test_folder_without_snapshots(tmp_path):
    folder = tmp_path / "labelstudio" / "proj"
    (folder / "next").mkdir(parents=True)
    (folder / "next-20261124T080000Z.json").write_text("{}")
    with pytest.raises(SegLoopError, match="no snapshot") as e:
        build(_cfg(folder, tmp_path, tmp_path / "v"), progress=False)
    assert "annotate export" in str(e.value)


# --------------------------------------------------------------------------------------------- uploaded images
def _as_uploaded(tasks, root, media, project_id=7):
    """Move each task's image into a Label Studio media folder, as the server stores files dragged into its UI."""
    for t in tasks:
        rel = t["data"]["image"].split("?d=")[1]
        name = f"{t['id']:08x}-{Path(rel).name}"
        dst = media / "upload" / str(project_id) / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / rel, dst)
        t["data"]["image"] = f"/data/upload/{project_id}/{name}"
    return tasks


def test_uploaded_images_from_the_recorded_media_folder(snapshot, tmp_path):
    snap, root, tasks = snapshot
    media = tmp_path / "server" / "media"
    _as_uploaded(tasks, root, media)
    snap.write_text(json.dumps({"project": "proj", "media_root": str(media), "tasks": tasks}))
    ds = DatasetVersion(build(_cfg(snap, tmp_path / "nowhere", tmp_path / "v"), progress=False).path)
    images = [im for s in ("train", "val", "test") for im in ds.images(s)]
    assert len(images) == 6 and all(str(media) in str(ds.image_path(im)) for im in images)
    # a relative media folder is relative to the snapshot (annotate export's downloads beside it)
    shutil.move(media, snap.parent / "media")
    snap.write_text(json.dumps({"project": "proj", "media_root": "media", "tasks": tasks}))
    assert build(_cfg(snap, tmp_path / "nowhere", tmp_path / "v2"), progress=False).path


def test_uploaded_images_under_images_root_and_hash_checked(snapshot, tmp_path):
    snap, root, tasks = snapshot
    media = tmp_path / "server" / "media"
    _as_uploaded(tasks, root, media)
    snap.write_text(json.dumps(tasks))  # a bare export from the UI: images_root names the server's media folder
    assert build(_cfg(snap, media, tmp_path / "v"), progress=False).path
    upload = next((media / "upload" / "7").iterdir())
    Image.fromarray(np.zeros((128, 256, 3), np.uint8)).save(upload, format="PNG")
    with pytest.raises(SegLoopError, match="image changed on disk"):
        build(_cfg(snap, media, tmp_path / "v2"), progress=False)


def test_data_file_is_read_and_missing_images_say_where_they_were_looked_for(snapshot, tmp_path):
    snap, root, tasks = snapshot
    for t in tasks:  # uploaded to a server whose media folder is not here; data.file names the source image
        rel = t["data"]["image"].split("?d=")[1]
        t["data"]["image"] = f"/data/upload/3/{Path(rel).name}"
        t["data"]["file"] = rel
    snap.write_text(json.dumps(tasks))
    ds = DatasetVersion(build(_cfg(snap, root, tmp_path / "v"), progress=False).path)
    assert sum(len(ds.images(s)) for s in ("train", "val", "test")) == 6
    del tasks[0]["data"]["file"]
    snap.write_text(json.dumps(tasks))
    with pytest.raises(SegLoopError, match="not found") as e:
        build(_cfg(snap, root, tmp_path / "v2"), progress=False)
    assert str(root / "upload" / "3") in str(e.value) and "images_root" in str(e.value)


# ------------------------------------------------------------------------------------------------ paint order
def test_overlaps_follow_the_editors_paint_order(snapshot, tmp_path):
    """Brushes are painted below polygons whatever the result order; within a kind the first region is on top."""
    snap, root, tasks = snapshot
    t = tasks[0]
    h, w = 128, 256
    base = {"to_name": "image", "original_width": w, "original_height": h, "image_rotation": 0}

    def brush(name, rows, cols):
        m = np.zeros((h, w), bool)
        m[rows, cols] = True
        return {**base, "type": "brushlabels", "from_name": "brush",
                "value": {"format": "rle", "rle": encode_mask(m), "brushlabels": [name]}}

    def polygon(name, x0, y0, x1, y1):
        return {**base, "type": "polygonlabels", "from_name": "polygon",
                "value": {"points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], "polygonlabels": [name]}}

    t["annotations"][0]["result"] = [
        polygon("person", 25, 25, 75, 75),                  # the first polygon is above a later polygon
        brush("sky", slice(0, 40), slice(128, 256)),        # the first brush is above a later brush ...
        polygon("car", 0, 0, 50, 50),
        brush("road", slice(0, 128), slice(0, 256)),        # ... and every brush is below every polygon
    ]
    snap.write_text(json.dumps({"tasks": tasks}))
    ds = DatasetVersion(build(_cfg(snap, root, tmp_path / "v"), progress=False).path)
    im = next(im for s in ("train", "val", "test") for im in ds.images(s) if im["key"].startswith("proj/0_"))
    sem = ds.load_semantic(im)
    idx = TAX.index_of
    assert sem[10, 10] == idx("car") and sem[60, 100] == idx("person") and sem[100, 250] == idx("road")
    assert sem[10, 250] == idx("sky") and sem[40, 80] == idx("person")  # person polygon over car polygon
    assert sem[20, 150] == idx("sky") and sem[36, 170] == idx("person")  # a polygon over an earlier brush
    anns = [a for s in ("train", "val", "test") for a in ds.coco(s)["annotations"] if a["image_id"] == im["id"]]
    cars = [a for a in anns if a["category_id"] == idx("car") + 1]
    assert len(cars) == 1 and cars[0]["area"] == 128 * 64 - 64 * 32  # the car's visible part: person covers a corner


def test_paint_order_rule():
    from ingest.labelstudio import paint_order

    kinds = ["polygonlabels", "brushlabels", "polygonlabels", "brushlabels", "brushlabels"]
    # bottom first: brushes last-to-first, then polygons last-to-first
    assert paint_order(kinds) == [4, 3, 1, 2, 0]
