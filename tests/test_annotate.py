"""The labeling loop against a real Label Studio server (started once per session by the `label_studio` fixture)."""

import json
import shutil
import stat

import numpy as np
import pytest

from annotate.client import LabelStudio
from annotate.project import ensure_project, export_snapshot, import_images, push_predictions
from core.errors import SegLoopError
from ingest.ls_brush import encode_mask
from ingest.taxonomy import load_taxonomy
from ingest.version import DatasetVersion, build, load_data_config
from tests.conftest import ROOT
from tests.netutil import LOOPBACK, listening_addresses

TAX = load_taxonomy("cityscapes")


@pytest.fixture(scope="module")
def client(label_studio):
    return LabelStudio(label_studio["url"], label_studio["token"], backoff=0.05)


@pytest.fixture(scope="module")
def images(label_studio, demo_version):
    """Six demo images under the folder Label Studio serves, with their ground-truth semantic masks."""
    folder = label_studio["files_root"] / "pool"
    folder.mkdir()
    truth = {}
    for im in demo_version.images("train")[:6]:
        dst = folder / demo_version.image_path(im).name
        shutil.copy(demo_version.image_path(im), dst)
        truth[dst.name] = demo_version.load_semantic(im)
    return folder, truth


def test_server_is_local_only_and_token_private(label_studio):
    port = int(label_studio["url"].rsplit(":", 1)[1])
    listening = listening_addresses(port)
    assert listening and all(a in LOOPBACK for a in listening), listening
    token_file = label_studio["data_dir"] / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_project_create_is_idempotent_and_drift_is_reported(client):
    p1, created1 = ensure_project(client, "street", TAX, ["polygon", "brush"])
    p2, created2 = ensure_project(client, "street", TAX, ["polygon", "brush"])
    assert created1 and not created2 and p1["id"] == p2["id"]
    with pytest.raises(SegLoopError, match="does not match taxonomy 'camvid'"):
        ensure_project(client, "street", load_taxonomy("camvid"), ["polygon", "brush"])


def test_import_is_idempotent_and_records_hashes(client, images):
    folder, _ = images
    project, _ = ensure_project(client, "street", TAX, ["polygon", "brush"])
    first = import_images(client, project, folder)
    again = import_images(client, project, folder)
    assert first["added"] == 6 and again == {"images": 6, "added": 0, "skipped": 6}
    tasks = client.tasks(project["id"])
    assert len(tasks) == 6 and all(len(t["data"]["sha256"]) == 64 for t in tasks)


def _label_like_a_person(client, project, truth):
    """Brush every class present, plus one overlapping polygon on top (a car box), per task."""
    for task in client.tasks(project["id"]):
        name = task["data"]["file"].split("/")[-1]
        sem = truth[name]
        h, w = sem.shape
        result = [{"from_name": "brush", "to_name": "image", "type": "brushlabels", "original_width": w,
                   "original_height": h, "image_rotation": 0,
                   "value": {"format": "rle", "rle": encode_mask(sem == c), "brushlabels": [TAX.names[c]]}}
                  for c in np.unique(sem) if c != 255]
        result.append({"from_name": "polygon", "to_name": "image", "type": "polygonlabels", "original_width": w,
                       "original_height": h, "image_rotation": 0,
                       "value": {"points": [[25, 50], [50, 50], [50, 75], [25, 75]], "polygonlabels": ["car"],
                                 "closed": True}})
        client.post(f"/api/tasks/{task['id']}/annotations", {"result": result, "was_cancelled": False})


