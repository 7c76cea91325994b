"""Label Studio export snapshots (``data/labelstudio/<project>/<export time>.json``) as a SegLoop source.

A snapshot is Label Studio's JSON export (a list of tasks), optionally wrapped as ``{"project": ..., "tasks": [...]}``
by ``annotate export``. Snapshot files are named by their UTC export time, ``YYYYmmddTHHMMSS.ffffffZ.json`` (a
``-<n>`` suffix if two exports share a microsecond; the older ``YYYYmmddTHHMMSSZ.json`` form is read too); a project
folder's newest snapshot is the one with the latest export time, and files that do not match the pattern (batch
records, notes) are never taken for a snapshot.

Images: local-file URLs (``/data/local-files/?d=<rel>``) resolve under ``images_root``; uploaded images
(``/data/upload/<project id>/<file>``, Label Studio's form for files dragged into its UI or uploaded by
``annotate import`` to a remote server) resolve under a media folder: the one ``annotate export`` recorded in the
snapshot (the local server's ``media/``, or the copies it downloaded from a remote server), else ``media/`` beside
the snapshot (where ``annotate fetch-media`` downloads a bare export's images), else ``images_root`` (point it at
a server's ``media/`` folder). A task that carries ``data.file`` (set by
``annotate import``) falls back to that file, relative to ``images_root``. The hash recorded at import is checked
against whichever file is read.

Per task, one annotation is used (by default the latest that was not cancelled; tasks with none are skipped). Its
regions are painted in the order Label Studio's editor (1.23) paints a saved annotation: every brush first, then
every polygon, and within each kind in reverse result order, so the FIRST region of a kind in the result is on top.
The editor draws all brush layers below all shape layers (a polygon covers a brush whichever was drawn first) and
lists the regions of each kind last-to-first when none is selected; ``tests/test_labelstudio_ui.py`` checks both
against screenshots of the real editor. Polygons (points in percent of the image) are filled by
the continuous pixel-centre rule (``ingest.polygons``), brushes decoded with SegLoop's RLE decoder. Pixels no
region covers get the ``background`` class, or the ignore value by default. Every region of an instance class is
one instance (its visible pixels). Checks: the image exists and still has the hash recorded at import, the export's
image size matches the file, points are finite and lie in 0..100, labels are known to the taxonomy.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from core.errors import SegLoopError
from core.fsio import image_size, read_json, sha256_file
from ingest.ls_brush import decode_mask
from ingest.polygons import polygon_points, rasterize_polygon
from ingest.records import Annotation, Instance, Record
from ingest.taxonomy import Taxonomy

CHOICES = ("latest", "first")
SNAPSHOT_RE = re.compile(r"^(?P<time>\d{8}T\d{6})(?:\.(?P<frac>\d{1,6}))?Z(?:-(?P<n>\d+))?\.json$")
UPLOAD_PREFIX = "/data/upload/"
# the order the editor paints region kinds in: brushes (one canvas layer each) below shapes (polygons)
PAINT_ORDER = {"brushlabels": 0, "polygonlabels": 1}


def paint_order(kinds: list[str]) -> list[int]:
    """Indices of a result's regions in the order the editor paints them, bottom first: brushes, then polygons,
    each kind from its last region to its first (the first region of a kind ends on top)."""
    return sorted(range(len(kinds)), key=lambda i: (PAINT_ORDER[kinds[i]], -i))


def snapshot_name(when: datetime, n: int = 0) -> str:
    """File name of a snapshot exported at ``when`` (UTC, to the microsecond); ``n`` > 0 breaks a tie."""
    return f"{when.astimezone(UTC):%Y%m%dT%H%M%S.%f}Z" + (f"-{n}" if n else "") + ".json"


def snapshot_time(path: str | Path) -> tuple[datetime, int] | None:
    """(export time, tie-break) encoded in a snapshot's file name, or None when the name is not a snapshot's."""
    m = SNAPSHOT_RE.match(Path(path).name)
    if not m:
        return None
    try:
        when = datetime.strptime(m["time"], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    micro = int((m["frac"] or "0").ljust(6, "0"))
    return when.replace(microsecond=micro), int(m["n"] or 0)


def list_snapshots(folder: str | Path) -> list[Path]:
    """A project folder's snapshots, oldest export first (by the time in the name, never by sorting names)."""
    found = [(t, p) for p in Path(folder).glob("*.json") if p.is_file() and (t := snapshot_time(p)) is not None]
    return [p for _, p in sorted(found, key=lambda tp: (tp[0], tp[1].name))]


def read_snapshot(path: Path) -> tuple[list[dict[str, Any]], Path | None]:
    """(tasks, media folder) of a snapshot: a bare Label Studio export has no media folder; one wrapped by
    ``annotate export`` names it (relative to the snapshot's folder, or absolute)."""
    data = read_json(path, "Label Studio export")
    tasks = data.get("tasks") if isinstance(data, dict) else data
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise SegLoopError("not a Label Studio JSON export (expected a list of tasks)", path=path,
                           fix="export the project as JSON (python -m annotate export --project NAME)")
    media = data.get("media_root") if isinstance(data, dict) else None
    return tasks, (path.parent / media) if media else None


