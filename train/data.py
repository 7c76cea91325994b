"""Datasets over a dataset version's split, the augmentation pipeline, and input normalisation.

Images are decoded once and cached at the training size (a few hundred street images at 128x256 are tens of MB),
so an epoch costs augmentation and the model, not PNG decoding. Training samples are augmented at that size;
evaluation samples keep their full-resolution label, because scores are computed at label resolution.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ingest.version import DatasetVersion

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC or NCHW batch -> normalised float NCHW (done on the device, so workers ship bytes)."""
    if images.shape[-1] == 3 and images.shape[1] != 3:
        images = images.permute(0, 3, 1, 2)
    x = images.float()
    return (x - MEAN.to(x.device)) / STD.to(x.device)


def resize_image(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    if img.shape[:2] == (h, w):
        return img
    interp = cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    return mask if mask.shape == (h, w) else cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


def build_augment(cfg: dict[str, Any], hw: tuple[int, int], ignore_index: int) -> A.Compose:
    h, w = hw
    s0, s1 = cfg["scale"]
    steps: list[A.BasicTransform] = []
    if (s0, s1) != (1.0, 1.0):
        steps += [A.RandomScale(scale_limit=(s0 - 1, s1 - 1), p=1.0),
                  A.PadIfNeeded(h, w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index),
                  A.RandomCrop(h, w)]
    if cfg["hflip"] > 0:
        steps.append(A.HorizontalFlip(p=cfg["hflip"]))
    if cfg["color"] > 0:
        steps.append(A.ColorJitter(brightness=cfg["brightness"], contrast=cfg["contrast"],
                                   saturation=cfg["saturation"], hue=cfg["hue"], p=cfg["color"]))
    return A.Compose(steps, seed=None)


class SplitDataset(Dataset):
    """Images of one split (or an explicit list of image ids) at the training size.

    ``full_labels=True`` keeps the label at its original size (evaluation); otherwise it is resized with the image.
    """

    def __init__(self, version: DatasetVersion, split: str, hw: tuple[int, int], augment: A.Compose | None = None,
                 full_labels: bool = False, image_ids: list[int] | None = None, progress: bool = True) -> None:
        images = version.images(split)
        if image_ids is not None:
            wanted = set(image_ids)
            images = [im for im in images if im["id"] in wanted]
        self.records = images
        self.version, self.hw, self.augment, self.full_labels = version, hw, augment, full_labels
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        for im in tqdm(images, desc=f"loading {split}", disable=not progress, leave=False):
            self.images.append(resize_image(version.load_image(im), hw))
            label = version.load_semantic(im)
            self.labels.append(label if full_labels else resize_mask(label, hw))

    def __len__(self) -> int:
        return len(self.images)

    def set_random_seed(self, seed: int) -> None:
        """Seed the augmentation stream (per epoch, and per DataLoader worker)."""
        if self.augment is not None:
            self.augment.set_random_seed(seed)

    def __getitem__(self, i: int) -> dict[str, Any]:
        img, label = self.images[i], self.labels[i]
        if self.augment is not None:
            out = self.augment(image=img, mask=label)
            img, label = out["image"], out["mask"]
        return {"image": torch.from_numpy(np.ascontiguousarray(img)),
                "label": torch.from_numpy(np.ascontiguousarray(label)).long(), "index": i}

    def pixels_per_class(self, num_classes: int) -> np.ndarray:
        counts = np.zeros(256, np.int64)
        for lb in self.labels:
            counts += np.bincount(lb.reshape(-1), minlength=256)
        return counts[:num_classes]


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images; stack labels when they share a size, else keep a list (full-resolution evaluation)."""
    labels = [b["label"] for b in batch]
    same = all(lb.shape == labels[0].shape for lb in labels)
    return {"image": torch.stack([b["image"] for b in batch]),
            "label": torch.stack(labels) if same else labels,
            "index": torch.tensor([b["index"] for b in batch])}


def worker_init(worker_id: int) -> None:
    """Give each DataLoader worker its own augmentation stream, derived from the loader's seeded generator."""
    info = torch.utils.data.get_worker_info()
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    if info is not None and hasattr(info.dataset, "set_random_seed"):
        info.dataset.set_random_seed(seed)
