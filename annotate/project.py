"""Projects, imports, pre-annotations and exports against a Label Studio server."""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from annotate.client import LIGHT_TASK_FIELDS, ConnectionLost, LabelStudio
from annotate.labeling_config import config_differences, config_labels, labeling_config
from annotate.server import document_root
from core.errors import SegLoopError
from core.fsio import atomic_path, raise_os_error, read_json, sha256_file
from core.runs import INDEX, Run, read_index
from ingest.images import BROWSER_EXTS, list_images
from ingest.labelstudio import UPLOAD_PREFIX, snapshot_name, upload_relpath
from ingest.taxonomy import Taxonomy
from tasks import get as get_task


def snapshot_root() -> Path:
    """Where snapshots and batch records go: data/labelstudio/ (SEGLOOP_SNAPSHOT_ROOT moves it)."""
    default = Path(__file__).resolve().parent.parent / "data" / "labelstudio"
    return Path(os.environ.get("SEGLOOP_SNAPSHOT_ROOT", default))


def records_dir(project_title: str) -> Path:
    """Where ``annotate next`` records its picks: ``data/labelstudio/<project>/next/``, apart from the snapshots."""
    return snapshot_root() / project_title / "next"


def ensure_project(client: LabelStudio, name: str, taxonomy: Taxonomy, tools: list[str]) -> tuple[dict, bool]:
    """The project titled ``name``: created from the taxonomy, or found; a config that drifted is an error."""
    if not 3 <= len(name) <= 50:
        raise SegLoopError(f"project name '{name}' must have 3 to 50 characters (a Label Studio rule)")
    project = client.project_by_title(name)
    if project is not None:
        diffs = config_differences(project["label_config"], taxonomy, tools)
        if diffs:
            raise SegLoopError(
                f"project '{name}' (id {project['id']}) does not match taxonomy '{taxonomy.name}': "
                + "; ".join(diffs[:8]) + (" ..." if len(diffs) > 8 else ""),
                fix="create a project under another --name, or change its labeling config in Label Studio "
                    "(SegLoop never rewrites a project's config)")
        return project, False
    project = client.post("/api/projects", {
        "title": name, "label_config": labeling_config(taxonomy, tools),
        "description": f"SegLoop project, taxonomy '{taxonomy.name}' ({taxonomy.num_classes} classes)"})
    return project, True


LOCAL_PREFIX = "/data/local-files/?d="


def _local_url(path: Path, root: Path) -> str:
    """The URL Label Studio serves ``path`` under (``path`` resolved, ``root`` the served folder)."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise SegLoopError(f"image {path} is outside the folder Label Studio serves ({root})", path=path,
                           fix="move the images under data/ or set SEGLOOP_LOCAL_FILES_ROOT before starting "
                               "the server") from None
    return LOCAL_PREFIX + str(rel)


def ensure_local_storage(client: LabelStudio, project_id: int, folder: Path) -> None:
    """Label Studio serves a local file only under a local storage of the project that contains it."""
    folder = folder.resolve()
    storages = client.get("/api/storages/localfiles", project=project_id)
    if any(Path(s.get("path", "")) == folder or folder.is_relative_to(Path(s.get("path", "/nonexistent")))
           for s in storages):
        return
    client.post("/api/storages/localfiles", {"project": project_id, "path": str(folder), "title": folder.name,
                                             "use_blob_urls": True, "regex_filter": r".*\.(png|jpe?g)$"})


def is_local(client: LabelStudio) -> bool:
    """Whether the client talks to the server ``annotate server`` started here (which serves data/ directly)."""
    from annotate.server import status

    st = status()
    return bool(st.get("running")) and st["url"].rstrip("/") == client.url.rstrip("/")


def import_images(client: LabelStudio, project: dict, images: str | Path | list[Path], extra: dict | None = None,
                  upload: bool | None = None, batch: int = 1000, progress: bool = False) -> dict:
    """Add one task per image not yet in the project (by content hash); returns counts.

    ``images``: a folder, a .txt list of paths, or the paths themselves. The same image listed twice (by content)
    becomes one task; ``duplicates`` names each repeat and the path kept. A local server reads the images in place
    through local-file storage, the tasks sent ``batch`` at a time (a broken connection is resumed by asking the
    server which images landed: none is imported twice); a remote one (or ``upload=True``) gets each image
    uploaded, and the task is then given the image's hash and source path."""
    files = [Path(f) for f in images] if isinstance(images, list) else list_images(images, BROWSER_EXTS)
    if upload if upload is not None else not is_local(client):
        return _upload_images(client, project, files, extra)
    root = document_root()
    files = _resolved(files)
    for f in files:  # every image servable before anything is sent: no half-done import to clean up
        _local_url(f, root)
    common = Path(os.path.commonpath([str(f) for f in {f.parent for f in files}]))
    seen: dict[str, Path] = {}
    duplicates: list[tuple[str, str]] = []
    new: list[dict] = []
    skipped = 0
    sender = _Sender()
    try:
        # the storage, the listing of the project's images and the hashing (which releases the GIL) overlap
        with ThreadPoolExecutor(4) as pool:
            storage = pool.submit(ensure_local_storage, client, project["id"], common)
            listing = pool.submit(project_hashes, client, project["id"])
            hashes = pool.map(sha256_file, files)
            storage.result()
            existing = listing.result()
            for f, sha in tqdm(zip(files, hashes, strict=True), total=len(files), desc="import", unit="image",
                               disable=not progress):
                skipped += _import_one(f, sha, seen, existing, duplicates, new, root, extra)
                if len(new) >= batch:
                    sender.submit(_send_tasks, client, project["id"], new)
                    new = []
        if new:
            sender.submit(_send_tasks, client, project["id"], new)
    finally:
        added = sum(sender.finish())
    return {"images": len(files), "added": added, "skipped": skipped, "duplicates": duplicates}


