"""Image lists: a folder (recursive) or a text file of paths, as the labeling loop and prediction take them."""

from __future__ import annotations

from pathlib import Path

from core.errors import SegLoopError
from core.fsio import read_text

# what SegLoop decodes (Pillow; 16/32-bit TIFF scaled to 8 bits), and what a browser (Label Studio's labeling
# page) displays: images sent to Label Studio must be the second kind
READABLE_EXTS = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
BROWSER_EXTS = (".jpeg", ".jpg", ".png", ".webp")


def _listed(p: Path) -> list[Path]:
    """The paths of a .txt list: one per line, ``#`` comments and blank lines skipped, a relative path taken from
    the list's folder (or, where it is not there, from the current folder, as older lists were written)."""
    files = []
    for raw in read_text(p, "image list").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        f = Path(line)
        if not f.is_absolute() and not (p.parent / f).is_file() and f.is_file():
            files.append(f)
        else:
            files.append(f if f.is_absolute() else p.parent / f)
    return files


def list_images(images: str | Path, exts: tuple[str, ...] = READABLE_EXTS) -> list[Path]:
    """Images of a folder (recursive), or the paths listed one per line in a .txt file; ``exts``: the kinds the
    caller can use (a folder's other files are left out, and said; a listed file of another kind is refused)."""
    p = Path(images)
    kinds = ", ".join(exts)
    if p.is_file() and p.suffix == ".txt":
        files = _listed(p)
        if not files:
            raise SegLoopError("the image list names no image", path=p,
                               fix="list one image path per line (relative paths from the list's folder)")
        folders = [f for f in files if f.is_dir()]
        if folders:
            raise SegLoopError(f"{len(folders)} listed paths are folders, not images, e.g. {folders[0]}", path=p,
                               fix="list image files one per line, or give the folder itself instead of the list")
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise SegLoopError(f"{len(missing)} listed images do not exist, e.g. {missing[0]}", path=p,
                               fix="fix or remove those lines (relative paths are read from the list's folder)")
        other = [f for f in files if f.suffix.lower() not in exts]
        if other:
            raise SegLoopError(f"{len(other)} listed files are not images of a usable kind ({kinds}), e.g. "
                               f"{other[0]}", path=p, fix=f"list {kinds} files only (convert the others)")
        return files
    if p.is_file():
        raise SegLoopError("is a file, not a folder of images or a .txt list of image paths", path=p,
                           fix=f"give its folder ({p.parent}), or a .txt file listing the images, one per line")
    if not p.is_dir():
        raise SegLoopError("image folder or list file not found", path=p, fix="give a folder of images or a .txt list")
    found = sorted(f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.parts[
        len(p.parts):]))
    files = [f for f in found if f.suffix.lower() in exts]
    if not files:
        raise SegLoopError(f"no images ({kinds}) found", path=p,
                           fix="give the folder that holds the images (subfolders are searched too)")
    left = sorted({f.suffix.lower() or f.name for f in found if f.suffix.lower() not in exts})
    if left:
        print(f"note: {len(found) - len(files)} files of {p} are left out ({', '.join(left[:6])}): not {kinds}")
    return files
