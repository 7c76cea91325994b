"""Polygon rasterisation: Cityscapes polygon files (``*_gtFine_polygons.json``) and single polygons by rule.

Two fill rules exist because two tools define what a polygon covers differently:

- ``cityscapes``: cityscapesScripts' own (PIL's ``ImageDraw.polygon``: vertices are pixel indices, both edges
  filled). Cityscapes ground truth was made with it, so Cityscapes files must keep it to match the published
  labelIds / instanceIds images.
- ``centre``: the continuous rule of a drawing canvas, used for Label Studio's percent coordinates. Pixel ``i``
  spans ``[i, i + 1)``; a pixel belongs to the polygon when its centre ``(i + 0.5, j + 0.5)`` is inside (non-zero
  winding, as a canvas fills). A centre exactly on an edge goes to the polygon on its right / below (half-open
  spans), so polygons that share an edge never overlap and leave no gap, and the pixel count equals the polygon's
  area to within the boundary pixels.

For Cityscapes files the output is pixel-identical to cityscapesScripts' ``json2labelImg`` and
``json2instanceImg`` (same PIL polygon fill, same drawing order, same group and instance-numbering rules), but both
images come from one parse and one drawing pass: instance values are ``labelId * 1000 + n`` or a bare
``labelId``, so the labelIds image is derived from the instanceIds image instead of being drawn a second time.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from core.errors import SegLoopError
from core.fsio import read_json
from ingest.geometry import check_polygon
from ingest.taxonomy import CityscapesLabel, cityscapes_labels


@functools.lru_cache(maxsize=1)
def _label_index() -> dict[str, CityscapesLabel]:
    return {lb.name: lb for lb in cityscapes_labels()}


def resolve_label(label: str, origin: str | Path | None = None) -> tuple[CityscapesLabel, bool]:
    """Map a polygon's label to its Cityscapes label; ``cargroup`` -> (car, is_group=True)."""
    index = _label_index()
    is_group = False
    if label not in index and label.endswith("group"):
        label = label[: -len("group")]
        is_group = True
    if label not in index:
        raise SegLoopError(
            f"unknown Cityscapes label '{label}'", path=origin,
            fix=f"use a label of configs/taxonomy/cityscapes.yaml: {', '.join(sorted(index))}",
        )
    return index[label], is_group


FillRule = Literal["cityscapes", "centre"]
FILL_RULES: tuple[str, ...] = ("cityscapes", "centre")


def rasterize_polygon(points: Any, width: int, height: int, rule: FillRule = "centre",
                      origin: str | Path | None = None) -> np.ndarray:
    """Boolean ``(height, width)`` mask of one polygon given in pixel coordinates, filled by ``rule``.

    The geometry is checked first (``polygon_points``): at least 3 finite ``[x, y]`` number pairs."""
    pts = polygon_points(points, origin)
    if rule == "cityscapes":
        img = Image.new("L", (width, height), 0)
        ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in pts], fill=1)
        return np.asarray(img).astype(bool)
    if rule != "centre":
        raise SegLoopError(f"unknown polygon fill rule {rule!r}", path=origin, fix=f"use one of {FILL_RULES}")
    return _fill_centres(pts, width, height)


def polygon_points(points: Any, origin: str | Path | None = None, where: str = "polygon") -> np.ndarray:
    """``points`` as an (n, 2) float array. Points read from a file go through ``ingest.geometry.check_polygon``
    (the one geometry check every reader shares); an array built by SegLoop itself is checked for shape and
    finiteness only."""
    if not isinstance(points, np.ndarray):
        return check_polygon(points, origin, where)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3 or not np.isfinite(points).all():
        raise SegLoopError(f"{where}: expected at least 3 finite [x, y] points, got an array of shape "
                           f"{points.shape}", path=origin, fix="fix or delete the region")
    return points.astype(np.float64, copy=False)


