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
from core.fsio import atomic_dir, read_json, write_json_atomic
from core.runs import Run, dataset_ref, find_checkpoint, resolve_run
from evaluate.inference import Inference, load_for_inference, model_size, timing
from ingest.version import DatasetVersion, resolve_version
from train.checkpoint import check_run_checkpoint


def train_overlap(ckpt: dict[str, Any], ds: DatasetVersion, split: str, info: dict[str, Any]) -> int:
    """How many images of ``ds``'s ``split`` the run trained on: on its own version, those of its training split it
    chose (a fold's or a subset's ids, in ``run.json``; an ensemble's members together trained on all of it); on
    another version, by content hash. A split that holds training images scores memory, not generalisation."""
    if ds.version == ckpt["dataset_version"]:
        if split != ckpt["config"]["data"]["train_split"]:
            return 0
        ids = (info.get("train_images") or {}).get("ids")
        return len(ids) if isinstance(ids, list) else len(ds.images(split))
    try:
        own = DatasetVersion(resolve_version(dataset_ref(ckpt["dataset_path"], ckpt["dataset_version"]),
                                             ckpt["config"]["data"]["versions_root"]))
    except SegLoopError:
        return 0  # the training version is gone: nothing to compare with
    trained = {im["sha256"] for im in own.images(ckpt["config"]["data"]["train_split"])}
    return sum(im["sha256"] in trained for im in ds.images(split))


def evaluate_run(run: str | Path, split: str = "test", which: str = "best", device: str = "auto",
                 version: str | None = None, tta: bool = False, uncertainty: bool = True,
                 progress: bool = True, replace: bool = False) -> dict[str, Any]:
    """Score the run's checkpoint on ``split`` into ``eval/<split>/``. An evaluation there of another dataset
    version is replaced only with ``replace`` (its figures would be lost); a split of another version that holds
    images the run trained on is said and recorded (``train_overlap``)."""
    run_dir = resolve_run(run)
    ckpt_path = find_checkpoint(run_dir, which)
    inf = load_for_inference(ckpt_path, device)
    ckpt = inf.ckpt
    check_run_checkpoint(run_dir, ckpt, ckpt_path)
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
    previous = out_dir / "metrics.json"
    if previous.is_file() and not replace:
        before = read_json(previous, "evaluation metrics")
        if isinstance(before, dict) and before.get("dataset_version") not in (None, ds.version):
            raise SegLoopError(f"{out_dir} holds the evaluation on {before['dataset_version']}; evaluating on "
                               f"{ds.version} would replace it (and its figures)", path=out_dir,
                               fix="pass --replace to replace it, or copy the run folder and evaluate the copy")
    overlap = train_overlap(ckpt, ds, split, Run(run_dir).info())
    if overlap:
        print(f"warning: {overlap} of the {len(images)} images of {ds.version}'s {split} split are images run "
              f"{run_dir.name} trained on: its figures there measure memory, not generalisation")
    with atomic_dir(out_dir, replace=True) as tmp:
        scores = part.evaluate_split(inf, ds, split, tmp, run_dir.name, tta=tta,
                                                        uncertainty=uncertainty, progress=progress)
        result = {**header(run_dir, split, ds, inf, len(images), scores.pop("times"), scores.pop("input_size")),
                  **({"train_overlap": overlap} if overlap else {}), **scores}
        write_json_atomic(tmp / "metrics.json", result)
    result["out_dir"] = str(out_dir)
    return result


def header(run_dir: Path, split: str, ds: DatasetVersion, inf: Inference, images: int, times: list[float],
           input_size: Any) -> dict[str, Any]:
    """What every evaluation records beside its scores: the run, data, checkpoint, timing and model size."""
    spec = inf.ckpt["model_spec"]
    return {"run": str(run_dir), "task": spec["task"], "split": split, "dataset_version": ds.version,
            "dataset_path": str(ds.path.resolve()),
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
