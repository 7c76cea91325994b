"""Bad input on the newer commands (resume, report, predict, the app, Mask R-CNN arguments, reasons, Label Studio
exports, distributed settings), through the real command lines where there is one: exit status 2, one message
naming the thing and the fix, no traceback, and, for the cases that used to pass silently, nothing of the user's
changed (every file's bytes and modification time compared before and after)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import SegLoopError, run_cli
from tests.conftest import instance_overrides, tiny_overrides


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` (hidden ones included) with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def clean_error(capsys, main, argv: list[str], *words: str) -> str:
    capsys.readouterr()
    rc = run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err, err
    for w in words:
        assert w in err, f"{w!r} not in: {err}"
    return err


def _train_main():
    from train.run import main

    return main


def _evaluate_main():
    from evaluate.__main__ import main

    return main


# ----------------------------------------------------------------------------- nothing the user owns is changed
def test_resume_of_a_finished_run_changes_nothing(capsys, tiny_run, tmp_path):
    run = tmp_path / "done"
    shutil.copytree(tiny_run.run_dir, run)
    before = snapshot(run)
    clean_error(capsys, _train_main(), [f"resume={run}"], "nothing to do", "train.epochs=")
    assert snapshot(run) == before


def test_report_never_replaces_a_file_or_a_folder_that_is_not_a_report(capsys, evaluated_run, tmp_path):
    mine = tmp_path / "notes.txt"
    mine.write_text("my notes")
    clean_error(capsys, _evaluate_main(), ["report", evaluated_run, "--out", mine], "is not a report folder")
    assert mine.read_text() == "my notes" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    run_copy = tmp_path / "run"
    shutil.copytree(evaluated_run, run_copy)
    before = snapshot(run_copy)
    clean_error(capsys, _evaluate_main(), ["report", evaluated_run, "--out", run_copy], "is not a report folder")
    assert snapshot(run_copy) == before


# ------------------------------------------------------------------------------------- nothing silently misread
def _png16(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values.astype(np.uint16)).save(path)
    return path


def test_sixteen_bit_images_are_scaled_by_their_sensor_depth(tmp_path):
    from core.fsio import read_image
    from evaluate.demo_app import decode_upload

    ramp = np.tile(np.linspace(0, 65535, 64), (8, 1))
    rgb = read_image(_png16(tmp_path / "ramp16.png", ramp))
    assert rgb.dtype == np.uint8 and rgb.shape == (8, 64, 3)
    np.testing.assert_allclose(rgb[0, :, 0], np.round(ramp[0] / 257), atol=1)  # not clipped at 255
    assert (rgb == 255).mean() < 0.05
    twelve = np.tile(np.linspace(0, 4095, 64), (8, 1))  # a 12-bit sensor's values in a 16-bit file
    np.testing.assert_allclose(read_image(_png16(tmp_path / "t12.png", twelve))[0, :, 1],
                               np.round(twelve[0] / 4095 * 255), atol=1)
    # frames of one 12-bit camera come out alike: a dark frame (brightest pixel 1100) or one at 4000 keep the
    # value 200 at the same grey, and a 16-bit file whose values are all under 256 is never taken as 8-bit
    dark, bright = np.full((4, 4), 200), np.full((4, 4), 200)
    dark[0, 0], bright[0, 0] = 1100, 4000
    grey = [read_image(_png16(tmp_path / f"{n}.png", v))[1, 1, 0] for n, v in (("dark", dark), ("bright", bright))]
    assert grey[0] == grey[1] == round(200 / 4095 * 255)
    assert read_image(_png16(tmp_path / "low.png", np.full((4, 4), 200)))[0, 0, 0] == round(200 / 1023 * 255)
    upload = decode_upload((tmp_path / "ramp16.png").read_bytes())
    np.testing.assert_array_equal(upload, rgb)  # the app's upload reads it the same way
    tiff = tmp_path / "ramp.tif"
    Image.fromarray(ramp.astype(np.uint16)).save(tiff)
    np.testing.assert_array_equal(read_image(tiff), rgb)


def test_an_instance_prediction_set_without_instances_json_is_refused(evaluated_instance_run, tmp_path):
    import tasks
    from core.runs import read_index
    from ingest.taxonomy import load_taxonomy

    folder = tmp_path / "set"
    shutil.copytree(evaluated_instance_run[0] / "eval" / "test", folder)
    (folder / "instances.json").unlink()
    entry = next(iter(read_index(folder / "index.json")["images"].values()))
    with pytest.raises(SegLoopError, match="instance predictions") as e:
        tasks.get("instance").labelstudio().regions(folder, entry, load_taxonomy("cityscapes"), ["polygon"])
    assert "instances.json" in str(e.value)


def test_a_report_never_mixes_taxonomies(capsys, evaluated_run, demo_city, tmp_path):
    from evaluate.runner import evaluate_run
    from ingest.version import build
    from tests.conftest import demo_data_config
    from train.config import load_train_config
    from train.engine import train

    person = build(demo_data_config(demo_city, tmp_path / "v", "taxonomy=configs/taxonomy/person.yaml",
                                    "name=persons"), progress=False)
    other = train(load_train_config(None, tiny_overrides(person.path, tmp_path / "runs", "train.epochs=1",
                                                         "output.name=person")), progress=False).run_dir
    evaluate_run(other, "test", progress=False)
    clean_error(capsys, _evaluate_main(), ["report", evaluated_run, other, "--out", tmp_path / "r"],
                "taxonomy 'person'", "do not compare")
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------- no option silently ignored
def test_tta_on_an_instance_run_is_refused(capsys, evaluated_instance_run, tmp_path):
    run = tmp_path / "mrcnn"
    shutil.copytree(evaluated_instance_run[0], run)
    before = snapshot(run)
    clean_error(capsys, _evaluate_main(), ["run", run, "--tta"], "--tta does not apply")
    assert snapshot(run) == before


MODEL_ARGS = [
    ("model.args.trainable_layers=-1", "model.args.trainable_layers must be an integer in 0..5"),
    ("model.args.box_detections_per_img=0", "model.args.box_detections_per_img must be an integer >= 1"),
    ("model.args.box_score_thresh=1.5", "model.args.box_score_thresh must be a score in [0, 1)"),
    ("model.args.anchor_sizes=[a, b, c, d, e]", "model.args.anchor_sizes must be integers >= 1"),
]


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large"])
@pytest.mark.parametrize(("override", "words"), MODEL_ARGS, ids=[r[0].split("=")[0] for r in MODEL_ARGS])
def test_mask_rcnn_arguments_have_one_range_for_every_backbone(capsys, demo_version, tmp_path, backbone,
                                                                override, words):
    anchors = "[16, 32, 64]" if backbone.startswith("mobilenet") else "[16, 32, 64, 128, 256]"
    argv = instance_overrides(demo_version.path, tmp_path / "runs", f"model.args.backbone={backbone}",
                              f"model.args.anchor_sizes={anchors}", override)
    if "anchor_sizes" in override and backbone.startswith("mobilenet"):
        argv[-1] = "model.args.anchor_sizes=[a, b, c]"
    clean_error(capsys, _train_main(), argv, words, "--models")
    assert not (tmp_path / "runs").exists()


def test_a_reason_for_a_model_argument_the_model_lacks_is_refused(capsys, demo_version, tmp_path):
    clean_error(capsys, _train_main(), tiny_overrides(demo_version.path, tmp_path / "runs",
                                                      'why={model.args.widht: "wider"}'),
                "model.args.widht", "did you mean 'model.args.width'")
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------- every reader validates its file
def test_a_broken_run_json_is_said_at_the_terminal(capsys, evaluated_run, tmp_path):
    run = tmp_path / "broken"
    shutil.copytree(evaluated_run, run)
    (run / "run.json").write_text("{not json")
    clean_error(capsys, _evaluate_main(), ["report", run, "--out", tmp_path / "r"], "run.json", "parse as JSON")
    clean_error(capsys, _evaluate_main(), ["app", run], "run.json", "parse as JSON")


def test_wrongly_typed_annotation_files_are_named(tmp_path):
    from ingest.labelstudio import LabelStudioSource
    from ingest.polygons import parse_polygons
    from ingest.taxonomy import load_taxonomy

    poly = tmp_path / "x_gtFine_polygons.json"
    poly.write_text(json.dumps({"imgHeight": 8, "imgWidth": 8, "objects": [
        {"label": "car", "polygon": [[0, 0], [4, 0], [4, 4]]}, {"label": 26, "polygon": [[0, 0], [4, 0], [4, 4]]}]}))
    with pytest.raises(SegLoopError, match=r"object #1 has no 'label' string \(got 26\)"):
        parse_polygons(poly)
    snap = tmp_path / "ls" / "20260101T000000Z.json"
    snap.parent.mkdir()
    for result, words in ((["polygonlabels"], "'result' is not a list of region objects"),
                          ([{"id": "r", "type": "polygonlabels", "value": {"polygonlabels": [3]}}],
                           "'polygonlabels' is not a list of label names")):
        snap.write_text(json.dumps([{"id": 7, "data": {"image": "a.png"}, "annotations": [{"id": 1,
                                                                                         "result": result}]}]))
        source = LabelStudioSource("ls", snap.parent, load_taxonomy("cityscapes"))
        with pytest.raises(SegLoopError, match=words) as e:
            source.records()
        assert "task 7" in str(e.value) and str(snap) in str(e.value)


def test_an_image_announcing_gigapixels_is_refused_before_decoding(capsys, tiny_run, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
    (folder / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b""))
                                      + chunk(b"IEND", b""))
    clean_error(capsys, _evaluate_main(), ["predict", tiny_run.run_dir, "--images", folder],
                "huge.png", "too large to decode safely", "megapixels")


def test_a_file_that_is_no_image_stops_predict_before_any_prediction(capsys, tiny_run, demo_version, tmp_path,
                                                                      monkeypatch):
    import evaluate.predict as predict

    folder = tmp_path / "scan-first"
    folder.mkdir()
    for im in demo_version.images("test")[:3]:
        shutil.copy(demo_version.image_path(im), folder / Path(im["file_name"]).name)
    (folder / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # sorted last
    loaded = []
    monkeypatch.setattr(predict, "load_for_inference", lambda *a, **k: loaded.append(a) or pytest.fail("loaded"))
    clean_error(capsys, _evaluate_main(), ["predict", tiny_run.run_dir, "--images", folder], "zz-broken.png",
                "cannot decode image")
    assert not loaded and not (tiny_run.run_dir / "predict" / "scan-first").exists()


# ------------------------------------------------------------------------------ checks happen where the user is
def test_the_app_checks_its_device_at_the_terminal(capsys, tiny_run):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    clean_error(capsys, _evaluate_main(), ["app", tiny_run.run_dir, "--device", "cuda"], "no CUDA GPU")


# ------------------------------------------------------------------------------------- messages name the thing
def test_report_gallery_count_names_its_own_option(capsys, evaluated_run, tmp_path):
    err = clean_error(capsys, _evaluate_main(), ["report", evaluated_run, "--out", tmp_path / "r", "--gallery", "-3"],
                      "--gallery", "at least 1")
    assert "--n" not in err


def test_pickled_backbone_weights_name_the_call_they_would_make(tmp_path):
    import torch

    from train.models import INSTANCE_MODELS

    class Exploit:
        def __reduce__(self):
            return (os.system, ("true",))

    weights = tmp_path / "resnet18.pth"
    torch.save({"conv1.weight": Exploit()}, weights)
    with pytest.raises(SegLoopError, match=r"asks to run (posix|os)\.system") as e:
        INSTANCE_MODELS.build("maskrcnn", {"backbone": "resnet18", "weights_backbone": str(weights)}, num_classes=3)
    assert "state_dict" in str(e.value)


# ------------------------------------------------------------------------------ environments a user really has
def test_world_size_without_torchrun_says_what_is_missing(capsys, demo_version, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    for var in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    clean_error(capsys, _train_main(), tiny_overrides(demo_version.path, tmp_path / "runs"), "MASTER_ADDR",
                "torchrun")
    assert not (tmp_path / "runs").exists()


def test_numba_caches_where_the_user_can_write(monkeypatch, tmp_path):
    import ingest.ls_brush as brush

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    real, source = os.access, Path(brush.__file__).parent
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == source else real(p, mode))
    brush._numba_cache_dir()  # a checkout the user cannot write: the cache goes to the user's cache folder
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "segloop" / "numba")
    from numba.core import config

    assert str(tmp_path / "segloop" / "numba") == config.CACHE_DIR
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    config.reload_config()


# ------------------------------------------------------------------------------- found by a fresh-eyes probe
def test_resume_refuses_settings_it_would_not_use(capsys, tiny_run, tmp_path):
    run = tmp_path / "half"
    shutil.copytree(tiny_run.run_dir, run)
    before = snapshot(run)
    for extra, key in ((["output.name=other"], "output.name"), ([f"output.runs_dir={tmp_path / 'x'}"],
                                                                 "output.runs_dir"),
                       ([f"model.weights={tiny_run.run_dir}"], "model.weights")):
        clean_error(capsys, _train_main(), [f"resume={run}", "train.epochs=3", *extra], key,
                    "does not apply when resuming")
    assert snapshot(run) == before and not (tmp_path / "x").exists()
    clean_error(capsys, _train_main(), ["resume=/nonexistent/run"], "run folder not found")


def test_weights_and_init_from_together_are_refused(capsys, tiny_run, demo_version, tmp_path):
    clean_error(capsys, _train_main(), tiny_overrides(demo_version.path, tmp_path / "runs",
                                                      f"model.weights={tiny_run.run_dir}",
                                                      f"model.init_from={tiny_run.run_dir}"),
                "model.weights and model.init_from both set")


def test_settings_a_run_does_not_read_are_said_and_recorded(capsys, demo_version, tmp_path):
    from train.config import load_train_config
    from train.engine import Trainer

    capsys.readouterr()
    t = Trainer(load_train_config(None, tiny_overrides(demo_version.path, tmp_path, "optim.momentum=0.5",
                                                       "schedule.power=2.0", "augment.copy_paste=0.5",
                                                       "optim.lr=0.002")), progress=False)
    out = capsys.readouterr().out
    assert set(t.unused) == {"optim.momentum", "schedule.power", "augment.copy_paste"}
    for key in t.unused:
        assert f"note: {key}=" in out and "has no effect here" in out
    assert "optim.lr" not in t.unused  # a setting the run reads is never said


def test_commands_name_the_right_thing(capsys, tiny_run, evaluated_run, tmp_path):
    from annotate.__main__ import main as annotate_main
    from fiftyone_views.__main__ import main as fo_main

    err = clean_error(capsys, _evaluate_main(), ["run", tmp_path / "nope"], "not found")
    assert "fix: runs:" not in err and "give a run folder" in err
    png = tmp_path / "one.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    clean_error(capsys, _evaluate_main(), ["predict", tiny_run.run_dir, "--images", png], "is a file, not a folder",
                str(tmp_path))
    (tmp_path / "empty").mkdir()
    clean_error(capsys, _evaluate_main(), ["predict", tiny_run.run_dir, "--images", tmp_path / "empty"],
                "no images", "fix")
    clean_error(capsys, annotate_main, ["fetch-media", "--snapshot", tmp_path / "nope.json"], "nope.json")
    assert "Label Studio to talk to" not in capsys.readouterr().err
    clean_error(capsys, fo_main, ["triptychs", evaluated_run, "--worst", "--seed", "5", "--n", "2"],
                "--seed", "--worst")


def test_report_refuses_a_run_twice_and_an_evaluation_older_than_the_run(capsys, evaluated_run, tmp_path):
    clean_error(capsys, _evaluate_main(), ["report", evaluated_run, evaluated_run, "--out", tmp_path / "r"],
                "given twice")
    run = tmp_path / "later"
    shutil.copytree(evaluated_run, run)
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    (run / "eval" / "test" / "metrics.json").write_text(json.dumps({**metrics, "epoch": metrics["epoch"] - 1}))
    clean_error(capsys, _evaluate_main(), ["report", run, "--out", tmp_path / "r"], "trained on since",
                "python -m evaluate run")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------- found by a second fresh-eyes probe
@pytest.mark.parametrize("line", ['[1]', '{"epoch": "one", "step": null}'])
def test_a_metrics_line_that_is_no_record_is_named_and_changes_nothing(capsys, evaluated_run, tmp_path, line):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    metrics = run / "metrics.jsonl"
    metrics.write_text(line + "\n" + metrics.read_text())
    before = snapshot(run)
    clean_error(capsys, _evaluate_main(), ["report", run, "--out", tmp_path / "rep"], "line 1", "metrics.jsonl",
                "fix: delete or repair line 1")
    clean_error(capsys, _train_main(), [f"resume={run}", "train.epochs=5"], "line 1 is not a metrics record")
    assert snapshot(run) == before and not (tmp_path / "rep").exists()


def test_an_evaluation_without_its_keys_is_named(capsys, evaluated_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    (run / "eval" / "test" / "metrics.json").write_text('{"AP": "high", "segm": 3}')
    clean_error(capsys, _evaluate_main(), ["report", run, "--out", tmp_path / "rep"], "dataset_version",
                "python -m evaluate run")
    metrics = json.loads((evaluated_run / "eval" / "test" / "metrics.json").read_text())
    del metrics["mIoU"]
    (run / "eval" / "test" / "metrics.json").write_text(json.dumps(metrics))
    clean_error(capsys, _evaluate_main(), ["report", run, "--out", tmp_path / "rep"], "lacks mIoU")


@pytest.mark.parametrize(("env", "words"), [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' is not a whole number"),
    ({"WORLD_SIZE": "1", "RANK": "abc"}, "RANK='abc'"),
    ({"LOCAL_RANK": "x"}, "LOCAL_RANK='x'"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "each rank is below WORLD_SIZE"),
])
def test_malformed_distributed_variables_are_named(capsys, demo_version, tmp_path, monkeypatch, env, words):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    clean_error(capsys, _train_main(), tiny_overrides(demo_version.path, tmp_path / "runs"), words, "torchrun")
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_a_config_file_and_a_changed_task(capsys, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    before = snapshot(run)
    clean_error(capsys, _train_main(), ["--config", "configs/experiments/yolo-seg-demo.yaml", f"resume={run}",
                                        "train.epochs=5"], "would be ignored", "drop --config")
    clean_error(capsys, _train_main(), [f"resume={run}", "task=instance", "train.epochs=5"],
                "task=instance does not apply when resuming", "task=semantic")
    (run / "checkpoints" / "last.pt").touch()  # as the files were: nothing changed
    assert {k: v[0] for k, v in snapshot(run).items()} == {k: v[0] for k, v in before.items()}
    clean_error(capsys, _train_main(), [f"resume={run}", "train.epochs=5", "train.time_limit=0.0001"],
                "already past train.time_limit=0.0001", "minutes in all")


@pytest.fixture(scope="module")
def other_version(demo_city, tmp_path_factory):
    """The demo city's images split another way: its test split holds images the tiny run trained on."""
    from ingest.version import DatasetVersion, build
    from tests.conftest import demo_data_config

    root = tmp_path_factory.mktemp("other-versions")
    return DatasetVersion(build(demo_data_config(demo_city, root, "name=ratio", "split.mode=ratio"),
                                progress=False).path)


