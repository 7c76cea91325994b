"""The detection task: DETR from transformers on thing and stuff-region boxes, scored by SegLoop's COCO evaluator
(pycocotools' COCOeval on the written files as the oracle), offline, and served by every reader."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from core.errors import SegLoopError
from tests.conftest import tiny_overrides

# d_model + heads a multiple of 8: the panoptic mask head on this detector needs it
DETR = ["task=detection", "model.name=conditional_detr", "data.image_size=[64,128]",
        "model.args={d_model: 32, encoder_layers: 1, decoder_layers: 1, heads: 8, ffn_dim: 64, num_queries: 30, "
        "min_size: 64, max_size: 128}", "optim.lr=0.001", "train.epochs=3", "train.batch_size=4", "train.grad_clip=0.1"]


def detr_overrides(version, runs, *extra: str) -> list[str]:
    base = [o for o in tiny_overrides(version, runs) if not o.startswith(("model.args", "data.image_size",
                                                                           "train.epochs"))]
    return [*base, *DETR, *extra]


@pytest.fixture(scope="module")
def detr_run(demo_version, tmp_path_factory):
    """A tiny Conditional DETR trained 3 epochs on the demo version, every non-loopback connection refused and
    recorded: ``(result, attempted connections)``."""
    from tests.netutil import no_outbound_connections
    from train.config import load_train_config
    from train.engine import train

    runs = tmp_path_factory.mktemp("detr_runs")
    with no_outbound_connections() as attempts:
        result = train(load_train_config(None, detr_overrides(demo_version.path, runs, "output.name=detr")),
                       progress=False)
    return result, attempts


@pytest.fixture(scope="module")
def evaluated_detr_run(detr_run, tmp_path_factory):
    from evaluate.runner import evaluate_run
    from tests.netutil import no_outbound_connections

    run = tmp_path_factory.mktemp("detr_eval") / "detr"
    shutil.copytree(detr_run[0].run_dir, run)
    with no_outbound_connections() as attempts:
        result = evaluate_run(run, "test", progress=False)
    return run, result, attempts


@pytest.fixture(scope="module")
def panoptic_run(detr_run, demo_version, tmp_path_factory):
    """DETR's panoptic head trained 2 epochs from the detection run (model.init_from), offline."""
    from tests.netutil import no_outbound_connections
    from train.config import load_train_config
    from train.engine import train

    runs = tmp_path_factory.mktemp("panoptic_runs")
    extra = ["task=panoptic", f"model.init_from={detr_run[0].run_dir}", "model.args.segment_score=0.05",
             "train.epochs=2", "output.name=pan"]
    with no_outbound_connections() as attempts:
        result = train(load_train_config(None, detr_overrides(demo_version.path, runs, *extra)), progress=False)
    return result, attempts


@pytest.fixture(scope="module")
def evaluated_panoptic_run(panoptic_run, tmp_path_factory):
    from evaluate.runner import evaluate_run

    run = tmp_path_factory.mktemp("panoptic_eval") / "pan"
    shutil.copytree(panoptic_run[0].run_dir, run)
    return run, evaluate_run(run, "test", progress=False)


