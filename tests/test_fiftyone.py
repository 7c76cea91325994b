"""FiftyOne triage against a real mongod: the loaded dataset, its scores, views, relabel hand-off and bad input."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from core.errors import SegLoopError
from core.fsio import read_label
from core.metrics import confusion, scores_from_matrix
from evaluate.gallery import make_triptychs
from evaluate.results import EvalResults
from fiftyone_views.dataset import field_name, load_run, open_dataset
from fiftyone_views.views import RELABEL_TAG, relabel
from ingest.images import list_images
from tests.conftest import ROOT, fiftyone_subprocess_env


@pytest.fixture(scope="module")
def loaded(fiftyone_db, evaluated_run):
    summary = load_run(evaluated_run, "test", tag_k=2, progress=False)
    return summary, open_dataset(evaluated_run, "test")


def _rows(run):
    with open(run / "eval" / "test" / "per_image.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_samples_carry_segloop_scores_masks_and_instances(loaded, evaluated_run):
    summary, ds = loaded
    res = EvalResults(evaluated_run, "test")
    tax = res.version.taxonomy
    rows = {r["key"]: r for r in _rows(evaluated_run)}
    assert summary["samples"] == len(ds) == len(rows) > 0
    assert summary["instances_from"] == "semantic components"
    anns = res.version.coco("test")["annotations"]
    for sample in ds:
        row = rows[sample["key"]]
        # per-sample scores are SegLoop's own and agree with evaluate's per_image.csv
        assert sample["miou"] == pytest.approx(float(row["mIoU"]), abs=1e-6)
        assert sample["dice"] == pytest.approx(float(row["mDice"]), abs=1e-6)
        assert sample["pixel_acc"] == pytest.approx(float(row["pixel_acc"]), abs=1e-6)
        im = res.image(row)
        label, pred = res.version.load_semantic(im), res.prediction(row)
        iou = scores_from_matrix(confusion(pred, label, tax.num_classes)).iou
        for c in tax.classes:
            got = sample["class_iou"][field_name(c.name)]
            assert (got is None and np.isnan(iou[c.index])) or got == pytest.approx(iou[c.index])
        # the App's masks: train index + 1, ignore -> 0 (drawn transparent)
        gt_mask = read_label(sample["ground_truth"]["mask_path"])
        expect = np.where(label == tax.ignore_index, 0, label.astype(np.int32) + 1)
        assert np.array_equal(gt_mask, expect)
        assert np.array_equal(read_label(sample["prediction"]["mask_path"]), pred.astype(np.int32) + 1)
        # instances: every ground-truth object is a detection; TP + FN counts the non-crowd ones
        mine = [a for a in anns if a["image_id"] == im["id"]]
        gts = sample["gt_instances"]["detections"]
        assert len(gts) == len(mine)
        assert sample["tp"] + sample["fn"] == sum(1 for a in mine if not a["iscrowd"])
        preds = sample["pred_instances"]["detections"]
        assert sample["tp"] + sample["fp"] == sum(d["eval"] != "crowd" for d in preds)
        assert sample["instance_errors"] == sample["fp"] + sample["fn"]
        for d in gts + preds:
            x, y, w, h = d["bounding_box"]
            assert 0 <= x <= 1 and 0 <= y <= 1 and w > 0 and h > 0 and d["mask"].dtype == bool
            assert d["label"] in tax.names
        assert all(0 <= d["confidence"] <= 1 for d in preds)


def test_mask_targets_colours_and_active_fields(loaded):
    _, ds = loaded
    from ingest.taxonomy import load_taxonomy

    tax = load_taxonomy("cityscapes")
    assert ds.default_mask_targets == {c.index + 1: c.name for c in tax.classes}
    scheme = ds.app_config.color_scheme
    road = {t["intTarget"]: t["color"] for t in scheme.default_mask_targets_colors}[tax.index_of("road") + 1]
    assert road == "#{:02x}{:02x}{:02x}".format(*tax.classes[tax.index_of("road")].color) == "#804080"
    assert ds.app_config.active_fields.paths == ["ground_truth", "prediction"]
    assert ds.persistent and ds.info["split"] == "test"


def test_views_are_sorted_reproducible_and_tag_the_worst(loaded, evaluated_run, tmp_path):
    _, ds = loaded
    res = EvalResults(evaluated_run, "test")
    worst3 = res.metrics["worst_classes"][:3]
    expected = {"worst_miou", "worst_instances", "random_100"} | {f"class_{field_name(c)}_fails" for c in worst3}
    assert set(ds.list_saved_views()) == expected
    by_miou = sorted(_rows(evaluated_run), key=lambda r: (float(r["mIoU"]), r["key"]))
    worst = ds.load_saved_view("worst_miou")
    assert worst.values("key") == [r["key"] for r in by_miou]
    errors = ds.load_saved_view("worst_instances").values("instance_errors")
    assert errors == sorted(errors, reverse=True) and all(e > 0 for e in errors)
    cls = field_name(worst3[0])
    ious = ds.load_saved_view(f"class_{cls}_fails").values(f"class_iou.{cls}")
    assert ious == sorted(ious) and None not in ious
    # random_100 holds the same images as the seed-0 triptychs, picked from content hashes
    _, picked, _ = make_triptychs(evaluated_run, n=100, seed=0, out=tmp_path / "t")
    assert ds.load_saved_view("random_100").values("key") == [r["key"] for r in picked]
    # the first tag_k=2 samples of each worst view are tagged for relabeling
    tagged = set(ds.match_tags(RELABEL_TAG).values("key"))
    assert set(worst.limit(2).values("key")) <= tagged
    assert set(ds.match_tags("worst_miou").values("key")) == set(worst.limit(2).values("key"))


def test_relabel_writes_a_list_that_annotate_import_takes(loaded, evaluated_run, label_studio, tmp_path):
    from annotate.client import LabelStudio
    from annotate.project import ensure_project, import_images
    from ingest.taxonomy import load_taxonomy

    _, ds = loaded
    out = relabel(evaluated_run, "worst_miou", k=2, out=tmp_path / "next.txt")
    worst_files = ds.load_saved_view("worst_miou").limit(2).values("filepath")
    assert [str(p) for p in list_images(out["list"])] == worst_files and out["note"] == ""
    record = json.loads((tmp_path / "next.json").read_text())
    assert [i["file"] for i in record["images"]] == worst_files and record["view"] == "worst_miou"
    client = LabelStudio(label_studio["url"], label_studio["token"])
    project, _ = ensure_project(client, "relabel-check", load_taxonomy("cityscapes"), ["polygon", "brush"])
    counts = import_images(client, project, out["list"], upload=True)
    assert counts["added"] == 2
    big = relabel(evaluated_run, "worst_miou", k=10_000, out=tmp_path / "all.txt")
    assert "all of them are used" in big["note"] and len(big["images"]) == len(ds)
    with pytest.raises(SegLoopError, match="(?s)no view 'best'.*worst_miou"):
        relabel(evaluated_run, "best", k=2)


def test_reload_replaces_and_a_failed_reload_keeps_the_previous_dataset(loaded, evaluated_run, tmp_path,
                                                                       monkeypatch):
    import fiftyone as fo

    import fiftyone_views.dataset

    monkeypatch.setattr(fiftyone_views.dataset, "ADD_BATCH", 3)  # samples are added in batches: 3 + 1 here
    run = tmp_path / "copy"
    shutil.copytree(evaluated_run, run)
    first = load_run(run, "test", progress=False)
    again = load_run(run, "test", progress=False)
    assert not first["replaced"] and again["replaced"] and again["samples"] == first["samples"] == len(loaded[1]) > 3
    names = fo.list_datasets()
    assert names.count("copy-test") == 1 and not [n for n in names if n.endswith(".loading")]
    before = open_dataset(run, "test").values("id")
    pred = next((run / "eval" / "test" / "pred").glob("*.png"))
    pred.write_bytes(b"not a png")
    with pytest.raises(SegLoopError, match=pred.name):
        load_run(run, "test", progress=False)
    assert open_dataset(run, "test").values("id") == before
    assert not [n for n in fo.list_datasets() if n.endswith(".loading")]
    assert all(p.is_file() for p in (run / "fiftyone" / "test" / "prediction").glob("*.png"))


def test_bad_input(fiftyone_db, evaluated_run, tmp_path):
    with pytest.raises(SegLoopError, match=r"python -m evaluate run .* --split val"):
        load_run(evaluated_run, "val", progress=False)
    run = tmp_path / "other"
    shutil.copytree(evaluated_run, run)
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    metrics["per_class"] = {("lane" if k == "road" else k): v for k, v in metrics["per_class"].items()}
    metrics["classes"] = list(metrics["per_class"])  # a run of another taxonomy records its own classes
    (run / "eval" / "test" / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(SegLoopError, match="taxonomy 'cityscapes'"):
        load_run(run, "test", progress=False)
    with pytest.raises(SegLoopError, match="fiftyone_views load"):
        open_dataset(evaluated_run, "val")


def test_database_that_cannot_start_says_how_to_move_it(fiftyone_db, evaluated_run, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database folder should be")
    env = fiftyone_subprocess_env(fiftyone_db)
    proc = subprocess.run([sys.executable, "-m", "fiftyone_views", "load", str(evaluated_run), "--db-dir",
                           str(blocker / "db")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "FiftyOne database could not start" in proc.stderr and "--db-dir" in proc.stderr
    assert "FIFTYONE_DATABASE_URI" in proc.stderr


def test_views_cli_lists_views(loaded, evaluated_run, capsys):
    from fiftyone_views.__main__ import main

    assert main(["views", str(evaluated_run)]) == 0
    out = capsys.readouterr().out
    assert "worst_miou" in out and "random_100" in out and "split mIoU" in out


def test_cli_load_then_relabel_in_subprocesses(fiftyone_db, evaluated_run, tmp_path):
    """The commands as the README types them, sharing the session's mongod through its state file."""
    run = tmp_path / "cli"
    shutil.copytree(evaluated_run, run)
    env = fiftyone_subprocess_env(fiftyone_db)

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "fiftyone_views", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    out = cli("load", str(run))
    assert "created FiftyOne dataset 'cli-test'" in out and "view worst_miou" in out and str(fiftyone_db) in out
    assert "replaced FiftyOne dataset 'cli-test'" in cli("load", str(run))
    out = cli("relabel", str(run), "--view", "worst_miou", "--k", "1")
    listed = (run / "relabel" / "test-worst_miou-k1.txt").read_text().split()
    assert "python -m annotate import" in out and len(listed) == 1
    assert listed == open_dataset(run, "test").load_saved_view("worst_miou").limit(1).values("filepath")