def test_evaluating_on_another_version_never_replaces_silently_nor_mixes(capsys, evaluated_run, other_version,
                                                                         tmp_path):
    from evaluate.runner import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    before = snapshot(run / "eval" / "test")
    clean_error(capsys, _evaluate_main(), ["run", run, "--version", other_version.path], "holds the evaluation on",
                "--replace")
    assert snapshot(run / "eval" / "test") == before
    capsys.readouterr()
    result = evaluate_run(run, "test", version=str(other_version.path), replace=True, progress=False)
    out = capsys.readouterr().out
    assert result["train_overlap"] > 0 and f"{result['train_overlap']} of the" in out and "memory" in out
    assert result["dataset_path"] == str(other_version.path.resolve())
    clean_error(capsys, _evaluate_main(), ["report", run, evaluated_run, "--out", tmp_path / "rep"],
                "different test sets do not compare", other_version.version)
    assert not (tmp_path / "rep").exists()


def test_evaluate_run_refuses_a_checkpoint_that_is_not_the_runs(capsys, evaluated_run, evaluated_instance_run,
                                                                tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    shutil.copy(evaluated_instance_run[0] / "checkpoints" / "best.pt", run / "checkpoints" / "best.pt")
    before = snapshot(run / "eval")
    clean_error(capsys, _evaluate_main(), ["run", run], "is an instance maskrcnn model", "not this run's")
    assert snapshot(run / "eval") == before
    (run / "run.json").write_text('{"task": 5}')
    clean_error(capsys, _evaluate_main(), ["run", run], "run.json has 'task' = 5")


def test_predict_reads_photos_upright_and_lists_as_the_user_means(capsys, tiny_run, tmp_path):
    """A phone photo stored sideways (EXIF orientation 6) is predicted as shown; a .txt list reads relative paths
    from its own folder and skips comments; TIFF and WebP folders are read; an empty list, an empty --name and a
    pool whose folder name another pool already used are refused."""
    from evaluate.predict import predict_images

    pool = tmp_path / "photos" / "leftImg8bit"
    pool.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    Image.fromarray(np.zeros((40, 90, 3), np.uint8)).save(pool / "phone.jpg", exif=exif.tobytes())
    Image.fromarray(np.full((30, 50), 4000, np.uint16)).save(pool / "grey16.tif")
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(pool / "clip.webp")
    (pool / "notes.md").write_text("not an image")
    capsys.readouterr()
    out = predict_images(tiny_run.run_dir, pool, progress=False)
    assert out.name == "photos-leftImg8bit" and "notes.md" not in capsys.readouterr().err
    index = json.loads((out / "index.json").read_text())["images"]
    assert len(index) == 3
    phone = next(e for e in index.values() if e["image"].endswith("phone.jpg"))
    assert Image.open(out / phone["prediction"]).size == (40, 90)  # upright: 40 wide, 90 high
    lst = tmp_path / "photos" / "list.txt"
    lst.write_text("# the phone photo\nleftImg8bit/phone.jpg\n\n")
    assert len(json.loads((predict_images(tiny_run.run_dir, lst, progress=False) / "index.json").read_text())[
        "images"]) == 1
    (tmp_path / "empty.txt").write_text("# nothing yet\n")
    clean_error(capsys, _evaluate_main(), ["predict", tiny_run.run_dir, "--images", tmp_path / "empty.txt"],
                "names no image")
    clean_error(capsys, _evaluate_main(), ["predict", tiny_run.run_dir, "--images", pool, "--name", ""],
                "--name is empty")
    other = tmp_path / "elsewhere" / "photos" / "leftImg8bit"
    other.mkdir(parents=True)
    Image.fromarray(np.full((30, 50, 3), 9, np.uint8)).save(other / "b.png")
    shutil.copy(other / "b.png", other / "b_copy.PNG")
    clean_error(capsys, _evaluate_main(), ["predict", tiny_run.run_dir, "--images", other], "holds predictions of "
                "other images", "--name")
    capsys.readouterr()
    predict_images(tiny_run.run_dir, other, name="other", progress=False)
    assert "same content as" in capsys.readouterr().out


def test_free_section_reasons_must_name_a_key_the_config_sets(capsys, demo_version, tmp_path):
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, tmp_path), "why={ultralytics.mosaic: x}"],
                "why: names 'ultralytics.mosaic', which this config does not set")
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, tmp_path), "loss.name=cross_entropy+dice",
                                        "loss.args={dice: {smooth: 1.0}}", "why={loss.args.dice.smoth: x}"],
                "loss.args.dice.smoth", "did you mean 'loss.args.dice.smooth'")


