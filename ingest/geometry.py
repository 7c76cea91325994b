"""Polygon geometry as annotation files give it, checked once for every reader (Cityscapes JSON, Label Studio).

A polygon that is not at least three finite ``[x, y]`` numbers cannot enclose a pixel: drawn anyway it becomes a
line, nothing, or (with NaN or a coordinate written as a string) an exception deep inside the rasteriser. Readers
call ``check_polygon`` on each polygon as they read it, so the error names the file and the object.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import SegLoopError

MIN_POINTS = 3
_FIX = "repair the polygon in the annotation tool (at least 3 points, each [x, y] as numbers) or delete it"


def check_polygon(points: Any, path: str | Path | None, where: str = "polygon") -> np.ndarray:
    """The polygon as an ``(n, 2)`` float64 array, or a ``SegLoopError`` naming ``path``, ``where`` (e.g.
    ``object #3 (car)``) and the bad point: not a list, a point that is not a pair, a coordinate that is a string,
    a boolean, NaN or infinite, fewer than 3 points."""
    if not isinstance(points, (list, tuple)):
        raise SegLoopError(f"{where}: points must be a list of [x, y] pairs, got {type(points).__name__}", path=path,
                           fix=_FIX)
    for j, p in enumerate(points):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise SegLoopError(f"{where}: point #{j} is {p!r}, not an [x, y] pair", path=path, fix=_FIX)
        for c in p:
            if isinstance(c, bool) or not isinstance(c, (int, float)):
                raise SegLoopError(f"{where}: point #{j} {list(p)!r} holds {c!r} ({type(c).__name__}), not a number",
                                   path=path, fix=_FIX + "; coordinates are numbers, not quoted strings")
            if not math.isfinite(c):
                raise SegLoopError(f"{where}: point #{j} {list(p)!r} is not a finite number", path=path, fix=_FIX)
    if len(points) < MIN_POINTS:
        raise SegLoopError(f"{where}: a polygon needs at least {MIN_POINTS} points, got {len(points)}", path=path,
                           fix=_FIX)
    return np.asarray(points, dtype=np.float64)


MIN_COMPONENT_PIXELS = 16  # specks of a predicted class map are not objects


def mask_components(mask: np.ndarray, min_pixels: int = MIN_COMPONENT_PIXELS) -> list[np.ndarray]:
    """The 8-connected components of a boolean mask, each at least ``min_pixels`` pixels: what a class map's
    objects are. Triage counts them as instances and Label Studio pre-annotations outline them, with this one
    rule, so the labeling loop and triage see the same objects."""
    import cv2

    n, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    parts = [comp == k for k in range(1, n)]
    return [p for p in parts if int(p.sum()) >= min_pixels]
