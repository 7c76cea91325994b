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


def albumentations_transform(spec: dict[str, Any], ignore_index: int, where: str) -> A.BasicTransform:
    """One albumentations transform from ``{name: ..., <its arguments>}``, names and arguments checked here
    (albumentations itself only warns about an unknown argument). A transform that fills new mask pixels (a
    rotation, a pad) fills them with the ignore value unless told otherwise: class 0 there would be a label
    nobody drew."""
    import difflib
    import inspect

    from core.errors import SegLoopError

    name = spec["name"]
    cls = getattr(A, name, None)
    valid = sorted(n for n in dir(A) if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.BasicTransform)
                   and not n.startswith("_") and n not in ("BasicTransform", "DualTransform", "ImageOnlyTransform"))
    if cls is None or name not in valid:
        close = difflib.get_close_matches(name, valid, n=3)
        raise SegLoopError(f"{where}: albumentations has no transform '{name}'"
                           + (f" (did you mean {', '.join(close)}?)" if close else ""),
                           fix="give an albumentations transform class name, e.g. GaussianBlur, RandomRotate90, "
                               "CoarseDropout (albumentations.ai/docs lists them)")
    args = {k: v for k, v in spec.items() if k != "name"}
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    unknown = [k for k in args if k not in params]
    if unknown:
        close = difflib.get_close_matches(unknown[0], params, n=1)
        raise SegLoopError(f"{where}: {name} has no argument '{unknown[0]}'"
                           + (f" (did you mean '{close[0]}'?)" if close else ""),
                           fix=f"arguments of {name}: {', '.join(params)}")
    if "fill_mask" in params and "fill_mask" not in args:
        args["fill_mask"] = ignore_index
    try:
        return cls(**args)
    except (ValueError, TypeError) as exc:
        raise SegLoopError(f"{where}: {name} refused its arguments {args}: {str(exc).splitlines()[0]} "
                           f"{' '.join(str(exc).splitlines()[1:3])}".strip(),
                           fix=f"see albumentations' documentation of {name}") from None


def build_augment(cfg: dict[str, Any], hw: tuple[int, int], ignore_index: int) -> A.Compose:
    """The configured pipeline: scale and crop, flip, colour jitter, then ``augment.transforms`` in order."""
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
    for i, spec in enumerate(cfg.get("transforms") or []):
        t = albumentations_transform(spec, ignore_index, f"augment.transforms[{i}]")
        check_transform(t, hw, f"augment.transforms[{i}]")
        steps.append(t)
    return A.Compose(steps, seed=None)


def check_transform(t: A.BasicTransform, hw: tuple[int, int], where: str) -> None:
    """Run ``t`` once (as if drawn) on an image and label of the training size: a transform that fails on that
    size, or that changes the size or the pixel type (a Resize, a Normalize, ToTensorV2: SegLoop resizes,
    normalises and converts itself, and validation would not see them), is refused before training starts."""
    from core.errors import SegLoopError

    h, w = hw
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    p, t.p = t.p, 1.0
    try:
        out = A.Compose([t], seed=0)(image=image, mask=mask)
    except Exception as exc:  # albumentations' own errors (a crop larger than the image, ...)
        raise SegLoopError(f"{where}: {type(t).__name__} fails on a {h}x{w} training image: "
                           f"{str(exc).splitlines()[0]}", fix="give arguments that fit data.image_size") from None
    finally:
        t.p = p
    img, lab = out["image"], out["mask"]
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.shape != (h, w, 3) or \
            not isinstance(lab, np.ndarray) or lab.shape != (h, w):
        got = f"{type(img).__name__} {getattr(img, 'dtype', '')} {tuple(getattr(img, 'shape', ()))}".strip()
        raise SegLoopError(f"{where}: {type(t).__name__} turns a {h}x{w} uint8 training image into {got}: "
                           f"augmentation must keep the size and the 8-bit pixels", fix=(
                               "leave it out: data.image_size sets the size (augment.scale for scale jitter) and "
                               "SegLoop normalises and converts images itself, for training and validation alike"))