def test_messages_name_the_missing_thing(capsys, tmp_path, monkeypatch):
    from core.fsio import read_image, user_cache_dir
    from evaluate.app_server import app_args

    clean_error(capsys, _evaluate_main(), ["report", tmp_path / "no-such-run", "--out", tmp_path / "r"],
                "run folder not found")
    with pytest.raises(SegLoopError, match="--runs-dir folder not found"):
        app_args([], tmp_path / "nothere", "best", "auto")
    (tmp_path / "runs").mkdir()
    with pytest.raises(SegLoopError, match=f"output.runs_dir={tmp_path / 'runs'}"):
        app_args([], tmp_path / "runs", "best", "auto")
    fake = tmp_path / "a.png"
    fake.write_text("not an image")
    with pytest.raises(SegLoopError) as e:
        read_image(fake)
    assert str(fake) in str(e.value) and "BufferedReader" not in str(e.value)
    run = tmp_path / "listcfg"
    run.mkdir()
    (run / "config.yaml").write_text("- 1\n")
    clean_error(capsys, _train_main(), [f"resume={run}"], "top level must be a mapping", "fix:")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "nonexistent"))
    assert not str(user_cache_dir("x")).startswith(str(tmp_path / "nonexistent"))


def test_models_lists_one_task_on_request(capsys):
    assert _train_main()(["--models", "task=instance"]) == 0
    out = capsys.readouterr().out
    assert "model.name=maskrcnn" in out and "model.name=resunet" not in out and "loss.name" not in out
    clean_error(capsys, _train_main(), ["--models", "train.epochs=3"], "takes no override but task=NAME")



