"""Taxonomies: the target classes of a model and how each source's labels map onto them.

This is the one place that knows the label map (source label -> train index, or ignore). A taxonomy file holds
either a Cityscapes-style ``labels:`` table (id, trainId, ...; the target classes are the labels with a real
trainId, and the ``cityscapes`` source map follows from it) or a ``classes:`` list plus ``sources:`` maps from
source labels (names or integer values) to class names. ``"*"`` maps every label not listed; ``ignore`` maps to
the ignore value.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ImageColor

from core.config import project_path, read_yaml
from core.errors import SegLoopError
from core.fsio import resolve_path

IGNORE = "ignore"
TAXONOMY_DIR = Path(__file__).resolve().parent.parent / "configs" / "taxonomy"
CITYSCAPES_TAXONOMY = TAXONOMY_DIR / "cityscapes.yaml"


@dataclass(frozen=True)
class ClassDef:
    name: str
    index: int
    color: tuple[int, int, int]
    has_instances: bool = False

    @property
    def hex(self) -> str:
        return hex_color(self.color)


def hex_color(rgb: tuple[int, int, int] | list[int]) -> str:
    """``#rrggbb`` of an RGB colour: how Label Studio, FiftyOne, the app and the report all name a class colour."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


@dataclass(frozen=True)
class CityscapesLabel:
    """One row of cityscapesScripts' label table."""

    name: str
    id: int
    trainId: int
    category: str
    catId: int
    hasInstances: bool
    ignoreInEval: bool
    color: tuple[int, int, int]


@dataclass
class Taxonomy:
    name: str
    classes: list[ClassDef]
    ignore_index: int = 255
    sources: dict[str, dict[Any, str]] = field(default_factory=dict)
    path: Path | None = None
    labels: list[CityscapesLabel] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def index_of(self, name: str) -> int:
        for c in self.classes:
            if c.name == name:
                return c.index
        raise SegLoopError(f"unknown class '{name}' in taxonomy '{self.name}'", path=self.path,
                           fix=f"use one of: {', '.join(self.names)}")

    def palette(self) -> np.ndarray:
        """(256, 3) uint8 colours by train index; ignore and unused values are black."""
        pal = np.zeros((256, 3), np.uint8)
        for c in self.classes:
            pal[c.index] = c.color
        return pal

    def colorize(self, mask: np.ndarray) -> np.ndarray:
        return self.palette()[mask]

    def map_source_label(self, source: str, label: str | int, origin: str | Path | None = None) -> int:
        """Train index (or the ignore value) for one source label; unknown labels are an error naming them."""
        mapping = self.sources.get(source)
        if mapping is None:
            if isinstance(label, str):  # by default a source's label names are the class names themselves
                if label == IGNORE:
                    return self.ignore_index
                for c in self.classes:
                    if c.name == label:
                        return c.index
            raise SegLoopError(
                f"unknown label {label!r}: taxonomy '{self.name}' has no map for source '{source}' and no class of "
                f"that name", path=origin,
                fix=f"add a '{source}' map under 'sources:' in {self.path}, or use one of: {', '.join(self.names)}",
            )
        key: Any = label
        if key not in mapping and isinstance(label, str) and label.lstrip("-").isdigit():
            key = int(label)
        if key not in mapping:
            if "*" in mapping:
                key = "*"
            else:
                raise SegLoopError(
                    f"unknown label {label!r} for source '{source}'", path=origin,
                    fix=f"add it to sources.{source} in {self.path}; mapped labels: "
                        f"{', '.join(str(k) for k in mapping)}; classes: {', '.join(self.names)}",
                )
        target = mapping[key]
        return self.ignore_index if target == IGNORE else self.index_of(target)

    def value_lut(self, source: str, values: list[int], origin: str | Path | None = None) -> np.ndarray:
        """A 256- (or larger) entry lookup table value -> train index for integer-valued masks."""
        lut = np.full(max(256, max(values, default=0) + 1), self.ignore_index, np.uint8)
        for v in values:
            lut[v] = self.map_source_label(source, v, origin)
        return lut

    def has_instances(self, index: int) -> bool:
        return 0 <= index < self.num_classes and self.classes[index].has_instances

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "ignore_index": self.ignore_index,
            "classes": [{"name": c.name, "index": c.index, "color": list(c.color), "instances": c.has_instances}
                        for c in self.classes],
        }


