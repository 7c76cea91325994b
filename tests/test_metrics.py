"""Scores from one confusion matrix, checked by hand and against cityscapesScripts' pixel-level evaluation."""

import numpy as np
import pytest
import torch
from PIL import Image

from core.metrics import ConfusionMatrix, confusion, scores_from_matrix
from ingest.taxonomy import load_taxonomy
from metrics.semantic import SemSegEvaluator


def test_hand_computed_example():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pr = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    mat = confusion(pr, gt, 3)
    assert mat.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    s = scores_from_matrix(mat)
    assert s.pixel_acc == pytest.approx(4 / 6)
    assert s.iou.tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert s.dice.tolist() == pytest.approx([2 / 4, 4 / 5, 2 / 3])
    assert s.miou == pytest.approx(np.mean([1 / 3, 2 / 3, 1 / 2]))


def test_absent_class_is_nan_and_left_out_but_false_positives_count():
    gt = np.array([0, 0, 1, 1])
    s = scores_from_matrix(confusion(np.array([0, 0, 1, 1]), gt, 4))
    assert np.isnan(s.iou[2]) and np.isnan(s.iou[3]) and s.miou == 1.0
    s = scores_from_matrix(confusion(np.array([0, 3, 1, 1]), gt, 4))
    assert s.iou[3] == 0.0 and s.miou == pytest.approx((0.5 + 1 + 0) / 3)


def test_torch_and_numpy_agree_and_accumulate():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, (3, 20, 30))
    gt[:, :2] = 255
    pr = rng.integers(0, 5, (3, 20, 30))
    cm = ConfusionMatrix(5)
    for i in range(3):
        cm.update(torch.from_numpy(pr[i]), torch.from_numpy(gt[i]))
    np.testing.assert_array_equal(cm.mat, confusion(pr, gt, 5))
    with pytest.raises(ValueError, match="outside"):
        confusion(np.array([7]), np.array([1]), 5)


def test_evaluator_per_image_rows():
    ev = SemSegEvaluator(["a", "b"])
    ev.process(np.array([[0, 1]]), np.array([[0, 1]]), {"key": "x"})
    ev.process(np.array([[0, 0]]), np.array([[1, 1]]), {"key": "y"})
    ev.process(np.array([[1, 1]]), np.array([[1, 1]]), {"key": "z"})
    out = ev.evaluate()
    assert [r["mIoU"] for r in ev.rows] == [1.0, 0.0, 1.0]
    assert out["per_class"]["a"]["iou"] == pytest.approx(1 / 3)
    assert out["per_class"]["b"]["iou"] == pytest.approx(3 / 5)
    assert out["worst_classes"] == ["a", "b"]
    ev.reset()
    assert ev.rows == [] and ev.cm.mat.sum() == 0


def test_equals_cityscapesscripts_pixel_level(demo_version, cityscapes_reference, tmp_path):
    """Corrupted ground truth as 'predictions' (trainIds -> labelIds), scored by both implementations."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ref

    tax = load_taxonomy("cityscapes")
    train_to_label = np.zeros(256, np.uint8)
    for lb in tax.labels:
        if 0 <= lb.trainId < 255:
            train_to_label[lb.trainId] = lb.id
    rng = np.random.default_rng(0)
    ev = SemSegEvaluator(tax.names)
    preds, gts = [], []
    for img in demo_version.images("train") + demo_version.images("val"):
        gt_train = demo_version.load_semantic(img)
        pred = np.where(gt_train == 255, rng.integers(0, 19, gt_train.shape), gt_train)
        noise = rng.random(gt_train.shape) < 0.2
        pred = np.where(noise, rng.integers(0, 19, gt_train.shape), pred).astype(np.uint8)
        pred[:8] = 11  # some classes predicted where absent: false positives must count
        ev.process(pred, gt_train, {"key": img["key"]})
        pred_file = tmp_path / f"{img['id']}_pred.png"
        Image.fromarray(train_to_label[pred]).save(pred_file)
        preds.append(str(pred_file))
        gts.append(str(demo_version.path / img["annotation_files"][0]).replace("polygons.json", "labelIds.png"))
    ours = ev.evaluate()
    args = ref.args
    args.quiet, args.JSONOutput, args.evalInstLevelScore = True, False, False
    result = ref.evaluateImgLists(preds, gts, args)
    for name in tax.names:
        theirs = result["classScores"][name]
        mine = ours["per_class"][name]["iou"]
        if np.isnan(theirs):
            assert mine is None, name
        else:
            assert mine == pytest.approx(theirs, abs=1e-12), name
    assert ours["mIoU"] == pytest.approx(result["averageScoreClasses"], abs=1e-12)