# -------------------------------------------------------------------- found by a third fresh-eyes probe
@pytest.mark.parametrize(("change", "words"), [
    ({"mIoU": "x"}, "mIoU = 'x', not a number"),
    ({"per_class": [1, 2]}, "per_class that is not a map"),
    ({"timing": "fast"}, "'timing' = 'fast'"),
    ({"worst_classes": [{"x": 1}]}, "worst_classes that are not names"),
    ({"tta": "yes"}, "'tta' = 'yes'"),
])
def test_an_evaluation_of_the_wrong_kinds_is_named(capsys, evaluated_run, tmp_path, change, words):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    (run / "eval" / "test" / "metrics.json").write_text(json.dumps({**metrics, **change}))
    clean_error(capsys, _evaluate_main(), ["report", run, "--out", tmp_path / "rep"], words, "python -m evaluate run")
    assert not (tmp_path / "rep").exists()


def test_a_checkpoint_of_the_same_model_with_other_arguments_is_not_the_runs(capsys, tiny_run, demo_version,
                                                                             tmp_path):
    from train.config import load_train_config
    from train.engine import train

    other = train(load_train_config(None, tiny_overrides(demo_version.path, tmp_path / "o", "train.epochs=1",
                                                         "model.args={width: 8, depth: 2}")), progress=False)
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    for which in ("best", "last"):
        shutil.copy(other.run_dir / "checkpoints" / f"{which}.pt", run / "checkpoints" / f"{which}.pt")
    before = snapshot(run)
    clean_error(capsys, _evaluate_main(), ["run", run], "the checkpoint is not this run's", "'width': 8")
    pool = tmp_path / "foreign-pool"
    pool.mkdir()
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(pool / "a.png")
    clean_error(capsys, _evaluate_main(), ["predict", run, "--images", pool], "the checkpoint is not this run's")
    clean_error(capsys, _train_main(), [f"resume={run}", "train.epochs=5"], "last.pt is a semantic resunet",
                "the checkpoint is not this run's")
    assert snapshot(run) == before


def test_a_loss_that_is_not_finite_stops_the_run(capsys, demo_version, tmp_path):
    runs = tmp_path / "runs"
    clean_error(capsys, _train_main(), tiny_overrides(demo_version.path, runs, "optim.lr=1e30",
                                                      "schedule.warmup_steps=0"),
                "the training loss is", "lower optim.lr")
    assert not runs.exists() or not any(runs.iterdir())


def test_models_names_a_task_that_does_not_exist(capsys):
    clean_error(capsys, _train_main(), ["--models", "task=bogus"], "there is no task 'bogus'", "semantic, instance")


# ------------------------------------------------------------------- found by a fourth fresh-eyes probe
def test_a_threshold_without_a_sigmoid_head_is_said(capsys, demo_version, tmp_path):
    from train.config import load_train_config
    from train.engine import Trainer

    capsys.readouterr()
    t = Trainer(load_train_config(None, tiny_overrides(demo_version.path, tmp_path, "model.args.threshold=0.3")),
                progress=False)
    assert "model.args.threshold" in t.unused and "note: model.args.threshold=0.3" in capsys.readouterr().out


def test_a_run_terminated_before_its_first_checkpoint_leaves_nothing(demo_version, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "train.run", *tiny_overrides(demo_version.path, runs,
                                                                               "output.name=killed",
                                                                               "train.epochs=50"), "--quiet"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (runs / "killed" / "run.json").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert (runs / "killed" / "run.json").is_file(), "training never started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not (runs / "killed").exists(), "a run that never checkpointed must leave no folder"


@pytest.mark.parametrize(("where", "change", "words"), [
    ("metrics.jsonl", {"val_mIoU": "high"}, "'val_mIoU' is 'high', not a number"),
    ("metrics.jsonl", {"val_iou": [1, 2]}, "'val_iou' is [1, 2]"),
    ("metrics.json", {"mIoU": 7.5}, "mIoU = 7.5, outside [0, 1]"),
    ("metrics.json", {"mIoU": float("nan")}, "outside [0, 1]"),
])
def test_figures_out_of_kind_or_range_are_named(capsys, evaluated_run, tmp_path, where, change, words):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    if where == "metrics.jsonl":
        lines = (run / "metrics.jsonl").read_text().splitlines()
        lines[0] = json.dumps({**json.loads(lines[0]), **change})
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    else:
        path = run / "eval" / "test" / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    clean_error(capsys, _evaluate_main(), ["report", run, "--out", tmp_path / "rep"], words)


def test_weights_that_are_a_folder_or_a_segloop_checkpoint_are_named(tiny_run, tmp_path):
    from train.models import SEMANTIC_MODELS

    with pytest.raises(SegLoopError, match="is a folder, not a resnet18 weights file"):
        SEMANTIC_MODELS.build("unet", {"encoder": "resnet18", "encoder_weights": str(tmp_path)}, num_classes=3)
    with pytest.raises(SegLoopError, match="is a SegLoop checkpoint") as e:
        SEMANTIC_MODELS.build("unet", {"encoder": "resnet18", "encoder_weights": str(
            tiny_run.run_dir / "checkpoints" / "best.pt")}, num_classes=3)
    assert "model.init_from" in str(e.value)


# -------------------------------------------------------------------- found by a fifth fresh-eyes probe
def test_a_new_run_never_takes_a_folder_that_is_not_a_run(capsys, demo_version, tmp_path):
    runs = tmp_path / "runs"
    (runs / "victim" / "photos").mkdir(parents=True)
    (runs / "victim" / "photos" / "a.txt").write_text("precious")
    before = snapshot(runs / "victim")
    # without exist_ok the name is taken: the run goes to victim-2
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, runs, "output.name=victim",
                                                         "output.exist_ok=true")], "is not a run folder")
    assert snapshot(runs / "victim") == before
    from train.config import load_train_config
    from train.engine import train

    res = train(load_train_config(None, tiny_overrides(demo_version.path, runs, "output.name=victim",
                                                       "train.epochs=1")), progress=False)
    assert res.run_dir == runs / "victim-2" and snapshot(runs / "victim") == before


def test_exist_ok_replaces_a_run_whole_but_never_files_no_run_writes(capsys, tiny_run, demo_version, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run.run_dir, runs / "j")
    (runs / "j" / "notes.txt").write_text("mine")
    before = snapshot(runs / "j")
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, runs, "output.name=j",
                                                         "output.exist_ok=true")], "notes.txt", "holds files no run")
    assert snapshot(runs / "j") == before
    (runs / "j" / "notes.txt").unlink()
    (runs / "j" / "relabel").mkdir()
    rc = run_cli(_train_main(), [*tiny_overrides(demo_version.path, runs, "output.name=j", "output.exist_ok=true",
                                                 "train.epochs=1"), "--quiet"])
    assert rc == 0 and "replaced when training starts" in capsys.readouterr().out
    assert not (runs / "j" / "relabel").exists()  # the earlier model's lists went with it, as said


@pytest.mark.parametrize(("override", "key"), [
    ("data.image_size=[32,64]", "data.image_size"),
    ("loss.name=dice", "loss.name"),
    ("train.seed=3", "train.seed"),
])
def test_resume_refuses_to_change_what_the_checkpoint_trained_on(capsys, tiny_run, tmp_path, override, key):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    before = snapshot(run)
    clean_error(capsys, _train_main(), [f"resume={run}", "train.epochs=3", override], key,
                "does not apply when resuming")
    assert snapshot(run) == before


