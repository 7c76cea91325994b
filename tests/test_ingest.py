import json
import shutil

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from core.errors import SegLoopError
from ingest.coco import decode_rle, train_index
from ingest.polygons import polygons_to_images
from ingest.taxonomy import load_taxonomy
from ingest.version import DatasetVersion, build, list_versions, resolve_version
from tests.conftest import demo_data_config


def test_version_layout_and_manifest(demo_version):
    path = demo_version.path
    assert path.name.startswith("demo@") and len(path.name.split("@")[1]) == 12
    m = demo_version.manifest
    assert m["taxonomy"]["name"] == "cityscapes" and len(m["taxonomy"]["classes"]) == 19
    assert m["sources"][0]["images"] == 24 and len(m["sources"][0]["content_hash"]) == 64
    assert sum(m["counts"][s]["images"] for s in ("train", "val", "test")) == 24
    for split in ("train", "val", "test"):
        coco = COCO(str(path / f"{split}.json"))  # pycocotools reads it
        assert len(coco.getImgIds()) == m["counts"][split]["images"]
        for img in coco.dataset["images"]:
            assert demo_version.image_path(img).is_file()
            assert len(img["sha256"]) == 64


def test_semantic_masks_are_train_ids_of_the_polygons(demo_version):
    tax = load_taxonomy("cityscapes")
    lut = np.full(256, 255, np.uint8)
    for lb in tax.labels:
        if lb.id >= 0:
            lut[lb.id] = lb.trainId if lb.trainId >= 0 else 255
    for img in demo_version.images("val"):
        poly = demo_version.path / img["annotation_files"][0]
        label_ids, inst = polygons_to_images(poly)
        np.testing.assert_array_equal(demo_version.load_semantic(img), lut[label_ids])


