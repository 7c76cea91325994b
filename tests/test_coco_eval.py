"""COCO instance evaluation equal to pycocotools' COCOeval (mask and box), per-image triage, bad input, evaluator."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from core.errors import SegLoopError
from metrics.coco import (
    CocoGroundTruth,
    CocoInstanceEvaluator,
    evaluate_coco,
    evaluate_instances,
    greedy_match,
    outputs_to_results,
)

CATEGORIES = [
    {"id": 1, "name": "road", "isthing": 0},
    {"id": 2, "name": "person", "isthing": 1},
    {"id": 3, "name": "car", "isthing": 1},
    {"id": 4, "name": "bicycle", "isthing": 1},  # ground truth, never predicted
    {"id": 5, "name": "truck", "isthing": 1},  # predicted, never in the ground truth
    {"id": 6, "name": "bus", "isthing": 1},  # neither
]


def shape_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random rectangle or ellipse, at least one pixel."""
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(1, h / 2), rng.uniform(1, w / 2)
    yy, xx = np.mgrid[:h, :w]
    if rng.random() < 0.5:
        m = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    else:
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    if not m.any():
        m[int(min(cy, h - 1)), int(min(cx, w - 1))] = True
    return m


def jitter(rng: np.random.Generator, m: np.ndarray) -> np.ndarray:
    """A prediction of ``m``: shifted by a few pixels, sometimes grown or shrunk."""
    out = np.roll(m, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
    if rng.random() < 0.3:
        import cv2

        k = np.ones((3, 3), np.uint8)
        op = cv2.dilate if rng.random() < 0.5 else cv2.erode
        out = op(out.astype(np.uint8), k).astype(bool)
    if not out.any():
        out = m.copy()
    return out


def rle(m: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def synthetic(seed: int, n_images: int = 40) -> tuple[dict, list[dict]]:
    """Ground truth and results covering the cases COCOeval treats specially: crowd regions, images without
    ground truth, images without detections, classes missing on either side, duplicated scores, all area ranges,
    more than 10 detections of a class in an image, and images listed out of id order."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    ids = rng.permutation(np.arange(1, n_images + 1) * 7)  # not contiguous, not sorted
    for k, iid in enumerate(ids.tolist()):
        h, w = (192, 256) if k % 3 == 0 else (48, 64)
        images.append({"id": iid, "height": h, "width": w, "file_name": f"{iid}.png"})
        n_gt = 0 if k % 7 == 3 else int(rng.integers(1, 8))
        for _ in range(n_gt):
            m = shape_mask(rng, h, w)
            cat = int(rng.choice([2, 3, 4], p=[0.45, 0.45, 0.1]))
            r = rle(m)
            for _ in range(2 if rng.random() < 0.06 else 1):  # duplicated objects: equal IoUs, ties in matching
                anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": cat, "segmentation": r,
                             "area": float(mask_utils.area(r)), "bbox": mask_utils.toBbox(r).tolist(),
                             "iscrowd": int(rng.random() < 0.12)})
            if k % 5 == 2 or cat == 4:
                continue  # an image without detections, a class never predicted
            for _ in range(int(rng.integers(0, 3))):
                p = jitter(rng, m)
                pc = cat if rng.random() < 0.85 else 5
                results.append({"image_id": iid, "category_id": pc, "segmentation": rle(p),
                                "score": float(rng.choice([0.3, 0.5, 0.5, 0.7, 0.9, float(rng.random())]))})
        if k % 5 != 2:
            n_fp = int(rng.integers(0, 3)) + (14 if k % 9 == 1 else 0) + (105 if k == 1 else 0)
            for j in range(n_fp):  # false positives; image 1 has more than 100 cars
                results.append({"image_id": iid, "category_id": 3 if j >= 20 else int(rng.choice([2, 3, 5])),
                                "segmentation": rle(shape_mask(rng, h, w)),
                                "score": float(rng.choice([0.5, float(rng.random()) / 2]))})
    for r in results:  # boxes: the mask's box, sometimes loosened (so box and mask AP differ)
        b = mask_utils.toBbox(r["segmentation"]).tolist()
        if rng.random() < 0.3:
            b = [b[0] - 1, b[1] - 1, b[2] + 2, b[3] + 2]
        r["bbox"] = b
    gt = {"images": images, "categories": CATEGORIES, "annotations": anns}
    return gt, results


def reference(gt: dict, results: list[dict], iou_type: str, img_ids: list[int] | None = None) -> COCOeval:
    """pycocotools on the same inputs (results that carry a box are placed in an area range by it, as loadRes
    does; the mask-only cases of the tests check the mask-area path); ``img_ids`` as ``params.imgIds``."""
    res = copy.deepcopy(results)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(res), iou_type)
        if img_ids is not None:
            ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def per_class_reference(ev: COCOeval) -> dict[int, float | None]:
    out = {}
    for k, cid in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        p = p[p > -1]
        out[int(cid)] = float(np.mean(p)) if p.size else None
    return out


def assert_equal_to_cocoeval(gt: dict, results: list[dict], iou_type: str) -> None:
    ref = reference(gt, results, iou_type)
    ours = evaluate_coco(gt, results, iou_type)
    np.testing.assert_allclose(ours.stats, ref.stats, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.recall, ref.eval["recall"], rtol=0, atol=1e-6)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    things = {c["id"] for c in gt["categories"] if c["isthing"]}
    theirs = per_class_reference(ref)
    assert set(ours.per_class) == {names[c] for c in things}
    for cid in things:
        mine, exp = ours.per_class[names[cid]], theirs[cid]
        assert (mine is None) == (exp is None), names[cid]
        if exp is not None:
            assert abs(mine - exp) < 1e-6, names[cid]


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_pycocotools(seed, iou_type):
    gt, results = synthetic(seed)
    assert_equal_to_cocoeval(gt, results, iou_type)


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_equal_to_pycocotools_with_all_scores_tied_and_dense_images(iou_type):
    """Every score equal: the order of images and of results within an image alone decides precision."""
    gt, results = synthetic(5, n_images=16)
    for r in results:
        r["score"] = 0.5
    assert_equal_to_cocoeval(gt, results, iou_type)


def test_results_with_masks_only_are_box_evaluated_from_the_masks():
    gt, results = synthetic(3, n_images=20)
    for r in results:
        r.pop("bbox")
    assert_equal_to_cocoeval(gt, results, "bbox")
    assert_equal_to_cocoeval(gt, results, "segm")


def test_perfect_and_empty_results():
    gt, _ = synthetic(4, n_images=12)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                "bbox": a["bbox"], "score": 1.0} for a in gt["annotations"] if not a["iscrowd"]]
    ev = evaluate_coco(gt, perfect, "segm")
    assert ev.stats[0] == pytest.approx(1.0) and ev.per_class["car"] == pytest.approx(1.0)
    assert ev.per_class["truck"] is None and ev.per_class["bus"] is None
    assert sum(r["fp"] + r["fn"] for r in ev.per_image) == 0
    empty = evaluate_coco(gt, [], "bbox")
    assert empty.stats[0] == 0.0 and empty.per_class["car"] == 0.0
    assert sum(r["fn"] for r in empty.per_image) == sum(1 for a in gt["annotations"] if not a["iscrowd"])


def test_per_image_counts_follow_cocoeval_matching_at_iou_50():
    gt, results = synthetic(6, n_images=24)
    ours = evaluate_coco(gt, results, "segm")
    ref = reference(gt, results, "segm")
    # COCOeval's evalImgs for area "all" at IoU 0.5, summed per image
    counts: dict[int, list[int]] = {int(i): [0, 0, 0] for i in ref.params.imgIds}
    for e in ref.evalImgs:
        if e is None or e["aRng"] != ref.params.areaRng[0]:
            continue
        dtm, dtig = e["dtMatches"][0], e["dtIgnore"][0]
        c = counts[e["image_id"]]
        c[0] += int(np.sum((dtm > 0) & ~dtig))
        c[1] += int(np.sum((dtm == 0) & ~dtig))
        c[2] += int(np.sum((e["gtMatches"][0] == 0) & (e["gtIgnore"] == 0)))
    assert {r["image_id"]: [r["tp"], r["fp"], r["fn"]] for r in ours.per_image} == counts
    assert ours.result_status.count("tp") == sum(c[0] for c in counts.values())


def test_greedy_match_takes_the_last_of_equal_ious_and_lets_crowds_absorb():
    ious = np.array([[0.6, 0.6, 0.0], [0.6, 0.6, 0.0], [0.0, 0.0, 0.9], [0.0, 0.0, 0.8]])
    m = greedy_match(ious, [False, False, True], [False, False, True])
    assert m[0].tolist() == [1, 0, 2, 2]


def test_bad_results_raise_segloop_errors():
    gt, results = synthetic(7, n_images=8)
    good = results[0]
    cases = {
        "not an image of the split": {**good, "image_id": 99999},
        "unknown category_id": {**good, "category_id": 42},
        "malformed RLE counts": {**good, "segmentation": {"size": good["segmentation"]["size"], "counts": "~~ \n"}},
        "its image is": {**good, "segmentation": {**good["segmentation"], "size": [3, 3]}},
        "not a finite number": {**good, "score": float("nan")},
        "is not four finite numbers": {**good, "bbox": [0, 0, "1", 2]},
        "score 'high' is not a number": {**good, "score": "high"},
        "neither a segmentation nor a bbox": {"image_id": good["image_id"], "category_id": 2, "score": 0.5},
    }
    for message, bad in cases.items():
        with pytest.raises(SegLoopError, match=message) as err:
            evaluate_coco(gt, [*results, bad], "segm", results_path="runs/x/eval/test/instances.json")
        assert err.value.path == "runs/x/eval/test/instances.json" and err.value.fix
    with pytest.raises(SegLoopError, match="has no segmentation"):
        evaluate_coco(gt, [{k: v for k, v in good.items() if k != "segmentation"}], "segm")
    with pytest.raises(SegLoopError, match="not a list"):
        evaluate_coco(gt, {"image_id": 1}, "segm")  # type: ignore[arg-type]


def test_evaluator_protocol_with_torchvision_style_outputs():
    gt, _ = synthetic(8, n_images=10)
    ground = CocoGroundTruth.from_dict(gt)
    ev = CocoInstanceEvaluator(ground)
    by_image: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    expected = []
    for img in gt["images"]:
        anns = [a for a in by_image.get(img["id"], []) if not a["iscrowd"]]
        masks = np.stack([mask_utils.decode(a["segmentation"]) for a in anns]).astype(np.float32) * 0.9 \
            if anns else np.zeros((0, img["height"], img["width"]), np.float32)
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns]).reshape(-1, 4)
        out = {"boxes": boxes, "labels": np.array([a["category_id"] for a in anns], np.int64),
               "scores": np.linspace(0.9, 0.5, len(anns)), "masks": masks[:, None]}
        ev.process([{"image_id": img["id"]}], [out])
        expected += outputs_to_results(img["id"], out)
    metrics = ev.evaluate()
    assert metrics["AP"] == pytest.approx(1.0) and metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["num_images"] == len(gt["images"]) and metrics["num_results"] == len(expected)
    assert set(metrics["segm"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "stats",
                                    "per_class"}
    assert metrics["segm"]["per_class"]["truck"] is None
    assert len(metrics["per_image"]) == len(gt["images"])
    both = evaluate_instances(gt, ev.results())
    assert both["segm"].stats[0] == pytest.approx(1.0)
    ev.reset()
    assert ev.results() == [] and ev.evaluate()["segm"]["AP"] is None  # no image seen: nothing to score
    half = [img["id"] for img in gt["images"][::2]]
    ev.add_results([r for r in expected if r["image_id"] in half], half)
    assert ev.image_ids == sorted(half) and ev.evaluate()["AP"] == pytest.approx(1.0)  # only the images seen
    with pytest.raises(SegLoopError, match="not an image of the split"):
        ev.process([{"image_id": 123456}], [[]])


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_subset_of_images_equals_cocoeval_with_img_ids(iou_type):
    gt, results = synthetic(12, n_images=24)
    ids = sorted(img["id"] for img in gt["images"])[::3]
    ours = evaluate_coco(CocoGroundTruth.from_dict(gt).subset(ids), [r for r in results if r["image_id"] in ids],
                         iou_type)
    ref = reference(gt, results, iou_type, img_ids=ids)
    np.testing.assert_allclose(ours.stats, ref.stats, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-6)
    assert [r["image_id"] for r in ours.per_image] == ids


def test_triage_matching_and_coco_ap_share_one_rule():
    """evaluate.instances.match_instances (triage of any model) counts what COCO AP50 counts."""
    from evaluate.instances import coco_instances, match_instances

    gt, results = synthetic(9, n_images=24)
    ours = {r["image_id"]: r for r in evaluate_coco(gt, results, "segm").per_image}
    unranked = {r["image_id"] for r, s in zip(results, evaluate_coco(gt, results, "segm").result_status,
                                              strict=True) if s == "unranked"}
    compared = 0
    for img in gt["images"]:
        if img["id"] in unranked:
            continue
        g = coco_instances([a for a in gt["annotations"] if a["image_id"] == img["id"]])
        p = coco_instances([r for r in results if r["image_id"] == img["id"]])
        m = match_instances(g, p)
        assert (m.tp, m.fp, m.fn) == (ours[img["id"]]["tp"], ours[img["id"]]["fp"], ours[img["id"]]["fn"])
        compared += 1
    assert compared >= 20


def test_torch_outputs_are_read_without_the_evaluator_importing_torch():
    torch = pytest.importorskip("torch")
    masks = torch.zeros(2, 1, 8, 10)
    masks[0, 0, 1:4, 2:6] = 0.8
    masks[1, 0, 5:8, 0:3] = 0.4  # below the threshold: an empty mask
    out = {"boxes": torch.tensor([[2.0, 1.0, 6.0, 4.0], [0.0, 5.0, 3.0, 8.0]]), "labels": torch.tensor([3, 2]),
           "scores": torch.tensor([0.9, 0.3])}
    res = outputs_to_results(5, {**out, "masks": masks})
    assert [r["category_id"] for r in res] == [3, 2] and res[0]["bbox"] == [2.0, 1.0, 4.0, 3.0]
    assert mask_utils.area(res[0]["segmentation"]) == 12 and mask_utils.area(res[1]["segmentation"]) == 0
    assert isinstance(res[0]["segmentation"]["counts"], str) and res[0]["score"] == pytest.approx(0.9)
    assert outputs_to_results(5, {"labels": torch.zeros(0), "scores": torch.zeros(0),
                                  "masks": torch.zeros(0, 1, 8, 10)}) == []


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_equal_to_pycocotools_with_polygon_ground_truth_and_an_annotation_id_0(iou_type):
    """Polygons are rasterised as COCO.annToRLE does; a match with annotation id 0 counts as no match in COCOeval
    (it tests the matched id for truth), and so it does here."""
    gt, results = synthetic(11, n_images=20)
    for a in gt["annotations"]:
        a["id"] -= 1
    for a in gt["annotations"][:10]:
        x, y, w, h = a["bbox"]
        a["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    assert_equal_to_cocoeval(gt, results, iou_type)