def test_resume_with_a_key_missing_from_config_yaml_refuses_the_default(capsys, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    config = run / "config.yaml"
    config.write_text("".join(line for line in config.read_text().splitlines(keepends=True)
                              if not line.strip().startswith("image_size")))
    before = snapshot(run)
    clean_error(capsys, _train_main(), [f"resume={run}", "train.epochs=3"], "data.image_size=[128, 256]",
                "trained with data.image_size=[64, 128]")
    assert snapshot(run) == before


def test_resume_with_a_new_data_version_is_refused(capsys, tiny_run, demo_city, tmp_path):
    from ingest.version import build
    from tests.conftest import demo_data_config

    other = build(demo_data_config(demo_city, tmp_path / "v", "name=other"), progress=False)
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    before = snapshot(run)
    clean_error(capsys, _train_main(), [f"resume={run}", "train.epochs=3", f"data.version={other.path}"],
                "data.version=", "does not apply when resuming")
    assert snapshot(run) == before


def test_a_nan_loss_is_caught_in_an_epoch_shorter_than_log_every(capsys, demo_version, tmp_path):
    runs = tmp_path / "runs"
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, runs, "optim.lr=1e30",
                                                         "schedule.warmup_steps=0", "train.log_every=100",
                                                         "train.epochs=1")], "training loss is nan", "optim.lr")
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.parametrize(("override", "words"), [
    ("loss.name=cross_entropy+dice;loss.args={dice: {weight: .inf}}", "weight must be a positive number"),
    ("loss.name=tversky;loss.args={tversky: {alpha: 0, beta: 0}}", "alpha and beta are both 0"),
    ("model.args={attention: maybe}", "model.args.attention must be true or false"),
    ("model.args={width: '8'}", "model.args.width must be a whole number"),
    ("model.args={width: 8, depth: 12}", "at most depth 8"),
    ("model.name=unet;model.args={encoder: residual, decoder_channels: 8}", "decoder_channels must be a list"),
])
def test_model_and_loss_arguments_of_the_wrong_kind_or_range(capsys, demo_version, tmp_path, override, words):
    runs = tmp_path / "runs"
    clean_error(capsys, _train_main(), [f"data.version={demo_version.path}", f"output.runs_dir={runs}",
                                        *override.split(";")], words)
    assert not runs.exists()


def test_scientific_notation_reads_as_a_number_in_files_and_nested_values(tmp_path):
    from train.config import load_train_config

    exp = tmp_path / "exp.yaml"
    exp.write_text("base: " + str(Path(__file__).resolve().parent.parent / "configs/train/default.yaml")
                   + "\noptim: {lr: 1e-3}\n")
    cfg = load_train_config(exp, ["loss.name=cross_entropy+dice", "loss.args={dice: {smooth: 1e-5}}"])
    assert cfg["optim"]["lr"] == 0.001 and cfg["loss"]["args"]["dice"]["smooth"] == 1e-5


WEIGHTS_ONLY, BOTH = ("model.weights",), ("model.weights", "model.init_from")  # init_from skips unfit layers


@pytest.mark.parametrize(("edit", "words", "keys"), [
    (lambda c: c["model"].update({next(iter(c["model"])): c["model"][next(iter(c["model"]))][:1]}),
     "of another shape", WEIGHTS_ONLY),
    (lambda c: c["model"].pop(next(iter(c["model"]))), "1 missing", WEIGHTS_ONLY),
    (lambda c: c.update(model_spec="resunet"), "'model_spec' is 'resunet'", BOTH),
    (lambda c: c["model_spec"].update(args=[1]), "args map names to values", BOTH),
    (lambda c: c.update(taxonomy=5), "'taxonomy' is '5'", BOTH),
])
def test_edited_checkpoints_given_as_weights_are_named(capsys, tiny_run, demo_version, tmp_path, edit, words, keys):
    import torch

    ckpt = torch.load(tiny_run.run_dir / "checkpoints" / "best.pt", weights_only=True)
    edit(ckpt)
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    runs = tmp_path / "runs"
    for key in keys:
        clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, runs, f"{key}={path}")], words,
                    str(path))
    assert not runs.exists()


@pytest.mark.parametrize(("change", "words"), [
    ({"best_value": "x"}, "'best_value' = 'x', not a number"),
    ({"train_seconds": "x"}, "'train_seconds' = 'x'"),
    ({"model": {"name": "resunet", "args": [1]}}, "model args [1], not a JSON object"),
])
def test_run_json_of_the_wrong_kinds_is_named_by_every_reader(capsys, evaluated_run, tmp_path, change, words):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    info = run / "run.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), **change}))
    clean_error(capsys, _evaluate_main(), ["report", run, "--out", tmp_path / "rep"], words)
    clean_error(capsys, _evaluate_main(), ["run", run, "--split", "test"], words)
    assert not (tmp_path / "rep").exists()


def test_the_app_checks_a_truncated_checkpoint_at_the_terminal(capsys, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    clean_error(capsys, _evaluate_main(), ["app", run, "--port", "8799"], "cannot read checkpoint", "best.pt")


def test_a_16_bit_colour_image_is_scaled_by_its_range(tmp_path):
    import cv2

    from core.fsio import read_image
    from evaluate.demo_app import decode_upload

    rng = np.random.default_rng(0)
    a = (rng.random((20, 30, 3)) * 4095).astype(np.uint16)  # a 12-bit sensor's colour frame in 16-bit files
    expected = np.round(a[..., ::-1] / 4095 * 255).astype(np.uint8)  # OpenCV writes BGR
    for name in ("c16.png", "c16.tif"):
        cv2.imwrite(str(tmp_path / name), a)
        np.testing.assert_array_equal(read_image(tmp_path / name), expected)
        np.testing.assert_array_equal(decode_upload((tmp_path / name).read_bytes()), expected)


def test_yolo_sizes_and_freezing_are_checked_before_training(capsys, demo_version, tmp_path):
    from tests.conftest import yolo_overrides

    runs = tmp_path / "runs"
    clean_error(capsys, _train_main(), [*yolo_overrides(demo_version.path, runs, "data.image_size=[100,100]")],
                "multiple of 32", "data.image_size=[128, 128]")
    clean_error(capsys, _train_main(), [*yolo_overrides(demo_version.path, runs, "ultralytics={freeze: 999}")],
                "ultralytics.freeze=999", "layers")
    assert not runs.exists()


@pytest.mark.parametrize(("env", "words"), [
    ({"MASTER_PORT": "abc", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT='abc' is not a port number"),
    ({"MASTER_PORT": "29511", "MASTER_ADDR": "nohost.invalid"}, "MASTER_ADDR='nohost.invalid' does not resolve"),
])
def test_a_rendezvous_torchrun_would_never_set_is_said(capsys, demo_version, tmp_path, monkeypatch, env, words):
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", **env}.items():
        monkeypatch.setenv(k, v)
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, tmp_path / "runs")], words)


def test_outputs_under_a_file_or_in_a_system_folder_are_named(capsys, evaluated_run, tmp_path):
    (tmp_path / "file.txt").write_text("mine")
    clean_error(capsys, _evaluate_main(), ["report", evaluated_run, "--out", tmp_path / "file.txt" / "rep"],
                "file.txt: is a file, so no folder can be made under it")
    assert (tmp_path / "file.txt").read_text() == "mine"
    clean_error(capsys, _evaluate_main(), ["compare", evaluated_run, "--out", ""], "must name a folder")


def test_report_says_a_run_without_metrics_has_no_curves(capsys, evaluated_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    clean_error(capsys, _evaluate_main(), ["report", run, "--out", tmp_path / "rep"], "metrics.jsonl is not a file")


def test_an_image_list_naming_a_folder_says_so(capsys, tiny_run, tmp_path):
    (tmp_path / "pool").mkdir()
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'pool'}\n")
    clean_error(capsys, _evaluate_main(), ["predict", tiny_run.run_dir, "--images", listing],
                "listed paths are folders")


# -------------------------------------------------------------------- found by a sixth fresh-eyes probe
def test_a_replacing_run_that_fails_puts_the_earlier_run_back(capsys, tiny_run, demo_version, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run.run_dir, runs / "b3")
    before = snapshot(runs / "b3")
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, runs, "output.name=b3",
                                                         "output.exist_ok=true", "optim.lr=1e30",
                                                         "schedule.warmup_steps=0")], "training loss is nan")
    assert snapshot(runs / "b3") == before and not (runs / ".b3.replaced").exists()


def _folded(demo_city, tmp_path):
    from ingest.version import build
    from tests.conftest import demo_data_config

    return build(demo_data_config(demo_city, tmp_path / "v", "folds=2", "name=folded"), progress=False)