def test_round_trip_annotations_export_ingest(client, images, label_studio, tmp_path):
    folder, truth = images
    project, _ = ensure_project(client, "street", TAX, ["polygon", "brush"])
    _label_like_a_person(client, project, truth)
    snap = export_snapshot(client, project, tmp_path / "snapshots")
    data = json.loads(snap.read_text())
    assert data["project"] == "street" and len(data["tasks"]) == 6
    cfg = load_data_config(ROOT / "configs/data/default.yaml", [
        "name=street", f"output={tmp_path / 'v'}", "split.mode=ratio",
        f"sources=[{{type: labelstudio, name: street, root: '{snap.parent}', "
        f"images_root: '{label_studio['files_root']}', group: '(.*)'}}]"])
    ds = DatasetVersion(build(cfg, progress=False).path)
    for split in ("train", "val", "test"):
        for im in ds.images(split):
            expected = truth[ds.image_path(im).name].copy()
            h, w = expected.shape
            # the polygon's corners fall on pixel centres: PIL fills both edges, as for Cityscapes polygons
            expected[h // 2:3 * h // 4 + 1, w // 4:w // 2 + 1] = TAX.index_of("car")
            np.testing.assert_array_equal(ds.load_semantic(im), expected, err_msg=im["key"])


def test_predictions_become_pre_annotations(client, images, tiny_run):
    from evaluate.predict import predict_images

    folder, _ = images
    project, _ = ensure_project(client, "street", TAX, ["polygon", "brush"])
    predict_images(tiny_run.run_dir, folder, progress=False)
    counts = push_predictions(client, project, tiny_run.run_dir, TAX)
    assert counts == {"predicted": 6, "without_prediction": 0}
    task = client.tasks(project["id"])[0]
    preds = client.get("/api/predictions", task=task["id"])
    assert preds and preds[-1]["model_version"] == tiny_run.run_dir.name
    regions = preds[-1]["result"]
    assert regions and all(r["type"] in ("brushlabels", "polygonlabels") and 0 <= r["score"] <= 1 for r in regions)


def test_failed_export_keeps_earlier_snapshots(client, tmp_path):
    project, _ = ensure_project(client, "street", TAX, ["polygon", "brush"])
    first = export_snapshot(client, project, tmp_path)
    dead = LabelStudio("http://127.0.0.1:9", client.token, retries=1, backoff=0.01)
    with pytest.raises(SegLoopError, match="unreachable after 2 tries"):
        export_snapshot(dead, project, tmp_path)
    assert sorted(p.name for p in (tmp_path / "street").iterdir()) == [first.name]


def test_bad_token(label_studio):
    with pytest.raises(SegLoopError, match="refused the API token"):
        LabelStudio(label_studio["url"], "0" * 40, retries=0).projects()


def test_next_batch_is_uncertain_diverse_and_pre_annotated(client, label_studio, demo_version, tiny_run, tmp_path,
                                                            monkeypatch):
    from annotate.__main__ import main
    from annotate.select import diverse_top_k
    from evaluate.predict import predict_images

    pool = label_studio["files_root"] / "pool_next"
    pool.mkdir()
    for im in demo_version.images("val") + demo_version.images("test"):
        shutil.copy(demo_version.image_path(im), pool / demo_version.image_path(im).name)
    predict_images(tiny_run.run_dir, pool, progress=False)
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio["url"])
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio["token"])
    monkeypatch.setenv("SEGLOOP_SNAPSHOT_ROOT", str(tmp_path))
    ensure_project(client, "next", TAX, ["brush"])
    assert main(["next", "--project", "next", "--run", str(tiny_run.run_dir), "--pool", str(pool), "--k", "4",
                 "--strategy", "entropy"]) == 0
    record = json.loads(next((tmp_path / "next").glob("next-*.json")).read_text())
    picked = record["picked"]
    assert len(picked) == 4 and [p["rank"] for p in picked] == [1, 2, 3, 4]
    cities = [p["group"] for p in picked]
    assert max(cities.count(c) for c in cities) <= 2, "one sequence took over the batch"
    project = client.project_by_title("next")
    tasks = client.tasks(project["id"])
    assert sorted(t["data"]["sha256"] for t in tasks) == sorted(p["sha256"] for p in picked)
    assert all(client.get("/api/predictions", task=t["id"]) for t in tasks)
    # the same pool again: only images not yet in the project are candidates
    assert main(["next", "--project", "next", "--run", str(tiny_run.run_dir), "--pool", str(pool), "--k", "4"]) == 0
    assert len(client.tasks(project["id"])) == 8
    # the diversity rule on its own: the best group may not take everything
    cands = [{"file": f"/x/a_{i}.png", "sha256": str(i), "score": 1 - i / 100} for i in range(6)]
    cands += [{"file": f"/x/b_{i}.png", "sha256": f"b{i}", "score": 0.1} for i in range(3)]
    assert [c["group"] for c in diverse_top_k(cands, 4, max_share=0.5)] == ["a", "a", "b", "b"]


def test_upload_import_for_a_remote_server(client, demo_version, tmp_path):
    """A server that cannot read our disk gets the images uploaded; tasks still carry hash and source path."""
    folder = tmp_path / "elsewhere"  # outside the folder the local server serves
    folder.mkdir()
    for im in demo_version.images("val")[:2]:
        shutil.copy(demo_version.image_path(im), folder / demo_version.image_path(im).name)
    project, _ = ensure_project(client, "remote", TAX, ["brush"])
    assert import_images(client, project, folder, upload=True)["added"] == 2
    assert import_images(client, project, folder, upload=True)["added"] == 0
    tasks = client.tasks(project["id"])
    assert len(tasks) == 2 and all(t["data"]["image"].startswith("/data/upload/") for t in tasks)
    assert all(len(t["data"]["sha256"]) == 64 for t in tasks)


def test_things_become_one_polygon_per_instance():
    from annotate.project import prediction_result

    pred = np.full((40, 60), TAX.index_of("road"), np.uint8)
    pred[5:15, 5:15] = TAX.index_of("car")
    pred[20:30, 30:50] = TAX.index_of("car")
    unc = np.zeros_like(pred)
    unc[20:30, 30:50] = 255  # the second car is maximally uncertain
    result, _ = prediction_result(pred, unc, TAX, ["polygon", "brush"])
    cars = [r for r in result if r["type"] == "polygonlabels"]
    brushes = [r for r in result if r["type"] == "brushlabels"]
    assert len(cars) == 2 and [b["value"]["brushlabels"] for b in brushes] == [["road"]]
    assert sorted(round(c["score"], 3) for c in cars) == [0.0, 1.0]
    only_brush, _ = prediction_result(pred, unc, TAX, ["brush"])
    assert {r["type"] for r in only_brush} == {"brushlabels"} and len(only_brush) == 2
