"""Projects, imports, pre-annotations and exports against a Label Studio server."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import cv2
import numpy as np

from annotate.client import LabelStudio
from annotate.labeling_config import config_differences, config_labels, labeling_config
from annotate.server import document_root
from core.errors import SegLoopError
from core.fsio import atomic_path, raise_os_error, read_json, read_label, sha256_file
from ingest.coco import decode_rle, train_index
from ingest.images import list_images
from ingest.labelstudio import UPLOAD_PREFIX, snapshot_name, upload_relpath
from ingest.ls_brush import encode_mask
from ingest.taxonomy import Taxonomy


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


def _local_url(path: Path, root: Path) -> str:
    try:
        rel = path.resolve().relative_to(root)
    except ValueError:
        raise SegLoopError(f"image {path} is outside the folder Label Studio serves ({root})", path=path,
                           fix="move the images under data/ or set SEGLOOP_LOCAL_FILES_ROOT before starting "
                               "the server") from None
    return "/data/local-files/?d=" + str(rel)


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
                  upload: bool | None = None) -> dict:
    """Add one task per image not yet in the project (by content hash); returns counts.

    ``images``: a folder, a .txt list of paths, or the paths themselves. A local server reads the images in place
    through local-file storage; a remote one (or ``upload=True``) gets each image uploaded, and the task is then
    given the image's hash and source path."""
    files = [Path(f) for f in images] if isinstance(images, list) else list_images(images)
    if upload if upload is not None else not is_local(client):
        return _upload_images(client, project, files, extra)
    root = document_root()
    folders = {f.resolve().parent for f in files}
    common = Path(os.path.commonpath([str(f) for f in folders]))
    ensure_local_storage(client, project["id"], common)
    existing = {t["data"].get("sha256") for t in client.tasks(project["id"])}
    new = []
    for f in files:
        sha = sha256_file(f)
        if sha in existing:
            continue
        existing.add(sha)
        new.append({"data": {"image": _local_url(f, root), "sha256": sha, "file": str(f.resolve().relative_to(root)),
                             **(extra or {})}})
    if new:
        client.post(f"/api/projects/{project['id']}/import", new)
    return {"images": len(files), "added": len(new), "skipped": len(files) - len(new)}


def _upload_images(client: LabelStudio, project: dict, files: list[Path], extra: dict | None) -> dict:
    existing = {t["data"].get("sha256") for t in client.tasks(project["id"])}
    added = 0
    for f in files:
        sha = sha256_file(f)
        if sha in existing:
            continue
        existing.add(sha)
        resp = client.upload(f"/api/projects/{project['id']}/import", f.name, f.read_bytes(), return_task_ids="true")
        for task_id in resp.get("task_ids") or []:
            task = client.get(f"/api/tasks/{task_id}")
            client.patch(f"/api/tasks/{task_id}", {"data": {**task["data"], "sha256": sha, "file": str(f.resolve()),
                                                            **(extra or {})}})
        added += 1
    return {"images": len(files), "added": added, "skipped": len(files) - added}


def _prediction_index(run_dir: Path) -> dict[str, tuple[Path, dict]]:
    """sha256 -> (folder, entry) over every prediction set a run has (eval/<split>/ and predict/<name>/)."""
    out: dict[str, tuple[Path, dict]] = {}
    for idx in sorted(run_dir.glob("eval/*/index.json")) + sorted(run_dir.glob("predict/*/index.json")):
        for sha, entry in read_json(idx)["images"].items():
            out[sha] = (idx.parent, entry)
    return out