def test_fold_groups_fail_cleanly_and_resume_alike(capsys, demo_city, tmp_path):
    version = _folded(demo_city, tmp_path)
    runs = tmp_path / "runs"
    # the first fold fails at once: no group folder is left to block the retry
    clean_error(capsys, _train_main(), [*tiny_overrides(version.path, runs, "output.name=y", "data.fold=all",
                                                         "train.batch_size=50")], "train.batch_size 50")
    assert not (runs / "y").exists()
    # a failed overfit check on the folds fails the command
    rc = run_cli(_train_main(), ["--quiet", *tiny_overrides(version.path, runs, "output.name=of", "data.fold=all",
                                                            "train.overfit_batch=2", "train.overfit_steps=1",
                                                            "train.overfit_target=1.0")])
    assert rc == 1
    # a group resumes only with the settings it trained with, and from wherever it was moved
    assert run_cli(_train_main(), ["--quiet", *tiny_overrides(version.path, runs, "output.name=g", "data.fold=all",
                                                              "train.epochs=1")]) == 0
    clean_error(capsys, _train_main(), [f"resume={runs / 'g'}", "train.seed=3"], "train.seed=3",
                "does not apply when resuming")
    shutil.copytree(runs / "g", runs / "gg")
    assert run_cli(_train_main(), ["--quiet", f"resume={runs / 'gg'}", "train.epochs=2"]) == 0
    assert json.loads((runs / "gg" / "fold1" / "run.json").read_text())["steps"] > json.loads(
        (runs / "g" / "fold1" / "run.json").read_text())["steps"]
    # the group folder given where one run is expected says what it is
    clean_error(capsys, _evaluate_main(), ["run", runs / "g", "--split", "test"], "is a k-fold group of 2 runs",
                "fold0")
    clean_error(capsys, _train_main(), [*tiny_overrides(version.path, runs, "data.fold=2")], "folds 0..1")


def test_a_failed_ensemble_leaves_nothing(capsys, evaluated_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(evaluated_run, other, ignore=shutil.ignore_patterns("eval"))
    clean_error(capsys, _evaluate_main(), ["ensemble", evaluated_run, other, "--out", tmp_path / "ens",
                                           "--split", "bogus"], "bogus")
    assert not (tmp_path / "ens").exists() and not (other / "eval").exists()
    clean_error(capsys, _evaluate_main(), ["ensemble", evaluated_run, other, "--out", tmp_path / "ens",
                                           "--reference", other], "--reference is one of the members")


def test_compare_tells_runs_apart_and_names_broken_files(capsys, evaluated_run, tmp_path):
    from evaluate.compare import compare_runs

    for group in ("g1", "g2"):
        shutil.copytree(evaluated_run, tmp_path / group / "fold0")
    rows, _ = compare_runs([tmp_path / "g1" / "fold0", tmp_path / "g2" / "fold0"])
    assert [r.values["run"] for r in rows] == ["g1/fold0", "g2/fold0"] and rows[0].values["evaluated"] == "best.pt"
    broken = tmp_path / "broken"
    shutil.copytree(evaluated_run, broken)
    (broken / "config.yaml").write_text("{}\n")
    rows, skipped = compare_runs([broken])
    assert not rows and "config.yaml is not a training config" in skipped[0]
    (tmp_path / "mydocs").mkdir()
    (tmp_path / "mydocs" / "letter.txt").write_text("mine")
    capsys.readouterr()
    err = clean_error(capsys, _evaluate_main(), ["compare", evaluated_run, "--out", tmp_path / "mydocs"],
                      "not a comparison folder")
    assert "| run |" not in capsys.readouterr().out and err  # refused before the table is printed


@pytest.mark.parametrize(("override", "words"), [
    ("data.image_size=[64.5,128]", "two whole numbers"),
    ("train.early_stop.min_delta=5", "train.early_stop.min_delta"),
])
def test_toolkit_values_out_of_kind(capsys, demo_version, tmp_path, override, words):
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, tmp_path / "runs", override)], words)


def test_train_lists_with_a_bom_or_that_are_folders(capsys, demo_version, tmp_path):
    from train.config import load_train_config
    from train.engine import Trainer

    first = demo_version.images("train")[0]["id"]
    listing = tmp_path / "bom.txt"
    listing.write_bytes(b"\xef\xbb\xbf" + f"{first}\n".encode())
    t = Trainer(load_train_config(None, tiny_overrides(demo_version.path, tmp_path / "runs",
                                                       f"data.train_list={listing}", "train.batch_size=1")),
                progress=False)
    assert t.selection.train_ids == [first]
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, tmp_path / "runs",
                                                         f"data.train_list={tmp_path}")], "is a folder")


def test_exist_ok_on_a_resume_is_refused(capsys, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    before = snapshot(run)
    clean_error(capsys, _train_main(), [f"resume={run}", "train.epochs=3", "output.exist_ok=true"],
                "output.exist_ok=true does not apply when resuming")
    assert snapshot(run) == before


def test_a_rank_without_a_world_and_an_ensemble_resume_are_named(capsys, demo_version, evaluated_run, tmp_path,
                                                                  monkeypatch):
    from evaluate.ensemble import build_ensemble

    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, tmp_path / "runs")],
                "RANK=1 is set but WORLD_SIZE is not")
    monkeypatch.delenv("RANK")
    twin = tmp_path / "twin"
    shutil.copytree(evaluated_run, twin, ignore=shutil.ignore_patterns("eval"))
    build_ensemble([evaluated_run, twin], tmp_path / "ens", progress=False)
    before = snapshot(tmp_path / "ens")
    clean_error(capsys, _train_main(), [f"resume={tmp_path / 'ens'}", "train.epochs=5"], "is an ensemble")
    for key in ("model.weights", "model.init_from"):  # said as an ensemble before any data is read
        clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, tmp_path / "runs"),
                                            f"{key}={tmp_path / 'ens'}"], f"{key}: this is an ensemble", "members")
    assert snapshot(tmp_path / "ens") == before and not (tmp_path / "runs").exists()
    group = tmp_path / "group"  # a k-fold group's folder holds no weights either: its fold runs do
    shutil.copytree(evaluated_run, group / "fold0", ignore=shutil.ignore_patterns("eval"))
    (group / "group.json").write_text('{"folds": 2}')
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, tmp_path / "runs"),
                                        f"model.init_from={group}"], "this is a k-fold group", "fold0")


# ------------------------------------------------------------------------------------- seventh fresh-eyes probe
@pytest.fixture(scope="module")
def folded_group(demo_city, tmp_path_factory):
    """A 2-fold group of tiny runs (one epoch each) on a version of the demo city built with folds."""
    from ingest.version import DatasetVersion, build
    from tests.conftest import demo_data_config

    root = tmp_path_factory.mktemp("folded")
    version = DatasetVersion(build(demo_data_config(demo_city, root / "v", "folds=2", "name=folded"),
                                   progress=False).path)
    argv = ["--quiet", *tiny_overrides(version.path, root / "runs", "output.name=grp", "data.fold=all",
                                       "train.epochs=1")]
    assert _train_main()(argv) == 0
    return version, root / "runs" / "grp"


def test_outputs_inside_a_run_folder_are_refused(capsys, evaluated_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    twin = tmp_path / "twin"
    shutil.copytree(evaluated_run, twin, ignore=shutil.ignore_patterns("eval"))
    before = snapshot(run)
    for argv in (["compare", run, twin, "--out", run / "cmp"], ["report", run, "--out", run / "rep"],
                 ["ensemble", run, twin, "--out", run / "sub" / "ens"]):
        clean_error(capsys, _evaluate_main(), argv, "is inside the run folder", str(run))
    assert snapshot(run) == before  # the run can still be replaced whole (output.exist_ok) afterwards


def test_parts_of_a_run_are_named_for_what_they_are(capsys, demo_version, evaluated_run, tmp_path):
    runs = tmp_path / "runs"
    part = evaluated_run / "eval" / "test"
    clean_error(capsys, _evaluate_main(), ["run", part], "is the evaluation folder of run", str(evaluated_run))
    clean_error(capsys, _evaluate_main(), ["predict", evaluated_run / "checkpoints", "--images", tmp_path],
                "is the checkpoints folder of run")
    for key in ("model.weights", "model.init_from"):
        clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, runs), f"{key}={part}"],
                    f"{key}: this is the evaluation folder of run")
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, runs),
                                        f"model.init_from={demo_version.path.parent}"], "not a run folder",
                "no checkpoints/")
    clean_error(capsys, _train_main(), [f"resume={evaluated_run / 'checkpoints' / 'last.pt'}"],
                "resume takes a run folder, not a file", f"resume={evaluated_run}")
    assert not runs.exists()


