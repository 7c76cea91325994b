"""Imports, pre-annotation pushes and exports against the real Label Studio, with bad input and real network faults.

The faults are real: a TCP proxy in front of the server forwards each request, lets the server answer, and then
drops the connection instead of passing the answer on (the worst case: the server acted, the client cannot know).
The client must retry with backoff, ask the server what landed, and send nothing twice."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from annotate.client import LabelStudio
from annotate.project import (
    ensure_project,
    export_snapshot,
    import_images,
    labelled_count,
    prediction_version,
    push_predictions,
)
from core.errors import SegLoopError
from core.fsio import save_png, sha256_file, write_json_atomic
from ingest.labelstudio import read_snapshot
from ingest.taxonomy import load_taxonomy
from tests.conftest import ROOT

N = 20


class DroppingProxy:
    """Forwards TCP connections to ``target``; the connections numbered in ``drop`` (1-based) are forwarded, the
    server's whole answer is read, and the client's connection is then closed without it. The connections in
    ``delay`` reach the server only that many seconds after they were opened (a server slow to act on them)."""

    def __init__(self, target: tuple[str, int], drop: set[int], delay: dict[int, float] | None = None) -> None:
        self.target, self.drop, self.delay = target, drop, delay or {}
        self.count = self.dropped = 0
        self.late_answered = threading.Event()  # the server answered every delayed connection
        self.late_left = len(self.delay)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.count += 1
                doomed = self.count in self.drop
                delay = self.delay.get(self.count, 0.0)
            threading.Thread(target=self._handle, args=(client, doomed, delay), daemon=True).start()

    def _handle(self, client: socket.socket, doomed: bool, delay: float = 0.0) -> None:
        time.sleep(delay)  # the request waits in the socket's buffer, even after the client gave up on it
        upstream = socket.create_connection(self.target)

        def pipe(src: socket.socket, dst: socket.socket | None, half_close: bool = True) -> None:
            try:
                while data := src.recv(65536):
                    if dst is not None:
                        dst.sendall(data)
            except OSError:
                pass
            finally:
                if dst is not None and half_close:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)

        # a late request reaches the server whole, as if the client were still waiting for the answer
        up = threading.Thread(target=pipe, args=(client, upstream, not delay), daemon=True)
        up.start()
        pipe(upstream, None if doomed else client)  # the server's answer: passed on, or swallowed
        if delay:
            with self.lock:
                self.late_left -= 1
                if not self.late_left:
                    self.late_answered.set()
        if doomed:
            with self.lock:
                self.dropped += 1
            client.shutdown(socket.SHUT_RDWR)
        client.close()
        upstream.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def city(label_studio):
    from ingest.demo import generate

    return generate(label_studio["files_root"] / "scale_city", n=N, seed=3, size=(128, 64), progress=False)


def _images(city: Path) -> list[Path]:
    return sorted(city.glob("leftImg8bit/*/*/*_leftImg8bit.png"))


def _client(label_studio, port: int | None = None) -> LabelStudio:
    url = f"http://127.0.0.1:{port}" if port else label_studio["url"]
    return LabelStudio(url, label_studio["token"], retries=4, backoff=0.05)


def _proxy(label_studio, drop: set[int], delay: dict[int, float] | None = None) -> DroppingProxy:
    host, port = label_studio["url"].removeprefix("http://").split(":")
    return DroppingProxy((host, int(port)), drop, delay)


def _run_with_predictions(run: Path, files: list[Path]) -> Path:
    """A run folder with one prediction set: road below, a car box in the middle, in ``evaluate predict``'s layout."""
    tax = load_taxonomy("cityscapes")
    out = run / "predict" / "pool"
    (out / "pred").mkdir(parents=True)
    index = {}
    for f in files:
        sha = sha256_file(f)
        pred = np.full((64, 128), tax.index_of("road"), np.uint8)
        pred[:20] = tax.index_of("sky")
        pred[25:45, 40:80] = tax.index_of("car")
        save_png(out / "pred" / f"{sha}.png", pred)
        index[sha] = {"image": str(f), "prediction": f"pred/{sha}.png", "uncertainty": None}
    write_json_atomic(out / "index.json", {"run": run.name, "classes": tax.names, "images": index})
    return run


def _predictions_per_task(client: LabelStudio, project: dict, version: str) -> list[int]:
    return [sum(p["model_version"] == version for p in client.get("/api/predictions", task=t["id"]))
            for t in client.iter_tasks(project["id"], include="id")]


