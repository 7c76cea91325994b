"""``fiftyone_views load``: a run's evaluated split as a FiftyOne dataset, scored per sample by SegLoop.

Each sample holds the image, the ground truth and the prediction as ``fo.Segmentation`` (``ground_truth``,
``prediction``), the instances as ``fo.Detections`` with masks (``gt_instances``, ``pred_instances``, each
detection marked ``eval`` = tp / fp / fn as FiftyOne's own evaluations do), and scores computed with SegLoop's
confusion matrix — ``miou``, ``dice``, ``pixel_acc``, ``class_iou.<class>`` — plus instance ``tp`` / ``fp`` /
``fn`` and ``instance_errors`` (FP + FN). A run that scores its detections has every detection the evaluation scored
in ``pred_instances``, with its ``confidence``; TP / FP / FN count those at or above the evaluation's threshold (as
``per_image.csv``), the others are marked ``below_threshold``, and the saved view ``confident_detections`` and the
worst views show the confident ones only. FiftyOne's own ``evaluate_segmentations`` gives no per-sample IoU, and its
per-sample Dice is a running total; these fields match ``per_image.csv`` exactly.

The App draws mask value 0 as transparent background, and Cityscapes' train index 0 is ``road``: masks are
therefore written for FiftyOne as train index + 1 (the COCO category id) with 0 for ignored pixels, under
``runs/<run>/fiftyone/<split>/``. ``mask_targets`` and the App's colours follow the same shift.

Reloading builds the new dataset under a temporary name (``<name>.loading``, its loader's pid in its info) and
swaps it in only once it is complete: a failed reload leaves the previous dataset and its views as they were. A
``.loading`` dataset whose loader no longer runs (a killed load) is dropped by the next load; one whose loader is
still running is left alone, and loading the same run twice at once is refused.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import tasks
from core.errors import SegLoopError
from core.fsio import atomic_dir, read_label, save_png
from core.metrics import confusion, scores_from_matrix, thing_iou
from core.services import owner_alive
from evaluate.instances import InstanceMatch, match_instances
from evaluate.results import EvalResults
from ingest.coco import by_image, category_id
from ingest.records import Instance
from ingest.taxonomy import Taxonomy, hex_color

SEMANTIC_FIELDS = ["ground_truth", "prediction"]
INSTANCE_FIELDS = ["gt_instances", "pred_instances"]
ADD_BATCH = 64


LOADING_SUFFIX = ".loading"


def _loader_alive(info: dict[str, Any]) -> bool:
    """Whether the process that started a ``.loading`` dataset still runs (on this machine; one on another machine
    is assumed alive, since only it can tell)."""
    pid = info.get("loader_pid")
    if pid == os.getpid():
        return False
    # no pid: written before loads recorded it, or never got that far (abandoned)
    return owner_alive(pid, info.get("loader_host"))


def drop_abandoned_loads(fo) -> list[str]:
    """Delete the ``.loading`` datasets of loads that were killed; returns their names."""
    dropped = []
    for name in fo.list_datasets():
        if not name.endswith(LOADING_SUFFIX):
            continue
        try:
            info = fo.load_dataset(name).info or {}
        except Exception:  # a half-created dataset may not even load: it is abandoned all the more
            info = {}
        if not _loader_alive(info):
            fo.delete_dataset(name)
            dropped.append(name)
    return dropped


def dataset_name(run_dir: Path, split: str, fo: Any = None) -> str:
    """The FiftyOne dataset of a run's split: ``<run>-<split>``, readable in the App. Where that name holds another
    run's split (``fold0`` of two k-fold groups), this run's dataset is named with a digest of its folder too, so
    neither run reads or tags the other's samples."""
    import hashlib

    plain = f"{run_dir.name}-{split}"
    if fo is None or not fo.dataset_exists(plain):
        return plain
    owner = fo.load_dataset(plain).info.get("run")
    if owner is None or not Path(owner).is_dir() or Path(owner).resolve() == run_dir.resolve():
        return plain  # unowned, this run's, or a run moved or deleted since: the readable name is free
    return f"{plain}-{hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:8]}"