def _resolved(files: list[Path]) -> list[Path]:
    """Absolute paths without symlinked folders, each folder resolved once (resolving every file is slow)."""
    folders: dict[Path, Path] = {}
    out = []
    for f in files:
        if f.parent not in folders:
            folders[f.parent] = f.parent.resolve()
        out.append(folders[f.parent] / f.name)
    return out


def _import_one(f: Path, sha: str, seen: dict[str, Path], existing: set[str], duplicates: list[tuple[str, str]],
                new: list[dict], root: Path, extra: dict | None) -> int:
    """Queue one image's task unless it repeats an earlier one (recorded in ``duplicates``) or the project has it
    (returns 1: skipped)."""
    if sha in seen:
        duplicates.append((str(f), str(seen[sha])))
        return 0
    seen[sha] = f
    if sha in existing:
        return 1
    url = _local_url(f, root)  # f is resolved already
    new.append({"data": {"image": url, "sha256": sha, "file": url.removeprefix(LOCAL_PREFIX), **(extra or {})}})
    return 0


class _Sender:
    """Runs sends one at a time in a background thread, at most one waiting, so the next batch is prepared (images
    hashed, regions encoded) while the server stores the last one; memory stays bounded by two batches."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1)
        self.pending: Future | None = None
        self.results: list = []

    def submit(self, fn, *args) -> None:
        self._wait()
        self.pending = self.pool.submit(fn, *args)

    def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self.results.append(pending.result())  # a send's error surfaces here

    def finish(self) -> list:
        try:
            self._wait()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return self.results


def project_hashes(client: LabelStudio, project_id: int) -> set[str]:
    """The image hashes of the project's tasks, from the paged listing of ids and data only (no regions)."""
    return {t["data"].get("sha256") for t in client.iter_tasks(project_id, include="id,data")}


def _send_tasks(client: LabelStudio, project_id: int, tasks: list[dict]) -> int:
    """Import ``tasks``; after a broken connection only those the server does not hold yet are sent again."""
    def landed(items: list[dict]) -> set[int]:
        have = project_hashes(client, project_id)
        return {i for i, t in enumerate(items) if t["data"]["sha256"] in have}

    _send_resumably(client, f"/api/projects/{project_id}/import", [json.dumps(t).encode() for t in tasks], landed,
                    tasks)
    return len(tasks)


def _send_resumably(client: LabelStudio, path: str, parts: list[bytes], landed, items: list) -> None:
    """POST ``parts`` as one JSON list; when the connection breaks, wait (exponential backoff), ask the server
    which items landed (``landed(items)`` -> their indices) and send only the others, up to ``client.retries``
    times. Nothing is sent twice, whether the break came before or after the server acted."""
    for attempt in range(client.retries + 1):
        try:
            client.post_json(path, b"[" + b",".join(parts) + b"]", resend=False, timeout=client.bulk_timeout)
            return
        except ConnectionLost as exc:
            if attempt == client.retries:
                raise
            time.sleep(client.backoff * 2**attempt)
            if exc.timed_out:  # the server may still be storing the batch: wait until its answer stops changing
                done = _settled(lambda pending=items: landed(pending), client)
            else:
                done = _ask(lambda pending=items: landed(pending), client)
            parts = [p for i, p in enumerate(parts) if i not in done]
            items = [t for i, t in enumerate(items) if i not in done]
            if not parts:
                return