# --------------------------------------------------------------------------------------------------- targets
def test_stuff_targets_are_8_connected_regions_above_the_area_and_crowds_are_never_targets(demo_version):
    from ingest.taxonomy import load_taxonomy
    from tasks.detection.targets import box_ground_truth, mask_box, stuff_regions

    tax = load_taxonomy("cityscapes")
    road = tax.names.index("road")
    label = np.full((20, 20), 255, np.uint8)
    label[0:3, 0:3] = road  # 9 pixels
    label[3:6, 3:6] = road  # touches the first block at a corner only: one 8-connected region of 18
    label[10:12, 10:12] = road  # 4 pixels: below the area
    label[15:18, 0:4] = tax.names.index("car")  # a thing class: never a stuff region
    regions = stuff_regions(label, tax, min_area=5)
    assert [(c, int(m.sum())) for c, m in regions] == [(road, 18)]
    assert mask_box(regions[0][1]) == [0.0, 0.0, 6.0, 6.0]
    # the split's box ground truth: every thing annotation's box (crowds as crowds), then the stuff regions
    gt = box_ground_truth(demo_version, "val", stuff=True, min_area=64)
    coco = demo_version.coco("val")
    things = [a for a in gt["annotations"] if not a.get("region")]
    assert [a["bbox"] for a in things] == [a["bbox"] for a in coco["annotations"]]
    assert [a["iscrowd"] for a in things] == [a.get("iscrowd", 0) for a in coco["annotations"]]
    regions = [a for a in gt["annotations"] if a.get("region")]
    assert regions and all(a["area"] >= 64 and not a["iscrowd"] for a in regions)
    assert all(not tax.has_instances(a["category_id"] - 1) for a in regions)
    assert len({a["id"] for a in gt["annotations"]}) == len(gt["annotations"])
    without = box_ground_truth(demo_version, "val", stuff=False, min_area=64)
    assert len(without["annotations"]) == len(things)
    assert {c["name"] for c in without["categories"] if c["isthing"]} == {c.name for c in tax.classes
                                                                          if c.has_instances}


def test_the_training_targets_are_the_scored_boxes_without_crowds(demo_version):
    from tasks.detection.targets import box_ground_truth
    from tasks.detection.train import DetectionDataset

    ds = DetectionDataset(demo_version, "val", None, None, False, stuff=True, min_area=64)
    gt = box_ground_truth(demo_version, "val", stuff=True, min_area=64)
    for i in range(3):
        item = ds[i]
        anns = [a for a in gt["annotations"] if a["image_id"] == item["target"]["image_id"] and not a["iscrowd"]]
        want = sorted((a["category_id"], *np.round([a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                                   a["bbox"][1] + a["bbox"][3]], 3)) for a in anns)
        got = sorted((int(c), *np.round(b.tolist(), 3)) for c, b in zip(item["target"]["labels"],
                                                                         item["target"]["boxes"], strict=True))
        assert got == want and "masks" not in item["target"]


# ------------------------------------------------------------------------------------------------------ model
@pytest.mark.parametrize("name", ["conditional_detr", "detr", "deformable_detr"])
def test_each_variant_trains_offline_and_its_terms_sum_to_transformers_loss(name):
    from tests.netutil import no_outbound_connections
    from train.models import DETECTION_MODELS

    with no_outbound_connections() as attempts:
        torch.manual_seed(0)
        m = DETECTION_MODELS.build(name, {"d_model": 32, "encoder_layers": 1, "decoder_layers": 2, "heads": 4,
                                          "ffn_dim": 64, "num_queries": 10, "min_size": 64, "max_size": 128},
                                   num_classes=5)
        images = [torch.rand(3, 64, 128), torch.rand(3, 80, 100)]
        targets = [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 30.0], [60.0, 10.0, 120.0, 60.0]]),
                    "labels": torch.tensor([1, 4])}, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0).long()}]
        m.train()
        losses = m(images, targets)
        pixels, mask = m._batch(images)
        torch.manual_seed(0)
        assert set(losses) == {"ce", "bbox", "giou", "aux"}
        sum(losses.values()).backward()
        assert all(p.grad is not None for p in m.backbone.parameters())  # every backbone stage trains
        m.eval()
        with torch.no_grad():
            dets = m(images)
            terms = m(images, targets)  # eval mode: no dropout, so transformers' own loss is the same number
            own = m.detr(pixel_values=pixels, pixel_mask=mask, labels=m._labels(images, targets)).loss
    assert attempts == []
    assert float(sum(terms.values())) == pytest.approx(float(own), rel=1e-5)
    assert pixels.shape == (2, 3, 64, 128) and mask[1].sum() == 64 * 80  # the second image padded
    for det, im in zip(dets, images, strict=True):
        assert set(det) == {"boxes", "labels", "scores"} and len(det["boxes"]) <= 10 * 5
        assert (det["boxes"][:, 2] <= im.shape[-1]).all() and (det["boxes"][:, 3] <= im.shape[-2]).all()
        assert ((det["labels"] >= 1) & (det["labels"] <= 5)).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()


