"""Saved views for triage, and the hand-off of their images to the labeling loop.

- ``worst_miou``: every scored sample, lowest mIoU first;
- ``worst_instances``: samples with instance mistakes, most FP + FN first (then lowest mIoU);
- ``class_<name>_fails``: for the split's three worst classes, the samples where the class is in the ground
  truth or the prediction, lowest IoU of that class first;
- ``confident_detections`` (runs whose detections carry scores): every sample, its predicted instances filtered to
  the evaluation's score threshold; the worst views show the same filter. The dataset itself holds every detection
  the evaluation scored, with its confidence, so the App's confidence slider reaches below the threshold;
- ``random_100``: 100 samples picked from their content hashes, the same images as
  ``fiftyone_views triptychs --seed 0``, whenever the dataset is rebuilt from the same version.

The first ``tag_k`` samples of each worst view are tagged with the view's name and ``relabel``; ``relabel`` writes
the first K images of a view to a list file that ``python -m annotate import --images`` takes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from core.errors import SegLoopError
from core.fsio import write_json_atomic, write_text_atomic
from evaluate.gallery import identity_order
from evaluate.results import EvalResults

RELABEL_TAG = "relabel"
RANDOM_N = 100


CONFIDENT_VIEW = "confident_detections"


def worst_views(dataset, worst_classes: list[str], score_threshold: float | None = None) -> dict[str, Any]:
    """The sorted triage views of a loaded dataset (ties broken by key, so the order is reproducible). With
    ``score_threshold``, each view shows the predicted instances scored at least that (the detections its TP / FP /
    FN counted), and ``confident_detections`` is every sample so filtered."""
    from fiftyone import ViewField as F

    from fiftyone_views.dataset import field_name

    base = dataset
    views: dict[str, Any] = {}
    if score_threshold is not None:
        base = dataset.filter_labels("pred_instances", F("confidence") >= score_threshold, only_matches=False)
        views[CONFIDENT_VIEW] = base
    views["worst_miou"] = base.exists("miou").sort_by([("miou", 1), ("key", 1)])
    views["worst_instances"] = base.match(F("instance_errors") > 0).sort_by(
        [("instance_errors", -1), ("miou", 1), ("key", 1)])
    for cls in worst_classes[:3]:
        f = f"class_iou.{field_name(cls)}"
        views[f"class_{field_name(cls)}_fails"] = base.exists(f).sort_by([(f, 1), ("key", 1)])
    return views


def save_views(dataset, res: EvalResults, tag_k: int = 10) -> dict[str, int]:
    """Save the triage views on the dataset and tag the worst samples; returns each view's size."""
    dataset.untag_samples([RELABEL_TAG])
    sizes = {}
    for name, view in worst_views(dataset, res.metrics["worst_classes"], res.metrics.get("score_threshold")).items():
        dataset.save_view(name, view, overwrite=True)
        sizes[name] = len(view)
        if tag_k > 0 and name != CONFIDENT_VIEW:
            view.limit(tag_k).tag_samples([name, RELABEL_TAG])
    ids, shas = dataset.values(["id", "sha256"])
    picked = [ids[i] for i in identity_order(shas, 0)[:RANDOM_N]]
    dataset.save_view(f"random_{RANDOM_N}", dataset.select(picked, ordered=True), overwrite=True)
    sizes[f"random_{RANDOM_N}"] = len(picked)
    return sizes


def relabel(run: str | Path, view: str = "worst_miou", k: int = 50, split: str = "test",
            out: str | Path | None = None, db_dir: str | Path | None = None) -> dict[str, Any]:
    """Write the first ``k`` images of a saved view to a list file for ``annotate import``, with a JSON record of
    why each was picked; returns the list path, the images and a note (when the view has fewer than ``k``)."""
    from fiftyone_views.dataset import open_dataset

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SegLoopError(f"the number of images to relabel must be at least 1, got {k!r}", fix="pass --k N, N >= 1")
    dataset = open_dataset(run, split, db_dir)
    if not dataset.has_saved_view(view):
        raise SegLoopError(f"dataset '{dataset.name}' has no view '{view}'",
                           fix=f"choose one of: {', '.join(dataset.list_saved_views())}")
    v = dataset.load_saved_view(view)
    note = ""
    if k > len(v):
        note = f"--k {k} is more than the {len(v)} samples of view '{view}': all of them are used"
    picked = v.limit(k)
    files, keys, mious, errors = picked.values(["filepath", "key", "miou", "instance_errors"])
    run_dir = Path(dataset.info["run"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = Path(out) if out else run_dir / "relabel" / f"{split}-{view}-k{len(files)}.txt"
    write_text_atomic(dest, "".join(f"{f}\n" for f in files))
    write_json_atomic(dest.with_suffix(".json"), {
        "run": str(run_dir), "split": split, "view": view, "k": k, "created": stamp, "dataset": dataset.name,
        "images": [{"file": f, "key": key, "miou": m, "instance_errors": e}
                   for f, key, m, e in zip(files, keys, mious, errors, strict=True)]})
    picked.tag_samples([f"sent_to_labeling_{stamp}"])
    return {"list": dest, "images": files, "note": note}
