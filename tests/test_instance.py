"""Instance runs through the task seam: Mask R-CNN trained for real on generated street scenes, validated and
evaluated with COCO AP (equal to pycocotools' COCOeval on the files written), and refused where they do not fit."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from annotate.project import prediction_version
from core.errors import SegLoopError
from tests.conftest import instance_overrides, tiny_overrides
from train.config import load_train_config
from train.engine import train


def test_instance_run_folder(instance_run, demo_version):
    run = instance_run.run_dir
    info = json.loads((run / "run.json").read_text())
    assert info["task"] == "instance" and info["best_metric"] == "segm_AP"
    assert info["model"] == {"task": "instance", "name": "maskrcnn", "args": {
        "backbone": "resnet18", "min_size": 128, "max_size": 256, "anchor_sizes": [16, 32, 64, 128, 256]}}
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1
    rec = lines[0]
    assert {"classifier", "box_reg", "mask", "objectness", "rpn_box_reg"} == set(rec["train_losses"])
    assert rec["train_loss"] == pytest.approx(sum(rec["train_losses"].values()), rel=1e-5)
    assert 0 <= rec["val_segm_AP"] <= 1 and 0 <= rec["val_bbox_AP50"] <= 1
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "checkpoints" / "last.pt").is_file()


def _cocoeval(gt: dict, results: list[dict], iou_type: str) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = copy.deepcopy(gt)
        cg.createIndex()
        ev = COCOeval(cg, cg.loadRes(copy.deepcopy(results)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_evaluate_instance_run_equals_pycocotools(evaluated_instance_run, demo_version):
    run, result = evaluated_instance_run
    out = run / "eval" / "test"
    for name in ("instances.json", "metrics.json", "per_image.csv", "per_class.csv", "index.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "instances.json").read_text())
    assert results, "an untrained-ish model still proposes instances"
    gt = demo_version.coco("test")
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    for t in ("segm", "bbox"):
        ref = _cocoeval(gt, [r for r in results if t == "bbox" or "segmentation" in r], t)
        ours = result[t]["stats"]
        np.testing.assert_allclose(ours, ref, atol=1e-6, err_msg=t)
        assert [result[t][k] for k in keys] == [None if v == -1 else pytest.approx(v, abs=1e-6) for v in ref]
    assert 0 <= result["things_mIoU"] <= 1 and result["task"] == "instance"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["segm"]["AP"] == result["segm"]["AP"]
    rows = (out / "per_image.csv").read_text().splitlines()
    assert rows[0].startswith("image_id,key,file,prediction,tp,fp,fn,instance_errors")
    assert len(rows) == 1 + len(gt["images"])


def test_instance_checkpoint_refused_by_semantic_training(instance_run, demo_version, tmp_path):
    ckpt = instance_run.run_dir / "checkpoints" / "best.pt"
    cfg = load_train_config(None, tiny_overrides(demo_version.path, tmp_path, f"model.weights={ckpt}"))
    with pytest.raises(SegLoopError, match="checkpoint is a instance model|checkpoint is an? instance model") as e:
        train(cfg, progress=False)
    assert "semantic" in str(e.value) and str(ckpt) in str(e.value)


def test_semantic_checkpoint_refused_where_an_instance_model_is_needed(tiny_run):
    from train.checkpoint import load_model

    with pytest.raises(SegLoopError, match="semantic model .*needs a instance model|needs an? instance model"):
        load_model(tiny_run.run_dir, task="instance")


def test_version_without_instances_is_refused(tmp_path):
    from ingest.version import build
    from tests.test_maskfolder import _cfg, _make_folder

    _make_folder(tmp_path / "f")
    v = build(_cfg(tmp_path / "f", tmp_path / "v"), progress=False)
    cfg = load_train_config(None, instance_overrides(v.path, tmp_path / "runs"))
    with pytest.raises(SegLoopError) as e:
        train(cfg, progress=False)
    assert "no instances" in str(e.value) or "no class with instances" in str(e.value)
    assert "fix:" in str(e.value) and not (tmp_path / "runs").exists()


def test_unknown_backbone_is_refused_before_anything_is_written(demo_version, tmp_path):
    cfg = load_train_config(None, instance_overrides(demo_version.path, tmp_path / "runs",
                                                     "model.args={backbone: vgg16}"))
    with pytest.raises(SegLoopError, match="resnet18") as e:
        train(cfg, progress=False)
    assert "mobilenet_v3_large" in str(e.value) and not (tmp_path / "runs").exists()


def test_fiftyone_shows_the_models_instances_and_ranks_by_its_errors(fiftyone_db, evaluated_instance_run):
    import csv

    import fiftyone as fo

    from fiftyone_views.dataset import load_run

    run, result = evaluated_instance_run
    summary = load_run(run, "test", tag_k=2, progress=False)
    assert summary["instances_from"] == "instances.json"
    ds = fo.load_dataset(summary["dataset"])
    rows = {r["key"]: r for r in csv.DictReader(open(run / "eval" / "test" / "per_image.csv"))}
    threshold = result["score_threshold"]
    results = json.loads((run / "eval" / "test" / "instances.json").read_text())
    confident_view = {s["key"]: s for s in ds.load_saved_view("confident_detections")}
    assert len(confident_view) == len(ds)
    for sample in ds:
        row = rows[sample["key"]]
        assert (sample["tp"], sample["fp"], sample["fn"]) == (int(row["tp"]), int(row["fp"]), int(row["fn"]))
        scored = sorted(r["score"] for r in results if r["image_id"] == int(row["image_id"]))
        shown = sample["pred_instances"].detections if sample["pred_instances"] else []
        # every detection the evaluation scored is in FiftyOne, with its confidence, for the App's slider
        assert sorted(d["confidence"] for d in shown) == pytest.approx(scored)
        below = [d for d in shown if d["confidence"] < threshold]
        assert all(d["eval"] == "below_threshold" for d in below)
        assert all(d["eval"] in ("tp", "fp", "crowd") for d in shown if d["confidence"] >= threshold)
        # the saved view (and the worst views) show the confident ones: those its TP / FP counted
        view_dets = confident_view[sample["key"]]["pred_instances"]
        kept = view_dets.detections if view_dets else []
        assert len(kept) == sum(s >= threshold for s in scored)
        assert set(sample["class_iou"].to_dict()) - {"_cls"} <= {"person", "rider", "car", "truck", "bus", "train",
                                                                 "motorcycle", "bicycle"}
    worst = ds.load_saved_view("worst_instances")
    errors = [s["instance_errors"] for s in worst]
    assert errors == sorted(errors, reverse=True) and all(e > 0 for e in errors)


def test_label_studio_gets_one_polygon_per_instance_and_next_ranks_by_instance_uncertainty(
        instance_run, label_studio, demo_version, tmp_path, monkeypatch):
    import shutil

    from annotate.__main__ import main
    from annotate.client import LabelStudio
    from annotate.project import ensure_project
    from evaluate.predict import predict_images
    from ingest.taxonomy import load_taxonomy

    pool = label_studio["files_root"] / "instance_pool"
    pool.mkdir()
    pool_images = demo_version.images("test") + demo_version.images("val")[:2]
    for im in pool_images:
        shutil.copy(demo_version.image_path(im), pool / demo_version.image_path(im).name)
    out = predict_images(instance_run.run_dir, pool, name="pool", progress=False)
    index = json.loads((out / "index.json").read_text())["images"]
    results = json.loads((out / "instances.json").read_text())
    # a briefly trained model is rarely confident: add two sure detections (ground-truth masks) to one image, as
    # a better model would predict them, so that the push below has instances to outline
    im = demo_version.images("test")[0]
    anns = [a for a in demo_version.coco("test")["annotations"] if a["image_id"] == im["id"] and not a["iscrowd"]]
    results += [{"image_id": index[im["sha256"]]["image_id"], "category_id": a["category_id"], "score": s,
                 "bbox": a["bbox"], "segmentation": a["segmentation"]}
                for a, s in zip(anns[:2], (0.97, 0.88), strict=True)]
    (out / "instances.json").write_text(json.dumps(results))
    assert len(index) == len(pool_images) and all(0 <= e["mean_uncertainty"] <= 1 for e in index.values())
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio["url"])
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio["token"])
    monkeypatch.setenv("SEGLOOP_SNAPSHOT_ROOT", str(tmp_path))
    client = LabelStudio(label_studio["url"], label_studio["token"], backoff=0.05)
    ensure_project(client, "instances", load_taxonomy("cityscapes"), ["polygon", "brush"])
    assert main(["next", "--project", "instances", "--run", str(instance_run.run_dir), "--pool", str(pool),
                 "--k", "3", "--strategy", "entropy"]) == 0
    record = json.loads(next((tmp_path / "instances" / "next").glob("next-*.json")).read_text())
    assert len(record["picked"]) == 3
    assert record["picked"][0]["score"] == max(e["mean_uncertainty"] for e in index.values())
    assert all(p["score"] == index[p["sha256"]]["mean_uncertainty"] for p in record["picked"])
    # the whole pool, pushed as `annotate import` + `annotate predict` do
    assert main(["import", "--project", "instances", "--images", str(pool)]) == 0
    assert main(["predict", "--project", "instances", "--run", str(instance_run.run_dir)]) == 0
    project = client.project_by_title("instances")
    from annotate.regions import mask_polygons
    from ingest.coco import decode_rle

    tasks = client.tasks(project["id"])
    assert im["sha256"] in {t["data"]["sha256"] for t in tasks}, "the image with sure detections is pushed too"
    names = load_taxonomy("cityscapes").names
    for task in tasks:
        sha = task["data"]["sha256"]
        confident = [r for r in results if r["image_id"] == index[sha]["image_id"]
                     and r["score"] >= index[sha]["score_threshold"]]
        outlined = [r for r in confident if mask_polygons(decode_rle(r["segmentation"]), 1, 1)]
        pred = client.get("/api/predictions", task=task["id"])[-1]
        assert pred["model_version"] == prediction_version(instance_run.run_dir)  # the run's name @ its best.pt
        assert pred["model_version"].startswith(f"{instance_run.run_dir.name}@")
        regions = pred["result"]
        assert all(r["type"] == "polygonlabels" and len(r["value"]["polygonlabels"]) == 1 for r in regions)
        assert sorted((r["score"], r["value"]["polygonlabels"][0]) for r in regions) == sorted(
            (r["score"], names[r["category_id"] - 1]) for r in outlined)
        if sha == im["sha256"]:
            assert {0.97, 0.88} <= {r["score"] for r in regions}
    with pytest.raises(SegLoopError, match="instance model"):
        from annotate.select import pool_scores

        pool_scores(instance_run.run_dir, pool, "margin")


def test_instance_triptychs_outline_each_instance(evaluated_instance_run, demo_version):
    from PIL import Image

    from fiftyone_views.__main__ import main

    run, result = evaluated_instance_run
    assert main(["triptychs", str(run), "--n", "3", "--worst"]) == 0
    gallery = run / "triptychs" / "test-worst"
    pngs = sorted(gallery.glob("*.png"))
    assert len(pngs) == 3 and "mask AP" in (gallery / "index.html").read_text()
    panel = np.asarray(Image.open(pngs[0]).convert("RGB"))
    third = panel.shape[1] // 3
    white = (panel == 255).all(-1)
    gt_white = white[22:-44, third:2 * third].sum()  # ground-truth panel, between the title and the legend
    assert gt_white > 50, "every ground-truth instance is outlined in white"