def mask_polygons(mask: np.ndarray, width: int, height: int) -> list[tuple[list[list[float]], np.ndarray]]:
    """Outer contours of a mask's connected components as Label Studio polygons (percent coordinates), each with
    the component's own pixels (for its score); specks under 4 pixels are dropped."""
    n, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    out = []
    for k in range(1, n):
        part = comp == k
        contours, _ = cv2.findContours(part.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        c = max(contours, key=cv2.contourArea)
        if cv2.contourArea(c) < 4 or len(c) < 3:
            continue
        pts = c[:, 0, :].astype(np.float64)
        out.append(([[float(x) * 100 / width, float(y) * 100 / height] for x, y in pts], part))
    return out


def prediction_result(pred: np.ndarray, uncertainty: np.ndarray | None, taxonomy: Taxonomy,
                      tools: list[str]) -> tuple[list[dict], float]:
    """Label Studio result regions for a semantic prediction, each scored by 1 - its mean normalised entropy.

    Classes with instances (cars, persons, ...) become one polygon per connected component, an instance each, when
    the project has the polygon tool; other classes become one brush per class (polygons per component when the
    project has no brush)."""
    h, w = pred.shape
    conf = 1 - (uncertainty.astype(np.float32) / 255 if uncertainty is not None else np.zeros_like(pred, np.float32))
    result: list[dict] = []
    for cls in np.unique(pred):
        if cls >= taxonomy.num_classes:
            continue
        mask = pred == cls
        name = taxonomy.classes[int(cls)].name
        score = float(conf[mask].mean())
        base = {"to_name": "image", "original_width": w, "original_height": h, "image_rotation": 0, "score": score}
        as_polygons = "polygon" in tools and (taxonomy.has_instances(int(cls)) or "brush" not in tools)
        if not as_polygons:
            result.append({**base, "from_name": "brush", "type": "brushlabels", "id": f"seg{cls}",
                           "value": {"format": "rle", "rle": encode_mask(mask), "brushlabels": [name]}})
            continue
        for k, (poly, part) in enumerate(mask_polygons(mask, w, h)):
            result.append({**base, "score": float(conf[part].mean()), "from_name": "polygon",
                           "type": "polygonlabels", "id": f"ins{cls}_{k}",
                           "value": {"points": poly, "polygonlabels": [name], "closed": True}})
    return result, float(conf.mean())


def instance_result(results: list[dict], width: int, height: int, taxonomy: Taxonomy,
                    tools: list[str]) -> tuple[list[dict], float]:
    """Label Studio regions for an instance model's detections: one polygon per instance (its mask's largest
    component; a brush when the project has no polygon tool), scored by the detection's own score."""
    out: list[dict] = []
    for k, r in enumerate(sorted(results, key=lambda r: -r["score"])):
        mask = decode_rle(r["segmentation"])
        name = taxonomy.classes[train_index(r["category_id"])].name
        base = {"to_name": "image", "original_width": width, "original_height": height, "image_rotation": 0,
                "score": float(r["score"])}
        if "polygon" in tools:
            parts = mask_polygons(mask, width, height)
            if not parts:
                continue
            poly, _ = max(parts, key=lambda p: int(p[1].sum()))
            out.append({**base, "from_name": "polygon", "type": "polygonlabels", "id": f"inst{k}",
                        "value": {"points": poly, "polygonlabels": [name], "closed": True}})
        else:
            out.append({**base, "from_name": "brush", "type": "brushlabels", "id": f"inst{k}",
                        "value": {"format": "rle", "rle": encode_mask(mask), "brushlabels": [name]}})
    return out, float(np.mean([r["score"] for r in out])) if out else 0.0


def _instance_results(folder: Path, cache: dict[Path, dict]) -> dict:
    """An instance prediction folder's ``instances.json`` by image id (read once per folder)."""
    if folder not in cache:
        by_image: dict = {}
        for r in read_json(folder / "instances.json", "instance predictions (COCO results)"):
            by_image.setdefault(r["image_id"], []).append(r)
        cache[folder] = by_image
    return cache[folder]


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
                     task_ids: set[int] | None = None) -> dict:
    """Pre-annotate the project's tasks from a run's prediction files (matched by image hash).

    The run's classes must be the project's labels: prediction files hold class indices, and pushing them under a
    project with other labels would put regions under wrong or unknown names (Label Studio shows them anyway)."""
    check_run_classes(project, taxonomy, run_dir)
    tools = [t for t in ("polygon", "brush") if t in config_labels(project["label_config"])]
    index = _prediction_index(run_dir)
    if not index:
        raise SegLoopError(f"run {run_dir.name} has no prediction files", path=run_dir,
                           fix=f"python -m evaluate predict {run_dir} --images DIR (or evaluate run)")
    done = missing = 0
    instances: dict[Path, dict] = {}
    for task in client.tasks(project["id"]):
        if task_ids is not None and task["id"] not in task_ids:
            continue
        hit = index.get(task["data"].get("sha256", ""))
        if hit is None:
            missing += 1
            continue
        folder, entry = hit
        pred = read_label(folder / entry["prediction"])
        if "image_id" in entry and (folder / "instances.json").is_file():  # an instance model's detections
            threshold = entry.get("score_threshold", 0.5)
            dets = [r for r in _instance_results(folder, instances).get(entry["image_id"], [])
                    if r["score"] >= threshold]
            result, score = instance_result(dets, pred.shape[1], pred.shape[0], taxonomy, tools)
        else:
            unc = read_label(folder / entry["uncertainty"]) if entry.get("uncertainty") else None
            result, score = prediction_result(pred, unc, taxonomy, tools)
        client.post("/api/predictions", {"task": task["id"], "result": result, "score": score,
                                         "model_version": run_dir.name})
        done += 1
    return {"predicted": done, "without_prediction": missing}


def export_snapshot(client: LabelStudio, project: dict, out_root: Path | None = None,
                    download: bool | None = None) -> Path:
    """Write ``data/labelstudio/<project>/<UTC export time>.json`` atomically (earlier snapshots stay intact).

    The name carries the export time to the microsecond (and a ``-<n>`` suffix should two exports share one), so
    snapshots order by export time whatever their number. Uploaded images (``/data/upload/...``) must be readable
    by ingest: for the local server the snapshot records its media folder; from a remote server (or with
    ``download=True``) each is downloaded through the authenticated API into ``<project>/media/`` beside the
    snapshots, checked against the hash recorded at import, and the snapshot records that folder."""
    tasks = client.get(f"/api/projects/{project['id']}/export", exportType="JSON", download_all_tasks="true")
    if not isinstance(tasks, list):
        raise SegLoopError(f"unexpected export from project {project['title']}: {str(tasks)[:200]}")
    folder = (out_root or snapshot_root()) / project["title"]
    media_root: str | None = None
    if any(_upload_ref(t) for t in tasks):
        if download if download is not None else not is_local(client):
            fetched = download_uploads(client, tasks, folder / "media")
            media_root = "media" if fetched is not None else None
        else:
            from annotate.server import server_dir

            media_root = str((server_dir() / "media").resolve())
    when = datetime.now(UTC)
    body = {"project": project["title"], "project_id": project["id"], "label_studio": client.url,
            "exported_at": when.isoformat(), "media_root": media_root, "tasks": tasks}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".export.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise_os_error(exc, folder)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(body) + "\n")
        return _link_unique(tmp, folder, when)
    except OSError as exc:
        raise_os_error(exc, folder, tmp)
    finally:
        tmp.unlink(missing_ok=True)


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
    data = json.loads(snapshot.read_text())
    return sum(1 for t in data["tasks"] if any(not a.get("was_cancelled") for a in t.get("annotations") or []))