def test_a_group_is_said_as_one_wherever_it_is_given(capsys, folded_group, tmp_path):
    version, group = folded_group
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (32, 16)).save(tmp_path / "imgs" / "a.png")
    for argv in (["run", group], ["predict", group, "--images", tmp_path / "imgs"], ["history", group]):
        clean_error(capsys, _evaluate_main(), argv, "is a k-fold group of 2 runs", "fold0")
    before = snapshot(group)
    # a resume continues what the folder is: a group stays a group, one fold keeps its fold
    clean_error(capsys, _train_main(), [f"resume={group}", "data.fold=1"], "data.fold=1 does not apply when resuming")
    clean_error(capsys, _train_main(), [f"resume={group / 'fold0'}", "data.fold=all", "train.epochs=2"],
                "data.fold=all does not apply when resuming")
    # every fold finished: nothing to do, as for one run
    clean_error(capsys, _train_main(), [f"resume={group}"], "nothing to do: every fold of the group has finished",
                "train.epochs=11")
    # the folds are over train: another training split is refused, naming it
    clean_error(capsys, _train_main(), [*tiny_overrides(version.path, tmp_path / "r", "data.fold=1",
                                                        "data.train_split=val")], "divide its 'train' split")
    # one run never replaces a group; a group never replaces a folder
    clean_error(capsys, _train_main(), [*tiny_overrides(version.path, group.parent, "output.name=grp",
                                                        "output.exist_ok=true")], "would replace a k-fold group")
    clean_error(capsys, _train_main(), [*tiny_overrides(version.path, group.parent, "output.name=grp",
                                                        "data.fold=all", "output.exist_ok=true")],
                "is not replaced by a k-fold group", f"resume={group}")
    assert snapshot(group) == before


def test_a_damaged_fold_stops_a_group_resume_before_any_fold_trains(capsys, folded_group, tmp_path):
    _, group = folded_group
    copy = tmp_path / "grp"
    shutil.copytree(group, copy)
    (copy / "fold1" / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    before = snapshot(copy / "fold0")
    clean_error(capsys, _train_main(), [f"resume={copy}", "train.epochs=2"], "fold1", "last.pt")
    assert snapshot(copy / "fold0") == before


def test_an_ensemble_is_described_as_one_and_its_reference_scored_on_its_version(capsys, folded_group,
                                                                                 evaluated_run, tmp_path):
    import os

    from core.config import read_yaml
    from evaluate.ensemble import build_ensemble
    from evaluate.report import _coverage, _load_run

    version, group = folded_group
    out = tmp_path / "ens"
    # the reference trained on another version of the same images: shown beside, scored on the members' version
    table = build_ensemble([group / "fold0", group / "fold1"], out, "test", reference=evaluated_run, progress=False)
    ref = next(r for r in table["runs"] if r["role"] == "reference")
    scored = json.loads((Path(ref["evaluated"]) / "metrics.json").read_text())
    assert scored["dataset_version"] == version.version and "mIoU" in ref["figures"]
    cfg = read_yaml(out / "config.yaml")
    assert cfg["data"]["fold"] is None and cfg["output"]["name"] == "ens" and cfg["resume"] is None
    link = out / "members" / "0-fold0" / "checkpoints" / "best.pt"
    assert not os.path.isabs(os.readlink(link)) and link.resolve() == (group / "fold0" / "checkpoints" /
                                                                         "best.pt").resolve()
    cover = _coverage(_load_run(out), version)
    assert "an ensemble of 2 runs (fold0, fold1)" in cover["folds"] and "fold 0" not in cover["data"]
    # scoring its training images is said, and recorded
    capsys.readouterr()
    assert _evaluate_main()(["run", str(out), "--split", "train", "--no-uncertainty"]) == 0
    assert "measure memory, not generalisation" in capsys.readouterr().out
    assert json.loads((out / "eval" / "train" / "metrics.json").read_text())["train_overlap"] == \
        len(version.images("train"))


def test_settings_a_fold_ignores_are_recorded_and_a_null_needs_no_note(capsys, folded_group, tmp_path):
    version, _ = folded_group
    runs = tmp_path / "runs"
    assert _train_main()(["--quiet", *tiny_overrides(version.path, runs, "data.fold=1", "data.val_split=test",
                                                      "loss.class_weights=null", "train.epochs=1",
                                                      "output.name=f1")]) == 0
    out = capsys.readouterr().out
    assert "data.val_split=test has no effect here" in out and "class_weights" not in out
    unused = json.loads((runs / "f1" / "run.json").read_text())["unused_settings"]
    assert "data.val_split" in unused


# -------------------------------------------------------------------------------------- eighth fresh-eyes probe
def test_a_16_bit_colour_photo_is_turned_upright_as_its_exif_says(tmp_path):
    import cv2

    from core.fsio import read_image
    from evaluate.demo_app import decode_upload

    a = (np.random.default_rng(0).random((20, 30, 3)) * 4095).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "plain.png"), a)
    data = (tmp_path / "plain.png").read_bytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    payload = exif.tobytes().removeprefix(b"Exif\x00\x00")
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    (tmp_path / "turned.png").write_bytes(data[:33] + chunk + data[33:])  # after the signature and IHDR
    stored = read_image(tmp_path / "turned.png")
    upright = read_image(tmp_path / "turned.png", upright=True)
    assert stored.shape == (20, 30, 3) and upright.shape == (30, 20, 3)
    np.testing.assert_array_equal(upright, np.rot90(stored, -1))
    np.testing.assert_array_equal(decode_upload((tmp_path / "turned.png").read_bytes()), upright)


def test_a_report_or_comparison_never_deletes_a_users_file_in_its_folder(capsys, evaluated_run, tmp_path):
    rep, cmp = tmp_path / "rep", tmp_path / "cmp"
    assert _evaluate_main()(["report", str(evaluated_run), "--out", str(rep), "--gallery", "1"]) == 0
    assert _evaluate_main()(["compare", str(evaluated_run), "--out", str(cmp)]) == 0
    for folder, argv in ((rep, ["report", evaluated_run, "--out", rep]), (cmp, ["compare", evaluated_run, "--out",
                                                                                cmp])):
        (folder / "notes.txt").write_text("mine")
        clean_error(capsys, _evaluate_main(), argv, "notes.txt", "would delete")
        assert (folder / "notes.txt").read_text() == "mine"
    (rep / "notes.txt").unlink()
    (rep / "sub").mkdir()  # a folder of one's own inside a report: replacing the report would delete it
    clean_error(capsys, _evaluate_main(), ["report", evaluated_run, "--out", rep], "sub", "would delete")


def test_runs_go_beside_runs_and_groups_keep_their_folds(capsys, folded_group, evaluated_run, demo_version,
                                                         tmp_path):
    _, group = folded_group
    copy = tmp_path / "grp"
    shutil.copytree(group, copy)
    before = snapshot(copy)
    # one run does not replace a group's fold, nor start inside a group or inside a run
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, copy, "output.name=fold0",
                                                        "output.exist_ok=true")], "is a k-fold group",
                f"resume={copy.resolve()}")
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, copy, "output.name=extra")],
                "is a k-fold group")
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    clean_error(capsys, _train_main(), [*tiny_overrides(demo_version.path, run, "output.name=inner")],
                "is inside the run folder")
    for argv in (["compare", run, "--out", copy / "cmp"], ["report", run, "--out", copy / "rep"]):
        clean_error(capsys, _evaluate_main(), argv, "is inside the k-fold group")
    assert snapshot(copy) == before and not (run / "inner").exists()


def test_history_reads_what_it_is_given(capsys, folded_group, evaluated_run, tmp_path):
    from evaluate.ensemble import build_ensemble

    _, group = folded_group
    clean_error(capsys, _evaluate_main(), ["history", evaluated_run / "checkpoints" / "best.pt"],
                "is a file, not a run folder", f"give the run folder: {evaluated_run}")
    clean_error(capsys, _evaluate_main(), ["history", evaluated_run, "--out", ""], "--out is empty")
    other = tmp_path / "other"
    shutil.copytree(evaluated_run, other)
    clean_error(capsys, _evaluate_main(), ["history", evaluated_run, "--out", other / "h.png"],
                "is inside the run folder")
    assert not (other / "h.png").exists()
    build_ensemble([group / "fold0", group / "fold1"], tmp_path / "ens", progress=False)
    member = tmp_path / "ens" / "members" / "0-fold0"
    clean_error(capsys, _evaluate_main(), ["history", member], "a member's copy inside the ensemble ens")
    clean_error(capsys, _train_main(), [f"model.weights={member}"], "a member's copy inside the ensemble ens")
    # the app names a group as a group, not as a file
    from evaluate.app_server import app_args

    with pytest.raises(SegLoopError, match="is a k-fold group"):
        app_args([str(group)], str(tmp_path), "best", "cpu")


