"""Atomic file and directory writes, content hashes and image reading with clear errors.

Every artefact SegLoop writes (dataset versions, checkpoints, metrics, predictions) is written to a temporary path
beside its destination and renamed into place, so an interrupted or failed run never leaves a half-written file
where a reader would take it for a complete one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.errors import SegLoopError, os_error
from core.png import write_gray_png
from core.services import pid_alive

_CHUNK = 1 << 20


def user_cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/segloop/...`` (else ``~/.cache/segloop/...``): where SegLoop keeps what it may rebuild
    (compiled code, Ultralytics' settings). A home folder that does not exist (``HOME=/nonexistent``, a service
    account) is not created: the cache goes under the system's temporary folder instead."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        home = Path.home()
        base = str(home / ".cache") if home.is_dir() else os.path.join(tempfile.gettempdir(), f"segloop-{os.getuid()}")
    return Path(base, "segloop", *parts)


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


def raise_os_error(exc: OSError, dest: str | Path, tmp: str | Path | None = None) -> NoReturn:
    """Re-raise an operating-system error met while writing ``dest`` as the user's error naming ``dest`` (not the
    temporary path beside it, which is gone by the time the user reads the message); a bug stays a bug."""
    if tmp is not None and exc.filename is not None and str(exc.filename).startswith(str(tmp)):
        exc.filename = None
    err = os_error(exc, dest)
    if err is None:
        raise exc
    raise err from exc


def _make_parent(dest: Path) -> None:
    blocking = next((p for p in [dest.parent, *dest.parent.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:  # not "already exists: remove it": the file is the user's
        raise SegLoopError("is a file, so no folder can be made under it", path=blocking,
                           fix=f"choose an output outside {blocking}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise_os_error(exc, dest.parent)


def _temporary_beside(dest: Path, make: Callable[[], Any]) -> Any:
    """A temporary file or folder beside ``dest`` (``make``), its error naming the folder, not the temporary
    name (a system folder such as /proc refuses new entries with "not found")."""
    try:
        return make()
    except FileNotFoundError:
        if dest.parent.is_dir():
            raise SegLoopError("cannot create anything in this folder (the file system refuses new entries)",
                               path=dest.parent, fix="choose an output in a folder of your own") from None
        raise
    except OSError as exc:
        raise_os_error(exc, dest.parent)


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary file path next to ``dest``; rename it onto ``dest`` only if the block succeeds.

    A full disk, a read-only folder or a denied permission becomes the user's error naming ``dest``, and the
    temporary file is removed: nothing half-written stays behind.
    """
    dest = Path(dest)
    _make_parent(dest)
    fd, tmp = _temporary_beside(dest, lambda: tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp",
                                                               dir=dest.parent))
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except OSError as exc:
        raise_os_error(exc, dest, tmp_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def write_text_atomic(dest: str | Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


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


class DestinationExists(SegLoopError):
    """``atomic_dir`` finished but another writer created the destination first (e.g. a concurrent build of the
    same dataset version); the caller decides whether that one will do."""


@contextlib.contextmanager
def atomic_dir(dest: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``dest``; it becomes ``dest`` (renamed) only if the block succeeds.

    With ``replace=True`` an existing ``dest`` is swapped out only once the new one is complete.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():  # a folder never replaces a file the user has there
        raise DestinationExists("the output exists and is a file, not a folder", path=dest,
                                fix="choose another output folder, or move the file away")
    _make_parent(dest)
    tmp = Path(_temporary_beside(dest, lambda: tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}-",
                                                                suffix=TMP_SUFFIX, dir=dest.parent)))
    old = None
    try:
        yield tmp
        if dest.exists():
            if not replace:
                raise DestinationExists("destination already exists", path=dest,
                                        fix="remove it or choose another name")
            old = dest.parent / f".{dest.name}.old"
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
        os.replace(tmp, dest)
    except OSError as exc:
        if old is not None and old.exists() and not dest.exists():
            os.replace(old, dest)  # the swap failed half-way: put the previous one back
            old = None
        raise_os_error(exc, dest, tmp)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)


TMP_SUFFIX = ".tmp"
# .<destination name>.<owner pid>-<random>.tmp, as atomic_dir names them (older ones carry no pid)
_TMP_DIR = re.compile(r"^\.(?P<dest>.+?)\.(?:(?P<pid>\d+)-)?[A-Za-z0-9_]+\.tmp$")


