"""Atomic file and directory writes, content hashes and image reading with clear errors.

Every artefact SegLoop writes (dataset versions, checkpoints, metrics, predictions) is written to a temporary path
beside its destination and renamed into place, so an interrupted or failed run never leaves a half-written file
where a reader would take it for a complete one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.errors import SegLoopError
from core.png import write_gray_png

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (streamed, so large images cost no memory)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    except FileNotFoundError:
        raise SegLoopError("file not found", path=path,
                           fix="check the path, or rebuild what should have written it") from None
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-serialisable object in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary file path next to ``dest``; rename it onto ``dest`` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(dest: str | Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def write_json_atomic(dest: str | Path, obj: Any, indent: int | None = 2) -> None:
    write_text_atomic(dest, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def atomic_dir(dest: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``dest``; it becomes ``dest`` (renamed) only if the block succeeds.

    With ``replace=True`` an existing ``dest`` is swapped out only once the new one is complete.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    old = None
    try:
        yield tmp
        if dest.exists():
            if not replace:
                raise SegLoopError("destination already exists", path=dest, fix="remove it or choose another name")
            old = dest.parent / f".{dest.name}.old"
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)


def save_png(dest: str | Path, array: np.ndarray, compress_level: int = 1) -> None:
    """Write a uint8/uint16/int32 label map (SegLoop's fast grey writer) or an RGB(A) image (Pillow) as PNG."""
    if array.dtype in (np.int32, np.int64, np.uint32):
        # PNG stores at most 16 bits per grey sample (Cityscapes instanceIds are 16-bit PNGs).
        if array.size and (array.max() > 65535 or array.min() < 0):
            raise ValueError(f"values outside 0..65535 cannot be stored in a PNG: {dest}")
        array = array.astype(np.uint16)
    if array.ndim == 2 and array.dtype in (np.uint8, np.uint16):
        write_gray_png(dest, array, level=compress_level)
        return
    Image.fromarray(array).save(dest, compress_level=compress_level)


@contextlib.contextmanager
def _opened_image(path: str | Path) -> Iterator[Image.Image]:
    """An image opened with Pillow; a missing or undecodable file raises an error naming it and the fix."""
    path = Path(path)
    if not path.is_file():
        raise SegLoopError("image not found", path=path, fix="check the path, or re-run the step that writes it")
    try:
        with Image.open(path) as img:
            yield img
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise SegLoopError(
            f"cannot decode image ({exc})", path=path, fix="replace the file with a valid PNG/JPEG or remove it"
        ) from None


def read_image(path: str | Path, mode: str | None = "RGB") -> np.ndarray:
    """Decode an image into a numpy array; a missing or corrupt file raises an error naming it."""
    with _opened_image(path) as img:
        img.load()
        if mode is not None and img.mode != mode:
            img = img.convert(mode)
        return np.array(img)  # a writable copy: torch.from_numpy wants one


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header only; a missing or undecodable file raises an error naming it."""
    with _opened_image(path) as img:
        return img.size


def read_label(path: str | Path) -> np.ndarray:
    """Read a single-channel label PNG as-is (no palette conversion), with the same errors as ``read_image``."""
    arr = read_image(path, mode=None)
    if arr.ndim != 2:
        raise SegLoopError(
            f"label image has {arr.shape[2]} channels, expected a single channel", path=path,
            fix="save labels as 8-bit single-channel PNGs holding class values",
        )
    return arr


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise SegLoopError(f"{what} not found", path=path, fix="check the path")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SegLoopError(f"{what} does not parse ({exc})", path=path, fix="repair or re-export the file") from None