MAX_CLASSES = 255  # masks are 8-bit and one value is kept for the ignore value
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def parse_color(value: Any, path: Path, where: str) -> tuple[int, int, int]:
    """A colour as ``'#rrggbb'`` or ``[r, g, b]`` (0..255). Colour names are refused, with their hex spelling as the
    fix: which red 'red' is differs between tools, and the colour must match Label Studio's labels exactly."""
    if isinstance(value, str):
        if _HEX.match(value):
            return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)
        try:
            r, g, b = ImageColor.getrgb(value)[:3]
            fix = f"write '#{r:02x}{g:02x}{b:02x}' or [{r}, {g}, {b}] for {value!r}"
        except ValueError:
            fix = "write it as '#rrggbb' (e.g. '#dc143c') or [r, g, b] with each 0..255"
        raise SegLoopError(f"{where}: colour {value!r} is not '#rrggbb' or [r, g, b]", path=path, fix=fix)
    if (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)):
        return int(value[0]), int(value[1]), int(value[2])
    raise SegLoopError(f"{where}: colour {value!r} is not '#rrggbb' or [r, g, b] with each 0..255", path=path,
                       fix="write it as '#rrggbb' (e.g. '#dc143c') or [r, g, b] with each 0..255")


def _unique(values: list[Any], what: str, path: Path) -> None:
    seen: set[Any] = set()
    dup = [v for v in values if v in seen or seen.add(v)]  # type: ignore[func-returns-value]
    if dup:
        raise SegLoopError(f"{what} must be unique, but {dup[0]!r} appears more than once", path=path,
                           fix=f"give each entry its own {what.split()[-1]}")


def _int_field(row: dict[str, Any], key: str, where: str, path: Path) -> int:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise SegLoopError(f"{where}: '{key}' must be an integer, got {v!r}", path=path,
                           fix=f"write {key} as a whole number")
    return v


def _parse_labels(rows: Any, path: Path) -> list[CityscapesLabel]:
    if not isinstance(rows, list) or not rows:
        raise SegLoopError("'labels' must be a non-empty list", path=path, fix="see configs/taxonomy/cityscapes.yaml")
    out = []
    for i, row in enumerate(rows):
        where = f"label #{i}"
        fields = ("name", "id", "trainId", "category", "catId", "hasInstances", "ignoreInEval", "color")
        if not isinstance(row, dict) or any(k not in row for k in fields):
            raise SegLoopError(f"malformed label row {row!r}", path=path,
                               fix="each label needs name, id, trainId, category, catId, hasInstances, "
                                   "ignoreInEval, color")
        out.append(CityscapesLabel(
            name=str(row["name"]), id=_int_field(row, "id", where, path),
            trainId=_int_field(row, "trainId", where, path), category=str(row["category"]),
            catId=_int_field(row, "catId", where, path), hasInstances=bool(row["hasInstances"]),
            ignoreInEval=bool(row["ignoreInEval"]), color=parse_color(row["color"], path, f"{where} ({row['name']})"),
        ))
    _unique([lb.id for lb in out], "label ids", path)
    _unique([lb.name for lb in out], "label names", path)
    return out


def _parse_classes(rows: Any, path: Path) -> list[ClassDef]:
    if not isinstance(rows, list):
        raise SegLoopError("'classes' must be a list of {name, color} entries", path=path,
                           fix="see configs/taxonomy/camvid.yaml")
    classes = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "name" not in row or "color" not in row:
            raise SegLoopError(f"class #{i} needs a name and a color", path=path,
                               fix="write it as {name: car, color: '#00008e'}")
        name = row["name"]
        if not isinstance(name, str) or not name.strip():
            raise SegLoopError(f"class #{i}: name must be a non-empty string, got {name!r}", path=path,
                               fix="quote names YAML would read otherwise (e.g. 'yes', 'null', '1')")
        classes.append(ClassDef(name, i, parse_color(row["color"], path, f"class #{i} ({name})"),
                                bool(row.get("instances", False))))
    return classes


