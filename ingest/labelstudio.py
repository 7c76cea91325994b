"""Label Studio export snapshots (``data/labelstudio/<project>/<timestamp>.json``) as a SegLoop source.

A snapshot is Label Studio's JSON export (a list of tasks), optionally wrapped as ``{"project": ..., "tasks": [...]}``
by ``annotate export``. Per task, one annotation is used (by default the latest that was not cancelled; tasks with
none are skipped). Its regions are painted in order, later ones on top: polygons (points in percent of the image)
are rasterised on the image grid with the same fill as Cityscapes polygons, brushes are decoded with SegLoop's RLE
decoder. Pixels no region covers get the ``background`` class, or the ignore value by default. Every region of an
instance class is one instance (its visible pixels). Checks: the image exists and still has the hash recorded at
import, the export's image size matches the file, points lie in 0..100, labels are known to the taxonomy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
from PIL import Image, ImageDraw

from core.errors import SegLoopError
from core.fsio import image_size, read_json, sha256_file
from ingest.ls_brush import decode_mask
from ingest.records import Annotation, Instance, Record
from ingest.taxonomy import Taxonomy

CHOICES = ("latest", "first")


def load_tasks(path: Path) -> list[dict[str, Any]]:
    data = read_json(path, "Label Studio export")
    tasks = data.get("tasks") if isinstance(data, dict) else data
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise SegLoopError("not a Label Studio JSON export (expected a list of tasks)", path=path,
                           fix="export the project as JSON (python -m annotate export --project NAME)")
    return tasks


def task_image_path(task: dict[str, Any], image_key: str, images_root: Path, origin: Path) -> Path:
    """Local path of a task's image: local-files URLs (``/data/local-files/?d=rel``) resolve under ``images_root``."""
    ref = (task.get("data") or {}).get(image_key)
    if not ref:
        raise SegLoopError(f"task {task.get('id')} has no image (data.{image_key})", path=origin,
                           fix="remove the task from the project or set the source's image_key")
    url = urlparse(str(ref))
    if url.path.endswith("/data/local-files/") or "local-files" in url.path:
        rel = parse_qs(url.query).get("d", [""])[0]
        return images_root / unquote(rel)
    if url.scheme in ("http", "https", "s3", "gs"):
        raise SegLoopError(f"task {task.get('id')} refers to a remote image {ref}", path=origin,
                           fix="ingest needs local files: serve images through local-file storage")
    p = Path(unquote(url.path))
    return p if p.is_absolute() else images_root / p


def _pick(task: dict[str, Any], choice: str) -> dict[str, Any] | None:
    anns = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not anns:
        return None
    key = lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0)  # noqa: E731
    anns.sort(key=key)
    return anns[-1] if choice == "latest" else anns[0]


def rasterize_percent_polygon(points: list, width: int, height: int, origin: str) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
        raise SegLoopError("polygon needs at least 3 [x, y] points", path=origin, fix="fix or delete the region")
    if (pts < 0).any() or (pts > 100).any():
        bad = pts[(pts < 0).any(1) | (pts > 100).any(1)][0].tolist()
        raise SegLoopError(f"polygon point {bad} is outside 0..100 % of the image", path=origin,
                           fix="move the point inside the image in Label Studio")
    # percent -> pixels; rounding to 1e-6 px undoes float noise so integer vertices stay integers
    px = np.round(pts * [width / 100, height / 100], 6)
    img = Image.new("L", (width, height), 0)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in px], fill=1)
    return np.asarray(img).astype(bool)


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
        files = sorted(self.root.glob("*.json"))
        if not files:
            raise SegLoopError("no snapshot *.json in the folder", path=self.root, fix="run annotate export first")
        return files[-1:]  # the newest snapshot of a project folder (timestamped names sort in time order)

    def records(self) -> list[Record]:
        out = []
        for snap in self.snapshots():
            for task in load_tasks(snap):
                ann = _pick(task, self.annotation)
                if ann is None:
                    continue  # skipped or not yet labelled
                img = task_image_path(task, self.image_key, self.images_root, snap)
                if not img.is_file():
                    raise SegLoopError(f"image of task {task.get('id')} not found: {img}", path=snap,
                                       fix="set the source's images_root to the folder Label Studio serves")
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
        regions: list[tuple[int, np.ndarray]] = []
        for res in ann.get("result") or []:
            kind = str(res.get("type", "")).lower()
            if kind not in ("polygonlabels", "brushlabels"):
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
                mask = rasterize_percent_polygon(value.get("points") or [], width, height, where)
            else:
                if value.get("format", "rle") != "rle" or "rle" not in value:
                    raise SegLoopError(f"brush region {res.get('id')} has no RLE", path=where)
                mask = decode_mask(value["rle"], width, height, origin=where)
            semantic[mask] = cls
            regions.append((cls, mask))
        instances = []
        covered = np.zeros((height, width), bool)
        for cls, mask in reversed(regions):  # visible part: what later regions do not cover
            visible = mask & ~covered
            covered |= mask
            if self.taxonomy.has_instances(cls) and visible.any():
                instances.append(Instance(cls, visible))
        return Annotation(semantic, instances[::-1])