@dataclass(frozen=True)
class Leftover:
    """A temporary folder of an atomic write that never completed, and why it counts as abandoned."""

    path: Path
    dest: str
    pid: int | None
    idle_hours: float
    reason: str


def _last_activity(folder: Path) -> float:
    """Newest mtime of the folder and its direct subfolders: a build adds files to ``semantic/`` all the time."""
    times = [folder.stat().st_mtime]
    with contextlib.suppress(OSError):
        times += [p.stat().st_mtime for p in folder.iterdir() if p.is_dir()]
    return max(times)


def stale_temporaries(folder: str | Path, max_idle_hours: float = 24.0) -> list[Leftover]:
    """Temporary folders of ``atomic_dir`` under ``folder`` whose writer is gone: its process no longer runs (on this
    machine), or, when no process can be named (older folders, a reused pid), nothing in it changed for
    ``max_idle_hours``. A folder another live build is still writing is never listed."""
    folder = Path(folder)
    out: list[Leftover] = []
    if not folder.is_dir():
        return out
    now = time.time()
    for p in sorted(folder.iterdir()):
        m = _TMP_DIR.match(p.name)
        if not m or not p.is_dir() or p.is_symlink():
            continue
        try:
            idle = (now - _last_activity(p)) / 3600
        except FileNotFoundError:
            continue  # finished (renamed) meanwhile
        pid = int(m["pid"]) if m["pid"] else None
        if pid is not None and pid != os.getpid() and not pid_alive(pid):
            out.append(Leftover(p, m["dest"], pid, idle, f"its process {pid} is no longer running"))
        elif idle >= max_idle_hours and pid != os.getpid():
            out.append(Leftover(p, m["dest"], pid, idle, f"unchanged for {idle:.1f} h"))
    return out