@functools.lru_cache(maxsize=32)
def _load_cached(path: Path, mtime: float) -> Taxonomy:
    data = read_yaml(path)
    name = str(data.get("name", path.stem))
    ignore = data.get("ignore_index", 255)
    if isinstance(ignore, bool) or not isinstance(ignore, int) or not 0 <= ignore <= 255:
        raise SegLoopError(f"ignore_index must be an integer in 0..255, got {ignore!r}", path=path,
                           fix="use 255 (the Cityscapes convention)")
    raw_sources = data.get("sources") or {}
    if not isinstance(raw_sources, dict) or not all(isinstance(v, dict) for v in raw_sources.values()):
        raise SegLoopError("'sources' must map each source to a {label: class} mapping", path=path,
                           fix="see configs/taxonomy/camvid.yaml")
    sources: dict[str, dict[Any, str]] = {k: dict(v) for k, v in raw_sources.items()}
    labels: list[CityscapesLabel] = []
    if "labels" in data:
        labels = _parse_labels(data["labels"], path)
        eval_labels = sorted((lb for lb in labels if lb.trainId not in (255, -1)), key=lambda lb: lb.trainId)
        classes = [ClassDef(lb.name, lb.trainId, lb.color, lb.hasInstances) for lb in eval_labels]
        if [c.index for c in classes] != list(range(len(classes))):
            raise SegLoopError("trainIds of the evaluation labels are not 0..N-1 without gaps", path=path)
        by_train = {c.index: c.name for c in classes}
        sources.setdefault("cityscapes", {
            lb.name: by_train.get(lb.trainId, IGNORE) for lb in labels if lb.id >= 0
        })
    elif "classes" in data:
        classes = _parse_classes(data["classes"], path)
    else:
        raise SegLoopError("taxonomy has neither 'labels' nor 'classes'", path=path,
                           fix="see configs/taxonomy/*.yaml for the two formats")
    names = [c.name for c in classes]
    if not 1 <= len(classes) <= MAX_CLASSES:
        raise SegLoopError(f"a taxonomy needs 1..{MAX_CLASSES} classes, this one has {len(classes)}", path=path,
                           fix=f"list at least one class and at most {MAX_CLASSES} (masks are 8-bit, one value "
                               "is the ignore value)")
    _unique(names, "class names", path)
    if ignore < len(classes):
        raise SegLoopError(f"ignore_index {ignore} is also the index of class '{classes[ignore].name}'", path=path,
                           fix=f"use an ignore value no class has, e.g. 255 (classes use 0..{len(classes) - 1})")
    for src, mapping in sources.items():
        for key, target in mapping.items():
            if target != IGNORE and target not in names:
                raise SegLoopError(f"sources.{src} maps {key!r} to unknown class {target!r}", path=path,
                                   fix=f"use one of: {', '.join(names)} or 'ignore'")
    return Taxonomy(name, classes, ignore, sources, path, labels)


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Load a taxonomy YAML (a bare name such as ``cityscapes`` means ``configs/taxonomy/<name>.yaml``; a relative
    path is tried from the current directory, then from the project root)."""
    p = project_path(path)
    if not p.suffix and not p.exists() and not p.is_symlink():
        p = TAXONOMY_DIR / f"{p}.yaml"
    if p.is_symlink():
        resolve_path(p)  # a symlink loop is reported as one, not as a missing file
    if not p.is_file():
        available = ", ".join(sorted(f.stem for f in TAXONOMY_DIR.glob("*.yaml")))
        raise SegLoopError("taxonomy file not found", path=p, fix=f"use a file path or one of: {available}")
    p = p.resolve()
    return _load_cached(p, p.stat().st_mtime)


def cityscapes_labels() -> list[CityscapesLabel]:
    """The Cityscapes label table (needed by any Cityscapes-layout source, whatever the target taxonomy)."""
    return load_taxonomy(CITYSCAPES_TAXONOMY).labels