def _fill_centres(pts: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scanline fill at pixel centres with non-zero winding and half-open spans (see the module docstring).

    Each edge is evaluated with its end points in a canonical order, so an edge shared by two polygons yields
    bit-identical crossings in both, whichever way round each polygon runs."""
    a, b = pts, np.roll(pts, -1, axis=0)
    up = a[:, 1] < b[:, 1]
    keep = a[:, 1] != b[:, 1]  # horizontal edges cross no scanline
    lo, hi, up = np.where(up[:, None], a, b)[keep], np.where(up[:, None], b, a)[keep], up[keep]
    # rows r whose centre y = r + 0.5 lies in [y_lo, y_hi)
    r0 = np.clip(np.ceil(lo[:, 1] - 0.5), 0, height).astype(np.int64)
    r1 = np.clip(np.ceil(hi[:, 1] - 0.5), 0, height).astype(np.int64)
    n = np.maximum(r1 - r0, 0)
    mask = np.zeros((height, width), bool)
    if n.sum() == 0:
        return mask
    edge = np.repeat(np.arange(len(n)), n)
    rows = r0[edge] + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    yc = rows + 0.5
    lo_e, hi_e = lo[edge], hi[edge]
    x = lo_e[:, 0] + (yc - lo_e[:, 1]) * (hi_e[:, 0] - lo_e[:, 0]) / (hi_e[:, 1] - lo_e[:, 1])
    wind = np.where(up[edge], 1, -1)
    order = np.lexsort((x, rows))
    rows, x, wind = rows[order], x[order], wind[order]
    # winding number just right of each crossing, counted within its row
    starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
    csum = np.cumsum(wind)
    base = np.repeat(csum[starts] - wind[starts], np.diff(np.r_[starts, len(rows)]))
    inside = (csum - base) != 0
    # a span runs from an inside crossing to the next crossing of the same row: columns c with x0 <= c + 0.5 < x1
    nxt = np.r_[x[1:], math.inf]
    same_row = np.r_[rows[1:] == rows[:-1], False]
    span = inside & same_row
    c0 = np.clip(np.ceil(x[span] - 0.5), 0, width).astype(np.int64)
    c1 = np.clip(np.ceil(nxt[span] - 0.5), 0, width).astype(np.int64)
    r = rows[span]
    ok = c1 > c0
    r, c0, c1 = r[ok], c0[ok], c1[ok]
    if not len(r):
        return mask
    # difference array over the polygon's bounding box only: +1 where a span starts, -1 where it ends
    top, left = int(r.min()), int(c0.min())
    h, w = int(r.max()) + 1 - top, int(c1.max()) + 1 - left
    starts = np.bincount((r - top) * w + (c0 - left), minlength=h * w)
    ends = np.bincount((r - top) * w + (c1 - left), minlength=h * w)
    flat = (starts - ends).astype(np.int32)
    mask[top:top + h, left:left + w - 1] = np.cumsum(flat.reshape(h, w), axis=1, dtype=np.int32)[:, :-1] > 0
    return mask


def parse_polygons(path: str | Path) -> dict[str, Any]:
    """Read and validate a polygons JSON; a malformed file raises an error naming it and the bad object."""
    data = read_json(path, "Cityscapes polygons file")
    try:
        h, w = int(data["imgHeight"]), int(data["imgWidth"])
        objects = data["objects"]
    except (KeyError, TypeError, ValueError):
        raise SegLoopError("polygons file lacks imgHeight / imgWidth / objects", path=path,
                           fix="it must be a Cityscapes *_gtFine_polygons.json") from None
    if not isinstance(objects, list):
        raise SegLoopError("'objects' is not a list", path=path, fix="it must be a Cityscapes *_gtFine_polygons.json")
    for i, obj in enumerate(objects):
        poly = obj.get("polygon") if isinstance(obj, dict) else None
        if not isinstance(poly, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in poly):
            raise SegLoopError(f"object #{i} has no valid 'polygon' list of [x, y] points", path=path,
                               fix="repair or re-export the annotation")
        if not isinstance(obj.get("label"), str):
            raise SegLoopError(f"object #{i} has no 'label' string (got {obj.get('label')!r})", path=path,
                               fix="each object needs a Cityscapes label name, e.g. \"label\": \"car\"")
    return {"height": h, "width": w, "objects": objects}


def rasterize(annotation: dict[str, Any], origin: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labelIds uint8, instanceIds int32) of a parsed polygons annotation, exactly as cityscapesScripts draws them."""
    size = (annotation["width"], annotation["height"])
    unlabeled = _label_index()["unlabeled"].id
    counts: dict[str, int] = {}
    shapes: list[list[tuple]] = []
    values = [unlabeled]
    for obj in annotation["objects"]:
        if obj.get("deleted"):
            continue
        lb, is_group = resolve_label(obj["label"], origin)
        value = lb.id
        if lb.hasInstances and not is_group:
            value = lb.id * 1000 + counts.get(lb.name, 0)
            counts[lb.name] = counts.get(lb.name, 0) + 1
        if value < 0:
            continue
        shapes.append([tuple(p) for p in obj["polygon"]])
        values.append(value)
    # Draw each polygon's index (not its value) into an 8-bit image: the fill covers exactly the same pixels
    # whatever the value, and an 8-bit canvas is several times cheaper to draw and to read back than a 32-bit one.
    # Values then come from lookup tables. More than 255 polygons fall back to a 32-bit canvas.
    mode = "L" if len(shapes) < 256 else "I"
    img = Image.new(mode, size, 0)
    draw = ImageDraw.Draw(img)
    for k, shape in enumerate(shapes, start=1):
        draw.polygon(shape, fill=k)
    index = np.asarray(img) if mode == "L" else np.asarray(img, dtype=np.int32)
    vals = np.asarray(values, np.int32)
    inst = vals[index]
    label_ids = np.where(vals >= 1000, vals // 1000, vals).astype(np.uint8)[index]
    return label_ids, inst


def polygons_to_images(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse and rasterise one polygons JSON file."""
    return rasterize(parse_polygons(path), path)


def color_image(label_ids: np.ndarray) -> np.ndarray:
    """RGBA colour image of a labelIds map with the Cityscapes colours (as json2labelImg's 'color' encoding)."""
    pal = np.zeros((256, 4), np.uint8)
    pal[:, 3] = 255
    for lb in cityscapes_labels():
        if lb.id >= 0:
            pal[lb.id, :3] = lb.color
    return pal[label_ids]


def rasterize_file(polygons: str | Path) -> tuple[Path, Path]:
    """Write ``*_gtFine_labelIds.png`` and ``*_gtFine_instanceIds.png`` beside a polygons file."""
    from core.fsio import save_png

    polygons = Path(polygons)
    base = str(polygons)[: -len("polygons.json")]
    label_ids, inst = polygons_to_images(polygons)
    out_l, out_i = Path(base + "labelIds.png"), Path(base + "instanceIds.png")
    save_png(out_l, label_ids)
    save_png(out_i, inst)
    return out_l, out_i


def rasterize_files(files: list[Path], workers: int = 1, progress: bool = True) -> int:
    """Rasterise many polygons files, in ``workers`` processes (frames are independent)."""
    from tqdm import tqdm

    if workers <= 1:
        for f in tqdm(files, desc="rasterising", disable=not progress):
            rasterize_file(f)
        return len(files)
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers) as pool:
        for _ in tqdm(pool.imap_unordered(rasterize_file, files, chunksize=16), total=len(files),
                      desc="rasterising", disable=not progress):
            pass
    return len(files)