def field_name(class_name: str) -> str:
    """A class name as a field or view name part: ``traffic light`` -> ``traffic_light``."""
    return re.sub(r"\W+", "_", class_name).strip("_").lower()


@functools.cache
def _app_lut(ignore_index: int) -> np.ndarray:
    lut = np.array([category_id(v) for v in range(256)], dtype=np.int64)
    lut[ignore_index] = 0
    return np.clip(lut, 0, 255).astype(np.uint8)


def fiftyone_mask(label: np.ndarray, ignore_index: int) -> np.ndarray:
    """Train indices -> the App's values: index + 1 (COCO category id), ignore -> 0 (not drawn)."""
    return _app_lut(ignore_index)[label]


def mask_targets(taxonomy: Taxonomy) -> dict[int, str]:
    return {category_id(c.index): c.name for c in taxonomy.classes}




def sample_scores(pred: np.ndarray, label: np.ndarray, taxonomy: Taxonomy, things_only: bool = False
                  ) -> dict[str, Any]:
    """Per-image pixel accuracy, mIoU, mean Dice and per-class IoU (None where a class is in neither map).

    Unpainted pixels (the ignore value) predict no class; ``things_only`` scores an instance model's painted map,
    where only the thing classes enter the means (the same figures as ``evaluate run``'s thing-class IoU)."""
    n = taxonomy.num_classes
    # unpainted pixels (an instance map's background, a panoptic map's void) predict no class: an extra,
    # never-true class, a false negative of the class beneath
    pred = np.where(pred == taxonomy.ignore_index, n, pred)
    mat = confusion(pred, label, n + 1, taxonomy.ignore_index)
    keep = [c.index for c in taxonomy.classes if c.has_instances or not things_only]
    iou, miou = thing_iou(mat, taxonomy.names, keep)
    s = scores_from_matrix(mat)
    dice = s.dice[keep]
    return {"miou": _num(miou), "dice": _num(np.nanmean(dice)) if np.isfinite(dice).any() else None,
            "pixel_acc": _num(s.pixel_acc), "class_iou": {field_name(nm): v for nm, v in iou.items()}}


def _num(v: float) -> float | None:
    return None if np.isnan(v) else float(v)


def detections(fo, instances: list[Instance], status: list[str], ious: list[float] | None,
               taxonomy: Taxonomy):
    """``fo.Detections`` with a mask cropped to each box, in relative coordinates as FiftyOne wants them."""
    dets = []
    for k, inst in enumerate(instances):
        ys, xs = np.nonzero(inst.mask)
        if len(xs) == 0:
            continue
        h, w = inst.mask.shape
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        d = fo.Detection(label=taxonomy.classes[inst.category].name,
                         bounding_box=[x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h],
                         mask=inst.mask[y0:y1, x0:x1].copy(), confidence=inst.score, iscrowd=inst.iscrowd,
                         eval=status[k])
        if ious is not None:
            d["eval_iou"] = ious[k]
        dets.append(d)
    return fo.Detections(detections=dets)


def _match(triage: Any, gt: list[Instance], pred: list[Instance]) -> InstanceMatch:
    """Ground truth matched to the predictions the evaluation counted (scored at least its threshold, as its
    per-image TP / FP / FN); the others are kept with the status ``below_threshold``, for the App's slider."""
    cut = triage.score_threshold
    counted = [i for i, p in enumerate(pred) if cut is None or p.score is None or p.score >= cut]
    sub = match_instances(gt, [pred[i] for i in counted])
    m = InstanceMatch(["below_threshold"] * len(pred), sub.gt_status, [0.0] * len(pred))
    for k, i in enumerate(counted):
        m.pred_status[i], m.pred_iou[i] = sub.pred_status[k], sub.pred_iou[k]
    return m


