"""SegLoop's rasteriser against cityscapesScripts' json2labelImg / json2instanceImg on the demo frames."""

import json

import numpy as np
import pytest

from core.errors import SegLoopError
from ingest.polygons import polygons_to_images


def _reference(path):
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    ann = Annotation()
    ann.fromJsonFile(str(path))
    return np.asarray(createLabelImage(ann, "ids")), np.asarray(createInstanceImage(ann, "ids"))


def test_identical_to_cityscapesscripts(demo_city, cityscapes_reference):
    files = sorted(demo_city.glob("gtFine/*/*/*_polygons.json"))
    assert len(files) == 24
    for f in files:
        ours_l, ours_i = polygons_to_images(f)
        ref_l, ref_i = _reference(f)
        np.testing.assert_array_equal(ours_l, ref_l, err_msg=str(f))
        np.testing.assert_array_equal(ours_i, ref_i, err_msg=str(f))


def test_groups_deleted_and_license_plates(tmp_path, cityscapes_reference):
    ann = {"imgHeight": 40, "imgWidth": 60, "objects": [
        {"label": "road", "polygon": [[0, 20], [59, 20], [59, 39], [0, 39]]},
        {"label": "cargroup", "polygon": [[5, 22], [20, 22], [20, 30], [5, 30]]},
        {"label": "car", "polygon": [[25, 22], [40, 22], [40, 35], [25, 35]]},
        {"label": "license plate", "polygon": [[30, 30], [35, 30], [35, 33], [30, 33]]},
        {"label": "person", "polygon": [[45, 5], [50, 5], [50, 35], [45, 35]], "deleted": 1},
        {"label": "person", "polygon": [[52, 5], [57, 5], [57, 35], [52, 35]]},
        {"label": "car", "polygon": [[30, 25], [45.5, 25], [45, 38.7], [30, 38]]},
    ]}
    f = tmp_path / "x_gtFine_polygons.json"
    f.write_text(json.dumps(ann))
    ours_l, ours_i = polygons_to_images(f)
    ref_l, ref_i = _reference(f)
    np.testing.assert_array_equal(ours_l, ref_l)
    np.testing.assert_array_equal(ours_i, ref_i)
    assert set(np.unique(ours_i)) >= {26, 26000, 26001, 24000}


def test_bad_polygon_files(tmp_path):
    f = tmp_path / "a_gtFine_polygons.json"
    f.write_text("{not json")
    with pytest.raises(SegLoopError, match="does not parse") as e:
        polygons_to_images(f)
    assert str(f) in str(e.value)
    f.write_text(json.dumps({"imgHeight": 10, "imgWidth": 10, "objects": [{"label": "unicorn",
                                                                          "polygon": [[0, 0], [5, 0], [5, 5]]}]}))
    with pytest.raises(SegLoopError, match="unknown Cityscapes label 'unicorn'"):
        polygons_to_images(f)
    f.write_text(json.dumps({"imgHeight": 10, "imgWidth": 10, "objects": [{"label": "car", "polygon": [1, 2]}]}))
    with pytest.raises(SegLoopError, match="object #0"):
        polygons_to_images(f)
    f.write_text(json.dumps({"objects": []}))
    with pytest.raises(SegLoopError, match="imgHeight"):
        polygons_to_images(f)


def test_more_than_255_polygons_and_png_round_trip(tmp_path, cityscapes_reference):
    from core.fsio import save_png

    rng = np.random.default_rng(1)
    objects = []
    for _ in range(300):
        x, y = rng.integers(0, 90, 2)
        objects.append({"label": str(rng.choice(["car", "person", "road", "cargroup"])),
                        "polygon": [[int(x), int(y)], [int(x) + 9, int(y)], [int(x) + 5, int(y) + 8]]})
    f = tmp_path / "many_gtFine_polygons.json"
    f.write_text(json.dumps({"imgHeight": 100, "imgWidth": 100, "objects": objects}))
    ours_l, ours_i = polygons_to_images(f)
    ref_l, ref_i = _reference(f)
    np.testing.assert_array_equal(ours_l, ref_l)
    np.testing.assert_array_equal(ours_i, ref_i)
    from PIL import Image

    save_png(tmp_path / "i.png", ours_i)
    save_png(tmp_path / "l.png", ours_l)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "i.png")), ours_i)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "l.png")), ours_l)


def test_rasterize_tree_in_parallel_equals_the_shipped_pngs(demo_city, tmp_path):
    import shutil

    from PIL import Image

    from ingest.polygons import rasterize_files

    shutil.copytree(demo_city / "gtFine", tmp_path / "gtFine", ignore=shutil.ignore_patterns("*Ids.png"))
    files = sorted(tmp_path.glob("gtFine/*/*/*_polygons.json"))
    assert rasterize_files(files, workers=2, progress=False) == 24
    for f in files:
        rel = f.relative_to(tmp_path)
        for kind in ("labelIds", "instanceIds"):
            ours = np.asarray(Image.open(str(f).replace("polygons.json", f"{kind}.png")))
            shipped = np.asarray(Image.open(str(demo_city / rel).replace("polygons.json", f"{kind}.png")))
            np.testing.assert_array_equal(ours, shipped)
