"""YOLO-seg runs: Ultralytics' own trainer runs the epochs (really, at 128 px on the demo city), SegLoop writes the
run folder and scores it with its COCO evaluator (pycocotools as the oracle), and every reader serves the run as it
serves Mask R-CNN. No connection leaves the machine; no pickle is written or unpickled."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import SegLoopError, run_cli
from tests.conftest import instance_overrides, yolo_overrides
from tests.test_instance import _cocoeval
from train.checkpoint import load_checkpoint, load_model
from train.config import load_train_config
from train.engine import train, trainer_for


def _lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_yolo_run_folder_has_the_form_of_every_run(yolo_run, instance_run):
    result, attempts = yolo_run
    run = result.run_dir
    assert attempts == [], f"training tried to reach the network: {attempts}"
    # the same files as a run of SegLoop's own loop
    written = lambda d: {p.name for p in d.iterdir() if p.name not in (".owner.json", "eval", "predict")}
    assert written(run) == written(instance_run.run_dir) == {"checkpoints", "config.yaml", "metrics.jsonl",
                                                              "run.json", "tb"}
    info = json.loads((run / "run.json").read_text())
    assert info["task"] == "instance" and info["best_metric"] == "segm_AP"
    assert info["model"] == {"task": "instance", "name": "yolo11n-seg", "args": {}}
    assert info["trainer"]["name"] == "ultralytics" and info["trainer"]["args"]["imgsz"] == 128
    assert info["trainer"]["args"]["epochs"] == 15 and info["trainer"]["args"]["pretrained"] is False
    # one metrics.jsonl line per epoch, with the validation figures of a Mask R-CNN run, from SegLoop's evaluator
    lines = _lines(run)
    assert [r["epoch"] for r in lines] == list(range(1, 16)) and lines[1]["step"] > lines[0]["step"] > 0
    theirs = {k for k in _lines(instance_run.run_dir)[0] if k.startswith("val_") and "loss" not in k}
    assert {k for k in lines[0] if k.startswith("val_")} == theirs
    assert {"box_loss", "seg_loss", "cls_loss", "dfl_loss"} <= set(lines[0]["train_losses"])
    assert lines[0]["train_loss"] == pytest.approx(sum(lines[0]["train_losses"].values()), rel=1e-5)
    # it learns: the loss falls from its peak, and validation AP rises from zero. A random network's boxes overlap
    # few objects, so Ultralytics' task-aligned assigner gives it few positives and the first epochs' loss is low;
    # it peaks once the boxes start to overlap objects (16 images: four batches an epoch, single epochs are noisy)
    peak = max(r["train_loss"] for r in lines[:6])
    assert lines[-1]["train_loss"] < 0.85 * peak
    assert lines[0]["val_segm_AP50"] == 0 and max(r["val_segm_AP50"] for r in lines[-3:]) > 0
    # checkpoints: tensors and plain data (weights_only), the network's weights under YoloSeg's names
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 15 and ckpt["model_spec"]["name"] == "yolo11n-seg"
    assert int(ckpt["model"]["imgsz"]) == 128 and any(k.startswith("net.model.") for k in ckpt["model"])
    model, _ = load_model(run, "best")
    assert not model.training
    for f in run.rglob("*"):  # Ultralytics' own .pt files pickle its classes: none may land in the run
        assert not f.is_file() or b"ultralytics.nn" not in f.read_bytes(), f
    # TensorBoard holds the same scalars as any instance run
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/epoch_loss", "val/segm_AP", "val/bbox_AP50"} <= tags
    assert {"train_loss/box_loss", "train_loss/seg_loss"} <= tags and "val/panel_0" in acc.Tags()["images"]


def test_evaluate_yolo_run_equals_pycocotools_at_native_resolution(evaluated_yolo_run, demo_version):
    run, result, attempts = evaluated_yolo_run
    assert attempts == [], f"evaluation tried to reach the network: {attempts}"
    out = run / "eval" / "test"
    results = json.loads((out / "instances.json").read_text())
    assert results, "even a briefly trained YOLO proposes instances at confidence 0.001"
    gt = demo_version.coco("test")
    sizes = {im["id"]: [im["height"], im["width"]] for im in gt["images"]}
    assert all(r["segmentation"]["size"] == sizes[r["image_id"]] for r in results)  # masks at the image's size
    assert max(sum(r["image_id"] == i for r in results) for i in sizes) <= 100  # COCO's detections per image
    for t in ("segm", "bbox"):
        np.testing.assert_allclose(result[t]["stats"], _cocoeval(gt, results, t), atol=1e-6, err_msg=t)
    assert result["task"] == "instance" and 0 <= result["things_mIoU"] <= 1
    index = json.loads((out / "index.json").read_text())
    assert index["task"] == "instance" and len(index["images"]) == len(gt["images"])


def test_yolo_resume_continues_the_run(demo_version, tmp_path):
    cfg = load_train_config(None, yolo_overrides(demo_version.path, tmp_path, "output.name=half",
                                                 "train.epochs=3", "data.image_size=[32,64]"))
    fit = trainer_for(cfg)(cfg, progress=False)
    half = fit.fit(stop_after_epochs=1)
    assert half.epochs_done == 1 and _lines(half.run_dir)[-1]["epoch"] == 1
    first = load_checkpoint(half.run_dir / "checkpoints" / "last.pt")
    assert first["trainer"]["optimizer"]["state"], "the optimiser's moments travel in the checkpoint"
    resumed = train(load_train_config(half.run_dir / "config.yaml", [f"resume={half.run_dir}"]), progress=False)
    assert resumed.run_dir == half.run_dir and resumed.epochs_done == 3
    assert [r["epoch"] for r in _lines(half.run_dir)] == [1, 2, 3]
    last = load_checkpoint(half.run_dir / "checkpoints" / "last.pt")
    assert last["epoch"] == 3 and last["step"] == 3 * first["step"]
    assert last["trainer"]["ema_updates"] > first["trainer"]["ema_updates"]
    info = json.loads((half.run_dir / "run.json").read_text())
    assert "resume_command" in info and info["steps"] == last["step"]


def test_readers_serve_a_yolo_run_beside_mask_rcnn(evaluated_yolo_run, evaluated_instance_run, fiftyone_db,
                                                    tmp_path):
    import fiftyone as fo

    from evaluate import demo_app as lib
    from evaluate.report import build_report
    from fiftyone_views.__main__ import main as fo_main
    from fiftyone_views.dataset import load_run
    from tasks.instance.results import paint_instances

    run, result, _ = evaluated_yolo_run
    mrcnn, mresult = evaluated_instance_run
    # FiftyOne: every scored detection, with its confidence
    summary = load_run(run, "test", tag_k=2, progress=False)
    ds = fo.load_dataset(summary["dataset"])
    scored = json.loads((run / "eval" / "test" / "instances.json").read_text())
    shown = sum(len(s["pred_instances"].detections) if s["pred_instances"] else 0 for s in ds)
    assert shown == len(scored) and ds.load_saved_view("confident_detections") is not None
    # triptychs
    assert fo_main(["triptychs", str(run), "--n", "2", "--worst"]) == 0
    assert len(list((run / "triptychs" / "test-worst").glob("*.png"))) == 2
    # the model demo page's prediction: the evaluation's detections, painted at the slider's threshold
    dm = lib.load_demo_model(run)
    dsv, images, _ = lib.dataset_images(dm)
    image = dsv.load_image(images[0])
    pred = lib.predict(dm, image, 0.05)
    assert dm.task == "instance" and pred.labels.shape == image.shape[:2]
    np.testing.assert_array_equal(pred.labels, paint_instances(pred.results, image.shape[:2], 255, 0.05))
    # the report compares the two models in one table, each with its own diagram, loss and augmentations
    out = build_report([mrcnn, run], tmp_path / "both", gallery=1)
    md = (out / "report.md").read_text()
    table = md.split("## Comparison (test split)")[1].split("## Worst classes")[0]
    rows = [r for r in table.splitlines() if r.startswith("| ")]
    yolo = next(r for r in rows if r.startswith(f"| {run.name} |"))
    assert "| instance | yolo11n-seg |" in yolo and f"{result['segm']['AP']:.4f}" in yolo
    assert any("| instance | maskrcnn |" in r and f"{mresult['segm']['AP']:.4f}" in r for r in rows)
    assert "Ultralytics' YOLO-seg loss: box_loss + seg_loss" in md and "mosaic of 4 images" in md
    assert (out / "arch_2.png").stat().st_size > 1000


def test_label_studio_gets_a_yolo_runs_polygons(yolo_run, label_studio, demo_version, tmp_path, monkeypatch):
    from annotate.__main__ import main
    from annotate.client import LabelStudio
    from annotate.project import ensure_project, prediction_version
    from evaluate.predict import predict_images
    from ingest.taxonomy import load_taxonomy
    from tests.netutil import no_outbound_connections

    run = yolo_run[0].run_dir
    pool = label_studio["files_root"] / "yolo_pool"
    pool.mkdir()
    for im in demo_version.images("test")[:3]:
        shutil.copy(demo_version.image_path(im), pool / demo_version.image_path(im).name)
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio["url"])
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio["token"])
    monkeypatch.setenv("SEGLOOP_SNAPSHOT_ROOT", str(tmp_path))
    client = LabelStudio(label_studio["url"], label_studio["token"], backoff=0.05)
    ensure_project(client, "yolo", load_taxonomy("cityscapes"), ["polygon", "brush"])
    with no_outbound_connections() as attempts:  # evaluate predict, as annotate next and predict read it
        out = predict_images(run, pool, name="pool", progress=False)
    assert attempts == [] and len(json.loads((out / "index.json").read_text())["images"]) == 3
    assert main(["next", "--project", "yolo", "--run", str(run), "--pool", str(pool), "--k", "2",
                 "--strategy", "entropy"]) == 0
    assert main(["import", "--project", "yolo", "--images", str(pool)]) == 0
    assert main(["predict", "--project", "yolo", "--run", str(run)]) == 0
    tasks = client.tasks(client.project_by_title("yolo")["id"])
    assert len(tasks) == 3
    for task in tasks:
        pred = client.get("/api/predictions", task=task["id"])[-1]
        assert pred["model_version"] == prediction_version(run)
        assert all(r["type"] == "polygonlabels" for r in pred["result"])


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("extra", "match"), [
    (["model.name=yolo11n-sg"], "did you mean 'yolo11n-seg'"),
    (["ultralytics={mosiac: 0.5}"], "did you mean 'mosaic'"),
    (["ultralytics={epochs: 3}"], "set by SegLoop from train.epochs"),
    (["ultralytics={project: x}"], "set by SegLoop for every YOLO run"),
    (["ultralytics={mosaic: lots}"], "Ultralytics refused an argument"),
    (["schedule.name=poly", "schedule.power=0.9"], "not one of Ultralytics' schedules"),
    (["ultralytics={fraction: 7}"], "ultralytics.fraction must be a fraction in"),
    (["ultralytics={close_mosaic: -3}"], "ultralytics.close_mosaic must be an integer >= 0"),
])
def test_bad_yolo_configs_are_refused_before_anything_is_written(demo_version, tmp_path, extra, match):
    cfg = load_train_config(None, yolo_overrides(demo_version.path, tmp_path / "runs", *extra))
    with pytest.raises(SegLoopError, match=match):
        train(cfg, progress=False)
    assert not (tmp_path / "runs").exists()  # nothing written, Ultralytics' settings included


def test_the_ultralytics_section_is_refused_for_other_models(demo_version, tmp_path):
    cfg = load_train_config(None, instance_overrides(demo_version.path, tmp_path, "ultralytics={mosaic: 0.5}"))
    with pytest.raises(SegLoopError, match="trains YOLO models only"):
        train(cfg, progress=False)


def _ultralytics_pt(path: Path, nc: int = 80) -> Path:
    """A file in Ultralytics' checkpoint format: its classes pickled whole (as ``yolo train`` writes them)."""
    from train.models.yolo import build_network

    torch.save({"epoch": -1, "model": None, "ema": build_network("yolo11n-seg", nc).half(),
                "train_args": {"imgsz": 640}, "version": "8.4.190"}, path)
    return path