def _settled(question, client: LabelStudio, max_polls: int = 20):
    """Ask ``question`` every ``client.settle`` seconds until two answers in a row agree: after a timed-out bulk
    request the server may still be committing it, and an early "nothing landed" would send everything twice."""
    answer = _ask(question, client)
    for _ in range(max_polls):
        time.sleep(client.settle)
        again = _ask(question, client)
        if again == answer:
            return answer
        answer = again
    raise SegLoopError(f"Label Studio at {client.url} kept storing a timed-out batch for "
                       f"{max_polls * client.settle:.0f}s", fix="wait until the server is idle, then run the "
                                                                "command again (nothing is sent twice)")


def _ask(question, client: LabelStudio):
    """A read-only question to a server whose connection just broke: retried (it changes nothing)."""
    for attempt in range(client.retries + 1):
        try:
            return question()
        except ConnectionLost:
            if attempt == client.retries:
                raise
            time.sleep(client.backoff * 2**attempt)
    return None


def _upload_images(client: LabelStudio, project: dict, files: list[Path], extra: dict | None) -> dict:
    listing = list(client.iter_tasks(project["id"], include="id,data"))
    existing = {t["data"].get("sha256") for t in listing}
    orphans_before = {t["id"] for t in listing if "sha256" not in t["data"]}
    del listing
    seen: dict[str, Path] = {}
    duplicates: list[tuple[str, str]] = []
    added = skipped = 0
    for f in files:
        sha = sha256_file(f)
        if sha in seen:
            duplicates.append((str(f), str(seen[sha])))
            continue
        seen[sha] = f
        if sha in existing:
            skipped += 1
            continue
        for task_id in _upload_once(client, project["id"], f, orphans_before):
            task = client.get(f"/api/tasks/{task_id}")
            client.patch(f"/api/tasks/{task_id}", {"data": {**task["data"], "sha256": sha, "file": str(f.resolve()),
                                                            **(extra or {})}})
        added += 1
    return {"images": len(files), "added": added, "skipped": skipped, "duplicates": duplicates}


def _upload_once(client: LabelStudio, project_id: int, f: Path, orphans_before: set[int]) -> list[int]:
    """Upload one image, its task ids. When the connection breaks, the task the server may have made from it (a
    task named after the file, not yet given its hash, that was not there before this import) is taken instead of
    uploading the image again."""
    for attempt in range(client.retries + 1):
        try:
            resp = client.upload(f"/api/projects/{project_id}/import", f.name, f.read_bytes(), resend=False,
                                 return_task_ids="true")
            return resp.get("task_ids") or []
        except ConnectionLost:
            if attempt == client.retries:
                raise
            time.sleep(client.backoff * 2**attempt)
            made = _ask(lambda: [t["id"] for t in client.iter_tasks(project_id, include="id,data")
                                 if "sha256" not in t["data"] and t["id"] not in orphans_before
                                 and str(t["data"].get("image", "")).endswith("-" + f.name)], client)
            if made:
                return made[-1:]
    return []


def _prediction_sets(run_dir: Path) -> list[Path]:
    """The ``index.json`` of every prediction set a run has: its evaluations, then its ``predict/`` sets."""
    return sorted(run_dir.glob(f"eval/*/{INDEX}")) + sorted(run_dir.glob(f"predict/*/{INDEX}"))


def has_predictions(run_dir: Path) -> bool:
    return bool(_prediction_sets(run_dir))


def _prediction_index(run_dir: Path) -> dict[str, tuple[Path, dict, str]]:
    """sha256 -> (folder, entry, task) over every prediction set a run has (eval/<split>/ and predict/<name>/)."""
    out: dict[str, tuple[Path, dict, str]] = {}
    for idx in _prediction_sets(run_dir):
        index = read_index(idx)
        for sha, entry in index["images"].items():
            out[sha] = (idx.parent, entry, index["task"])
    return out


