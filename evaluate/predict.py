"""``evaluate predict``: a run's predictions on unlabelled images (a folder or a list file), for the labeling loop.

Writes ``runs/<run>/predict/<name>/``: the task's prediction files (``pred/<sha256>.png`` as train indices, and the
task's own: uncertainty maps, COCO results) and ``index.json`` (image sha256 -> files and the image's uncertainty;
``core.runs.write_index``), the files ``annotate predict`` and ``annotate next`` read. Images are keyed by content
hash, so a renamed file keeps its prediction and a changed file does not.
"""

from __future__ import annotations

from pathlib import Path

from core.fsio import atomic_dir
from core.runs import Run, find_checkpoint, resolve_run
from evaluate.inference import load_for_inference
from ingest.images import list_images


def predict_images(run: str | Path, images: str | Path, name: str | None = None, which: str = "best",
                   device: str = "auto", progress: bool = True) -> Path:
    run_dir = resolve_run(run)
    inf = load_for_inference(find_checkpoint(run_dir, which), device)
    files = list_images(images)
    out = Run(run_dir).predict_dir(name or Path(images).stem)
    with atomic_dir(out, replace=True) as tmp:
        inf.plugin.evaluation().predict_images(inf, files, tmp, run_dir.name, f"predicting {Path(images).name}",
                                               progress)
    return out