class CopyBlob:
    """CopyBlob: paste connected blobs of rare classes, cut from other training images, label included.

    A blob is an 8-connected component of one of ``classes`` in a training label (the component rule of triage
    and the Label Studio outlines, ``ingest.geometry.mask_components``). With probability ``p`` an image receives
    1 to ``max_blobs`` blobs, each drawn class first (so the rarest class is drawn as often as the others), then
    a blob of that class from another image. A blob keeps its vertical band: it moves by at most ``band`` of the
    image height from where it was cut (a pole stays on the ground, a sign up high), anywhere horizontally, and is
    mirrored half the time. Pixels of the blob replace the image's and the label's.
    """

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], classes: list[int], p: float,
                 max_blobs: int, band: float) -> None:
        from ingest.geometry import mask_components

        self.p, self.max_blobs, self.band = p, max_blobs, band
        self.bank: dict[int, list[tuple[int, int, int, np.ndarray, np.ndarray]]] = {c: [] for c in classes}
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            for c in classes:
                for part in mask_components(label == c):
                    ys, xs = np.nonzero(part)
                    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
                    self.bank[c].append((i, int(y0), int(x0), part[y0:y1, x0:x1].copy(), img[y0:y1, x0:x1].copy()))
        self.classes = [c for c in classes if self.bank[c]]
        self.rng = np.random.default_rng(0)

    def counts(self) -> dict[int, int]:
        """Blobs available per class index."""
        return {c: len(b) for c, b in self.bank.items()}

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, index: int, img: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.classes or self.rng.random() >= self.p:
            return img, label
        img, label = img.copy(), label.copy()
        h, w = label.shape
        for _ in range(int(self.rng.integers(1, self.max_blobs + 1))):
            c = self.classes[int(self.rng.integers(len(self.classes)))]
            others = [b for b in self.bank[c] if b[0] != index] or self.bank[c]
            _, y0, _, mask, pixels = others[int(self.rng.integers(len(others)))]
            bh, bw = mask.shape
            if bh > h or bw > w:
                continue
            if self.rng.random() < 0.5:
                mask, pixels = mask[:, ::-1], pixels[:, ::-1]
            shift = int(round(self.band * h))
            y = int(np.clip(y0 + self.rng.integers(-shift, shift + 1), 0, h - bh))
            x = int(self.rng.integers(0, w - bw + 1))
            region = img[y:y + bh, x:x + bw]
            region[mask] = pixels[mask]
            label[y:y + bh, x:x + bw][mask] = c
        return img, label


class SplitDataset(Dataset):
    """Images of one split (or an explicit list of image ids) at the training size.

    ``full_labels=True`` keeps the label at its original size (evaluation); otherwise it is resized with the image.
    """

    def __init__(self, version: DatasetVersion, split: str, hw: tuple[int, int], augment: A.Compose | None = None,
                 full_labels: bool = False, image_ids: list[int] | None = None, progress: bool = True,
                 copy_blob: dict[str, Any] | None = None) -> None:
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
        self.copy_blob: CopyBlob | None = None
        if copy_blob and copy_blob["p"] > 0:
            self.copy_blob = CopyBlob(self.images, self.labels, copy_blob["class_indices"], copy_blob["p"],
                                      copy_blob["max_blobs"], copy_blob["band"])

    def __len__(self) -> int:
        return len(self.images)

    def set_random_seed(self, seed: int) -> None:
        """Seed the augmentation stream (per epoch, and per DataLoader worker)."""
        if self.augment is not None:
            self.augment.set_random_seed(seed)
        if self.copy_blob is not None:
            self.copy_blob.seed(seed)

    def __getitem__(self, i: int) -> dict[str, Any]:
        img, label = self.images[i], self.labels[i]
        if self.copy_blob is not None:
            img, label = self.copy_blob(i, img, label)
        if self.augment is not None:
            out = self.augment(image=img, mask=label)
            img, label = out["image"], out["mask"]
        return {"image": torch.from_numpy(np.ascontiguousarray(img)),
                "label": torch.from_numpy(np.ascontiguousarray(label)).long(), "index": i}

    def pixels_per_class(self, num_classes: int) -> np.ndarray:
        return self.class_pixels(num_classes)[0]

    def class_pixels(self, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """Labelled pixels per class, and all labelled pixels of the images where each class appears (the
        statistics of ENet, inverse and median-frequency class weights)."""
        counts = np.zeros(num_classes, np.int64)
        present = np.zeros(num_classes, np.int64)
        for lb in self.labels:
            c = np.bincount(lb.reshape(-1), minlength=256)[:num_classes]
            counts += c
            present += np.where(c > 0, c.sum(), 0)
        return counts, present


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