def _sample(fo, res: EvalResults, triage: Any, row: dict[str, Any], im: dict[str, Any], gt_anns: list[dict],
            tmp: Path, masks_dir: Path):
    """One FiftyOne sample: masks written for the App under ``tmp`` (later ``masks_dir``), scores, instances."""
    ds, tax = res.version, res.version.taxonomy
    label, pred = ds.load_semantic(im), res.prediction(row)
    if pred.shape != label.shape:
        raise SegLoopError(f"prediction of {row['key']} is {pred.shape}, ground truth {label.shape}",
                           path=res.dir / row["prediction"],
                           fix=f"re-run python -m evaluate run {res.run_dir} --split {res.split}")
    file = Path(row["prediction"]).name
    save_png(tmp / "ground_truth" / file, fiftyone_mask(label, tax.ignore_index))
    save_png(tmp / "prediction" / file, fiftyone_mask(pred, tax.ignore_index))
    unc_path = res.uncertainty_path(row)
    unc = read_label(unc_path) if unc_path else None
    gt_inst = triage.ground_truth_instances(im, gt_anns)
    pred_inst = triage.predicted_instances(im, pred, unc)
    m = _match(triage, gt_inst, pred_inst)
    scores = sample_scores(pred, label, tax, things_only=triage.things_only)
    sample = fo.Sample(
        filepath=str(ds.image_path(im)), tags=[res.split], key=row["key"], sha256=im["sha256"],
        group=im.get("group"), source=im.get("source"),
        ground_truth=fo.Segmentation(mask_path=str(masks_dir / "ground_truth" / file)),
        prediction=fo.Segmentation(mask_path=str(masks_dir / "prediction" / file)),
        gt_instances=detections(fo, gt_inst, m.gt_status, None, tax),
        pred_instances=detections(fo, pred_inst, m.pred_status, m.pred_iou, tax),
        miou=scores["miou"], dice=scores["dice"], pixel_acc=scores["pixel_acc"],
        class_iou=fo.DynamicEmbeddedDocument(**scores["class_iou"]),
        tp=m.tp, fp=m.fp, fn=m.fn, instance_errors=m.fp + m.fn,
        mean_uncertainty=float(unc.mean() / 255) if unc is not None else None)
    return sample


