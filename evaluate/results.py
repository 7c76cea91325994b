"""Read access to what ``evaluate run`` wrote for one split, for the consumers of an evaluation (galleries,
FiftyOne, reports): the per-image rows, the split's metrics, the dataset version it was scored on, and each image's
prediction and uncertainty maps.
"""

from __future__ import annotations

import csv
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import SegLoopError
from core.fsio import read_json, read_label
from core.runs import Run, resolve_run
from ingest.version import DatasetVersion, resolve_version


def read_eval_metrics(path: Path, run_dir: Path, split: str) -> dict[str, Any]:
    """An evaluation's ``metrics.json``, checked for what every reader needs: the dataset version it scored, the
    classes (or per-class scores) and, for the report, the split's figures."""
    metrics = read_json(path, "evaluation metrics")
    fix = f"evaluate the run again: python -m evaluate run {run_dir} --split {split}"
    if not isinstance(metrics, dict):
        raise SegLoopError("metrics.json is not a JSON object", path=path, fix=fix)
    if not isinstance(metrics.get("dataset_version"), str):
        raise SegLoopError("metrics.json does not say which dataset version it scored (no 'dataset_version')",
                           path=path, fix=fix)
    classes = metrics.get("classes") or metrics.get("per_class")
    if not isinstance(classes, (list, dict)) or not classes or not all(isinstance(c, str) for c in classes):
        raise SegLoopError("metrics.json names no classes ('classes' or 'per_class')", path=path, fix=fix)
    kinds = {"timing": dict, "model": dict, "tta": bool, "images": int, "epoch": int}
    for key, kind in kinds.items():
        if key in metrics and not isinstance(metrics[key], kind):
            raise SegLoopError(f"metrics.json has {key!r} = {metrics[key]!r}, not {kind.__name__}", path=path, fix=fix)
    timing = metrics.get("timing") or {}
    if timing and not all(isinstance(timing.get(k), (int, float)) for k in ("ms_per_image_mean", "images_per_second")):
        raise SegLoopError("metrics.json has a 'timing' without its figures", path=path, fix=fix)
    return metrics


def stale_evaluation(run_dir: Path, metrics: dict[str, Any]) -> str | None:
    """Why an evaluation's figures are no longer the run's, or None: it scored ``best.pt`` (or ``last.pt``) of an
    earlier epoch, and the run has trained on since (resumed), so its checkpoint is another model now. The run's
    own record says which epoch each checkpoint holds (``run.json``'s best epoch; the last logged epoch)."""
    evaluated = Path(str(metrics.get("checkpoint", "best.pt"))).name
    if not isinstance(metrics.get("epoch"), int):
        return None
    run = Run(run_dir)
    if evaluated == "best.pt":
        now = run.info().get("best_epoch")
    else:
        now = max((int(m["epoch"]) for m in run.read_metrics() if isinstance(m.get("epoch"), int)), default=None)
    if not isinstance(now, int) or now == metrics["epoch"]:
        return None
    return (f"its {metrics.get('split', 'test')} evaluation is of epoch {metrics['epoch']}'s {evaluated}, but the "
            f"run has trained on since (its {evaluated} is epoch {now})")


class EvalResults:
    """``runs/<run>/eval/<split>/`` and the dataset version behind it."""

    def __init__(self, run: str | Path, split: str = "test") -> None:
        self.run_dir = resolve_run(run).resolve()
        self.split = split
        self.dir = self.run_dir / "eval" / split
        rows_file = self.dir / "per_image.csv"
        if not rows_file.is_file():
            fix = f"python -m evaluate run {self.run_dir} --split {split}"
            try:  # a version without the split (an 80/20 one validates on folds of train): that command fails too
                from ingest.version import read_manifest

                counts = read_manifest(Run(self.run_dir).info().get("dataset_path", ""))["counts"]
                if not (counts.get(split) or {}).get("images"):
                    fix = (f"the run's version has no '{split}' images (it validates on a fold of train): choose "
                           f"another split, e.g. --split test")
            except (SegLoopError, KeyError, TypeError):
                pass
            raise SegLoopError(f"run has no predictions for split '{split}'", path=self.dir, fix=fix)
        with open(rows_file, newline="") as fh:
            self.rows: list[dict[str, Any]] = list(csv.DictReader(fh))
        self.metrics: dict[str, Any] = read_eval_metrics(self.dir / "metrics.json", self.run_dir, split)
        # the taxonomy's classes (evaluations written before instance runs only had them as per_class keys)
        self.class_names: list[str] = list(self.metrics.get("classes") or self.metrics["per_class"])

    @cached_property
    def version(self) -> DatasetVersion:
        """The dataset version the split was scored on; its taxonomy must be the run's."""
        run = Run(self.run_dir)
        version = self.metrics["dataset_version"]
        recorded = run.info().get("dataset_version") if run.info_path.is_file() else None
        path = Path(self.metrics.get("dataset_path") or "")
        ref = (path if path.name == version and (path / "manifest.json").is_file() else
               run.dataset_ref() if recorded == version else version)
        ds = DatasetVersion(resolve_version(ref, run.versions_root))
        if ds.taxonomy.names != self.class_names:
            raise SegLoopError(
                f"run {self.run_dir.name} predicts {len(self.class_names)} classes ({', '.join(self.class_names[:4])}"
                f", ...) but dataset {ds.version} has taxonomy '{ds.taxonomy.name}' with {ds.taxonomy.num_classes} "
                f"({', '.join(ds.taxonomy.names[:4])}, ...)", path=ds.path,
                fix="evaluate the run on a version built with its own taxonomy: "
                    f"python -m evaluate run {self.run_dir} --split {self.split} --version NAME@HASH")
        return ds

    @cached_property
    def images(self) -> dict[str, dict[str, Any]]:
        """COCO image records of the split by key."""
        return {im["key"]: im for im in self.version.images(self.split)}

    def image(self, row: dict[str, Any]) -> dict[str, Any]:
        im = self.images.get(row["key"])
        if im is None:
            raise SegLoopError(f"image {row['key']} of the evaluation is not in split '{self.split}' of "
                               f"{self.version.version}", path=self.dir / "per_image.csv",
                               fix=f"re-run python -m evaluate run {self.run_dir} --split {self.split}")
        return im

    def prediction(self, row: dict[str, Any]) -> np.ndarray:
        return read_label(self.dir / row["prediction"])

    def uncertainty_path(self, row: dict[str, Any]) -> Path | None:
        p = self.dir / "uncertainty" / Path(row["prediction"]).name
        return p if p.is_file() else None

    def score(self, row: dict[str, Any], key: str | None = None) -> float:
        """A per-image score from the CSV (NaN when undefined); by default the column the evaluation ranks images
        by (``per_image_score`` in its metrics.json; mIoU where it names none)."""
        key = key or str(self.metrics.get("per_image_score") or "mIoU")
        return float(row[key]) if row.get(key) else float("nan")