def _task_hashes(client: LabelStudio, project: dict) -> list[str]:
    tasks = list(client.iter_tasks(project["id"], include="id,data"))
    assert all("sha256" in t["data"] for t in tasks), [t for t in tasks if "sha256" not in t["data"]]
    return [t["data"]["sha256"] for t in tasks]


def test_duplicates_are_imported_once_and_reported(label_studio, city, tmp_path):
    client = _client(label_studio)
    project, _ = ensure_project(client, "scale-duplicates", load_taxonomy("cityscapes"), ["polygon", "brush"])
    files = _images(city)
    copy = city / "leftImg8bit" / "copy_of_first.png"  # the same image under another name, in the served folder
    shutil.copy(files[0], copy)
    listing = [*files, files[3], copy]
    counts = import_images(client, project, listing, batch=7)
    assert counts["added"] == N and counts["skipped"] == 0
    assert sorted(counts["duplicates"]) == sorted([(str(files[3]), str(files[3])), (str(copy), str(files[0]))])
    hashes = _task_hashes(client, project)
    assert len(hashes) == N == len(set(hashes))
    again = import_images(client, project, files)
    assert again["added"] == 0 and again["skipped"] == N
    assert len(_task_hashes(client, project)) == N


@pytest.mark.parametrize("upload", [False, True], ids=["local-files", "upload"])
def test_import_resumes_after_dropped_connections(label_studio, city, upload):
    direct = _client(label_studio)
    project, _ = ensure_project(direct, f"scale-import-faults-{int(upload)}", load_taxonomy("cityscapes"),
                                ["polygon", "brush"])
    files = _images(city)
    # local files: 1 storages GET, 2 storage POST, 3 task listing, 4.. imports of 5 tasks each: the 2nd import is
    # dropped after the server took it, then the listing that asks which images landed. Uploads: 1 listing, then
    # per image an upload, a GET and a PATCH: the 2nd upload is dropped after the server made its task, then the
    # listing that looks for that task
    proxy = _proxy(label_studio, drop={5, 6})
    try:
        counts = import_images(_client(label_studio, proxy.port), project, files, batch=5, upload=upload)
    finally:
        proxy.close()
    assert proxy.dropped == 2
    assert counts["added"] == N
    hashes = _task_hashes(direct, project)
    assert sorted(hashes) == sorted(sha256_file(f) for f in files)  # every image once, none twice


def test_push_resumes_after_dropped_connections_and_never_pushes_twice(label_studio, city, tmp_path):
    direct = _client(label_studio)
    tax = load_taxonomy("cityscapes")
    project, _ = ensure_project(direct, "scale-push-faults", tax, ["polygon", "brush"])
    files = _images(city)
    import_images(direct, project, files)
    run = _run_with_predictions(tmp_path / "run-a", files)
    # connection 1 lists the tasks; then one POST per task (batch_bytes=1): drop the 4th push after the server
    # stored it, then the question which tasks got theirs, then the 9th connection
    proxy = _proxy(label_studio, drop={5, 6, 10})
    try:
        pushed = push_predictions(_client(label_studio, proxy.port), project, run, tax, batch_bytes=1)
    finally:
        proxy.close()
    assert proxy.dropped == 3
    assert pushed == {"predicted": N, "without_prediction": 0, "already_predicted": 0}
    version = prediction_version(run)
    assert version.startswith(run.name + "@")
    assert _predictions_per_task(direct, project, version) == [1] * N
    pred = direct.get("/api/predictions", task=next(direct.iter_tasks(project["id"], include="id"))["id"])[0]
    assert {r["type"] for r in pred["result"]} == {"brushlabels", "polygonlabels"}  # stuff brushed, the car outlined

    # a second push of the same run (a rerun after a crash) adds nothing
    again = push_predictions(direct, project, run, tax)
    assert again == {"predicted": 0, "without_prediction": 0, "already_predicted": N}
    assert _predictions_per_task(direct, project, version) == [1] * N

    # the run retrained under the same name (a new best checkpoint): its predictions are pushed again, once
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "best.pt").write_bytes(b"weights of the retrained model")
    retrained = prediction_version(run)
    assert retrained != version and retrained.startswith(run.name + "@")
    assert push_predictions(direct, project, run, tax)["predicted"] == N
    assert push_predictions(direct, project, run, tax)["predicted"] == 0
    assert _predictions_per_task(direct, project, retrained) == [1] * N
    assert _predictions_per_task(direct, project, version) == [1] * N