def test_annotate_predict_checks_the_run_before_asking_label_studio(capsys, evaluated_run, tmp_path, monkeypatch):
    from annotate.__main__ import main as annotate_main
    from tests.netutil import free_port

    run = tmp_path / "bare"
    shutil.copytree(evaluated_run, run, ignore=shutil.ignore_patterns("eval", "predict"))
    # nothing listens there: asked first, the server's absence would be the message
    monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{free_port()}")
    clean_error(capsys, annotate_main, ["predict", "--project", "street", "--run", run],
                "run has no predictions to push", "python -m evaluate predict")


# --------------------------------------------------------------------------------------- ninth fresh-eyes probe
@pytest.mark.parametrize(("override", "words"), [
    ("train.early_stop=5", "'train.early_stop' is a section"),
    ("train.early_stop=null", "must be a mapping"),
    ("data=null", "'data' is a section"),
    ("augment.copy_blob=null", "'augment.copy_blob' is a section"),
    ("schedule=[1]", "got [1] (list)"),
])
def test_a_config_section_set_to_a_value_is_refused(capsys, override, words, tmp_path):
    clean_error(capsys, _train_main(), [override, f"output.runs_dir={tmp_path}"], words, "fix:")
    assert not any(tmp_path.iterdir())


def test_a_section_then_its_key_and_bad_split_ratios_are_refused(capsys, tmp_path):
    from ingest.__main__ import main as ingest_main

    clean_error(capsys, _train_main(), ["train=5", "train.epochs=1"], "an earlier override set to 5")
    for override, words in (("split.ratios=null", "'split.ratios' is a section"),
                            ("split={train: 0.5}", "unknown config key"),
                            ("split.ratios={train: 0.5, val: 0.1, test: 0.1}", "sum to 0.7, not 1")):
        clean_error(capsys, ingest_main, ["build", "--config", "configs/data/demo-80-20.yaml", override,
                                          f"output={tmp_path}"], words)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("key", ["data.train_list", "model.init_from", "model.weights"])
def test_an_empty_path_is_not_taken_for_none(capsys, key, tmp_path):
    clean_error(capsys, _train_main(), [f"{key}=''", f"output.runs_dir={tmp_path}"], f"'{key}' is empty",
                "or null")


def test_compare_leaves_out_and_panoptic_refuses_an_evaluation_older_than_the_run(capsys, evaluated_run,
                                                                                 evaluated_instance_run, tmp_path):
    from evaluate.compare import compare_runs

    run = tmp_path / "later"
    shutil.copytree(evaluated_run, run)
    path = run / "eval" / "test" / "metrics.json"
    metrics = json.loads(path.read_text())
    path.write_text(json.dumps({**metrics, "epoch": metrics["epoch"] - 1}))
    rows, _ = compare_runs([run, evaluated_run])
    assert rows[0].note and "trained on since" in rows[0].note and rows[0].values["test mIoU"] is None
    assert rows[1].note is None and rows[1].values["test mIoU"] == pytest.approx(metrics["mIoU"])
    capsys.readouterr()
    assert run_cli(_evaluate_main(), ["compare", str(run)]) == 0
    assert "trained on since" in capsys.readouterr().err
    inst, _ = evaluated_instance_run
    clean_error(capsys, _evaluate_main(), ["panoptic", "--semantic", run, "--instance", inst, "--out",
                                           tmp_path / "pan"], "--semantic later", "trained on since")
    assert not (tmp_path / "pan").exists()


def test_history_says_a_replaced_ancestor_a_gap_a_nan_and_another_loss(capsys, tiny_run, demo_version, tmp_path):
    from evaluate.history import run_history

    a = tmp_path / "a"
    shutil.copytree(tiny_run.run_dir, a)
    argv = ["--quiet", *tiny_overrides(demo_version.path, tmp_path, "output.name=b", "train.epochs=1",
                                       f"model.weights={a}")]
    assert _train_main()(argv) == 0
    b = tmp_path / "b"
    assert json.loads((b / "run.json").read_text())["weights"]["sha256"]
    assert not any("changed" in n for n in run_history(b)["notes"])
    # the ancestor trained again (its best.pt is another file now), and a start beyond its logged epochs
    (a / "checkpoints" / "best.pt").write_bytes((a / "checkpoints" / "best.pt").read_bytes() + b"\0")
    notes = " ".join(run_history(b)["notes"])
    assert "its content changed since" in notes
    info = json.loads((b / "run.json").read_text())
    (b / "run.json").write_text(json.dumps({**info, "weights": {**info["weights"], "epoch": 7}}))
    assert "the history has a gap" in " ".join(run_history(b)["notes"])
    (b / "run.json").write_text(json.dumps(info))
    # a diverged epoch: no NaN in the figures (and --json stays JSON)
    logged = (b / "metrics.jsonl").read_text()
    rows = [json.loads(x) for x in logged.splitlines()]
    rows[-1]["train_loss"] = float("nan")
    (b / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    capsys.readouterr()
    assert run_cli(_evaluate_main(), ["history", str(b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in --json"))
    assert any("not a finite number" in n for n in out["notes"])
    # another loss: the drop is of the last run alone
    (b / "metrics.jsonl").write_text(logged)
    (b / "config.yaml").write_text((b / "config.yaml").read_text().replace("name: cross_entropy", "name: dice"))
    figures = run_history(b)
    assert any("their losses do not compare" in n for n in figures["notes"])
    assert figures["first_loss"]["epoch"] > figures["runs"][0]["epochs"][-1]


def test_history_out_in_a_run_is_only_its_own_plot(capsys, evaluated_run, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(evaluated_run, run)
    clean_error(capsys, _evaluate_main(), ["history", run, "--out", run / "metrics.jsonl.png"],
                "holds only what SegLoop writes")
    (tmp_path / "d.png").mkdir()
    clean_error(capsys, _evaluate_main(), ["history", run, "--out", tmp_path / "d.png"], "is a folder")
    capsys.readouterr()
    assert run_cli(_evaluate_main(), ["history", str(run), "--out", str(run / "history.png")]) == 0


def test_early_stopping_names_the_peak_run_json_records(capsys, demo_version, tmp_path):
    argv = tiny_overrides(demo_version.path, tmp_path, "output.name=es", "train.epochs=4",
                          "train.early_stop.patience=1", "train.early_stop.min_delta=0.9")
    capsys.readouterr()
    assert _train_main()(argv) == 0
    out = capsys.readouterr().out
    info = json.loads((tmp_path / "es" / "run.json").read_text())
    assert f"its peak {info['best_value']:.4f} was at epoch {info['best_epoch']}" in out


def test_last_finds_fold_runs_and_a_folder_that_is_no_run_is_said(folded_group, tmp_path):
    from core.runs import resolve_run

    _, group = folded_group
    assert resolve_run("last", group.parent).parent == group
    (tmp_path / "plain").mkdir()
    with pytest.raises(SegLoopError, match="is not a run folder"):
        from evaluate.runner import evaluate_run

        evaluate_run(tmp_path / "plain", progress=False)


def test_an_ensemble_keeps_only_the_reasons_of_what_it_kept(folded_group, tmp_path):
    from core.config import read_yaml
    from core.runs import save_checkpoint
    from evaluate.ensemble import build_ensemble
    from train.checkpoint import load_checkpoint

    _, group = folded_group
    for f in ("fold0", "fold1"):  # members whose configs give reasons
        shutil.copytree(group / f, tmp_path / f)
        path = tmp_path / f / "checkpoints" / "best.pt"
        ckpt = load_checkpoint(path)
        ckpt["config"]["why"] = {"model.name": "tiny", "train.epochs": "one is enough"}
        save_checkpoint(path, ckpt)
    build_ensemble([tmp_path / "fold0", tmp_path / "fold1"], tmp_path / "ens", progress=False)
    why = read_yaml(tmp_path / "ens" / "config.yaml")["why"]
    assert "model.name" not in why and why.get("train.epochs") == "one is enough"