def test_a_panoptic_map_with_no_confident_query_is_void():
    from train.models import PANOPTIC_MODELS

    m = PANOPTIC_MODELS.build("detr", {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "heads": 8,
                                       "ffn_dim": 64, "num_queries": 5, "segment_score": 0.999}, num_classes=3).eval()
    images = [torch.rand(3, 64, 96)]
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0).long(), "masks": torch.zeros(0, 64, 96)}]
    with torch.no_grad():
        out = m(images)[0]
        losses = m(images, targets)  # an image without any target: its empty mask stack has the batch's size
    assert (out["segments"] == 0).all() and (out["semantic"] == 255).all() and len(out["labels"]) == 0
    assert all(torch.isfinite(v) for v in losses.values())


def test_the_model_supplies_the_backbone_its_own_learning_rate():
    from train.models import DETECTION_MODELS

    m = DETECTION_MODELS.build("detr", {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "heads": 4,
                                        "ffn_dim": 64, "num_queries": 5, "backbone_lr_scale": 0.25,
                                        "trainable_layers": 3}, num_classes=3)
    rest, backbone = m.parameter_groups(1e-3)
    assert rest["lr"] == 1e-3 and backbone["lr"] == 2.5e-4
    trained = {id(p) for p in backbone["params"]}
    assert trained == {id(p) for n, p in m.backbone.named_parameters()
                       if n.startswith(("encoder.stages.1.", "encoder.stages.2.", "encoder.stages.3."))}
    assert not {id(p) for p in rest["params"]} & {id(p) for p in m.backbone.parameters()}


def test_torchvision_resnet_weights_load_into_the_backbone(tmp_path):
    import torchvision

    from train.models import DETECTION_MODELS

    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "r18.pt"
    torch.save(tv.state_dict(), path)
    m = DETECTION_MODELS.build("conditional_detr", {"weights_backbone": str(path), "norm": "frozen", "d_model": 32,
                                                    "heads": 4}, num_classes=3).eval()
    x = torch.rand(1, 3, 64, 96)
    body = torch.nn.Sequential(*list(tv.children())[:-2])
    with torch.no_grad():
        torch.testing.assert_close(m.backbone(x).feature_maps[-1], body(x), rtol=1e-4, atol=1e-4)
    assert m.pretrained["sha256"]


@pytest.mark.parametrize(("args", "match"), [
    ({"backbone": "resnet101"}, "backbone must be one of resnet18, resnet34, resnet50"),
    ({"d_model": 30, "heads": 8}, "multiple of heads"),
    ({"score_thresh": 1.5}, "score_thresh must be a number in"),
    ({"min_size": 900, "max_size": 512}, "must be at most max_size"),
    ({"weights_backbone": "x.pt"}, "use norm=frozen"),
])
def test_bad_model_arguments_are_refused(args, match):
    from train.models import DETECTION_MODELS

    with pytest.raises(SegLoopError, match=match):
        DETECTION_MODELS.build("conditional_detr", args, num_classes=3)


def test_an_unknown_variant_lists_the_valid_ones():
    from train.models import DETECTION_MODELS

    with pytest.raises(SegLoopError, match="did you mean 'conditional_detr'") as err:
        DETECTION_MODELS.get("conditonal_detr")
    assert all(n in err.value.fix for n in ("conditional_detr", "detr", "deformable_detr"))


