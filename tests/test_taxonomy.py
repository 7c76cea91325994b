import numpy as np
import pytest

from core.errors import SegLoopError
from ingest.taxonomy import load_taxonomy


def test_cityscapes_table_equals_cityscapesscripts(cityscapes_reference):
    from cityscapesscripts.helpers.labels import labels as ref

    tax = load_taxonomy("cityscapes")
    ours = [(lb.name, lb.id, lb.trainId, lb.category, lb.catId, lb.hasInstances, lb.ignoreInEval, lb.color)
            for lb in tax.labels]
    theirs = [(lb.name, lb.id, lb.trainId, lb.category, lb.categoryId, lb.hasInstances, lb.ignoreInEval,
               tuple(lb.color)) for lb in ref]
    assert ours == theirs


def test_cityscapes_target_is_the_19_eval_classes(cityscapes_reference):
    from cityscapesscripts.helpers.labels import labels as ref

    tax = load_taxonomy("cityscapes")
    expected = [lb.name for lb in sorted((lb for lb in ref if lb.trainId not in (255, -1)), key=lambda lb: lb.trainId)]
    assert tax.names == expected and tax.num_classes == 19 and tax.ignore_index == 255
    assert [c.has_instances for c in tax.classes].count(True) == 8
    # the label map: every labelId maps to its trainId, void labels to the ignore value
    for lb in ref:
        if lb.id >= 0:
            assert tax.map_source_label("cityscapes", lb.name) == (lb.trainId if lb.trainId != -1 else 255)


def test_camvid_values_and_colours():
    tax = load_taxonomy("camvid")
    assert tax.num_classes == 11
    lut = tax.value_lut("camvid", list(range(12)))
    assert list(lut[:12]) == [*range(11), 255]
    assert tax.classes[4].color == (60, 40, 222) and tax.classes[4].name == "sidewalk"


def test_person_taxonomy_maps_cityscapes_and_camvid():
    tax = load_taxonomy("person")
    assert tax.names == ["background", "person"]
    assert tax.map_source_label("cityscapes", "rider") == 1
    assert tax.map_source_label("cityscapes", "car") == 0
    assert tax.map_source_label("cityscapes", "ego vehicle") == 255
    assert tax.map_source_label("camvid", 9) == 1 and tax.map_source_label("camvid", 3) == 0


def test_unknown_label_names_taxonomy_and_classes():
    tax = load_taxonomy("camvid")
    with pytest.raises(SegLoopError) as e:
        tax.map_source_label("camvid", 42, origin="x.png")
    assert "42" in str(e.value) and "x.png" in str(e.value) and "sky" in str(e.value)
    with pytest.raises(SegLoopError, match="unknown label 'spaceship'"):
        tax.map_source_label("labelstudio", "spaceship")
    assert tax.map_source_label("labelstudio", "car") == 8  # label names are class names by default


def test_bad_taxonomy_files(tmp_path):
    with pytest.raises(SegLoopError, match="not found"):
        load_taxonomy(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nclasses:\n  - {name: a, color: [0,0,0]}\nsources:\n  s: {1: b}\n")
    with pytest.raises(SegLoopError, match="unknown class 'b'"):
        load_taxonomy(bad)


def test_palette_colorize():
    tax = load_taxonomy("cityscapes")
    img = tax.colorize(np.array([[0, 255]], np.uint8))
    assert img[0, 0].tolist() == [128, 64, 128] and img[0, 1].tolist() == [0, 0, 0]


def test_colours_as_hex_or_rgb_and_names_refused_with_their_hex(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: g\nclasses:\n  - {name: a, color: '#DC143C'}\n  - {name: b, color: [1, 2, 3]}\n")
    tax = load_taxonomy(good)
    assert [c.color for c in tax.classes] == [(220, 20, 60), (1, 2, 3)]
    named = tmp_path / "named.yaml"
    named.write_text("name: n\nclasses:\n  - {name: a, color: crimson}\n")
    with pytest.raises(SegLoopError, match="(?s)class #0 \\(a\\): colour 'crimson'.*'#dc143c' or \\[220, 20, 60\\]"):
        load_taxonomy(named)


@pytest.mark.parametrize("body,words", [
    ("ignore_index: 0\nclasses:\n  - {name: a, color: [0, 0, 0]}\n", "also the index of class 'a'"),
    ("ignore_index: 300\nclasses:\n  - {name: a, color: [0, 0, 0]}\n", "ignore_index must be an integer in 0..255"),
    ("classes: []\n", "1..255 classes"),
    ("classes:\n  - {name: a, color: [0, 0, 0]}\n  - {name: a, color: [1, 1, 1]}\n", "class names must be unique"),
    ("classes:\n  - {name: null, color: [0, 0, 0]}\n", "name must be a non-empty string"),
    ("classes:\n  - {name: a, color: [0, 0]}\n", "[r, g, b]"),
])
def test_taxonomy_checks(tmp_path, body, words):
    f = tmp_path / "t.yaml"
    f.write_text("name: t\n" + body)
    with pytest.raises(SegLoopError) as e:
        load_taxonomy(f)
    assert words in str(e.value) and str(f) in str(e.value) and "fix:" in str(e.value)
