"""A dataset version in the YOLO segmentation layout, written from the version's COCO RLE masks.

Ultralytics trains from ``images/<split>/`` and ``labels/<split>/<stem>.txt`` (one object per line: class, then the
polygon's x y pairs normalised to [0, 1]) with a ``data.yaml`` naming the splits and classes. Its own
``convert_coco`` drops holes, joins the parts of one object with seams and does not read RLE; this writer keeps each
mask as it is:

- every part of an object (each outer contour, ``cv2.RETR_CCOMP``) becomes a line of its own, so an occluded car
  cut in two stays two exact pieces instead of one shape with a seam across the occluder;
- each hole is joined to its part's outer ring through a zero-width cut (the ring walks to the hole's nearest
  vertex, around the hole and back), so the filled polygon leaves the hole empty.

Filling the written polygons (``cv2.fillPoly`` at pixel coordinates) gives back each mask; ``tests/test_yolo_data``
checks IoU >= 0.99 per instance. Crowd regions are not objects here: YOLO's loss has no "ignore this region", so a
crowd is left out and its pixels count as background (Mask R-CNN's training leaves them out the same way). A part
whose polygon has fewer than 3 distinct points (a speck of one or two pixels) cannot be drawn by Ultralytics; it is
dropped and counted. Images without objects are written with an empty label file: Ultralytics trains on them as
background images.

YOLO's class ids are the taxonomy's train indices (``names`` in ``data.yaml`` lists every class), so a YOLO
model's class ``k`` is COCO category ``k + 1`` everywhere, with no table to carry; only thing classes have objects,
the others never occur in a label. The export is cached by version: a version is immutable, so its export is written
once, atomically, under ``<cache>/<name@hash>/`` (by default ``cache/yolo/`` beside the versions folder:
``data/cache/yolo/`` for ``data/versions/``) and reused while the version folder its images link to is the one
being exported.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from core.config import dump_yaml
from core.errors import SegLoopError
from core.fsio import atomic_dir, read_json, write_json_atomic
from ingest.coco import decode_rle, train_index
from ingest.version import DatasetVersion

FORMAT = 2  # bumped when the layout or the polygon rule changes: older caches are rebuilt
EXPORT_JSON = "export.json"


def default_cache(ds: DatasetVersion) -> Path:
    """``cache/yolo`` beside the folder that holds the version (``data/versions/x`` -> ``data/cache/yolo``)."""
    return ds.path.resolve().parent.parent / "cache" / "yolo"


@dataclass
class ExportCounts:
    """What an export holds and what it left out, per split."""

    images: int = 0
    background_images: int = 0  # images with no object: empty label files
    objects: int = 0
    lines: int = 0  # polygons written (an object in k parts writes k)
    holes: int = 0
    crowd_skipped: int = 0
    degenerate_dropped: int = 0  # parts with fewer than 3 distinct points
    per_class: dict[str, int] = field(default_factory=dict)


def mask_rings(mask: np.ndarray) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Each part of a mask: its outer contour and its holes, as (N, 2) integer pixel coordinates (x, y)."""
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return []
    h = hierarchy[0]
    parts = []
    for i, c in enumerate(contours):
        if h[i][3] != -1:  # a hole: taken with its parent
            continue
        holes, j = [], h[i][2]
        while j != -1:
            holes.append(contours[j][:, 0].astype(np.int64))
            j = h[j][0]
        parts.append((c[:, 0].astype(np.int64), holes))
    return parts