def test_push_fails_cleanly_when_the_connection_never_recovers(label_studio, city, tmp_path):
    direct = _client(label_studio)
    tax = load_taxonomy("cityscapes")
    project, _ = ensure_project(direct, "scale-push-down", tax, ["polygon", "brush"])
    files = _images(city)[:4]
    import_images(direct, project, files)
    run = _run_with_predictions(tmp_path / "run-b", files)
    proxy = _proxy(label_studio, drop=set(range(2, 100)))
    try:
        with pytest.raises(SegLoopError, match="unreachable|broke"):
            push_predictions(LabelStudio(f"http://127.0.0.1:{proxy.port}", label_studio["token"], retries=2,
                                         backoff=0.01), project, run, tax)
    finally:
        proxy.close()
    # at most once, never twice
    assert all(n <= 1 for n in _predictions_per_task(direct, project, prediction_version(run)))


def test_export_through_the_snapshot_api(label_studio, city, tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    from simulate_labeler import label_tasks

    client = _client(label_studio)
    project, _ = ensure_project(client, "scale-export", load_taxonomy("cityscapes"), ["polygon", "brush"])
    import_images(client, project, _images(city))
    assert label_tasks(client, project, n=6) == 6
    snap = export_snapshot(client, project, tmp_path / "snapshots", poll=0.2)
    assert labelled_count(snap) == 6
    body = json.loads(snap.read_text())
    assert body["project"] == "scale-export" and len(body["tasks"]) == N
    tasks, _ = read_snapshot(snap)
    assert sum(bool(t["annotations"]) for t in tasks) == 6
    assert client.get(f"/api/projects/{project['id']}/exports") == []  # the server-side export was removed
    assert not list(snap.parent.glob(".export.*"))  # no temporary file left behind


def test_an_import_that_times_out_is_not_resent_while_the_server_is_still_storing_it(label_studio, city):
    direct = _client(label_studio)
    project, _ = ensure_project(direct, "scale-import-timeout", load_taxonomy("cityscapes"), ["polygon", "brush"])
    files = _images(city)
    # connections 1-3: storages GET, storage POST, task listing; 4: the first import of 5 tasks, which reaches the
    # server only after the client gave up waiting. The first question "what landed?" hears "nothing"; the answer
    # is taken only once two questions, `settle` seconds apart, agree, by then the server has stored the batch
    proxy = _proxy(label_studio, drop=set(), delay={4: 2.0})
    client = LabelStudio(f"http://127.0.0.1:{proxy.port}", label_studio["token"], retries=4, backoff=0.05)
    client.bulk_timeout, client.settle = 1.0, 3.0
    try:
        counts = import_images(client, project, files, batch=5, upload=False)
        assert proxy.late_answered.wait(60)  # the late batch was stored before the count below
    finally:
        proxy.close()
    assert counts["added"] == N
    hashes = _task_hashes(direct, project)
    assert sorted(hashes) == sorted(sha256_file(f) for f in files)  # the late batch landed once, nothing twice


def test_an_image_outside_the_served_folder_stops_the_import_before_anything_is_sent(label_studio, city, tmp_path):
    client = _client(label_studio)
    project, _ = ensure_project(client, "scale-outside", load_taxonomy("cityscapes"), ["polygon", "brush"])
    outside = tmp_path / "elsewhere.png"
    shutil.copy(_images(city)[0], outside)
    with pytest.raises(SegLoopError, match="outside the folder Label Studio serves") as e:
        import_images(client, project, [*_images(city), outside], batch=2)
    assert str(outside) in str(e.value)
    assert list(client.iter_tasks(project["id"], include="id")) == []  # no batch went before the bad path


def test_a_truncated_export_never_becomes_a_snapshot(tmp_path):
    from annotate.project import _check_json_list

    whole = json.dumps([{"id": i, "data": {"image": f"{i}.png"}, "annotations": []} for i in range(50)]).encode()
    part = tmp_path / "export.part"
    part.write_bytes(whole)
    _check_json_list(part, {"title": "p"})
    for broken in (whole[: len(whole) - 40], whole[:-1], b'{"detail": "not an export"}', b"[1, 2] trailing"):
        part.write_bytes(broken)
        with pytest.raises(SegLoopError, match="not a complete JSON list"):
            _check_json_list(part, {"title": "p"})
