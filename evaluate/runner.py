"""``evaluate run``: score a run's checkpoint on a split and write everything a report or a triage needs.

Output, under ``runs/<run>/eval/<split>/`` (replaced atomically on re-evaluation): ``metrics.json`` (the header
below, then the task's scores), ``per_class.csv`` (worst first), ``per_image.csv``, ``index.json``
(``core.runs.write_index``: what ``annotate`` reads) and the task's prediction files. What is predicted, scored and
written is the run's task's evaluation part (``tasks/<name>/evaluate.py``); this module loads the run, checks its
dataset, and writes the header every task's ``metrics.json`` shares.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tasks
from core.errors import SegLoopError
from core.fsio import atomic_dir, write_json_atomic
from core.runs import dataset_ref, find_checkpoint, resolve_run
from evaluate.inference import Inference, load_for_inference, model_size, timing
from ingest.version import DatasetVersion, resolve_version


def evaluate_run(run: str | Path, split: str = "test", which: str = "best", device: str = "auto",
                 version: str | None = None, tta: bool = False, uncertainty: bool = True,
                 progress: bool = True) -> dict[str, Any]:
    run_dir = resolve_run(run)
    ckpt_path = find_checkpoint(run_dir, which)
    inf = load_for_inference(ckpt_path, device)
    ckpt = inf.ckpt
    ref = version or dataset_ref(ckpt["dataset_path"], ckpt["dataset_version"])
    ds = DatasetVersion(resolve_version(ref, ckpt["config"]["data"]["versions_root"]))
    names = inf.class_names
    if ds.taxonomy.names != names:
        raise SegLoopError(f"dataset {ds.version} has taxonomy '{ds.taxonomy.name}' ({ds.taxonomy.num_classes} "
                           f"classes) but the run was trained on '{ckpt['taxonomy']['name']}' ({len(names)})",
                           path=ds.path, fix="evaluate on a version built with the run's taxonomy")
    part = inf.plugin.evaluation()
    if tta and part.tta_problem:
        raise SegLoopError(f"--tta does not apply to run {run_dir.name}: {part.tta_problem}", path=run_dir,
                           fix="evaluate it without --tta")
    images = ds.images(split)
    if not images:
        raise SegLoopError(f"split '{split}' of {ds.version} is empty", path=ds.path, fix="choose another --split")
    out_dir = run_dir / "eval" / split
    with atomic_dir(out_dir, replace=True) as tmp:
        scores = part.evaluate_split(inf, ds, split, tmp, run_dir.name, tta=tta,
                                                        uncertainty=uncertainty, progress=progress)
        result = {**header(run_dir, split, ds, inf, len(images), scores.pop("times"), scores.pop("input_size")),
                  **scores}
        write_json_atomic(tmp / "metrics.json", result)
    result["out_dir"] = str(out_dir)
    return result


def header(run_dir: Path, split: str, ds: DatasetVersion, inf: Inference, images: int, times: list[float],
           input_size: Any) -> dict[str, Any]:
    """What every evaluation records beside its scores: the run, data, checkpoint, timing and model size."""
    spec = inf.ckpt["model_spec"]
    return {"run": str(run_dir), "task": spec["task"], "split": split, "dataset_version": ds.version,
            "checkpoint": str(inf.checkpoint), "epoch": inf.ckpt["epoch"], "images": images,
            "classes": ds.taxonomy.names, "timing": timing(times, inf.device, input_size),
            "model": {"name": spec["name"], "args": spec["args"], **model_size(inf.model)}}


def print_summary(result: dict[str, Any]) -> None:
    """The evaluation's figures on the terminal, as its task presents them."""
    t, m = result["timing"], result["model"]
    print(f"{result['run']} on {result['split']} ({result['images']} images, {result['dataset_version']}):")
    for line in tasks.get(result.get("task")).evaluation().summary_lines(result):
        print(f"  {line}")
    print(f"  {t['ms_per_image_mean']:.1f} ms/image on {t['device']}   {m['parameters'] / 1e6:.2f} M parameters, "
          f"{m['size_mb']:.1f} MB")
    print(f"  written to {result['out_dir']}")
