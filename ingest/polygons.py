"""Cityscapes polygon annotations (``*_gtFine_polygons.json``) to labelIds / instanceIds images.

The output is pixel-identical to cityscapesScripts' ``json2labelImg`` and ``json2instanceImg`` (same PIL polygon
fill, same drawing order, same group and instance-numbering rules), but both images come from one parse and one
drawing pass: instance values are ``labelId * 1000 + n`` or a bare ``labelId``, so the labelIds image is derived
from the instanceIds image instead of being drawn a second time.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from core.errors import SegLoopError
from core.fsio import read_json
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


def parse_polygons(path: str | Path) -> dict[str, Any]:
    """Read and validate a polygons JSON; a malformed file raises an error naming it and the bad object."""
    data = read_json(path, "Cityscapes polygons file")
    try:
        h, w = int(data["imgHeight"]), int(data["imgWidth"])
        objects = data["objects"]
    except (KeyError, TypeError, ValueError):
        raise SegLoopError("polygons file lacks imgHeight / imgWidth / objects", path=path,
                           fix="it must be a Cityscapes *_gtFine_polygons.json") from None
    for i, obj in enumerate(objects):
        poly = obj.get("polygon") if isinstance(obj, dict) else None
        if not isinstance(poly, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in poly):
            raise SegLoopError(f"object #{i} has no valid 'polygon' list of [x, y] points", path=path,
                               fix="repair or re-export the annotation")
        if "label" not in obj:
            raise SegLoopError(f"object #{i} has no 'label'", path=path, fix="repair or re-export the annotation")
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
