"""Instance segmentation data: a split's images with boxes, labels and masks from the version's COCO RLE.

Targets follow torchvision's detection API: ``boxes`` (N, 4) xyxy float, ``labels`` (N,) int64 = COCO category id
(train index + 1; 0 is background), ``masks`` (N, H, W) uint8. Crowd regions (``iscrowd=1``) are left out of the
training targets, as torchvision's references do, because Mask R-CNN has no notion of them; COCO evaluation
ignores them instead. Images without any instance stay in the set as negatives.

Augmentation keeps masks and boxes consistent by recomputing every box from its mask after the geometric steps:
horizontal flip, copy-paste of the instances of another training image (Ghiasi et al., "Simple Copy-Paste is a
Strong Data Augmentation Method for Instance Segmentation", 2021) and colour jitter. Scale jitter is the model's
own multi-scale resize (a list of ``min_size`` values).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from ingest.coco import decode_rle
from ingest.version import DatasetVersion

MIN_PIXELS = 4  # an instance cut by copy-paste to fewer pixels than this is dropped


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 4) xyxy boxes covering each mask (x2, y2 exclusive, as pixel edges)."""
    out = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys = np.flatnonzero(m.any(1))
        xs = np.flatnonzero(m.any(0))
        if len(xs):
            out[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return out


class InstanceDataset(Dataset):
    """Images of one split (or of the given image ids) with their non-crowd instances.

    Images are decoded once and kept in memory; masks are kept as RLE and decoded per item.
    """

    def __init__(self, version: DatasetVersion, split: str, augment: dict[str, Any] | None = None,
                 image_ids: list[int] | None = None, progress: bool = True) -> None:
        coco = version.coco(split)
        images = coco["images"]
        if image_ids is not None:
            wanted = set(image_ids)
            images = [im for im in images if im["id"] in wanted]
        anns: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for a in coco["annotations"]:
            if not a.get("iscrowd", 0):
                anns[a["image_id"]].append(a)
        self.records = images
        self.anns = [anns.get(im["id"], []) for im in images]
        self.augment = augment
        self.rng = random.Random(0)
        self.color = None
        if augment and augment.get("color", 0) > 0:
            self.color = A.ColorJitter(brightness=augment["brightness"], contrast=augment["contrast"],
                                       saturation=augment["saturation"], hue=augment["hue"], p=augment["color"])
        self.images = [version.load_image(im) for im in tqdm(images, desc=f"loading {split}", disable=not progress,
                                                              leave=False)]

    def __len__(self) -> int:
        return len(self.images)

    def set_random_seed(self, seed: int) -> None:
        self.rng = random.Random(seed)
        if self.color is not None:
            self.color.set_random_seed(seed)

    def aspect_ratios(self) -> list[float]:
        return [im["width"] / im["height"] for im in self.records]

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8, masks (N, H, W) bool and labels (N,) of item ``i``, unaugmented."""
        img = self.images[i]
        anns = self.anns[i]
        if anns:
            masks = np.stack([decode_rle(a["segmentation"]) for a in anns])
        else:
            masks = np.zeros((0, *img.shape[:2]), bool)
        labels = np.array([a["category_id"] for a in anns], np.int64)
        return img, masks, labels

    def __getitem__(self, i: int) -> dict[str, Any]:
        img, masks, labels = self.raw(i)
        aug = self.augment
        if aug:
            if aug.get("copy_paste", 0) > 0 and len(self) > 1 and self.rng.random() < aug["copy_paste"]:
                j = self.rng.randrange(len(self) - 1)
                img, masks, labels = copy_paste(img, masks, labels, *self.raw(j if j < i else j + 1))
            if aug.get("hflip", 0) > 0 and self.rng.random() < aug["hflip"]:
                img, masks = img[:, ::-1], masks[:, :, ::-1]
            if self.color is not None:
                img = self.color(image=np.ascontiguousarray(img))["image"]
        keep = masks.reshape(len(masks), -1).sum(1) >= MIN_PIXELS if len(masks) else np.zeros(0, bool)
        masks, labels = masks[keep], labels[keep]
        boxes = boxes_from_masks(masks)
        image = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)  # uint8 CHW; scaled on the device
        target = {"boxes": torch.from_numpy(boxes).reshape(-1, 4), "labels": torch.from_numpy(labels),
                  "masks": torch.from_numpy(np.ascontiguousarray(masks)).to(torch.uint8),
                  "image_id": int(self.records[i]["id"])}
        return {"image": image, "target": target, "index": i}


def copy_paste(img: np.ndarray, masks: np.ndarray, labels: np.ndarray, src_img: np.ndarray,
               src_masks: np.ndarray, src_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste every instance of a source image onto ``img`` (the source resized to ``img``'s size); pasted pixels
    occlude the instances underneath, whose masks lose those pixels."""
    if not len(src_masks):
        return img, masks, labels
    h, w = img.shape[:2]
    if src_img.shape[:2] != (h, w):
        src_img = cv2.resize(src_img, (w, h), interpolation=cv2.INTER_LINEAR)
        src_masks = np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
                              for m in src_masks])
    paste = src_masks.any(0)
    out = img.copy()
    out[paste] = src_img[paste]
    masks = masks & ~paste[None] if len(masks) else masks
    return out, np.concatenate([masks, src_masks]), np.concatenate([labels, src_labels])


def collate_instances(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Images of different sizes stay a list: the model's transform resizes and batches them."""
    return {"image": [b["image"] for b in batch], "target": [b["target"] for b in batch],
            "index": torch.tensor([b["index"] for b in batch])}


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches whose images share an aspect-ratio group (wide vs tall), as torchvision's detection reference does:
    the model pads a batch to its largest image, so mixing portrait and landscape images wastes most of it."""

    def __init__(self, sampler: Sampler[int], group_ids: list[int], batch_size: int) -> None:
        self.sampler, self.group_ids, self.batch_size = sampler, group_ids, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = defaultdict(list)
        for idx in self.sampler:
            g = self.group_ids[idx]
            buffers[g].append(idx)
            if len(buffers[g]) == self.batch_size:
                yield buffers.pop(g)

    def __len__(self) -> int:
        counts: dict[int, int] = defaultdict(int)
        for g in self.group_ids:
            counts[g] += 1
        share = len(self.sampler) / max(len(self.group_ids), 1)  # a DistributedSampler draws a share of them
        return sum(int(c * share) // self.batch_size for c in counts.values())


def aspect_groups(ratios: list[float]) -> list[int]:
    """0 for landscape (w >= h), 1 for portrait."""
    return [0 if r >= 1 else 1 for r in ratios]