# ------------------------------------------------------------------------------------------- training, scoring
def test_detr_trains_offline_and_its_loss_falls(detr_run):
    result, attempts = detr_run
    assert attempts == []
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if "train_loss" in r and "val_bbox_AP" in r]
    assert len(epochs) == 3 and epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert set(epochs[-1]["train_losses"]) == {"ce", "bbox", "giou"}  # one decoder layer: no auxiliary term
    assert "val_loss" in epochs[-1] and isinstance(epochs[-1]["val_ap"], dict)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["task"] == "detection" and info["best_metric"] == "bbox_AP"


def test_evaluate_run_writes_the_box_ground_truth_and_equals_pycocotools(evaluated_detr_run):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    run, result, attempts = evaluated_detr_run
    assert attempts == []
    out = run / "eval" / "test"
    gt = COCO(str(out / "ground_truth.json"))
    results = json.loads((out / "instances.json").read_text())
    assert results and all("bbox" in r and "segmentation" not in r for r in results)
    ev = COCOeval(gt, gt.loadRes(results), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    np.testing.assert_allclose(result["bbox"]["stats"], ev.stats, atol=1e-6)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "detection" and "segm" not in metrics
    assert metrics["targets"]["stuff"] and "road" in metrics["targets"]["classes"]
    assert metrics["per_image_score"] == "box_f1" and (out / "per_image.csv").read_text().startswith("image_id,")
    assert {p.name for p in (out / "pred").iterdir()} == {f"{k.replace('/', '__')}.png" for k in
                                                          (im["key"] for im in gt.dataset["images"])}


def test_readers_serve_a_detection_run(evaluated_detr_run, evaluated_instance_run, fiftyone_db, tmp_path):
    import fiftyone as fo

    from evaluate import demo_app as lib
    from evaluate.report import build_report
    from fiftyone_views.__main__ import main as fo_main
    from fiftyone_views.dataset import load_run
    from tasks.detection.labelstudio import box_regions
    from tasks.detection.results import paint_boxes

    run, result, _ = evaluated_detr_run
    mrcnn, mresult = evaluated_instance_run
    # FiftyOne: every scored box, with its confidence; the target boxes as the ground truth
    summary = load_run(run, "test", tag_k=2, progress=False)
    ds = fo.load_dataset(summary["dataset"])
    scored = json.loads((run / "eval" / "test" / "instances.json").read_text())
    targets = json.loads((run / "eval" / "test" / "ground_truth.json").read_text())["annotations"]
    assert sum(len(s["pred_instances"].detections) if s["pred_instances"] else 0 for s in ds) == len(scored)
    assert sum(len(s["gt_instances"].detections) if s["gt_instances"] else 0 for s in ds) == len(targets)
    # triptychs, worst box F1 first
    assert fo_main(["triptychs", str(run), "--n", "2", "--worst"]) == 0
    assert len(list((run / "triptychs" / "test-worst").glob("*.png"))) == 2
    # the model demo page: the boxes painted at the slider's threshold
    dm = lib.load_demo_model(run)
    dsv, images, _ = lib.dataset_images(dm)
    image = dsv.load_image(images[0])
    pred = lib.predict(dm, image, 0.0)
    assert dm.task == "detection" and pred.results and all("bbox" in r for r in pred.results)
    np.testing.assert_array_equal(pred.labels, paint_boxes(pred.results, image.shape[:2], 255, 0.0))
    # Label Studio: a box as a four-corner polygon in percent of the image
    regions, _ = box_regions(pred.results[:3], image.shape[1], image.shape[0], dsv.taxonomy, ["polygon"])
    x, y, w, h = sorted(pred.results, key=lambda r: -r["score"])[0]["bbox"]
    pts = regions[0]["value"]["points"]
    assert regions[0]["type"] == "polygonlabels" and len(pts) == 4
    np.testing.assert_allclose(pts[0], [x * 100 / image.shape[1], y * 100 / image.shape[0]])
    # evaluate predict on a folder, then the pre-annotations annotate predict sends for each image
    from evaluate.predict import predict_images
    from tasks.detection.labelstudio import DetectionRegions

    pool = tmp_path / "pool"
    pool.mkdir()
    for im in images[:2]:
        shutil.copy(dsv.image_path(im), pool / dsv.image_path(im).name)
    folder = predict_images(run, pool, name="pool", progress=False)
    index = json.loads((folder / "index.json").read_text())
    assert index["task"] == "detection" and len(index["images"]) == 2
    reader = DetectionRegions()
    for entry in index["images"].values():
        regions, score = reader.regions(folder, entry, dsv.taxonomy, ["brush"])
        kept = [r for r in json.loads((folder / "instances.json").read_text())
                if r["image_id"] == entry["image_id"] and r["score"] >= entry["score_threshold"]]
        assert len(regions) == len(kept) and all(r["type"] == "brushlabels" for r in regions)
    # the report: box AP beside Mask R-CNN's in one table
    out = build_report([mrcnn, run], tmp_path / "both", gallery=1)
    md = (out / "report.md").read_text()
    table = md.split("## Comparison (test split)")[1].split("## Worst classes")[0]
    row = next(r for r in table.splitlines() if r.startswith(f"| {run.name} |"))
    assert "| detection | conditional_detr |" in row and f"{result['bbox']['AP']:.4f}" in row
    assert "set-prediction loss" in md and "(box AP per class)" in md


def test_a_taxonomy_without_stuff_cannot_be_asked_for_stuff(demo_version, tmp_path):
    from ingest.taxonomy import load_taxonomy
    from tasks.detection.train import DetectionTask

    (tmp_path / "vehicles.yaml").write_text("name: vehicles\nignore_index: 255\nclasses:\n"
                                            "  - {name: car, color: [0, 0, 142], instances: true}\n"
                                            "  - {name: bus, color: [0, 60, 100], instances: true}\n")
    things = load_taxonomy(tmp_path / "vehicles.yaml")
    cfg = {"model": {"name": "conditional_detr", "args": {"stuff": True}}}
    with pytest.raises(SegLoopError, match="taxonomy 'vehicles' has no stuff class") as err:
        DetectionTask(cfg, things, torch.device("cpu")).check_dataset(demo_version, "train")
    assert "model.args.stuff=false" in err.value.fix


# --------------------------------------------------------------------------------------------------- panoptic
def test_the_panoptic_head_trains_from_a_detection_run(panoptic_run, detr_run):
    result, attempts = panoptic_run
    assert attempts == []
    info = json.loads((result.run_dir / "run.json").read_text())
    detector = torch.load(detr_run[0].run_dir / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert info["task"] == "panoptic" and info["best_metric"] == "PQ"
    assert info["init_from"]["loaded"] == len(detector)  # every detector tensor starts from the detection run
    assert all(k.startswith(("mask_head.", "bbox_attention.")) for k in info["init_from"]["skipped"])
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if "val_PQ" in r]
    assert len(epochs) == 2 and {"mask", "dice"} <= set(epochs[-1]["train_losses"])
    assert isinstance(epochs[-1]["val_pq"], dict) and "val_loss" in epochs[-1]


def test_panoptic_evaluation_equals_cityscapes_scripts_and_pycocotools(cityscapes_reference,
                                                                       evaluated_panoptic_run):
    import contextlib
    import io

    from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as ref
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    run, result = evaluated_panoptic_run
    out = run / "eval" / "test"
    pan = out / "panoptic"
    gt, pred = (json.loads((pan / f).read_text()) for f in ("ground_truth.json", "predictions.json"))
    assert len(pred["annotations"]) == len(gt["annotations"]) == result["images"]
    assert sum(len(a["segments_info"]) for a in pred["annotations"]) > 0
    categories = {c["id"]: c for c in gt["categories"]}
    pairs = list(zip(gt["annotations"], pred["annotations"], strict=True))
    with contextlib.redirect_stdout(io.StringIO()):
        stat = ref.pq_compute_single_core(0, pairs, str(pan / "gt"), str(pan / "pred"), categories)
        expected = ref.average_pq(stat, categories)
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            if expected[group]["n"]:
                assert result[key.upper() + suffix] == pytest.approx(expected[group][key], abs=1e-9), (group, key)
        assert result["n" + suffix] == expected[group]["n"]
    # the things as COCO results: mask AP as pycocotools computes it on the version's ground truth
    things = json.loads((out / "instances.json").read_text())
    if things:
        from ingest.version import DatasetVersion

        coco = COCO()
        coco.dataset = DatasetVersion(result["dataset_path"]).coco("test")
        coco.createIndex()
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(coco, coco.loadRes(things), "segm")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        np.testing.assert_allclose(result["segm"]["stats"], ev.stats, atol=1e-6)
    assert 0 <= result["mIoU"] <= 1 and result["per_image_score"] == "PQ"
    assert (out / "pred").is_dir() and (out / "uncertainty").is_dir()


def test_readers_serve_a_panoptic_run(evaluated_panoptic_run, fiftyone_db, tmp_path):
    import fiftyone as fo

    from evaluate import demo_app as lib
    from evaluate.predict import predict_images
    from evaluate.report import build_report
    from fiftyone_views.__main__ import main as fo_main
    from fiftyone_views.dataset import load_run
    from tasks.panoptic.labelstudio import PanopticRegions

    run, result = evaluated_panoptic_run
    summary = load_run(run, "test", tag_k=2, progress=False)
    assert fo.load_dataset(summary["dataset"]).count() == result["images"]
    assert fo_main(["triptychs", str(run), "--n", "2", "--worst"]) == 0
    assert len(list((run / "triptychs" / "test-worst").glob("*.png"))) == 2
    dm = lib.load_demo_model(run)
    dsv, images, _ = lib.dataset_images(dm)
    image = dsv.load_image(images[0])
    pred = lib.predict(dm, image, 0.0)
    assert dm.task == "panoptic" and pred.labels.shape == image.shape[:2]
    pool = tmp_path / "pool"
    pool.mkdir()
    shutil.copy(dsv.image_path(images[0]), pool / dsv.image_path(images[0]).name)
    folder = predict_images(run, pool, name="pool", progress=False)
    entry = next(iter(json.loads((folder / "index.json").read_text())["images"].values()))
    regions, _ = PanopticRegions().regions(folder, entry, dsv.taxonomy, ["polygon", "brush"])
    things = [r for r in json.loads((folder / "instances.json").read_text()) if r["image_id"] == entry["image_id"]]
    stuff_classes = {dsv.taxonomy.names[c] for c in np.unique(json_free_pred(folder, entry))
                     if c < dsv.taxonomy.num_classes and not dsv.taxonomy.has_instances(int(c))}
    assert {r["value"]["brushlabels"][0] for r in regions if r["type"] == "brushlabels"} == stuff_classes
    assert len([r for r in regions if r["type"] == "polygonlabels"]) <= len(things)
    out = build_report([run], tmp_path / "rep", gallery=1)
    md = (out / "report.md").read_text()
    assert "(PQ per class)" in md and "mask head" in md.lower()


def json_free_pred(folder, entry):
    from core.fsio import read_label

    return read_label(folder / entry["prediction"])


def test_panoptic_refuses_init_from_a_run_of_another_family(tiny_run, demo_version, tmp_path):
    from train.config import load_train_config
    from train.engine import train

    cfg = load_train_config(None, detr_overrides(demo_version.path, tmp_path, "task=panoptic",
                                                 f"model.init_from={tiny_run.run_dir}"))
    with pytest.raises(SegLoopError, match="semantic resunet model, which shares no layer"):
        train(cfg, progress=False)
    assert not any(tmp_path.iterdir())