def test_ultralytics_weights_are_never_unpickled(demo_version, tmp_path, tiny_run, instance_run):
    from train.run import main as train_main

    pt = _ultralytics_pt(tmp_path / "yolo11n-seg.pt")
    # as model.weights: refused, with the safe way to use it
    args = yolo_overrides(demo_version.path, tmp_path / "runs", f"model.weights={pt}")
    assert run_cli(train_main, args) == 2
    with pytest.raises(SegLoopError, match="Ultralytics checkpoint.*never unpickles"):
        train(load_train_config(None, args), progress=False)
    # as model.init_from: its tensors are read without running its code; the 80-class head stays fresh
    cfg = load_train_config(None, yolo_overrides(demo_version.path, tmp_path / "runs", f"model.init_from={pt}"))
    fit = trainer_for(cfg)(cfg, progress=False)
    report = fit.init_report
    assert report["loaded"] > 0.9 * report["of"] and any("cv3" in k for k in report["skipped"])
    with pytest.raises(SegLoopError, match="Ultralytics checkpoint"):  # evaluation's reader refuses it outright
        load_checkpoint(pt)

    # a pickle that would run a command when unpickled runs nothing here
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    evil = tmp_path / "evil.pt"
    torch.save({"ema": Exploit(), "note": "ultralytics.nn.tasks"}, evil)
    from train.checkpoint import read_module_pickle

    read_module_pickle(evil)
    assert not (tmp_path / "ran").exists()
    # init_from of another task, model.weights of another model: each says which
    cfg = load_train_config(None, yolo_overrides(demo_version.path, tmp_path / "runs",
                                                 f"model.init_from={tiny_run.run_dir}"))
    with pytest.raises(SegLoopError, match="semantic resunet model, which shares no layer"):
        train(cfg, progress=False)
    cfg = load_train_config(None, yolo_overrides(demo_version.path, tmp_path / "runs",
                                                 f"model.weights={instance_run.run_dir}"))
    with pytest.raises(SegLoopError, match="checkpoint is for model maskrcnn"):
        train(cfg, progress=False)


def test_a_yolo_checkpoint_of_another_taxonomy_is_refused(yolo_run, demo_city, tmp_path):
    from ingest.version import build
    from tests.conftest import demo_data_config

    person = build(demo_data_config(demo_city, tmp_path / "v", "taxonomy=configs/taxonomy/person.yaml",
                                    "name=persons"), progress=False)
    cfg = load_train_config(None, yolo_overrides(person.path, tmp_path / "runs",
                                                 f"model.weights={yolo_run[0].run_dir}"))
    with pytest.raises(SegLoopError, match="taxonomy"):
        train(cfg, progress=False)