def prediction_version(run_dir: Path) -> str:
    """The ``model_version`` a run's pre-annotations carry: the run's name and a short hash of its checkpoint's
    identity (``checkpoints/best.pt`` size and modification time; a run without one: its prediction index files).
    Retraining a run under the same name changes it, so its new predictions are pushed; pushing the same run again
    keeps it, so nothing is pushed twice."""
    h = hashlib.sha256()
    best = run_dir / "checkpoints" / "best.pt"
    if best.is_file():
        st = best.stat()
        h.update(f"best.pt {st.st_size} {st.st_mtime_ns}".encode())
    else:
        for idx in _prediction_sets(run_dir):
            h.update(str(idx.relative_to(run_dir)).encode() + b"\0" + idx.read_bytes())
    return f"{run_dir.name}@{h.hexdigest()[:10]}"


def check_run_classes(project: dict, taxonomy: Taxonomy, run_dir: Path) -> None:
    """Refuse a run whose classes differ from the labels of each of the project's tools (names both)."""
    labels = config_labels(project["label_config"])
    classes = list(taxonomy.names)
    for tool, pairs in labels.items():
        names = [name for name, _ in pairs]
        if set(names) != set(classes):
            missing = [c for c in classes if c not in names]
            extra = [n for n in names if n not in classes]
            raise SegLoopError(
                f"run {run_dir.name} predicts the classes of taxonomy '{taxonomy.name}' ({', '.join(classes)}) but "
                f"project '{project['title']}' labels ({tool}) are {', '.join(names) or 'none'}"
                + (f"; not in the project: {', '.join(missing)}" if missing else "")
                + (f"; not in the run: {', '.join(extra)}" if extra else ""),
                path=run_dir,
                fix="push a run trained on the project's taxonomy, or create a project from the run's taxonomy "
                    f"(python -m annotate project create --name NAME --taxonomy {taxonomy.path})")


def push_predictions(client: LabelStudio, project: dict, run_dir: Path, taxonomy: Taxonomy,
                     task_ids: set[int] | None = None, batch_bytes: int = 4 << 20, progress: bool = False) -> dict:
    """Pre-annotate the project's tasks from a run's prediction files (matched by image hash).

    The run's classes must be the project's labels: prediction files hold class indices, and pushing them under a
    project with other labels would put regions under wrong or unknown names (Label Studio shows them anyway).
    Predictions go to Label Studio's bulk prediction import, about ``batch_bytes`` of JSON per request, while the
    task listing is read a page at a time, so memory does not grow with the project. The push is resumable: a task
    that already holds a prediction of this run (``model_version``) is skipped, and a connection that breaks
    mid-batch is resumed after asking the server which tasks got theirs, so no task is pre-annotated twice."""
    check_run_classes(project, taxonomy, run_dir)
    tools = [t for t in ("polygon", "brush") if t in config_labels(project["label_config"])]
    index = _prediction_index(run_dir)
    if not index:
        raise SegLoopError(f"run {run_dir.name} has no prediction files", path=run_dir,
                           fix=f"python -m evaluate predict {run_dir} --images DIR (or evaluate run)")
    version = prediction_version(run_dir)
    done = missing = already = 0
    readers: dict[str, Any] = {}  # task -> its Label Studio part (one per push: it caches what it read)
    parts: list[bytes] = []
    ids: list[int] = []
    path = f"/api/projects/{project['id']}/import/predictions"

    def landed(items: list[int]) -> set[int]:
        return {i for i, task_id in enumerate(items) if _has_prediction(client, task_id, version)}

    sender = _Sender()

    def flush() -> None:
        sender.submit(_send_resumably, client, path, list(parts), landed, list(ids))
        parts.clear()
        ids.clear()

    try:
        size = 0
        for task in tqdm(client.iter_tasks(project["id"], include=LIGHT_TASK_FIELDS), desc="pre-annotate", unit="task",
                         disable=not progress):
            if task_ids is not None and task["id"] not in task_ids:
                continue
            hit = index.get(task["data"].get("sha256", ""))
            if hit is None:
                missing += 1
                continue
            if task.get("total_predictions") and _has_prediction(client, task["id"], version):
                already += 1
                continue
            folder, entry, task_name = hit
            if task_name not in readers:
                readers[task_name] = get_task(task_name).labelstudio()
            result, score = readers[task_name].regions(folder, entry, taxonomy, tools)
            part = json.dumps({"task": task["id"], "result": result, "score": score, "model_version": version}).encode()
            parts.append(part)
            ids.append(task["id"])
            size += len(part)
            done += 1
            if size >= batch_bytes:
                flush()
                size = 0
        if parts:
            flush()
    finally:
        sender.finish()
    return {"predicted": done, "without_prediction": missing, "already_predicted": already}


