"""The labeling loop against a real Label Studio server (started once per session by the `label_studio` fixture)."""

import json
import shutil
import stat

import numpy as np
import pytest

from annotate.client import LabelStudio
from annotate.project import ensure_project, export_snapshot, import_images, prediction_version, push_predictions
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
    assert first["added"] == 6 and again == {"images": 6, "added": 0, "skipped": 6, "duplicates": []}
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
            # the polygon's corners fall on pixel corners: it covers exactly the pixels whose centres are inside
            expected[h // 2:3 * h // 4, w // 4:w // 2] = TAX.index_of("car")
            np.testing.assert_array_equal(ds.load_semantic(im), expected, err_msg=im["key"])


def test_predictions_become_pre_annotations(client, images, tiny_run):
    from evaluate.predict import predict_images

    folder, _ = images
    project, _ = ensure_project(client, "street", TAX, ["polygon", "brush"])
    predict_images(tiny_run.run_dir, folder, progress=False)
    counts = push_predictions(client, project, tiny_run.run_dir, TAX)
    assert counts == {"predicted": 6, "without_prediction": 0, "already_predicted": 0}
    task = client.tasks(project["id"])[0]
    preds = client.get("/api/predictions", task=task["id"])
    assert preds and preds[-1]["model_version"] == prediction_version(tiny_run.run_dir)
    assert prediction_version(tiny_run.run_dir).startswith(tiny_run.run_dir.name + "@")
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
    records = list((tmp_path / "next" / "next").glob("next-*.json"))
    assert len(records) == 1 and not list((tmp_path / "next").glob("*.json")), "record among the snapshots"
    record = json.loads(records[0].read_text())
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
    from tasks.semantic.labelstudio import semantic_regions as prediction_result

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


# ------------------------------------------------------------------------------------------ security and processes
def test_data_folder_and_database_are_private(label_studio):
    data_dir = label_studio["data_dir"]
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("label_studio.sqlite3", "token", "admin_password", "server.log"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name


def test_stop_signals_only_the_server_it_started(label_studio, tmp_path):
    """A record whose pid now belongs to another program: stop leaves that program alone."""
    import subprocess
    import sys

    from annotate import server

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        folder = tmp_path / "server"
        folder.mkdir()
        (folder / "server.json").write_text(json.dumps({"pid": other.pid, "port": 9, "url": "http://127.0.0.1:9"}))
        assert server.status(folder)["running"] is False
        assert server.stop(folder) is False
        assert other.poll() is None, "stop signalled a process that is not its Label Studio"
        assert not (folder / "server.json").exists()  # the stale record is gone
        # the real server is recognised by its command line
        state = json.loads((label_studio["data_dir"] / "server.json").read_text())
        assert server.is_our_server(state["pid"], label_studio["data_dir"])
        assert not server.is_our_server(state["pid"], folder)
        assert server.status(label_studio["data_dir"])["running"]
    finally:
        other.kill()
        other.wait()


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("argv,option", [
    (["next", "--project", "p", "--run", "r", "--pool", "x", "--k", "0"], "--k"),
    (["next", "--project", "p", "--run", "r", "--pool", "x", "--k", "-1"], "--k"),
    (["next", "--project", "p", "--run", "r", "--pool", "x", "--max-share", "0"], "--max-share"),
    (["server", "start", "--port", "0"], "--port"),
    (["server", "start", "--port", "70000"], "--port"),
])
def test_counts_and_ranges_are_checked(argv, option):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "annotate", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"argument {option}" in proc.stderr and "fix:" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_predict_refuses_a_run_with_other_classes(client, label_studio, tiny_run, monkeypatch, capsys):
    from annotate.__main__ import main
    from core.errors import run_cli

    ensure_project(client, "camvid-labels", load_taxonomy("camvid"), ["brush"])
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio["url"])
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio["token"])
    project = client.project_by_title("camvid-labels")
    with pytest.raises(SegLoopError, match="predicts the classes of taxonomy 'cityscapes'") as e:
        push_predictions(client, project, tiny_run.run_dir, TAX)
    assert "project 'camvid-labels'" in str(e.value) and "not in the project: wall" in str(e.value)
    assert run_cli(main, ["predict", "--project", "camvid-labels", "--run", str(tiny_run.run_dir)]) == 2
    err = capsys.readouterr().err
    assert "camvid-labels" in err and "cityscapes" in err and "fix:" in err
    assert not client.get("/api/predictions", project=project["id"])  # nothing was pushed


