"""``evaluate predict``: a run's predictions on unlabelled images (a folder or a list file), for the labeling loop.

Writes ``runs/<run>/predict/<name>/``: the task's prediction files (``pred/<sha256>.png`` as train indices, and the
task's own: uncertainty maps, COCO results) and ``index.json`` (image sha256 -> files and the image's uncertainty;
``core.runs.write_index``), the files ``annotate predict`` and ``annotate next`` read. Images are keyed by content
hash, so a renamed file keeps its prediction and a changed file does not. Photos are predicted upright, as their
EXIF orientation says (as a browser and Label Studio show them).
"""

from __future__ import annotations

from pathlib import Path

from core.errors import SegLoopError
from core.fsio import atomic_dir, image_size, sha256_file
from core.runs import INDEX, Run, find_checkpoint, read_index, resolve_run
from evaluate.inference import load_for_inference
from ingest.images import list_images
from train.checkpoint import check_run_checkpoint


def default_name(images: Path) -> str:
    """The prediction set's name: the folder's (or list's) own, or with its parent's for a Cityscapes-style
    ``<city>/leftImg8bit`` folder, whose last part says nothing of which images it holds."""
    images = images.resolve()
    generic = {"leftimg8bit", "images", "img", "imgs", "rgb", "train", "val", "test"}
    return f"{images.parent.name}-{images.stem}" if images.stem.lower() in generic and images.parent.name else \
        images.stem


def predict_images(run: str | Path, images: str | Path, name: str | None = None, which: str = "best",
                   device: str = "auto", progress: bool = True) -> Path:
    """Predict ``images`` into ``predict/<name>/``. Without ``name``, a set there of other images is not replaced
    (two pools whose folders share a name would silently overwrite each other)."""
    if name is not None and not name.strip():
        raise SegLoopError("--name is empty", fix="give a name for the prediction set, or leave --name out")
    run_dir = resolve_run(run)
    files = list_images(images)
    out = Run(run_dir).predict_dir(name if name is not None else default_name(Path(images)))
    if name is None and (out / INDEX).is_file():
        try:
            before = {Path(e["image"]).resolve() for e in read_index(out / INDEX)["images"].values()}
        except (SegLoopError, KeyError, TypeError):  # a damaged set of this name: the new one replaces it
            print(f"note: {out / INDEX} could not be read: the set is written again")
            before = set()
        if before and not before & {f.resolve() for f in files}:
            raise SegLoopError(f"{out} holds predictions of other images (e.g. {sorted(before)[0]}); these would "
                               f"replace them", path=out, fix="give this set its own name: --name NAME")
    if name is not None and (out / INDEX).is_file():
        print(f"note: replaces the predictions in {out} with these {len(files)} images")
    hashes: dict[str, Path] = {}
    for f in files:
        image_size(f)  # a file that is no image fails here, not after the model has predicted the ones before it
        first = hashes.setdefault(sha256_file(f), f)
        if first != f:
            print(f"note: {f} has the same content as {first}: one prediction for both (sets are keyed by content)")
    inf = load_for_inference(find_checkpoint(run_dir, which), device)
    check_run_checkpoint(run_dir, inf.ckpt, inf.checkpoint)
    with atomic_dir(out, replace=True) as tmp:
        inf.plugin.evaluation().predict_images(inf, files, tmp, run_dir.name, f"predicting {Path(images).name}",
                                               progress)
    return out