def test_instances_as_rle_match_instance_ids(demo_version):
    coco = demo_version.coco("train")
    img = coco["images"][0]
    poly = demo_version.path / img["annotation_files"][0]
    _, inst = polygons_to_images(poly)
    anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
    assert anns and all(a["segmentation"]["size"] == [img["height"], img["width"]] for a in anns)
    expected = sorted(int(v) for v in np.unique(inst) if v >= 1000)
    assert len([a for a in anns if not a["iscrowd"]]) == len(expected)
    for a in anns:
        m = decode_rle(a["segmentation"])
        assert m.sum() == a["area"]
        vals = np.unique(inst[m])
        assert len(vals) == 1 and train_index(a["category_id"]) == load_taxonomy("cityscapes").index_of(
            {24: "person", 26: "car", 33: "bicycle"}[int(vals[0]) // 1000])


def test_rebuild_gives_same_version_and_writes_nothing(demo_city, versions_root, demo_version):
    before = sorted(p.name for p in versions_root.iterdir())
    res = build(demo_data_config(demo_city, versions_root), progress=False)
    assert not res.created and res.path == demo_version.path
    assert sorted(p.name for p in versions_root.iterdir()) == before


def test_ratio_split_is_grouped_and_folds(demo_city, tmp_path):
    cfg = demo_data_config(demo_city, tmp_path, "split.mode=ratio", "split.seed=1", "folds=2")
    ds = DatasetVersion(build(cfg, progress=False).path)
    where = {}
    for split in ("train", "val", "test"):
        for img in ds.images(split):
            assert where.setdefault(img["group"], split) == split, "a city crossed splits"
    train_ids = {im["id"] for im in ds.images("train")}
    f0, f1 = ds.fold(0), ds.fold(1)
    assert set(f0["val"]) | set(f1["val"]) == train_ids and not set(f0["val"]) & set(f1["val"])
    assert set(f0["train"]) == set(f1["val"])
    # a different seed or rule is a different version
    assert ds.path != build(demo_data_config(demo_city, tmp_path), progress=False).path


def test_list_show_resolve(demo_version, versions_root):
    versions = list_versions(versions_root)
    assert demo_version.version in [v["version"] for v in versions]
    assert resolve_version("demo", versions_root) == demo_version.path
    assert resolve_version(demo_version.version[:8], versions_root) == demo_version.path
    with pytest.raises(SegLoopError) as e:
        resolve_version("nosuch@123", versions_root)
    assert "does not exist" in str(e.value) and "python -m ingest build" in str(e.value)


# ------------------------------------------------------------------------------------------------------ bad input

@pytest.fixture()
def city_copy(demo_city, tmp_path):
    dst = tmp_path / "city"
    shutil.copytree(demo_city, dst)
    return dst


def _assert_nothing_written(out):
    assert not out.exists() or not [p for p in out.iterdir()], "a failed build left files behind"


def test_missing_root(tmp_path):
    with pytest.raises(SegLoopError, match="Cityscapes folder not found") as e:
        build(demo_data_config(tmp_path / "nope", tmp_path / "v"), progress=False)
    assert "nope" in str(e.value)
    _assert_nothing_written(tmp_path / "v")


def test_image_without_annotation(city_copy, tmp_path):
    victim = next(city_copy.glob("gtFine/train/*/*_polygons.json"))
    victim.unlink()
    with pytest.raises(SegLoopError, match="image has no annotation") as e:
        build(demo_data_config(city_copy, tmp_path / "v"), progress=False)
    assert victim.name in str(e.value)
    _assert_nothing_written(tmp_path / "v")


def test_polygons_that_do_not_parse_or_unknown_label(city_copy, tmp_path):
    victim = next(city_copy.glob("gtFine/val/*/*_polygons.json"))
    victim.write_text("{")
    with pytest.raises(SegLoopError, match="does not parse"):
        build(demo_data_config(city_copy, tmp_path / "v"), progress=False)
    victim.write_text(json.dumps({"imgHeight": 128, "imgWidth": 256,
                                  "objects": [{"label": "dragon", "polygon": [[0, 0], [9, 0], [9, 9]]}]}))
    with pytest.raises(SegLoopError, match="unknown Cityscapes label 'dragon'") as e:
        build(demo_data_config(city_copy, tmp_path / "v"), progress=False)
    assert str(victim) in str(e.value)
    _assert_nothing_written(tmp_path / "v")


def test_corrupt_image(city_copy, tmp_path):
    victim = next(city_copy.glob("leftImg8bit/test/*/*.png"))
    victim.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(SegLoopError) as e:
        build(demo_data_config(city_copy, tmp_path / "v"), progress=False)
    assert str(victim) in str(e.value)
    _assert_nothing_written(tmp_path / "v")


def test_size_mismatch(city_copy, tmp_path):
    victim = next(city_copy.glob("leftImg8bit/train/*/*.png"))
    Image.new("RGB", (100, 50)).save(victim)
    with pytest.raises(SegLoopError, match="annotation is 256x128 but the image is 100x50"):
        build(demo_data_config(city_copy, tmp_path / "v"), progress=False)


def test_empty_split(city_copy, tmp_path):
    shutil.rmtree(city_copy / "leftImg8bit" / "test")
    with pytest.raises(SegLoopError, match="split 'test' is empty") as e:
        build(demo_data_config(city_copy, tmp_path / "v"), progress=False)
    assert "split.mode: ratio" in str(e.value)
    _assert_nothing_written(tmp_path / "v")


def test_unknown_source_key(demo_city, tmp_path):
    from ingest.version import load_data_config
    from tests.conftest import ROOT

    with pytest.raises(SegLoopError, match="did you mean 'annotations'"):
        load_data_config(ROOT / "configs/data/demo.yaml",
                         [f"sources=[{{type: cityscapes, root: '{demo_city}', annotation: png}}]"])


def test_png_mode_equals_polygon_mode(demo_city, tmp_path, demo_version):
    cfg = demo_data_config(demo_city, tmp_path, "name=demo_png")
    cfg["sources"][0]["annotations"] = "png"
    ds = DatasetVersion(build(cfg, progress=False).path)
    for a, b in zip(ds.images("val"), demo_version.images("val"), strict=True):
        np.testing.assert_array_equal(ds.load_semantic(a), demo_version.load_semantic(b))
    assert len(ds.coco("train")["annotations"]) == len(demo_version.coco("train")["annotations"])


# ------------------------------------------------------------------------------------- folds and crash leftovers


def test_folds_keep_identical_images_together(city_copy, tmp_path):
    """An image copied into another city (same bytes, another group) must land in the same fold as its original."""
    cities = sorted(p.name for p in (city_copy / "leftImg8bit" / "train").iterdir())
    src_img = sorted((city_copy / "leftImg8bit" / "train" / cities[0]).glob("*.png"))[0]
    stem = src_img.name[: -len("_leftImg8bit.png")]
    new_stem = stem.replace(cities[0], cities[-1], 1)
    shutil.copy(src_img, city_copy / "leftImg8bit" / "train" / cities[-1] / f"{new_stem}_leftImg8bit.png")
    poly = city_copy / "gtFine" / "train" / cities[0] / f"{stem}_gtFine_polygons.json"
    shutil.copy(poly, city_copy / "gtFine" / "train" / cities[-1] / f"{new_stem}_gtFine_polygons.json")
    k = len(cities) - 1  # as many folds as merged groups (unmerged, the two cities land in different folds)
    ds = DatasetVersion(build(demo_data_config(city_copy, tmp_path / "v", f"folds={k}"), progress=False).path)
    sha = {im["id"]: im["sha256"] for im in ds.images("train")}
    dup = next(h for h in sha.values() if list(sha.values()).count(h) == 2)
    for f in range(k):
        fold = ds.fold(f)
        train_shas, val_shas = {sha[i] for i in fold["train"]}, {sha[i] for i in fold["val"]}
        assert not train_shas & val_shas, f"fold {f}: an image is on both sides"
    assert any(dup in {sha[i] for i in ds.fold(f)["val"]} for f in range(k))


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftover(root, name: str, age_hours: float = 0.0):
    import os
    import time

    d = root / name
    (d / "semantic").mkdir(parents=True)
    (d / "semantic" / "x.png").write_bytes(b"partial")
    if age_hours:
        t = time.time() - age_hours * 3600
        for p in (d / "semantic", d):
            os.utime(p, (t, t))
    return d


def test_gc_removes_only_abandoned_build_folders(tmp_path, capsys):
    import os

    from core.errors import run_cli
    from ingest.__main__ import main

    root = tmp_path / "versions"
    dead = _leftover(root, f".demo@0123456789ab.{_dead_pid()}-abc123.tmp")
    live = _leftover(root, f".demo@0123456789ab.{os.getppid()}-def456.tmp")  # a build that still runs
    old = _leftover(root, ".demo@0123456789ab.k2j3h4g5.tmp", age_hours=48)  # no pid recorded, untouched for 2 days
    recent = _leftover(root, ".demo@0123456789ab.zz9yy8xx.tmp")  # no pid recorded, but active
    assert run_cli(main, ["gc", "--root", str(root), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert str(dead) in out and str(old) in out and str(live) not in out and str(recent) not in out
    assert dead.exists() and old.exists()
    assert run_cli(main, ["gc", "--root", str(root)]) == 0
    assert "removed" in capsys.readouterr().out
    assert sorted(p.name for p in root.iterdir()) == sorted([live.name, recent.name])
    assert run_cli(main, ["gc", "--root", str(root), "--max-idle-hours", "0"]) == 2  # a count must be above 0


def test_next_build_removes_the_folder_of_a_killed_build(demo_city, tmp_path, capsys):
    import os

    root = tmp_path / "versions"
    dead = _leftover(root, f".demo@0123456789ab.{_dead_pid()}-abc123.tmp")
    live = _leftover(root, f".demo@0123456789ab.{os.getppid()}-def456.tmp")
    res = build(demo_data_config(demo_city, root), progress=False)
    assert "interrupted build" in capsys.readouterr().out
    assert not dead.exists() and live.exists()
    assert sorted(p.name for p in root.iterdir()) == sorted([live.name, res.path.name])


def test_concurrent_build_of_the_same_version_is_up_to_date(demo_city, tmp_path, monkeypatch):
    """Two builds of the same inputs at once: the one that finishes second finds the first's version and keeps it."""
    import ingest.version

    real = ingest.version._write_version

    def other_build_finishes_first(tmp, dest, *args):
        real(tmp, dest, *args)
        shutil.copytree(tmp, dest)

    monkeypatch.setattr(ingest.version, "_write_version", other_build_finishes_first)
    res = build(demo_data_config(demo_city, tmp_path / "v"), progress=False)
    assert not res.created and (res.path / "manifest.json").is_file()
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == [res.path.name]  # no temporary folder left