def test_abandoned_loading_datasets_are_dropped_by_the_next_load(loaded, evaluated_run, tmp_path):
    """A killed load leaves '<name>.loading'; the next load drops it unless its loader still runs."""
    import os
    import socket

    import fiftyone as fo

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host = socket.gethostname()
    killed = fo.Dataset("killed-test.loading")
    killed.info = {"loader_pid": proc.pid, "loader_host": host}
    killed.save()
    fo.Dataset("older-test.loading")  # from before loads recorded their pid
    elsewhere = fo.Dataset("elsewhere-test.loading")  # another run's load, still running
    elsewhere.info = {"loader_pid": os.getppid(), "loader_host": host}
    elsewhere.save()
    run = tmp_path / "running"
    shutil.copytree(evaluated_run, run)
    load_run(run, "test", progress=False)
    names = fo.list_datasets()
    assert "killed-test.loading" not in names and "older-test.loading" not in names
    assert "elsewhere-test.loading" in names and "running-test" in names
    assert "loader_pid" not in fo.load_dataset("running-test").info
    fo.delete_dataset("elsewhere-test.loading")
    again = fo.Dataset("running-test.loading")
    again.info = {"loader_pid": os.getppid(), "loader_host": host}
    again.save()
    with pytest.raises(SegLoopError, match=f"another load of 'running-test' is running \\(process {os.getppid()}\\)"):
        load_run(run, "test", progress=False)
    assert "running-test.loading" in fo.list_datasets()  # a live load is never dropped
    fo.delete_dataset("running-test.loading")


def test_two_runs_of_one_folder_name_get_their_own_datasets(fiftyone_db, evaluated_run, tmp_path):
    """fold0 of two k-fold groups: neither load replaces the other's dataset, and relabel writes into its own run."""
    a, b = tmp_path / "g1" / "fold0", tmp_path / "g2" / "fold0"
    for run in (a, b):
        shutil.copytree(evaluated_run, run)
    first, second = load_run(a, "test", progress=False), load_run(b, "test", progress=False)
    assert first["dataset"] != second["dataset"] and first["dataset"] == "fold0-test"
    assert open_dataset(a, "test").info["run"] == str(a.resolve())
    assert open_dataset(b, "test").info["run"] == str(b.resolve())
    relabel(b, "worst_miou", 1)
    assert list((b / "relabel").glob("*.txt")) and not (a / "relabel").exists()
    assert not any(t.startswith("sent_to_labeling_") for t in open_dataset(a, "test").distinct("tags"))
