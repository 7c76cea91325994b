"""SegLoop as Label Studio's ML backend: the real server (``python -m annotate backend``) against the real Label
Studio of the session, and its answers to bad requests."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from annotate.client import LabelStudio
from annotate.labeling_config import labeling_config
from annotate.project import ensure_project, import_images, prediction_version
from core.runs import INDEX, read_index
from ingest.taxonomy import load_taxonomy
from tasks import get as get_task
from tests.conftest import ROOT
from tests.netutil import free_port

TAX = load_taxonomy("cityscapes")
XML = labeling_config(TAX, ["polygon", "brush"])


def _call(url: str, path: str, body: object | bytes | None = None, headers: dict | None = None,
          timeout: float = 120) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json",
                                                                 **(headers or {})})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@contextmanager
def backend(run: Path, log: Path, *args: str, env: dict | None = None):
    """``python -m annotate backend RUN`` on a free port, until the block ends; yields its URL."""
    port = free_port()
    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "annotate", "backend", str(run), "--port", str(port), *args],
                                cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if _call(url, "/health", timeout=2)[0] in (200, 401):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        else:
            raise AssertionError(f"backend did not answer: {log.read_text()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def file_server(root: Path):
    """A plain HTTP server for images given as URLs (not Label Studio: no token may be sent to it)."""
    seen: list[str | None] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # the stdlib names it so
            seen.append(self.headers.get("Authorization"))
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    finally:
        srv.shutdown()


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("tb", "eval", "predict"))
    return dest


def test_protocol_and_bad_requests(evaluated_run, demo_version, tmp_path):
    """Health and setup answer at once; predictions carry the run's version; every bad request is one 4xx with
    a message that says why, and the server keeps serving; 20 concurrent predictions all succeed."""
    run = _copy_run(evaluated_run, tmp_path / "served")
    images = tmp_path / "images"
    images.mkdir()
    for im in demo_version.images("test")[:3]:
        shutil.copy(demo_version.image_path(im), images / demo_version.image_path(im).name)
    (images / "broken.png").write_bytes(b"not an image")
    names = sorted(p.name for p in images.glob("*_leftImg8bit.png"))
    version = prediction_version(run)
    env = {"SEGLOOP_LABEL_STUDIO_DIR": str(tmp_path / "no-server"), "LABEL_STUDIO_URL": "",
           "LABEL_STUDIO_API_KEY": ""}
    with backend(run, tmp_path / "backend.log", env=env) as url, file_server(images) as (files, auth_seen):
        assert _call(url, "/health") == (200, {**_call(url, "/health")[1], "status": "UP", "model_version": version})
        assert _call(url, "/setup", {"project": "4.1700000000", "schema": XML, "hostname": "http://localhost:1",
                                     "access_token": "secret"}) == (200, {"model_version": version})
        tasks = [{"id": i, "data": {"image": f"{files}/{n}"}} for i, n in enumerate(names)]
        status, out = _call(url, "/predict", {"tasks": tasks, "project": "4.1700000000", "label_config": XML})
        assert status == 200 and len(out["results"]) == len(tasks)
        for r in out["results"]:
            assert r["model_version"] == version and r["result"] and 0 <= r["score"] <= 1
            assert {x["from_name"] for x in r["result"]} <= {"brush", "polygon"}
            assert {x["to_name"] for x in r["result"]} == {"image"}
        assert auth_seen and not any(auth_seen), "the token went to a host that is not Label Studio"

        # 20 concurrent requests (cached and fresh), none fails, all agree
        def one(i: int) -> tuple[int, dict]:
            return _call(url, "/predict", {"tasks": [tasks[i % len(tasks)]], "project": "4.1", "label_config": XML})

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(one, range(20)))
        assert all(s == 200 for s, _ in answers)
        for i, (_, a) in enumerate(answers):
            assert a["results"][0]["result"] == out["results"][i % len(tasks)]["result"]

        # a task whose image cannot be fetched or read: its entry says which task, URL and status; others still come
        status, bad = _call(url, "/predict", {"project": "4.1", "label_config": XML, "tasks": [
            {"id": 71, "data": {"image": f"{files}/missing.png"}}, {"id": 72, "data": {"image": f"{files}/broken.png"}},
            {"id": 73, "data": {"image": "s3://bucket/x.png"}}, tasks[0]]})
        assert status == 200
        first, second, third, fine = bad["results"]
        assert "result" not in first and "task 71" in first["error"] and "missing.png" in first["error"] \
            and "404" in first["error"]
        assert "task 72" in second["error"] and "not an image" in second["error"]
        assert "s3://" in third["error"] and "result" not in third
        assert fine["result"] == out["results"][0]["result"]

        cases = [
            ("/predict", b"{not json", 400, "not JSON"),
            ("/predict", b"[1, 2]", 400, "JSON object"),
            ("/predict", {"tasks": "nope", "project": "4.1", "label_config": XML}, 422, "'tasks'"),
            ("/predict", {"tasks": tasks, "project": "abc", "label_config": XML}, 422, "project id"),
            ("/predict", {"tasks": tasks, "project": "4.1", "label_config": "<View><Image"}, 422, "not XML"),
            ("/predict", {"tasks": tasks, "project": "4.1",
                          "label_config": XML.replace('value="road"', 'value="lane marking"')}, 422,
             "not in the run: lane marking"),
            ("/predict", {"tasks": tasks, "project": "4.1", "label_config": XML.replace('name="image"', 'name="i"')},
             422, "<Image name=\"image\""),
            ("/predict", b"x" * (33 << 20), 413, "over 32 MiB"),
            ("/setup", {"project": "5.1", "schema": XML.replace('name="polygon"', 'name="poly"')
                        .replace('name="brush"', 'name="b"')}, 422, "neither"),
            ("/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 99}}, 404, "project 99 is not connected"),
            ("/webhook", {"action": "START_TRAINING", "project": {"id": 4}}, 409, "--learn"),
            ("/webhook", {"project": {"id": 4}}, 422, "'action'"),
        ]
        for path, body, code, words in cases:
            status, answer = _call(url, path, body)
            assert status == code and words in answer["error"], (path, status, answer)
        assert _call(url, "/webhook", {"action": "PROJECT_UPDATED", "project": {"id": 4}})[1]["status"] == "ignored"
        assert _call(url, "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 4}})[1]["new_annotations"] == 1
        assert _call(url, "/health")[0] == 200  # still serving after all of them

        # the run disappears under the server: said, not a traceback
        (run / "run.json").unlink()
        status, answer = _call(url, "/predict", {"tasks": tasks[:1], "project": "4.1", "label_config": XML})
        assert status == 410 and "no longer exists" in answer["error"]
    assert "Traceback" not in (tmp_path / "backend.log").read_text()


def test_cli_refuses_what_it_cannot_serve(tmp_path, evaluated_run):
    """At the terminal, exit 2, before any server starts: a missing run, an option of the other subcommand."""
    py = [sys.executable, "-m", "annotate", "backend"]
    for args, words in [([str(tmp_path / "nope")], "nope"),
                        ([str(evaluated_run), "--project", "x"], "--project"),
                        ([str(evaluated_run), "--epochs", "3"], "--epochs"),
                        (["connect", "--project", "x", "--url", "http://127.0.0.1:1", "--port", "9"], "--port"),
                        (["connect", "--project", "x", "--url", "ftp://x"], "http(s)"),
                        (["connect", "--project", "x"], "--url"),
                        ([str(evaluated_run), "--learn", str(tmp_path / "missing.yaml")], "missing.yaml"),
                        ([str(evaluated_run), "--device", "cuda:7"], "cuda")]:
        proc = subprocess.run([*py, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


def _labelstudio_predictions(client: LabelStudio, task_id: int, version: str) -> list[dict]:
    return [p for p in client.get("/api/predictions", task=task_id) if p.get("model_version") == version]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["evaluated_run", "instance_run"])
def test_connected_backend_serves_what_annotate_predict_pushes(which, request, label_studio, demo_version,
                                                                tmp_path):
    """Connected through the API (``annotate backend connect``), opening a task in Label Studio yields the
    backend's prediction, equal region by region to what the bulk path writes for the same run and image; the
    backend fetches the image from Label Studio with the token and the host /setup named (``localhost``);
    submitted annotations reach its webhook; basic auth is asked for and sent."""
    fixture = request.getfixturevalue(which)
    run = _copy_run(fixture if isinstance(fixture, Path) else fixture.run_dir, tmp_path / f"served-{which}")
    client = LabelStudio(label_studio["url"], label_studio["token"])
    folder = label_studio["files_root"] / f"backend-{which}"
    folder.mkdir()
    for im in demo_version.images("test")[:2]:
        shutil.copy(demo_version.image_path(im), folder / demo_version.image_path(im).name)
    name = f"backend-{which.split('_')[0]}"
    project, _ = ensure_project(client, name, TAX, ["polygon", "brush"])
    import_images(client, project, folder)
    version = prediction_version(run)
    auth = {"BASIC_AUTH_USER": "segloop", "BASIC_AUTH_PASS": "s3cret"}
    # no Label Studio URL nor token of its own: what /setup says is all the backend knows
    env = {**auth, "SEGLOOP_LABEL_STUDIO_DIR": str(tmp_path / "no-server"), "LABEL_STUDIO_URL": "",
           "LABEL_STUDIO_API_KEY": ""}
    cli_env = {**os.environ, **auth, "LABEL_STUDIO_URL": label_studio["url"],
               "LABEL_STUDIO_API_KEY": label_studio["token"]}
    with backend(run, tmp_path / "backend.log", env=env) as url:
        assert _call(url, "/health")[0] == 401  # basic auth asked for
        cmd = [sys.executable, "-m", "annotate", "backend", "connect", "--project", name, "--url", url]
        out = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "connected backend" in out.stdout, out.stderr
        again = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "already connected" in again.stdout, again.stderr

        served = {}
        for task in client.tasks(project["id"]):
            client.get(f"/api/tasks/{task['id']}")  # opening the task, as the labeling UI does
            (pred,) = _labelstudio_predictions(client, task["id"], version)
            served[task["data"]["sha256"]] = pred
        assert len(served) == 2

        # the bulk path on the same run and images
        from evaluate.predict import predict_images

        pset = predict_images(run, folder, name="bulk", progress=False)
        index = read_index(pset / INDEX)
        part = get_task(index["task"]).labelstudio()
        for sha, entry in index["images"].items():
            result, score = part.regions(pset, entry, TAX, ["polygon", "brush"])
            got = served[sha]
            assert len(got["result"]) == len(result)
            for mine, theirs in zip(result, got["result"], strict=True):
                assert {k: theirs[k] for k in mine} == mine
            assert got["score"] == pytest.approx(score)

        # a submitted annotation reaches the webhook Label Studio made for the backend
        task = client.tasks(project["id"])[0]
        client.post(f"/api/tasks/{task['id']}/annotations", {"result": served[task["data"]["sha256"]]["result"],
                                                             "was_cancelled": False})
        basic = {"Authorization": "Basic " + base64.b64encode(b"segloop:s3cret").decode()}
        deadline = time.time() + 30
        while time.time() < deadline:
            status = _call(url, "/status", headers=basic)[1]
            if status["projects"].get(str(project["id"]), {}).get("new_annotations") == 1:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no webhook reached the backend: {status}")
    assert "Traceback" not in (tmp_path / "backend.log").read_text()


@pytest.mark.slow
def test_submitted_labels_train_the_next_served_model(label_studio, demo_city, tiny_run, tmp_path):
    """Past the threshold, a job exports the project, builds the next version, fine-tunes from the served run,
    compares both on validation and serves the new one if it is not worse; a second trigger while it runs is
    refused; a lock left by a crashed backend is taken over."""
    from ingest.demo import generate

    run = _copy_run(tiny_run.run_dir, tmp_path / "runs" / "served")
    custom = generate(label_studio["files_root"] / "learn_city", n=8, seed=11, size=(256, 128), progress=False)
    snapshots = tmp_path / "labelstudio"
    name = "backend-learn"
    config = tmp_path / "learn.yaml"
    config.write_text(yaml.safe_dump({
        "base": str(ROOT / "configs" / "data" / "default.yaml"), "name": "learn", "output": str(tmp_path / "versions"),
        "taxonomy": str(ROOT / "configs" / "taxonomy" / "cityscapes.yaml"),
        "sources": [{"type": "cityscapes", "name": "demo_city", "root": str(demo_city)},
                    {"type": "labelstudio", "name": "custom", "root": str(snapshots / name),
                     "images_root": str(label_studio["files_root"]), "group": r"^(.*?_\d+)_"}],
        "split": {"mode": "source", "ratios": {"train": 0.7, "val": 0.15, "test": 0.15}}}))
    env = {"LABEL_STUDIO_URL": label_studio["url"], "LABEL_STUDIO_API_KEY": label_studio["token"],
           "SEGLOOP_SNAPSHOT_ROOT": str(snapshots), "NO_ALBUMENTATIONS_UPDATE": "1"}
    full_env = {**os.environ, **env}
    client = LabelStudio(label_studio["url"], label_studio["token"])
    subprocess.run([sys.executable, "-m", "annotate", "project", "create", "--name", name], cwd=ROOT, env=full_env,
                   check=True, capture_output=True, timeout=120)
    lock = snapshots / name / "learn" / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "started": "yesterday"}))  # a crashed backend's lock
    before = prediction_version(run)
    with backend(run, tmp_path / "backend.log", "--learn", str(config), "--train-after", "2", "--epochs", "2",
                 "--train-set", "train.log_every=50", env=env) as url:
        out = subprocess.run([sys.executable, "-m", "annotate", "backend", "connect", "--project", name, "--url", url],
                             cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        subprocess.run([sys.executable, "tools/simulate_labeler.py", "--project", name, "--images",
                        str(custom / "leftImg8bit" / "train"), "--n", "2"], cwd=ROOT, env=full_env, check=True,
                       capture_output=True, timeout=300)
        project = client.project_by_title(name)
        # a second, explicit trigger while the job runs is refused and said
        status, answer = _call(url, "/webhook", {"action": "START_TRAINING", "project": {"id": project["id"]}})
        assert status == 409 and "refused" in answer["error"], answer
        deadline = time.time() + 600
        while time.time() < deadline:
            jobs = _call(url, "/status")[1]["training"] or {}
            job = jobs.get(str(project["id"]))
            if job and job["state"] in ("done", "failed"):
                break
            time.sleep(2)
        else:
            raise AssertionError(f"the job did not finish: {jobs}")
        assert job["state"] == "done", job
        assert job["took_over_lock_of"]["pid"] == 2**22 + 12345
        assert not lock.exists()
        assert job["score"]["served"] is not None and job["score"]["new"] is not None
        record = json.loads((snapshots / name / "learn" / f"{job['id']}.json").read_text())
        assert record["state"] == "done" and Path(record["snapshot"]).is_file()
        # two more epochs on more data beat the served two-epoch model here (CPU training is seeded): it is served
        assert job["score"]["new"] >= job["score"]["served"], job
        health = _call(url, "/health")[1]
        assert health["model_version"] == job["served_after"] == prediction_version(Path(job["run"])) != before
        assert "switched" in job["result"]
        # and a task opened now gets the new model's prediction
        extra = label_studio["files_root"] / "learn_city_extra"
        extra.mkdir()
        shutil.copy(next((custom / "leftImg8bit" / "test").rglob("*.png")), extra)
        import_images(client, project, extra)
        task = next(t for t in client.tasks(project["id"]) if "learn_city_extra" in t["data"]["image"])
        client.get(f"/api/tasks/{task['id']}")
        assert _labelstudio_predictions(client, task["id"], health["model_version"])
    assert (run / "run.json").is_file() and not (run / "eval" / "val").exists()  # the served run is left as it was