def upload_relpath(path: str, origin: Path | None = None) -> str:
    """``/data/upload/<project>/<file>`` (unquoted URL path) -> ``upload/<project>/<file>``, the file's place under a
    media folder. A path that would climb out of it (``..``, or ``%2e%2e`` before unquoting) is refused: a snapshot
    is a file from elsewhere, and its paths decide where downloads are written."""
    rel = path[path.index(UPLOAD_PREFIX) + len("/data/"):]
    parts = rel.replace("\\", "/").split("/")
    if any(p in ("..", "") for p in parts) or rel.startswith("/"):
        raise SegLoopError(f"uploaded image path {path!r} leaves Label Studio's upload folder", path=origin,
                           fix="re-export the project from Label Studio; do not edit image paths by hand")
    return rel


def task_image_path(task: dict[str, Any], image_key: str, images_root: Path, origin: Path,
                    media_roots: list[Path] | None = None) -> Path:
    """Local path of a task's image (see the module docstring for the forms understood and where each is looked
    for). The first candidate that exists wins; none existing is an error listing every place looked at."""
    data = task.get("data") or {}
    ref, file = data.get(image_key), data.get("file")
    if not ref and not file:
        raise SegLoopError(f"task {task.get('id')} has no image (data.{image_key})", path=origin,
                           fix="remove the task from the project or set the source's image_key")
    candidates: list[Path] = []
    remote = None
    if ref:
        url = urlparse(str(ref))
        path = unquote(url.path)
        if "local-files" in url.path:
            candidates.append(images_root / unquote(parse_qs(url.query).get("d", [""])[0]))
        elif UPLOAD_PREFIX in path:
            rel = upload_relpath(path, origin)  # upload/<project id>/<file>
            candidates += [root / rel for root in (media_roots or [])]
            candidates.append(images_root / rel)
        elif url.scheme in ("http", "https", "s3", "gs"):
            remote = str(ref)
        else:
            candidates.append(Path(path) if Path(path).is_absolute() else images_root / path)
    if file:
        candidates.append(Path(file) if Path(file).is_absolute() else images_root / file)
    for c in candidates:
        if c.is_file():
            return c
    if not candidates:
        raise SegLoopError(f"task {task.get('id')} refers to a remote image {remote}", path=origin,
                           fix="ingest needs local files: serve images through local-file storage")
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise SegLoopError(f"image of task {task.get('id')} not found (looked at {tried})", path=origin,
                       fix="set the source's images_root to the folder Label Studio serves (its media/ folder for "
                           "uploaded images), or export with `python -m annotate export`, which records the local "
                           "server's media folder and downloads uploaded images from a remote one")


def check_task(task: dict[str, Any], path: Path) -> None:
    """The shape every reader of an export relies on: ``data`` an object, ``annotations`` a list of objects, each
    ``result`` a list of objects with an object ``value``; anything else is an error naming the task."""
    where = f"task {task.get('id')}"
    fix = "export the project again as JSON (python -m annotate export --project NAME)"
    if not isinstance(task.get("data", {}), dict):
        raise SegLoopError(f"{where}: 'data' is not an object", path=path, fix=fix)
    anns = task.get("annotations") or []
    if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
        raise SegLoopError(f"{where}: 'annotations' is not a list of objects", path=path, fix=fix)
    for a in anns:
        result = a.get("result") or []
        if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
            raise SegLoopError(f"{where}, annotation {a.get('id')}: 'result' is not a list of region objects",
                               path=path, fix=fix)
        for r in result:
            if not isinstance(r.get("value") or {}, dict):
                raise SegLoopError(f"{where}, region {r.get('id')}: 'value' is not an object", path=path, fix=fix)
            value = r.get("value") or {}
            kind = str(r.get("type", "")).lower()
            if kind in value and not (isinstance(value[kind], list) and all(isinstance(x, str) for x in value[kind])):
                raise SegLoopError(f"{where}, region {r.get('id')}: '{kind}' is not a list of label names",
                                   path=path, fix=fix)


def _pick(task: dict[str, Any], choice: str) -> dict[str, Any] | None:
    anns = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not anns:
        return None
    key = lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0)  # noqa: E731
    anns.sort(key=key)
    return anns[-1] if choice == "latest" else anns[0]


def rasterize_percent_polygon(points: Any, width: int, height: int, origin: str,
                              where: str = "polygon") -> np.ndarray:
    """A Label Studio polygon (percent of the image) filled by the continuous pixel-centre rule."""
    pts = polygon_points(points, origin, where)
    if (pts < 0).any() or (pts > 100).any():
        bad = pts[(pts < 0).any(1) | (pts > 100).any(1)][0].tolist()
        raise SegLoopError(f"polygon point {bad} is outside 0..100 % of the image", path=origin,
                           fix="move the point inside the image in Label Studio")
    # percent -> pixels; rounding to 1e-6 px undoes float noise so vertices on the grid stay on it
    return rasterize_polygon(np.round(pts * [width / 100, height / 100], 6), width, height, "centre", origin)


