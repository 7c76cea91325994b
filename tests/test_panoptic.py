"""Panoptic Quality: a case computed by hand, and equality with cityscapesScripts' evalPanopticSemanticLabeling."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from metrics.panoptic import PanopticEvaluator, panoptic_segments, pq

NAMES = ["road", "sky", "car", "person"]
THING = [False, False, True, True]
ROAD, SKY, CAR, VOID = 0, 1, 2, 255


def test_hand_computed_case():
    """4 x 6 pixels; every figure below is worked out in the comments."""
    gt_sem = np.array([[SKY] * 6,
                       [CAR, CAR, CAR, ROAD, CAR, CAR],
                       [CAR, CAR, CAR, ROAD, CAR, CAR],
                       [ROAD, ROAD, ROAD, ROAD, VOID, CAR]])
    gt_inst = np.array([[0] * 6,
                        [1, 1, 1, 0, 2, 2],
                        [1, 1, 1, 0, 2, 2],
                        [0, 0, 0, 0, 0, 0]])  # car A (6 px), car B (4 px), (3, 5): car without id = crowd
    pred_sem = np.array([[SKY, SKY, SKY, SKY, SKY, VOID],
                         [CAR, CAR, ROAD, ROAD, ROAD, CAR],
                         [CAR, CAR, ROAD, CAR, ROAD, CAR],
                         [ROAD, ROAD, ROAD, ROAD, CAR, CAR]])
    pred_inst = np.array([[0] * 6,
                          [7, 7, 0, 0, 0, 8],
                          [7, 7, 0, 8, 0, 8],
                          [0, 0, 0, 0, 8, 9]])
    # car A' (7): 4 px inside A: IoU 4 / (4 + 6 - 4) = 2/3 -> TP
    # car B' (8): (1,5) (2,5) in B, (2,3) on road, (3,4) on void: IoU 2 / (4 + 4 - 2 - 1) = 0.4 -> FP, and B is a FN
    #   (void + crowd = 1 of its 4 px, not more than half: counted)
    # car C' (9): its one pixel is the crowd region -> ignored
    # road: predicted 9 px, ground truth 6 px, 5 in common: IoU 5 / 10 = 0.5, not > 0.5 -> FP and FN
    # sky: predicted 5 px inside the 6 of the ground truth: IoU 5/6 -> TP
    out = pq([(gt_sem, gt_inst, pred_sem, pred_inst)], NAMES, THING)
    car, sky, road = (out["per_class"][n] for n in ("car", "sky", "road"))
    assert (car["tp"], car["fp"], car["fn"]) == (1, 1, 1)
    assert car["PQ"] == pytest.approx(1 / 3) and car["SQ"] == pytest.approx(2 / 3) and car["RQ"] == 0.5
    assert (road["tp"], road["fp"], road["fn"]) == (0, 1, 1) and road["PQ"] == 0
    assert sky["PQ"] == pytest.approx(5 / 6) and sky["RQ"] == 1
    assert out["per_class"]["person"] is None
    assert (out["n"], out["n_th"], out["n_st"]) == (3, 1, 2)
    assert out["PQ"] == pytest.approx(7 / 18) and out["SQ"] == pytest.approx(0.5) and out["RQ"] == pytest.approx(0.5)
    assert out["PQ_th"] == pytest.approx(1 / 3) and out["PQ_st"] == pytest.approx(5 / 12)


def test_segments_from_maps():
    sem = np.array([[ROAD, CAR, CAR, VOID], [SKY, CAR, CAR, CAR]])
    inst = np.array([[5, 3, 3, 0], [0, 4, 4, 0]])
    gt = panoptic_segments(sem, inst, THING)
    assert gt.ids[0, 3] == 0 and gt.ids[0, 0] != gt.ids[1, 0]
    cats = {int(gt.category[i - 1]): [] for i in np.unique(gt.ids) if i}
    for i in np.unique(gt.ids[gt.ids > 0]):
        cats[int(gt.category[i - 1])].append(bool(gt.iscrowd[i - 1]))
    assert cats == {ROAD: [False], SKY: [False], CAR: [True, False, False]}  # unassigned car pixels: crowd
    pred = panoptic_segments(sem, inst, THING, unassigned_is_crowd=False)
    assert not pred.iscrowd.any()


def random_scene(rng: np.random.Generator, h: int = 36, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    sem = np.where(np.arange(h)[:, None] < h // 3, SKY, ROAD).repeat(w, 1).astype(np.int64)
    inst = np.zeros((h, w), np.int64)
    for k in range(int(rng.integers(2, 7))):
        y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        dy, dx = int(rng.integers(3, 14)), int(rng.integers(3, 16))
        sem[y:y + dy, x:x + dx] = rng.choice([CAR, 3])
        inst[y:y + dy, x:x + dx] = 0 if rng.random() < 0.15 else k + 1  # some crowd regions
    sem[rng.random((h, w)) < 0.03] = VOID
    return sem, inst


def perturb(rng: np.random.Generator, sem: np.ndarray, inst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sem = np.roll(sem, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), (0, 1)).copy()
    inst = np.roll(inst, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), (0, 1)).copy()
    sem[sem == VOID] = ROAD
    y, x = int(rng.integers(0, sem.shape[0] - 6)), int(rng.integers(0, sem.shape[1] - 6))
    sem[y:y + 6, x:x + 6], inst[y:y + 6, x:x + 6] = CAR, 99  # a false car
    if rng.random() < 0.5:
        sem[:3] = VOID  # a band the model left unlabelled
    return sem, inst


def to_png(path, ids: np.ndarray) -> None:
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def test_equal_to_cityscapes_scripts(cityscapes_reference, tmp_path):
    from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as ref

    rng = np.random.default_rng(0)
    categories = {k + 1: {"id": k + 1, "name": n, "isthing": int(t)} for k, (n, t) in enumerate(zip(NAMES, THING,
                                                                                                   strict=True))}
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    pairs, ev = [], PanopticEvaluator(NAMES, THING)
    for i in range(8):
        gt_sem, gt_inst = random_scene(rng)
        pred_sem, pred_inst = perturb(rng, gt_sem, gt_inst)
        ev.process(gt_sem, gt_inst, pred_sem, pred_inst)
        anns = []
        for side, (sem, inst, crowd) in (("gt", (gt_sem, gt_inst, True)), ("pred", (pred_sem, pred_inst, False))):
            seg = panoptic_segments(sem, inst, THING, unassigned_is_crowd=crowd)
            to_png(tmp_path / side / f"{i}.png", seg.ids)
            areas = np.bincount(seg.ids.reshape(-1), minlength=len(seg.category) + 1)
            anns.append({"image_id": str(i), "file_name": f"{i}.png", "segments_info": [
                {"id": s + 1, "category_id": int(seg.category[s]) + 1, "iscrowd": int(seg.iscrowd[s]),
                 "area": int(areas[s + 1])} for s in range(len(seg.category))]})
        pairs.append(tuple(json.loads(json.dumps(a)) for a in anns))
    with contextlib.redirect_stdout(io.StringIO()):
        stat = ref.pq_compute_single_core(0, pairs, str(tmp_path / "gt"), str(tmp_path / "pred"), categories)
        expected = ref.average_pq(stat, categories)
    ours = ev.evaluate()
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            assert ours[key.upper() + suffix] == pytest.approx(expected[group][key], abs=1e-9), (group, key)
        assert ours["n" + suffix] == expected[group]["n"]
    for cid, cat in categories.items():
        mine = ours["per_class"][cat["name"]]
        theirs = expected["per_class"][cid]
        assert (mine is None) == (stat[cid].tp + stat[cid].fp + stat[cid].fn == 0)
        mine = mine or {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0}
        assert [mine["PQ"], mine["SQ"], mine["RQ"]] == pytest.approx([theirs["pq"], theirs["sq"], theirs["rq"]],
                                                                     abs=1e-9)
    assert ours["per_class"]["car"]["fp"] > 0 and ours["per_class"]["car"]["fn"] >= 0


# ------------------------------------------------------------------------------ panoptic from two runs (the CLI)
def test_panoptic_from_a_semantic_and_an_instance_run_equals_cityscapes_scripts(cityscapes_reference, evaluated_run,
                                                                                evaluated_instance_run, tmp_path,
                                                                                capsys):
    from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as ref

    from core.errors import run_cli
    from evaluate.__main__ import main as evaluate_main

    inst, _ = evaluated_instance_run
    out = tmp_path / "pan"
    argv = ["panoptic", "--semantic", str(evaluated_run), "--instance", str(inst), "--out", str(out),
            "--score", "0.05"]
    assert run_cli(evaluate_main, argv) == 0
    assert "things from mrcnn" in capsys.readouterr().out
    ours = json.loads((out / "panoptic.json").read_text())
    gt, pred = (json.loads((out / f).read_text()) for f in ("ground_truth.json", "predictions.json"))
    assert len(pred["annotations"]) == ours["images"] > 0
    assert any(s["category_id"] - 1 in {c["id"] - 1 for c in gt["categories"] if c["isthing"]}
               for a in pred["annotations"] for s in a["segments_info"]), "some things came from the instance run"
    # the reference, on the files written
    categories = {c["id"]: c for c in gt["categories"]}
    pairs = list(zip(gt["annotations"], pred["annotations"], strict=True))
    with contextlib.redirect_stdout(io.StringIO()):
        stat = ref.pq_compute_single_core(0, pairs, str(out / "gt"), str(out / "pred"), categories)
        expected = ref.average_pq(stat, categories)
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            if expected[group]["n"]:
                assert ours[key.upper() + suffix] == pytest.approx(expected[group][key], abs=1e-9), (group, key)
        assert ours["n" + suffix] == expected[group]["n"]
    # bad input: one message, exit 2, nothing written
    for bad, words in ((["--semantic", str(inst), "--instance", str(inst)], "same run"),
                       (["--semantic", str(inst), "--instance", str(evaluated_run)], "wrote no instance predictions"),
                       (["--semantic", str(evaluated_run), "--instance", str(inst), "--score", "2"], "--score 2")):
        assert run_cli(evaluate_main, ["panoptic", *bad, "--out", str(tmp_path / "bad")]) == 2
        assert words in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_segments_of_large_sparse_ids_are_those_of_small_ones():
    """Instance ids as large as panopticapi's RGB ids take the sorting path and number segments the same way."""
    rng = np.random.default_rng(3)
    sem = rng.integers(0, 19, (30, 40)).astype(np.uint8)
    sem[rng.random(sem.shape) < 0.1] = 255
    inst = rng.integers(0, 5, sem.shape)
    is_thing = [i >= 11 for i in range(19)]
    small = panoptic_segments(sem, inst, is_thing)
    large = panoptic_segments(sem, inst * 3_000_017, is_thing)
    assert (small.ids == large.ids).all() and (small.category == large.category).all()
    assert (small.iscrowd == large.iscrowd).all() and small.ids.max() == len(small.category)