def join_holes(outer: np.ndarray, holes: list[np.ndarray]) -> np.ndarray:
    """One ring that walks the outer contour and, from the vertex nearest each hole, around that hole and back: the
    cut has zero width, so the filled ring is the part with its holes left empty."""
    ring = outer
    for hole in holes:
        d = ((ring[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(d.argmin()), d.shape)
        loop = np.concatenate([hole[j:], hole[: j + 1]])
        ring = np.concatenate([ring[: i + 1], loop, ring[i:]])
    return ring


def mask_polygons(mask: np.ndarray) -> tuple[list[np.ndarray], int, int]:
    """A mask as YOLO polygons (pixel coordinates): one per part, holes joined in; with the number of holes kept
    and of parts dropped as degenerate."""
    polys, holes, dropped = [], 0, 0
    for outer, part_holes in mask_rings(mask):
        ring = join_holes(outer, part_holes)
        if len(np.unique(ring, axis=0)) < 3:
            dropped += 1
            continue
        polys.append(ring)
        holes += len(part_holes)
    return polys, holes, dropped


def label_line(cls: int, ring: np.ndarray, width: int, height: int) -> str:
    xy = ring.astype(np.float64) / np.array([width, height], np.float64)
    return f"{cls} " + " ".join(f"{v:.6f}" for v in xy.reshape(-1))


def read_label_polygons(path: Path, width: int, height: int) -> list[tuple[int, np.ndarray]]:
    """A YOLO label file's (class, polygon in pixel coordinates) lines."""
    out = []
    for line in path.read_text().splitlines():
        values = line.split()
        if not values:
            continue
        pts = np.array([float(v) for v in values[1:]], np.float64).reshape(-1, 2) * np.array([width, height])
        out.append((int(values[0]), pts))
    return out


def labels_digest(folder: Path, splits: tuple[str, ...]) -> str:
    """One sha256 over every label file of an export (names and contents), and over which images it links: what
    tells a cache that is as SegLoop wrote it from one edited, truncated or thinned by hand."""
    h = hashlib.sha256()
    for split in splits:
        for kind in ("labels", "images"):
            for f in sorted((folder / kind / split).glob("*")) if (folder / kind / split).is_dir() else []:
                h.update(f"{kind}/{split}/{f.name}\n".encode())
                if kind == "labels":
                    h.update(f.read_bytes())
    return h.hexdigest()


def _stem(image: dict[str, Any]) -> str:
    return image["key"].replace("/", "__")


def export_yolo(ds: DatasetVersion, cache: str | Path | None = None, splits: tuple[str, ...] = ("train", "val",
                "test"), progress: bool = True) -> Path:
    """The version's YOLO-seg export (built once, then reused): its folder, holding ``data.yaml``."""
    dest = Path(cache if cache is not None else default_cache(ds)) / ds.version
    info_path = dest / EXPORT_JSON
    source = str(ds.path.resolve())
    if info_path.is_file():
        # the cache is SegLoop's own: a record it cannot read, or labels changed since they were written, are
        # rebuilt from the version (Ultralytics would otherwise drop or misread the changed files quietly)
        try:
            record = read_json(info_path, "YOLO export record")
        except SegLoopError:
            record = {}
        if isinstance(record, dict) and record.get("format") == FORMAT and record.get("source") == source:
            if record.get("labels_sha256") == labels_digest(dest, splits):
                return dest
            print(f"note: the YOLO export of {ds.version} in {dest} was changed since SegLoop wrote it: rebuilt")
    things = {c.index for c in ds.taxonomy.classes if c.has_instances}
    counts: dict[str, ExportCounts] = {}
    with atomic_dir(dest, replace=True) as tmp:
        for split in splits:
            coco = ds.coco(split)
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            by_image: dict[int, list[dict[str, Any]]] = {}
            for a in coco["annotations"]:
                by_image.setdefault(int(a["image_id"]), []).append(a)
            c = counts[split] = ExportCounts()
            for im in tqdm(coco["images"], desc=f"YOLO export {ds.version} {split}", disable=not progress):
                src = ds.image_path(im)
                stem = _stem(im)
                os.symlink(src, tmp / "images" / split / f"{stem}{src.suffix}")
                lines = []
                for a in by_image.get(int(im["id"]), []):
                    if a.get("iscrowd"):
                        c.crowd_skipped += 1
                        continue
                    idx = train_index(a["category_id"])
                    if idx not in things:
                        continue
                    polys, holes, dropped = mask_polygons(decode_rle(a["segmentation"]))
                    c.holes += holes
                    c.degenerate_dropped += dropped
                    if not polys:
                        continue
                    c.objects += 1
                    name = ds.taxonomy.classes[idx].name
                    c.per_class[name] = c.per_class.get(name, 0) + 1
                    lines += [label_line(idx, p, im["width"], im["height"]) for p in polys]
                c.images += 1
                c.background_images += not lines
                c.lines += len(lines)
                (tmp / "labels" / split / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
        # no `download:` key: Ultralytics would fetch a dataset for a missing split
        data = {"path": str(dest.resolve()), **{s: f"images/{s}" for s in splits},
                "names": {c.index: c.name for c in ds.taxonomy.classes}}
        (tmp / "data.yaml").write_text(dump_yaml(data))
        write_json_atomic(tmp / EXPORT_JSON, {"format": FORMAT, "version": ds.version, "source": source,
                                              "labels_sha256": labels_digest(tmp, splits),
                                              "counts": {s: asdict(v) for s, v in counts.items()}})
    return dest