def remove_leftovers(leftovers: list[Leftover]) -> list[Leftover]:
    """Remove the listed folders; returns those removed (one removed meanwhile by another process is fine)."""
    done = []
    for lo in leftovers:
        try:
            shutil.rmtree(lo.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise_os_error(exc, lo.path)
        done.append(lo)
    return done


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
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below; opened here so the OS's own error is the one reported
    except FileNotFoundError:
        raise SegLoopError("image not found", path=path,
                           fix="check the path, or re-run the step that writes it") from None
    except OSError as exc:
        raise_os_error(exc, path)
    try:
        with fh, Image.open(fh) as img:
            yield img
    except Image.DecompressionBombError as exc:  # a header announcing gigapixels: refused before decoding
        raise SegLoopError(f"image is too large to decode safely ({exc})", path=path,
                           fix=f"downscale it below {Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels") from None
    except UnidentifiedImageError:  # Pillow's message names the file object, not the file: the path says it
        raise SegLoopError("cannot decode image: not an image format Pillow knows (or not an image at all)",
                           path=path, fix="replace the file with a valid PNG/JPEG or remove it") from None
    except (SyntaxError, ValueError) as exc:
        raise SegLoopError(
            f"cannot decode image ({exc})", path=path, fix="replace the file with a valid PNG/JPEG or remove it"
        ) from None
    except OSError as exc:
        if os_error(exc) is not None:
            raise_os_error(exc, path)
        raise SegLoopError(
            f"cannot decode image ({exc})", path=path, fix="replace the file with a valid PNG/JPEG or remove it"
        ) from None


def to_rgb8(img: Image.Image) -> np.ndarray:
    """An opened image as 8-bit RGB. Pillow's own conversion clips 16- and 32-bit grey (TIFF, PNG) at 255, which
    turns almost every pixel white; such an image is scaled by its sensor's depth instead (``_scaled``: a 12-bit
    sensor's 4095 in a 16-bit file is white), floats over [0, 1] when they fit, else over their own minimum and
    maximum."""
    if img.mode in ("RGB",):
        return np.array(img)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(img).astype(np.float64)
        if img.mode == "F" and a.size and (a.min() < 0 or a.max() > 1):
            lo, hi = float(a.min()), float(a.max())
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        grey = _scaled(a) if img.mode != "F" else np.clip(np.round(a * 255), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.array(img.convert("RGB"))


SENSOR_BITS = (10, 12, 14, 16)  # the depths cameras write into 16-bit files


def _scaled(a: np.ndarray) -> np.ndarray:
    """Samples of a 16-bit file over the largest value of the smallest sensor depth that holds them (10, 12, 14 or
    16 bits: a 12-bit camera's frames, 4095 at most, all come out alike, a dark one as dark as it is), as 8-bit.
    Taken from the file's values because neither PNG nor TIFF readers report the sensor's depth; a file of 8-bit
    values in 16 bits is read as 10-bit, so darker, never clipped."""
    a = a.astype(np.float64)
    top = float(a.max()) if a.size else 0.0
    bits = next((b for b in SENSOR_BITS if top < 2 ** b), SENSOR_BITS[-1])
    return np.clip(np.round(a / (2 ** bits - 1) * 255), 0, 255).astype(np.uint8)


def deep_colour(img: Image.Image) -> bool:
    """A 16-bit-per-channel colour image (PNG, TIFF), which Pillow decodes to 8 bits by keeping each sample's
    high byte: 12-bit data in 16 bits would come out almost black."""
    return img.mode in ("RGB", "RGBA") and any(";16" in str(getattr(t, "args", "")) for t in (img.tile or []))


def deep_colour_rgb8(source: str | Path | bytes, img: Image.Image, name: str | None = None) -> np.ndarray:
    """A 16-bit colour image (a file, or an upload's bytes) scaled to 8-bit RGB by its range (``_scaled``),
    decoded by OpenCV at full depth."""
    import cv2

    if isinstance(source, bytes):
        a = cv2.imdecode(np.frombuffer(source, np.uint8), cv2.IMREAD_UNCHANGED)
    else:
        a = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    if a is None or a.ndim != 3 or a.shape[2] not in (3, 4):
        raise SegLoopError(f"cannot decode this 16-bit {img.format} image", path=name or source,
                           fix="save it as an 8-bit PNG or JPEG")
    return _scaled(cv2.cvtColor(a[..., :3], cv2.COLOR_BGR2RGB))


def turned_upright(rgb: np.ndarray, img: Image.Image) -> np.ndarray:
    """An image decoded outside Pillow (16-bit colour, by OpenCV) turned as ``img``'s EXIF orientation says, with
    the transposition Pillow's ``ImageOps.exif_transpose`` applies for it."""
    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}.get(img.getexif().get(0x0112, 1))
    return rgb if method is None else np.array(Image.fromarray(rgb).transpose(method))


def read_image(path: str | Path, mode: str | None = "RGB", upright: bool = False) -> np.ndarray:
    """Decode an image into a numpy array (``mode="RGB"``: 8-bit RGB, high bit depths scaled by ``to_rgb8``); a
    missing, corrupt or oversized file raises an error naming it.

    ``upright``: turned as its EXIF orientation says (a phone photo stored sideways), as a browser, Label Studio and
    the demo page show it; predictions of user photos are made on that image. Dataset images are read as stored,
    which is how their label masks are aligned."""
    from PIL import ImageOps

    with _opened_image(path) as img:
        if mode == "RGB" and deep_colour(img):
            rgb = deep_colour_rgb8(path, img)
            return turned_upright(rgb, img) if upright else rgb
        img.load()
        if upright:
            img = ImageOps.exif_transpose(img)
        if mode == "RGB":
            return to_rgb8(img)
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


def resolve_path(path: str | Path) -> Path:
    """``path`` made absolute with its symbolic links followed; a symlink loop is the user's error naming it (Python
    raises a bare RuntimeError for it)."""
    try:
        return Path(path).resolve()
    except RuntimeError:
        exc = OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
        raise_os_error(exc, path)
    except OSError as exc:
        raise_os_error(exc, path)


def read_text(path: str | Path, what: str = "file", fix: str | None = None) -> str:
    """A UTF-8 text file's content; a missing, unreadable or non-UTF-8 file raises an error naming it and the fix
    (a symlink loop, a denied permission and a folder given as a file each say so, instead of "not found")."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SegLoopError(f"{what} not found", path=path,
                           fix=fix or "check the path (relative paths start at the current folder)") from None
    except UnicodeDecodeError as exc:
        raise SegLoopError(f"{what} is not UTF-8 text ({exc.reason}: byte 0x{exc.object[exc.start]:02x} at offset "
                           f"{exc.start})", path=path,
                           fix=fix or "save the file with UTF-8 encoding (e.g. iconv -f latin1 -t utf-8)") from None
    except OSError as exc:
        raise_os_error(exc, path)


def read_json(path: str | Path, what: str = "JSON file", fix: str | None = None) -> Any:
    """A JSON file's content; a corrupt file names its line and column and says how to get a good one."""
    path = Path(path)
    text = read_text(path, what, fix)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SegLoopError(f"{what} does not parse as JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                           path=path, fix=fix or "repair or re-export the file") from None