def load_run(run: str | Path, split: str = "test", db_dir: str | Path | None = None, tag_k: int = 10,
             progress: bool = True) -> dict[str, Any]:
    """Build (or rebuild) the FiftyOne dataset of a run's split, with its saved views; returns a summary."""
    from fiftyone_views.db import connect, user_database_uri
    from fiftyone_views.db import db_dir as db_dir_of
    from fiftyone_views.views import save_views

    res = EvalResults(run, split)
    ds, tax = res.version, res.version.taxonomy
    fo = connect(db_dir)
    name = dataset_name(res.run_dir, split, fo)
    if name != dataset_name(res.run_dir, split):
        print(f"note: FiftyOne dataset '{dataset_name(res.run_dir, split)}' holds another run of this name "
              f"({fo.load_dataset(dataset_name(res.run_dir, split)).info.get('run')}): this run's is '{name}'")
    tmp_name = f"{name}{LOADING_SUFFIX}"
    for dropped in drop_abandoned_loads(fo):
        print(f"dropped FiftyOne dataset '{dropped}', left by an interrupted load")
    if fo.dataset_exists(tmp_name):
        pid = fo.load_dataset(tmp_name).info.get("loader_pid")
        raise SegLoopError(f"another load of '{name}' is running (process {pid})", path=res.run_dir,
                           fix="wait for it to finish, or stop it and load again")
    triage = tasks.get(res.metrics.get("task")).triage(res)
    instance_source = triage.instance_source
    gt_by_image = by_image(ds.coco(split)["annotations"])
    masks_dir = res.run_dir / "fiftyone" / split
    t0 = time.perf_counter()
    dataset = None
    try:
        with atomic_dir(masks_dir, replace=True) as tmp:
            (tmp / "ground_truth").mkdir()
            (tmp / "prediction").mkdir()
            dataset = fo.Dataset(tmp_name)
            dataset.info = {"loader_pid": os.getpid(), "loader_host": socket.gethostname()}
            dataset.save()
            samples = []
            for row in tqdm(res.rows, desc=f"loading {name} into FiftyOne", disable=not progress):
                im = res.image(row)
                sample = _sample(fo, res, triage, row, im, gt_by_image.get(int(im["id"]), []), tmp, masks_dir)
                samples.append(sample)
                if len(samples) == ADD_BATCH:  # bounded memory: instance masks add up on large splits
                    dataset.add_samples(samples, dynamic=True, progress=False)
                    samples = []
            dataset.add_samples(samples, dynamic=True, progress=False)
            dataset.compute_metadata(progress=False)
            _configure(fo, dataset, tax)
            dataset.info = {**dataset.info, "run": str(res.run_dir), "split": split, "dataset_version": ds.version,
                            "taxonomy": tax.name, "instances_from": instance_source,
                            **triage.headline(), "score_threshold": res.metrics.get("score_threshold"),
                            "worst_classes": res.metrics["worst_classes"],
                            "masks": str(masks_dir), "loaded": time.strftime("%Y-%m-%dT%H:%M:%S")}
            views = save_views(dataset, res, tag_k)
            dataset.save()
    except BaseException:
        if dataset is not None:
            dataset.delete()
        raise
    replaced = fo.dataset_exists(name)
    if replaced:
        fo.delete_dataset(name)
    dataset.name = name
    dataset.info = {k: v for k, v in dataset.info.items() if not k.startswith("loader_")}
    dataset.persistent = True
    dataset.save()
    return {"dataset": name, "samples": len(dataset), "views": views, "replaced": replaced,
            "instances_from": instance_source, "seconds": round(time.perf_counter() - t0, 2),
            "database": fo.config.database_uri if user_database_uri() else str(db_dir_of(db_dir))}


def _configure(fo, dataset, tax: Taxonomy) -> None:
    """Mask targets, classes and the App's defaults: semantic fields shown, in the taxonomy's colours."""
    targets = mask_targets(tax)
    dataset.default_mask_targets = targets
    dataset.default_classes = tax.names
    mask_colors = [{"intTarget": category_id(c.index), "color": hex_color(c.color)} for c in tax.classes]
    value_colors = [{"value": c.name, "color": hex_color(c.color)} for c in tax.classes]
    dataset.app_config.color_scheme = fo.ColorScheme(
        color_by="value", opacity=0.6, default_mask_targets_colors=mask_colors,
        fields=[{"path": f, "maskTargetsColors": mask_colors} for f in SEMANTIC_FIELDS]
        + [{"path": f, "colorByAttribute": "label", "valueColors": value_colors} for f in INSTANCE_FIELDS])
    from fiftyone.core.odm.dataset import ActiveFields

    dataset.app_config.active_fields = ActiveFields(paths=SEMANTIC_FIELDS)


def open_dataset(run: str | Path, split: str = "test", db_dir: str | Path | None = None):
    """The loaded dataset of a run's split; an error naming ``load`` when there is none."""
    from evaluate.runner import resolve_run
    from fiftyone_views.db import connect

    run_dir = resolve_run(run)
    fo = connect(db_dir)
    name = dataset_name(run_dir, split, fo)
    if not fo.dataset_exists(name):
        raise SegLoopError(f"no FiftyOne dataset '{name}' in the database at {fo.config.database_uri}", path=run_dir,
                           fix=f"python -m fiftyone_views load {run_dir} --split {split}")
    return fo.load_dataset(name)