def _has_prediction(client: LabelStudio, task_id: int, model_version: str) -> bool:
    return any(p.get("model_version") == model_version for p in client.get("/api/predictions", task=task_id))


def export_snapshot(client: LabelStudio, project: dict, out_root: Path | None = None,
                    download: bool | None = None, timeout: float = 1800.0, poll: float = 1.0) -> Path:
    """Write ``data/labelstudio/<project>/<UTC export time>.json`` atomically (earlier snapshots stay intact).

    The tasks come from Label Studio's snapshot export (``POST /api/projects/<id>/exports``, polled until built,
    then downloaded): the synchronous ``/export`` answers only once the whole project is serialised and times out
    on large projects. The download streams to disk; the export is then removed from the server. The name carries
    the export time to the microsecond (and a ``-<n>`` suffix should two exports share one), so snapshots order by
    export time whatever their number. Uploaded images (``/data/upload/...``) must be readable by ingest: for the
    local server the snapshot records its media folder; from a remote server (or with ``download=True``) each is
    downloaded through the authenticated API into ``<project>/media/`` beside the snapshots, checked against the
    hash recorded at import, and the snapshot records that folder."""
    folder = (out_root or snapshot_root()) / project["title"]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, part_name = tempfile.mkstemp(prefix=".export.", suffix=".part", dir=folder)
    except OSError as exc:
        raise_os_error(exc, folder)
    part = Path(part_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            _download_export(client, project, fh, timeout, poll)
        _check_json_list(part, project)
        with open(part, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            has_uploads = mm.find(UPLOAD_PREFIX.encode()) >= 0 or mm.find(b"\\/data\\/upload\\/") >= 0
        media_root: str | None = None
        if has_uploads:
            tasks = json.loads(part.read_text(encoding="utf-8"))
            if any(_upload_ref(t) for t in tasks):
                if download if download is not None else not is_local(client):
                    fetched = download_uploads(client, tasks, folder / "media")
                    media_root = "media" if fetched is not None else None
                else:
                    from annotate.server import server_dir

                    media_root = str((server_dir() / "media").resolve())
            del tasks
        when = datetime.now(UTC)
        head_json = json.dumps({"project": project["title"], "project_id": project["id"], "label_studio": client.url,
                                "exported_at": when.isoformat(), "media_root": media_root})
        fd, name = tempfile.mkstemp(prefix=".export.", suffix=".tmp", dir=folder)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out, open(part, "rb") as src:
                out.write(head_json[:-1].encode() + b', "tasks": ')
                shutil.copyfileobj(src, out, 1 << 20)
                out.write(b"}\n")
            return _link_unique(tmp, folder, when)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise_os_error(exc, folder)
    finally:
        part.unlink(missing_ok=True)


def _check_json_list(part: Path, project: dict) -> None:
    """The whole downloaded export must be one JSON list (a truncated or garbled file never becomes a snapshot).
    Parsed in one pass with a decoder that keeps no tasks, so memory holds the file's text, not its objects."""
    body = part.read_bytes()
    head = body[:200]
    try:
        ok = isinstance(json.loads(body, object_hook=lambda _: None), list)
    except (json.JSONDecodeError, UnicodeDecodeError):
        ok = False
    del body
    if not ok:
        raise SegLoopError(f"the export of project {project['title']} is not a complete JSON list of tasks "
                           f"(starts {head!r})", fix="export again; if it persists see the server log "
                                                     "(python -m annotate server status)")


def _download_export(client: LabelStudio, project: dict, fh, timeout: float, poll: float) -> None:
    """Have the server build a snapshot export of every task, wait for it, stream its JSON into ``fh``, remove it."""
    base = f"/api/projects/{project['id']}/exports"
    title = f"segloop-{uuid.uuid4().hex[:12]}"
    try:
        export = client.post(base, {"title": title}, resend=False)
    except ConnectionLost:  # the server may be building it: find it by its title
        export = next((e for e in _ask(lambda: client.get(base), client) or [] if e.get("title") == title), None)
        if export is None:
            export = client.post(base, {"title": title}, resend=False)
    pk = export["id"]
    try:
        deadline = time.monotonic() + timeout
        while export.get("status") != "completed":
            if export.get("status") == "failed":
                raise SegLoopError(f"Label Studio failed to build the export of project {project['title']} "
                                   f"(export {pk})", fix="see the server log (python -m annotate server status)")
            if time.monotonic() > deadline:
                raise SegLoopError(f"the export of project {project['title']} was not built within {timeout:.0f}s "
                                   f"(status {export.get('status')})", fix="wait longer: annotate export --timeout S")
            time.sleep(poll)
            export = client.get(f"{base}/{pk}")
        client.download_to(f"{base}/{pk}/download?exportType=JSON", fh)
    finally:  # the server keeps no export file behind, whether the download worked or not
        with contextlib.suppress(SegLoopError):
            client.delete(f"{base}/{pk}")


def _link_unique(tmp: Path, folder: Path, when: datetime) -> Path:
    """Give the finished file ``tmp`` the first free snapshot name for ``when``. ``os.link`` fails on an existing
    name, so two exports in the same microsecond (even from two processes) both land, under different names."""
    for n in range(1000):
        path = folder / snapshot_name(when, n)
        try:
            os.link(tmp, path)
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise_os_error(exc, path)
    raise SegLoopError("1000 snapshots share one export time", path=folder, fix="remove the surplus snapshots")


def _upload_ref(task: dict) -> str | None:
    """``/data/upload/<project id>/<file>`` of a task whose image was uploaded to Label Studio, else None."""
    ref = (task.get("data") or {}).get("image")
    path = unquote(urlparse(str(ref)).path) if ref else ""
    return path[path.index(UPLOAD_PREFIX):] if UPLOAD_PREFIX in path else None


def download_uploads(client: LabelStudio, tasks: list[dict], media: Path) -> int | None:
    """Download every uploaded image of ``tasks`` into ``media/upload/...`` (Label Studio's own layout); files
    already there with the recorded hash are kept. Returns how many were fetched (None when none is uploaded)."""
    refs = [(t, ref) for t in tasks if (ref := _upload_ref(t))]
    if not refs:
        return None
    fetched = 0
    for task, ref in refs:
        dest = media / upload_relpath(ref)
        expected = (task.get("data") or {}).get("sha256")
        if dest.is_file() and (not expected or sha256_file(dest) == expected):
            continue
        content = client.download(ref)
        got = hashlib.sha256(content).hexdigest()
        if expected and got != expected:
            raise SegLoopError(f"image {ref} of task {task.get('id')} downloaded from {client.url} has SHA-256 "
                               f"{got[:12]}..., the task recorded {expected[:12]}... at import",
                               path=dest, fix="the file on the server changed: re-import and re-label it")
        with atomic_path(dest) as tmp:
            tmp.write_bytes(content)
        fetched += 1
    return fetched


def labelled_count(snapshot: Path) -> int:
    from ingest.labelstudio import read_snapshot

    tasks, _ = read_snapshot(snapshot)  # the one reader of exports: a broken one is named, not a KeyError
    return sum(1 for t in tasks if any(not a.get("was_cancelled") for a in t.get("annotations") or []))


def _manifest(run_dir: Path) -> dict:
    """The manifest of the dataset version a run was trained on (its taxonomy, by path and by class names)."""
    info = Run(run_dir).info()
    try:
        return read_json(Path(info["dataset_path"]) / "manifest.json", "dataset manifest")
    except (KeyError, TypeError):
        raise SegLoopError("run.json names no dataset_path", path=run_dir / "run.json",
                           fix="use a run folder written by python -m train.run") from None


def run_taxonomy(run_dir: Path) -> str:
    """The taxonomy file a run was trained on: its regions are named by that file's classes and colours."""
    try:
        return _manifest(run_dir)["taxonomy"]["path"]
    except (KeyError, TypeError):
        raise SegLoopError("the run's dataset manifest names no taxonomy", path=run_dir,
                           fix="use a run trained on a dataset version built by python -m ingest build") from None


def check_taxonomy_is_the_runs(taxonomy, run_dir: Path) -> None:
    """``--taxonomy`` may only restate the run's classes: prediction files hold the run's class indices."""
    classes = (_manifest(run_dir).get("taxonomy") or {}).get("classes")
    names = [c["name"] if isinstance(c, dict) else str(c) for c in classes or []]
    if names and names != list(taxonomy.names):
        raise SegLoopError(f"taxonomy '{taxonomy.name}' has classes {', '.join(taxonomy.names)}, but run "
                           f"{run_dir.name} was trained on {', '.join(names)}", path=taxonomy.path,
                           fix="leave out --taxonomy (the run's own is used)")
