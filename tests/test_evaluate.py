import csv
import json

import numpy as np
import pytest
from PIL import Image

from core.errors import SegLoopError
from core.metrics import confusion, scores_from_matrix
from evaluate.runner import evaluate_run


@pytest.fixture(scope="module")
def evaluated(tiny_run):
    return evaluate_run(tiny_run.run_dir, "test", progress=False)


def test_outputs_written(evaluated, tiny_run, demo_version):
    out = tiny_run.run_dir / "eval" / "test"
    m = json.loads((out / "metrics.json").read_text())
    n = len(demo_version.images("test"))
    assert m["images"] == n and m["split"] == "test" and m["dataset_version"] == demo_version.version
    assert {"pixel_acc", "mIoU", "mDice", "per_class", "worst_classes", "timing", "model"} <= set(m)
    assert m["timing"]["ms_per_image_mean"] > 0 and m["model"]["parameters"] > 0 and m["model"]["size_mb"] > 0
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert len(rows) == n
    mious = [float(r["mIoU"]) for r in rows]
    assert mious == sorted(mious), "per-image rows are worst first"
    classes = list(csv.DictReader(open(out / "per_class.csv")))
    assert [r["class"] for r in classes][: len(m["worst_classes"])] == m["worst_classes"]
    assert len(list((out / "pred").glob("*.png"))) == n and len(list((out / "uncertainty").glob("*.png"))) == n


def test_scores_recompute_from_written_predictions(evaluated, tiny_run, demo_version):
    out = tiny_run.run_dir / "eval" / "test"
    mat = np.zeros((19, 19), np.int64)
    for img in demo_version.images("test"):
        pred = np.asarray(Image.open(out / "pred" / (img["key"].replace("/", "__") + ".png")))
        label = demo_version.load_semantic(img)
        assert pred.shape == label.shape and pred.max() < 19
        mat += confusion(pred, label, 19)
    s = scores_from_matrix(mat)
    assert evaluated["mIoU"] == pytest.approx(s.miou) and evaluated["pixel_acc"] == pytest.approx(s.pixel_acc)


def test_reevaluation_replaces_and_tta(tiny_run):
    res = evaluate_run(tiny_run.run_dir, "test", which="last", tta=True, uncertainty=False, progress=False)
    out = tiny_run.run_dir / "eval" / "test"
    assert res["tta"] and not (out / "uncertainty").exists()
    assert not list(out.parent.glob(".test*")), "no temporary folders left behind"


def test_bad_runs(tmp_path, tiny_run):
    with pytest.raises(SegLoopError, match="not found"):
        evaluate_run(tmp_path / "nope", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegLoopError, match="is not a run folder"):
        evaluate_run(tmp_path / "empty", progress=False)
    (tmp_path / "untrained").mkdir()
    (tmp_path / "untrained" / "run.json").write_text("{}")
    with pytest.raises(SegLoopError, match="has no best.pt"):
        evaluate_run(tmp_path / "untrained", progress=False)
    with pytest.raises(SegLoopError, match="unknown split"):
        evaluate_run(tiny_run.run_dir, "holdout", progress=False)


def test_taxonomy_mismatch(tiny_run, demo_city, tmp_path):
    from ingest.version import build
    from tests.conftest import demo_data_config

    person = build(demo_data_config(demo_city, tmp_path, "taxonomy=configs/taxonomy/person.yaml", "name=p"),
                   progress=False)
    with pytest.raises(SegLoopError, match="trained on 'cityscapes'"):
        evaluate_run(tiny_run.run_dir, "test", version=str(person.path), progress=False)