# ----------------------------------------------------------------------------------------- exports, uploads
def test_two_exports_in_one_second_both_land_in_order(client, images, tmp_path):
    from ingest.labelstudio import list_snapshots, snapshot_time

    project, _ = ensure_project(client, "street", TAX, ["polygon", "brush"])
    paths = [export_snapshot(client, project, tmp_path) for _ in range(3)]
    assert len(set(paths)) == 3
    assert list_snapshots(tmp_path / "street") == paths  # export order
    times = [snapshot_time(p) for p in paths]
    assert times == sorted(times)


def test_uploaded_images_ingest_from_the_local_media_folder_and_from_downloads(client, label_studio, demo_version,
                                                                               tmp_path, monkeypatch):
    """Images uploaded to Label Studio (as the UI does, and import does for a remote server) are ingested: read
    from the local server's media folder, or downloaded through the API as for a remote server, hash checked."""
    folder = tmp_path / "camera"  # outside the served folder: the images are uploaded
    folder.mkdir()
    truth = {}
    for im in demo_version.images("train")[6:9]:
        shutil.copy(demo_version.image_path(im), folder / demo_version.image_path(im).name)
        truth[demo_version.image_path(im).name] = demo_version.load_semantic(im)
    project, _ = ensure_project(client, "uploaded", TAX, ["polygon", "brush"])
    assert import_images(client, project, folder, upload=True)["added"] == 3
    for task in client.tasks(project["id"]):
        sem = truth[task["data"]["file"].rsplit("/", 1)[-1]]
        h, w = sem.shape
        client.post(f"/api/tasks/{task['id']}/annotations", {"result": [
            {"from_name": "brush", "to_name": "image", "type": "brushlabels", "original_width": w,
             "original_height": h, "image_rotation": 0,
             "value": {"format": "rle", "rle": encode_mask(sem == c), "brushlabels": [TAX.names[c]]}}
            for c in np.unique(sem) if c != 255]})
    shutil.rmtree(folder)  # the originals are gone: only Label Studio has the images now

    def build_from(snap, out):
        cfg = load_data_config(ROOT / "configs/data/default.yaml", [
            "name=uploaded", f"output={out}", "split.mode=ratio",
            f"sources=[{{type: labelstudio, name: up, root: '{snap}', images_root: '{tmp_path / 'none'}', "
            "group: '(.*)'}]"])
        ds = DatasetVersion(build(cfg, progress=False).path)
        ims = [im for s in ("train", "val", "test") for im in ds.images(s)]
        for im in ims:
            name = ds.image_path(im).name.split("-", 1)[1]  # Label Studio prefixes uploads with a random id
            np.testing.assert_array_equal(ds.load_semantic(im), truth[name])
        return ds, ims

    local = export_snapshot(client, project, tmp_path / "local", download=False)
    ds, ims = build_from(local, tmp_path / "v1")
    media = label_studio["data_dir"] / "media"
    assert len(ims) == 3 and all(str(media) in str(ds.image_path(im)) for im in ims)
    remote = export_snapshot(client, project, tmp_path / "remote", download=True)
    downloaded = sorted((remote.parent / "media" / "upload").rglob("*.png"))
    assert len(downloaded) == 3
    ds, ims = build_from(remote, tmp_path / "v2")
    assert all(str(remote.parent / "media") in str(ds.image_path(im)) for im in ims)
    # an export saved from Label Studio's UI (a bare list of tasks): fetch-media downloads its images beside it
    from annotate.__main__ import main

    bare = tmp_path / "ui" / "project-uploaded-at-2026-12-01.json"
    bare.parent.mkdir()
    bare.write_text(json.dumps(client.get(f"/api/projects/{project['id']}/export", exportType="JSON")))
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio["url"])
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio["token"])
    assert main(["fetch-media", "--snapshot", str(bare)]) == 0
    ds, ims = build_from(bare, tmp_path / "v3")
    assert all(str(bare.parent / "media") in str(ds.image_path(im)) for im in ims)
    # a download whose bytes differ from the hash recorded at import is refused, and nothing is kept
    task = client.tasks(project["id"])[0]
    client.patch(f"/api/tasks/{task['id']}", {"data": {**task["data"], "sha256": "0" * 64}})
    with pytest.raises(SegLoopError, match="recorded 000000000000"):
        export_snapshot(client, project, tmp_path / "bad", download=True)
    assert not list((tmp_path / "bad").rglob("*.json")) and not list((tmp_path / "bad").rglob("*.png"))
    client.patch(f"/api/tasks/{task['id']}", {"data": task["data"]})
