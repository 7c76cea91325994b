"""Image + label-mask folders (CamVid and the like) as a SegLoop source.

Each image pairs with the mask of the same stem; mask values map to classes through the taxonomy's source map
(``sources.<map>`` in the taxonomy file). The split group is taken from the file name with a regular expression,
so that frames of one video sequence never land in different splits.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np

from core.errors import SegLoopError
from core.fsio import image_size, read_label
from ingest.images import READABLE_EXTS as IMAGE_EXTS
from ingest.records import Annotation, Record
from ingest.taxonomy import Taxonomy


class MaskFolderSource:
    type = "mask_folder"

    def __init__(self, name: str, root: Path, taxonomy: Taxonomy, value_map: str | None = None,
                 folders: dict[str, dict[str, str]] | None = None, images: str = "images", masks: str = "masks",
                 group: str = r"^(.*?)_") -> None:
        self.name, self.root, self.taxonomy = name, Path(root), taxonomy
        self.value_map = value_map or name
        # split -> {images: dir, masks: dir}; one pseudo-split None when the folder has no split of its own
        self.folders: dict[str | None, dict[str, str]] = dict(folders) if folders else {None: {"images": images,
                                                                                             "masks": masks}}
        try:
            self.group_re = re.compile(group)
        except re.error as exc:
            raise SegLoopError(f"source '{name}': bad group regex {group!r} ({exc})") from None
        self.lut = np.full(256, -1, np.int16)
        for v in range(256):
            with contextlib.suppress(SegLoopError):
                self.lut[v] = taxonomy.map_source_label(self.value_map, v, taxonomy.path)

    def records(self) -> list[Record]:
        if not self.root.is_dir():
            raise SegLoopError("mask folder not found", path=self.root, fix="check the source's 'root'")
        out: list[Record] = []
        for split, dirs in self.folders.items():
            img_dir, mask_dir = self.root / dirs["images"], self.root / dirs["masks"]
            for d in (img_dir, mask_dir):
                if not d.is_dir():
                    raise SegLoopError("folder not found", path=d, fix="check 'images' / 'masks' in the source")
            masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"}
            for img in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS):
                mask = masks.get(img.stem)
                if mask is None:
                    raise SegLoopError(f"image has no mask {img.stem}.png in {mask_dir}", path=img,
                                       fix="add the mask or remove the image")
                m = self.group_re.search(img.stem)
                group = m.group(1) if m and m.groups() else (m.group(0) if m else img.stem)
                split_key = split if split is not None else "all"
                out.append(Record(f"{self.name}/{split_key}/{img.stem}", self.name, img, [mask], split, group))
        if not out:
            raise SegLoopError("no images found", path=self.root, fix="check 'images' and 'masks'")
        return out

    def load(self, rec: Record) -> Annotation:
        mask = read_label(rec.annotation_files[0])
        size = image_size(rec.image)
        if mask.shape != (size[1], size[0]):
            raise SegLoopError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {size[0]}x{size[1]}",
                               path=rec.annotation_files[0], fix="resize the mask with nearest neighbour")
        if mask.dtype != np.uint8:
            if mask.max() > 255:
                raise SegLoopError(f"mask value {int(mask.max())} is above 255", path=rec.annotation_files[0])
            mask = mask.astype(np.uint8)
        mapped = self.lut[mask]
        if (mapped < 0).any():
            bad = sorted(int(v) for v in np.unique(mask[mapped < 0]))
            known = [str(k) for k in self.taxonomy.sources.get(self.value_map, {})]
            raise SegLoopError(
                f"mask value(s) {bad} are not in the value map '{self.value_map}'", path=rec.annotation_files[0],
                fix=f"add them to sources.{self.value_map} in {self.taxonomy.path} (mapped: {', '.join(known)})")
        return Annotation(mapped.astype(np.uint8), [])
