"""Per-image instance matching (COCO rule at IoU 0.5) and instances from semantic predictions."""

import json

import numpy as np
import pytest

from core.errors import SegLoopError
from evaluate.instances import (
    coco_instances,
    components_as_instances,
    load_instance_results,
    match_instances,
)
from ingest.coco import category_id, encode_rle
from ingest.records import Instance
from ingest.taxonomy import load_taxonomy

TAX = load_taxonomy("cityscapes")
CAR, PERSON, ROAD = TAX.index_of("car"), TAX.index_of("person"), TAX.index_of("road")


def box(y0, y1, x0, x1, shape=(40, 60)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_match_counts_tp_fp_fn_and_respects_crowd_and_class():
    gt = [Instance(CAR, box(0, 10, 0, 10)), Instance(CAR, box(20, 30, 0, 10)),
          Instance(PERSON, box(0, 10, 40, 50)), Instance(CAR, box(30, 40, 30, 60), iscrowd=1)]
    pred = [Instance(CAR, box(0, 10, 1, 10), score=0.9),  # IoU 0.9 with gt 0
            Instance(PERSON, box(20, 30, 0, 10), score=0.8),  # right place, wrong class: FP, and gt 1 missed
            Instance(CAR, box(32, 38, 35, 45), score=0.7),  # inside the crowd region: neither TP nor FP
            Instance(PERSON, box(0, 10, 40, 44), score=0.6)]  # IoU 0.4 with the person: FP, person missed
    m = match_instances(gt, pred)
    assert m.pred_status == ["tp", "fp", "crowd", "fp"]
    assert m.gt_status == ["tp", "fn", "fn", "crowd"]
    assert (m.tp, m.fp, m.fn) == (1, 2, 2)
    assert m.pred_iou[0] == pytest.approx(0.9)


def test_higher_score_takes_the_ground_truth_first():
    gt = [Instance(CAR, box(0, 10, 0, 10))]
    pred = [Instance(CAR, box(0, 10, 0, 8), score=0.2), Instance(CAR, box(0, 10, 0, 9), score=0.9)]
    m = match_instances(gt, pred)
    assert m.pred_status == ["fp", "tp"] and m.fn == 0


def test_empty_sides():
    assert match_instances([], [Instance(CAR, box(0, 5, 0, 5))]).fp == 1
    assert match_instances([Instance(CAR, box(0, 5, 0, 5))], []).fn == 1


def test_components_of_instance_classes_only_with_scores_from_uncertainty():
    pred = np.full((40, 60), ROAD, np.uint8)
    pred[0:10, 0:10] = CAR
    pred[20:30, 30:40] = CAR
    pred[35, 55] = CAR  # a speck, not an object
    pred[0:10, 45:55] = PERSON
    unc = np.zeros_like(pred)
    unc[20:30, 30:40] = 255  # the second car is maximally uncertain
    inst = components_as_instances(pred, TAX, unc)
    assert sorted((TAX.names[i.category], int(i.mask.sum())) for i in inst) == [("car", 100), ("car", 100),
                                                                                ("person", 100)]
    scores = sorted(i.score for i in inst if i.category == CAR)
    assert scores == [pytest.approx(0.0), pytest.approx(1.0)]
    assert all(i.score is None for i in components_as_instances(pred, TAX))


def test_instance_results_file_is_read_and_checked(tmp_path):
    assert load_instance_results(tmp_path) is None
    results = [{"image_id": 3, "category_id": category_id(CAR), "segmentation": encode_rle(box(0, 5, 0, 5)),
                "score": 0.75}]
    (tmp_path / "instances.json").write_text(json.dumps(results))
    by_image = load_instance_results(tmp_path)
    inst = coco_instances(by_image[3])
    assert inst[0].category == CAR and inst[0].mask.sum() == 25 and inst[0].score == 0.75
    (tmp_path / "instances.json").write_text(json.dumps([{"image_id": 3, "bbox": [0, 0, 1, 1]}]))
    with pytest.raises(SegLoopError, match="COCO results list"):
        load_instance_results(tmp_path)