class LabelStudioSource:
    type = "labelstudio"

    def __init__(self, name: str, root: Path, taxonomy: Taxonomy, images_root: str = ".", image_key: str = "image",
                 value_map: str = "labelstudio", annotation: str = "latest", background: str = "ignore",
                 group: str = r"^(.*?)_", check_hash: bool = True) -> None:
        if annotation not in CHOICES:
            raise SegLoopError(f"source '{name}': annotation must be one of {CHOICES}, got {annotation!r}")
        self.name, self.root, self.taxonomy = name, Path(root), taxonomy
        self.images_root, self.image_key, self.value_map = Path(images_root), image_key, value_map
        self.annotation, self.check_hash = annotation, check_hash
        self.background = taxonomy.ignore_index if background == "ignore" else taxonomy.index_of(background)
        self.group_re = re.compile(group)

    def snapshots(self) -> list[Path]:
        if self.root.is_file():
            return [self.root]
        if not self.root.is_dir():
            raise SegLoopError("Label Studio snapshot not found", path=self.root,
                               fix="export one: python -m annotate export --project NAME")
        files = list_snapshots(self.root)
        if not files:
            raise SegLoopError("no snapshot (<UTC export time>Z.json) in the folder", path=self.root,
                               fix="run `python -m annotate export --project NAME`, or point root at a snapshot file")
        return files[-1:]  # the latest export of the project

    def records(self) -> list[Record]:
        out = []
        for snap in self.snapshots():
            tasks, media = read_snapshot(snap)
            media_roots = ([media] if media else []) + [snap.parent / "media"]
            for task in tasks:
                check_task(task, snap)
                ann = _pick(task, self.annotation)
                if ann is None:
                    continue  # skipped or not yet labelled
                img = task_image_path(task, self.image_key, self.images_root, snap, media_roots)
                m = self.group_re.search(img.stem)
                group = m.group(1) if m and m.groups() else img.stem
                split = (task.get("data") or {}).get("split")
                out.append(Record(f"{self.name}/{task.get('id')}_{img.stem}", self.name, img, [snap], split, group,
                                  extra={"task": task, "annotation": ann, "snapshot": str(snap)}))
        if not out:
            raise SegLoopError("the snapshot has no labelled (non-cancelled) task", path=self.root,
                               fix="label some tasks, then export again")
        return out

    def load(self, rec: Record) -> Annotation:
        task, ann = rec.extra["task"], rec.extra["annotation"]
        where = f"{rec.annotation_files[0]} (task {task.get('id')})"
        expected = (task.get("data") or {}).get("sha256")
        if self.check_hash and expected and sha256_file(rec.image) != expected:
            raise SegLoopError(f"image changed on disk since it was labelled: {rec.image}", path=where,
                               fix="restore the original image, or re-import and re-label it")
        width, height = image_size(rec.image)
        semantic = np.full((height, width), self.background, np.uint8)
        regions: list[tuple[str, int, np.ndarray]] = []
        for res in ann.get("result") or []:
            kind = str(res.get("type", "")).lower()
            if kind not in PAINT_ORDER:
                continue
            value = res.get("value") or {}
            if (res.get("original_width"), res.get("original_height")) != (width, height):
                raise SegLoopError(
                    f"export says the image is {res.get('original_width')}x{res.get('original_height')} but "
                    f"{rec.image} is {width}x{height}", path=where, fix="the file was replaced; re-label it")
            labels = value.get(kind) or []
            if len(labels) != 1:
                raise SegLoopError(f"region {res.get('id')} has {len(labels)} labels, expected one", path=where)
            cls = self.taxonomy.map_source_label(self.value_map, labels[0], where)
            if kind == "polygonlabels":
                mask = rasterize_percent_polygon(value.get("points"), width, height, where,
                                                 f"region {res.get('id')} ({labels[0]})")
            else:
                if value.get("format", "rle") != "rle" or "rle" not in value:
                    raise SegLoopError(f"brush region {res.get('id')} has no RLE", path=where)
                mask = decode_mask(value["rle"], width, height, origin=where)
            regions.append((kind, cls, mask))
        regions = [regions[i] for i in paint_order([r[0] for r in regions])]
        for _, cls, mask in regions:
            semantic[mask] = cls
        instances = []
        covered = np.zeros((height, width), bool)
        for _, cls, mask in reversed(regions):  # visible part: what regions painted later do not cover
            visible = mask & ~covered
            covered |= mask
            if self.taxonomy.has_instances(cls) and visible.any():
                instances.append(Instance(cls, visible))
        return Annotation(semantic, instances[::-1])
