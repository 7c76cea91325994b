"""Image lists: a folder (recursive) or a text file of paths, as the labeling loop and prediction take them."""

from __future__ import annotations

from pathlib import Path

from core.errors import SegLoopError
from core.fsio import read_text

IMAGE_EXTS = (".png", ".jpg", ".jpeg")


def list_images(images: str | Path) -> list[Path]:
    """Images of a folder (recursive), or the paths listed one per line in a .txt file."""
    p = Path(images)
    if p.is_file() and p.suffix == ".txt":
        files = [Path(line.strip()) for line in read_text(p, "image list").splitlines() if line.strip()]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise SegLoopError(f"{len(missing)} listed images do not exist, e.g. {missing[0]}", path=p,
                               fix="regenerate the list")
        return files
    if p.is_file():
        raise SegLoopError("is a file, not a folder of images or a .txt list of image paths", path=p,
                           fix=f"give its folder ({p.parent}), or a .txt file listing the images, one per line")
    if not p.is_dir():
        raise SegLoopError("image folder or list file not found", path=p, fix="give a folder of images or a .txt list")
    files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise SegLoopError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) found", path=p,
                           fix="give the folder that holds the images (subfolders are searched too)")
    return files
