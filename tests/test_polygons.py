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


# ---------------------------------------------------------------------------------- the continuous (centre) rule
def _winding_oracle(pts, width, height):
    """Per-pixel non-zero winding number at pixel centres (a different algorithm from the scanline fill), with
    half-open edges: the independent reference for the centre rule."""
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    wind = np.zeros((height, width), int)
    for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        if y0 == y1:
            continue
        lo, hi = (y0, y1) if y0 < y1 else (y1, y0)
        (ax, ay), (bx, by) = ((x0, y0), (x1, y1)) if y0 < y1 else ((x1, y1), (x0, y0))
        spans = (yy >= lo) & (yy < hi)
        x_at = ax + (yy - ay) * (bx - ax) / (by - ay)
        wind += np.where(spans & (x_at <= xx), 1 if y0 < y1 else -1, 0)
    return wind != 0


def _shoelace(pts):
    x, y = np.asarray(pts, float).T
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_centre_rule_equals_a_per_pixel_winding_oracle():
    from ingest.polygons import rasterize_polygon

    rng = np.random.default_rng(3)
    for _ in range(150):  # random, often self-intersecting polygons, partly outside the image
        pts = rng.uniform(-8, 72, (int(rng.integers(3, 12)), 2))
        np.testing.assert_array_equal(rasterize_polygon(pts, 64, 48), _winding_oracle(pts, 64, 48), err_msg=str(pts))


def test_centre_rule_shared_edges_never_overlap_and_leave_no_gap():
    from ingest.polygons import rasterize_polygon

    rng = np.random.default_rng(5)
    for _ in range(100):
        # a quadrilateral cut in two along a random polyline between two points of its outline
        w, h = 97, 61
        inward = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]])
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], float) + inward * rng.uniform(0, 15, (4, 2))
        top = corners[0] + rng.uniform(0.2, 0.8) * (corners[1] - corners[0])
        bottom = corners[3] + rng.uniform(0.2, 0.8) * (corners[2] - corners[3])
        mid = (top + bottom) / 2 + rng.uniform(-5, 5, 2)
        left = np.array([corners[0], top, mid, bottom, corners[3]])
        right = np.array([top, corners[1], corners[2], bottom, mid])
        a, b = rasterize_polygon(left, w, h), rasterize_polygon(right, w, h)
        whole = rasterize_polygon(np.array([corners[0], top, corners[1], corners[2], bottom, corners[3]]), w, h)
        assert not (a & b).any(), "polygons sharing an edge overlap"
        np.testing.assert_array_equal(a | b, whole)  # ... and leave no gap between them
    # the case that used to overlap by a column: two rectangles side by side on pixel edges
    a = rasterize_polygon([[0, 0], [50, 0], [50, 40], [0, 40]], 100, 40)
    b = rasterize_polygon([[50, 0], [100, 0], [100, 40], [50, 40]], 100, 40)
    assert a.sum() == b.sum() == 2000 and not (a & b).any()


def test_centre_rule_area_is_the_polygons_area():
    from ingest.polygons import rasterize_polygon

    rng = np.random.default_rng(7)
    for _ in range(50):  # convex polygons: the boundary error is bounded by half the perimeter
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 10))))
        r = rng.uniform(20, 90)
        pts = np.c_[100 + r * np.cos(angles), 100 + r * np.sin(angles)]
        area = _shoelace(pts)
        count = rasterize_polygon(pts, 200, 200).sum()
        perimeter = np.linalg.norm(pts - np.roll(pts, -1, axis=0), axis=1).sum()
        assert abs(count - area) <= perimeter / 2, (count, area)
        if area > 1000:
            assert abs(count - area) / area < 0.03
    # vertices on pixel corners: exact
    assert rasterize_polygon([[10, 5], [30, 5], [30, 25], [10, 25]], 40, 40).sum() == 400


@pytest.mark.parametrize("points,message", [
    ([[0, 0], [5, 5]], "at least 3 points"),
    ([[0, 0], [5, float("nan")], [5, 0]], "not a finite number"),
    ([["a", "b"], [5, 5], [5, 0]], "not a number"),
    ([[0, 0, 1], [5, 5, 1], [5, 0, 1]], "not an \\[x, y\\] pair"),
    ([["0", "0"], ["5", "5"], ["5", "0"]], "not a number"),  # numbers as strings: a damaged file, not parsed
    ([[0, 0], [5, True], [5, 0]], "not a number"),
    ("0,0 5,5 5,0", "must be a list"),
    (np.array([[0.0, 0.0], [1.0, np.inf], [2.0, 0.0]]), "finite"),
])
def test_bad_polygon_geometry(points, message):
    from ingest.polygons import rasterize_polygon

    with pytest.raises(SegLoopError, match=message) as e:
        rasterize_polygon(points, 10, 10, origin="x.json")
    assert "x.json" in str(e.value) and "fix:" in str(e.value)
