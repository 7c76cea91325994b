import hashlib
import json

import numpy as np
from PIL import Image

from ingest.demo import generate


def _digest(root):
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def test_layout_is_cityscapes(demo_city):
    imgs = sorted(demo_city.glob("leftImg8bit/*/*/*_leftImg8bit.png"))
    assert len(imgs) == 24
    splits = {p.parts[-3] for p in imgs}
    assert splits == {"train", "val", "test"}
    cities = {p.parent.name for p in imgs}
    assert len(cities) >= 4
    for img in imgs:
        split, city = img.parts[-3], img.parent.name
        stem = img.name[: -len("_leftImg8bit.png")]
        assert stem.startswith(city + "_") and len(stem.split("_")) == 3
        for suffix in ("polygons.json", "labelIds.png", "instanceIds.png", "color.png"):
            assert (demo_city / "gtFine" / split / city / f"{stem}_gtFine_{suffix}").is_file()
    # a city never crosses splits
    by_city = {}
    for p in imgs:
        by_city.setdefault(p.parent.name, set()).add(p.parts[-3])
    assert all(len(s) == 1 for s in by_city.values())


def test_scenes_have_the_street_classes_and_occluding_instances(demo_city):
    from PIL import ImageDraw

    seen = set()
    occluded = 0
    for poly in demo_city.glob("gtFine/*/*/*_polygons.json"):
        ann = json.loads(poly.read_text())
        seen |= {o["label"] for o in ann["objects"]}
        inst = np.asarray(Image.open(str(poly).replace("polygons.json", "instanceIds.png")))
        counts = {}
        for obj in ann["objects"]:
            if obj["label"] not in ("car", "person", "bicycle"):
                continue
            label_id = {"person": 24, "car": 26, "bicycle": 33}[obj["label"]]
            n = counts.get(label_id, 0)
            counts[label_id] = n + 1
            alone = Image.new("L", (ann["imgWidth"], ann["imgHeight"]), 0)
            ImageDraw.Draw(alone).polygon([tuple(p) for p in obj["polygon"]], fill=1)
            # drawn in full but partly covered by a nearer object: fewer visible pixels than its polygon
            occluded += int(0 < (inst == label_id * 1000 + n).sum() < np.asarray(alone).sum())
    assert {"road", "sidewalk", "building", "sky", "car", "person", "pole", "traffic sign", "vegetation"} <= seen
    assert occluded >= 5


def test_same_seed_same_bytes(tmp_path):
    a = generate(tmp_path / "a", n=4, seed=3, size=(128, 64), progress=False)
    b = generate(tmp_path / "b", n=4, seed=3, size=(128, 64), progress=False)
    c = generate(tmp_path / "c", n=4, seed=4, size=(128, 64), progress=False)
    assert _digest(a) == _digest(b) != _digest(c)


def test_refuses_to_overwrite(tmp_path):
    import pytest

    from core.errors import SegLoopError

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(SegLoopError, match="not empty"):
        generate(tmp_path / "x", n=3)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
