"""Cityscapes-layout trees (the real dataset or the demo city) as a SegLoop source.

Layout: ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with ``gtFine/<split>/<city>/<stem>_gtFine_*``.
Annotations come from the polygons (rasterised exactly as cityscapesScripts does) or from the shipped
labelIds/instanceIds PNGs. The city is the split group.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import SegLoopError
from core.fsio import image_size, read_label
from ingest.geometry import check_polygon
from ingest.polygons import parse_polygons, rasterize
from ingest.records import Annotation, Instance, Record
from ingest.taxonomy import Taxonomy, cityscapes_labels

IMAGE_SUFFIX = "_leftImg8bit.png"
MODES = ("polygons", "png")


class CityscapesSource:
    type = "cityscapes"

    def __init__(self, name: str, root: Path, taxonomy: Taxonomy, annotations: str = "polygons",
                 splits: list[str] | None = None) -> None:
        if annotations not in MODES:
            raise SegLoopError(f"unknown annotations mode '{annotations}' for source '{name}'",
                               fix=f"use one of: {', '.join(MODES)}")
        self.name, self.root, self.taxonomy, self.mode = name, Path(root), taxonomy, annotations
        self.splits = splits
        self.lut = np.full(256, taxonomy.ignore_index, np.uint8)
        self.instance_label = np.zeros(256, bool)
        for lb in cityscapes_labels():
            if lb.id >= 0:
                self.lut[lb.id] = taxonomy.map_source_label("cityscapes", lb.name, taxonomy.path)
                self.instance_label[lb.id] = lb.hasInstances

    def records(self) -> list[Record]:
        img_root = self.root / "leftImg8bit"
        if not self.root.is_dir():
            raise SegLoopError("Cityscapes folder not found", path=self.root,
                               fix="point 'root' at the folder holding leftImg8bit/ and gtFine/ "
                                   "(for the demo: python -m ingest demo --out data/demo_city)")
        if not img_root.is_dir() or not (self.root / "gtFine").is_dir():
            raise SegLoopError("not a Cityscapes tree: leftImg8bit/ or gtFine/ is missing", path=self.root,
                               fix="point 'root' at the folder that holds both leftImg8bit/ and gtFine/")
        out: list[Record] = []
        splits = self.splits or sorted(p.name for p in img_root.iterdir() if p.is_dir())
        for split in splits:
            if not (img_root / split).is_dir():
                raise SegLoopError(f"split folder '{split}' not found", path=img_root / split,
                                   fix=f"use splits present under {img_root}")
            for img in sorted((img_root / split).glob(f"*/*{IMAGE_SUFFIX}")):
                city = img.parent.name
                stem = img.name[: -len(IMAGE_SUFFIX)]
                gt = self.root / "gtFine" / split / city / stem
                files = ([Path(f"{gt}_gtFine_polygons.json")] if self.mode == "polygons" else
                         [Path(f"{gt}_gtFine_labelIds.png"), Path(f"{gt}_gtFine_instanceIds.png")])
                for f in files:
                    if not f.is_file():
                        raise SegLoopError(f"image has no annotation: {f.name} is missing", path=img,
                                           fix="restore the gtFine file, remove the image, or use "
                                               f"annotations: {'png' if self.mode == 'polygons' else 'polygons'}")
                out.append(Record(f"{self.name}/{split}/{city}/{stem}", self.name, img, files, split, city))
        if not out:
            raise SegLoopError(f"no *{IMAGE_SUFFIX} images found", path=img_root, fix="check 'root' and 'splits'")
        return out

    def load(self, rec: Record) -> Annotation:
        width, height = image_size(rec.image)
        if self.mode == "polygons":
            ann = parse_polygons(rec.annotation_files[0])
            for i, obj in enumerate(ann["objects"]):
                if not obj.get("deleted"):
                    check_polygon(obj["polygon"], rec.annotation_files[0], f"object #{i} ({obj['label']})")
            if (ann["width"], ann["height"]) != (width, height):
                raise SegLoopError(
                    f"annotation is {ann['width']}x{ann['height']} but the image is {width}x{height}",
                    path=rec.annotation_files[0], fix=f"re-annotate or replace {rec.image}")
            label_ids, inst = rasterize(ann, rec.annotation_files[0])
        else:
            label_ids = read_label(rec.annotation_files[0]).astype(np.uint8)
            inst = read_label(rec.annotation_files[1]).astype(np.int32)
            if label_ids.shape != (height, width) or inst.shape != (height, width):
                raise SegLoopError(f"label images are not {width}x{height} like the image",
                                   path=rec.annotation_files[0], fix="regenerate the gtFine PNGs")
        return self.decode(label_ids, inst)

    def decode(self, label_ids: np.ndarray, inst: np.ndarray) -> Annotation:
        """Map labelIds to train indices; instanceIds >= 1000 become instances, bare ids of instance labels crowds."""
        semantic = self.lut[label_ids]
        instances: list[Instance] = []
        for value in np.unique(inst):
            value = int(value)
            label_id = value // 1000 if value >= 1000 else value
            cls = int(self.lut[label_id])
            if not self.taxonomy.has_instances(cls) or not self.instance_label[label_id]:
                continue
            instances.append(Instance(cls, inst == value, iscrowd=0 if value >= 1000 else 1))
        return Annotation(semantic, instances)


class DemoCitySource(CityscapesSource):
    """The demo city: a Cityscapes tree that is generated on first use (same n and seed, same bytes)."""

    type = "demo_city"

    def __init__(self, name: str, root: Path, taxonomy: Taxonomy, annotations: str = "polygons",
                 splits: list[str] | None = None, n: int = 300, seed: int = 0) -> None:
        super().__init__(name, root, taxonomy, annotations, splits)
        self.n, self.seed = n, seed

    def records(self) -> list[Record]:
        if not self.root.exists():
            from ingest.demo import generate

            print(f"generating the demo city ({self.n} frames, seed {self.seed}) in {self.root}")
            generate(self.root, n=self.n, seed=self.seed)
        return super().records()
