"""Panoptic segmentation from two runs: a semantic run's stuff and an instance run's things, scored by PQ.

Every model family gets a Panoptic Quality this way. The two runs' evaluations of one split of one dataset version
are combined image by image with the usual heuristic (Kirillov et al.'s panoptic baseline, as detectron2's
``combine_semantic_and_instance_outputs``): the instance run's detections in decreasing score order, each at least
``score`` confident, take their pixels not taken yet, and one whose pixels are more than ``overlap`` taken already is
dropped; then every stuff class of the semantic map fills the pixels left, if at least ``min_stuff_area`` of them;
what is left is void. Thing classes of the semantic map are not used: the instances are the things.

The result is written as the panopticapi files (``pred/<image>.png`` with segment id = R + 256 G + 256^2 B, and
``predictions.json`` in the COCO panoptic format), the ground truth the same way (``gt/``, ``ground_truth.json``:
thing instances from the version's COCO annotations, a crowd annotation's pixels as the class's crowd region), and
``panoptic.json`` with PQ, SQ and RQ over all classes, things, stuff and per class (``metrics.panoptic``, equal to
cityscapesScripts' ``evalPanopticSemanticLabeling`` on those files), so anyone can recompute the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from core.errors import SegLoopError
from core.fsio import atomic_dir, read_label, save_png, write_json_atomic
from core.runs import check_output_folder
from evaluate.instances import load_instance_results
from evaluate.results import EvalResults, stale_evaluation
from ingest.coco import by_image, decode_rle, train_index
from metrics.panoptic import PanopticEvaluator, panoptic_segments

SCORE = 0.5  # detectron2's instances_score_thresh
OVERLAP = 0.5  # detectron2's overlap_threshold
MIN_STUFF_AREA = 64  # pixels; detectron2 uses 4096 on COCO's ~640x480 images, the demo city's frames are smaller


def combine(semantic: np.ndarray, detections: list[dict[str, Any]], is_thing: list[bool], ignore_index: int,
            score: float = SCORE, overlap: float = OVERLAP,
            min_stuff_area: int = MIN_STUFF_AREA) -> tuple[np.ndarray, np.ndarray]:
    """One image's panoptic prediction as a semantic map (``ignore_index`` = void) and an instance-id map (0 = no
    instance), the form ``metrics.panoptic`` reads: detections first, by score, then the stuff classes."""
    h, w = semantic.shape
    sem = np.full((h, w), ignore_index, np.uint8)
    inst = np.zeros((h, w), np.int32)
    taken = np.zeros((h, w), bool)
    n = 0
    for det in sorted(detections, key=lambda d: -float(d["score"])):
        if float(det["score"]) < score:
            break
        mask = decode_rle(det["segmentation"]).astype(bool)
        if mask.shape != (h, w):
            raise SegLoopError(f"a detection of image {det['image_id']} is {mask.shape[1]}x{mask.shape[0]}, its "
                               f"semantic prediction {w}x{h}: the runs did not score the same images",
                               fix="evaluate both runs on the same split of the same version")
        area = int(mask.sum())
        if area == 0 or (mask & taken).sum() / area > overlap:
            continue
        mask &= ~taken
        n += 1
        cls = train_index(int(det["category_id"]))
        sem[mask], inst[mask], taken[mask] = cls, n, True
    for cls in np.unique(semantic):
        if cls >= len(is_thing) or is_thing[cls]:
            continue
        mask = (semantic == cls) & ~taken
        if int(mask.sum()) >= min_stuff_area:
            sem[mask] = cls
    return sem, inst


def ground_truth_instances(annotations: list[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """The instance-id map of an image's COCO annotations (0 = no instance); a crowd annotation's pixels keep 0,
    which ``metrics.panoptic`` reads as its class's crowd region."""
    out = np.zeros(shape, np.int32)
    for k, a in enumerate(annotations, 1):
        if not a.get("iscrowd"):
            out[decode_rle(a["segmentation"]).astype(bool)] = k
    return out


def _segments_file(seg: Any) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """A panopticapi PNG (segment id in RGB) and its segments_info."""
    ids = seg.ids.astype(np.int64)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    areas = np.bincount(ids.reshape(-1), minlength=len(seg.category) + 1)
    info = [{"id": s + 1, "category_id": int(seg.category[s]) + 1, "iscrowd": int(seg.iscrowd[s]),
             "area": int(areas[s + 1])} for s in range(len(seg.category)) if areas[s + 1]]
    return rgb, info


class PanopticFiles:
    """The panopticapi files of a split, written image by image under ``folder``: ``pred/`` and ``gt/`` PNGs
    (segment id = R + 256 G + 256^2 B), ``predictions.json`` and ``ground_truth.json`` (COCO panoptic), with PQ
    accumulated on the same segments (``metrics.panoptic``, equal to cityscapesScripts on these files)."""

    def __init__(self, folder: Path, taxonomy: Any) -> None:
        self.folder, self.tax = folder, taxonomy
        self.is_thing = [c.has_instances for c in taxonomy.classes]
        self.evaluator = PanopticEvaluator(taxonomy.names, self.is_thing, taxonomy.ignore_index)
        (folder / "pred").mkdir(parents=True)
        (folder / "gt").mkdir()
        self.pred_anns: list[dict[str, Any]] = []
        self.gt_anns: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []

    def add(self, key: str, name: str, label: np.ndarray, gt_inst: np.ndarray, pred_sem: np.ndarray,
            pred_inst: np.ndarray) -> Any:
        """One image (``key`` its id in the files, ``name`` its PNG's name); its own PQ counts."""
        counts = self.evaluator.process(label, gt_inst, pred_sem, pred_inst)
        ignore = self.tax.ignore_index
        for folder, anns, seg in (
                ("pred", self.pred_anns, panoptic_segments(pred_sem, pred_inst, self.is_thing, ignore,
                                                           unassigned_is_crowd=False)),
                ("gt", self.gt_anns, panoptic_segments(label, gt_inst, self.is_thing, ignore,
                                                       unassigned_is_crowd=True))):
            rgb, info = _segments_file(seg)
            save_png(self.folder / folder / name, rgb)
            anns.append({"image_id": key, "file_name": name, "segments_info": info})
        self.images.append({"id": key, "file_name": name, "height": int(label.shape[0]),
                            "width": int(label.shape[1])})
        return counts

    def finish(self) -> dict[str, Any]:
        """Write the two JSON files; PQ, SQ and RQ over all classes, things, stuff and per class."""
        tax = self.tax
        categories = [{"id": c.index + 1, "name": c.name, "isthing": int(c.has_instances),
                       "color": list(tax.colorize(np.array([[c.index]], np.uint8))[0, 0].tolist())}
                      for c in tax.classes]
        for file, anns in (("predictions.json", self.pred_anns), ("ground_truth.json", self.gt_anns)):
            write_json_atomic(self.folder / file, {"images": self.images, "annotations": anns,
                                                   "categories": categories})
        return self.evaluator.evaluate()


def _check_pair(sem: EvalResults, ins: EvalResults) -> None:
    """Both evaluations of one split, version and taxonomy; the semantic one with stuff, the other with instances."""
    if sem.run_dir == ins.run_dir:
        raise SegLoopError("--semantic and --instance are the same run", path=sem.run_dir,
                           fix="give a semantic run for the stuff, an instance run (Mask R-CNN, YOLO) for the things")
    if sem.metrics["dataset_version"] != ins.metrics["dataset_version"]:
        raise SegLoopError(f"the runs' {sem.split} evaluations are on different versions "
                           f"({sem.metrics['dataset_version']}, {ins.metrics['dataset_version']})", path=ins.dir,
                           fix=f"evaluate both on one: python -m evaluate run RUN --split {sem.split} --version "
                               f"{sem.metrics['dataset_version']} --replace")
    if sem.class_names != ins.class_names:
        raise SegLoopError(f"the runs' taxonomies differ ({len(sem.class_names)} and {len(ins.class_names)} classes: "
                           f"{', '.join(sem.class_names[:3])} ... / {', '.join(ins.class_names[:3])} ...)",
                           path=ins.run_dir, fix="combine runs trained on one taxonomy")
    if (sem.dir / "instances.json").is_file():
        raise SegLoopError(f"--semantic {sem.run_dir.name} is a run of instances: its class map holds its painted "
                           f"instances, no stuff", path=sem.run_dir, fix="give a semantic model's run as --semantic")
    tax = sem.version.taxonomy
    if not any(not c.has_instances for c in tax.classes):
        raise SegLoopError(f"taxonomy '{tax.name}' has no stuff class: there is nothing to combine the things with",
                           path=tax.path, fix="score the instance run alone (python -m evaluate run)")


def panoptic_from_runs(semantic: str | Path, instance: str | Path, out: str | Path, split: str = "test",
                       score: float = SCORE, overlap: float = OVERLAP, min_stuff_area: int = MIN_STUFF_AREA,
                       progress: bool = True) -> dict[str, Any]:
    """Combine the two runs' evaluations of ``split`` into ``out`` (written whole, or not at all) and return the
    figures (also ``out/panoptic.json``)."""
    out = check_output_folder(out, "a panoptic result", "panoptic.json",
                              {"panoptic.json", "predictions.json", "ground_truth.json", "pred", "gt"})
    for name, value, low, high in (("--score", score, 0.0, 1.0), ("--overlap", overlap, 0.0, 1.0)):
        if not low <= value <= high:
            raise SegLoopError(f"{name} {value} is outside [{low:g}, {high:g}]", fix=f"give {name} in [0, 1]")
    if min_stuff_area < 0:
        raise SegLoopError(f"--min-stuff-area {min_stuff_area} is negative", fix="give a pixel count >= 0")
    sem, ins = EvalResults(semantic, split), EvalResults(instance, split)
    for flag, res in (("--semantic", sem), ("--instance", ins)):
        stale = stale_evaluation(res.run_dir, res.metrics)
        if stale:
            raise SegLoopError(f"{flag} {res.run_dir.name}: {stale}: the panoptic figures would be of the old model",
                               path=res.dir / "metrics.json", fix=f"python -m evaluate run {res.run_dir} --split "
                                                                  f"{split}")
    detections = load_instance_results(ins.dir)
    if detections is None:
        raise SegLoopError(f"--instance {ins.run_dir.name} wrote no instance predictions (instances.json) for "
                           f"'{split}'", path=ins.dir,
                           fix="give an instance model's run (Mask R-CNN, YOLO-seg), evaluated on the split")
    _check_pair(sem, ins)
    ds = sem.version
    tax = ds.taxonomy
    gt_by_image = by_image(ds.coco(split)["annotations"])
    is_thing = [c.has_instances for c in tax.classes]
    rows = sorted(sem.rows, key=lambda r: r["key"])
    if {r["key"] for r in ins.rows} != {r["key"] for r in rows}:
        raise SegLoopError(f"the runs' {split} evaluations hold different images", path=ins.dir,
                           fix=f"evaluate both again on the same version: python -m evaluate run RUN --split {split}")
    with atomic_dir(out, replace=True) as tmp:
        files = PanopticFiles(tmp, tax)
        for row in tqdm(rows, desc=f"panoptic {split}", disable=not progress, leave=False):
            image = sem.image(row)
            label = read_label(ds.semantic_path(image))
            semantic_map = sem.prediction(row)
            if semantic_map.shape != label.shape:
                raise SegLoopError(f"the semantic prediction of {row['key']} is {semantic_map.shape[1]}x"
                                   f"{semantic_map.shape[0]}, its label {label.shape[1]}x{label.shape[0]}",
                                   path=sem.dir / row["prediction"], fix=f"python -m evaluate run {sem.run_dir} "
                                                                         f"--split {split}")
            pred_sem, pred_inst = combine(semantic_map, detections.get(int(image["id"]), []), is_thing,
                                          tax.ignore_index, score, overlap, min_stuff_area)
            gt_inst = ground_truth_instances(gt_by_image.get(int(image["id"]), []), label.shape)
            # the key with its folders flattened, as the evaluation names it
            files.add(row["key"], Path(row["prediction"]).name, label, gt_inst, pred_sem, pred_inst)
        pq = files.finish()
        figures = {"split": split, "dataset_version": ds.version, "semantic_run": str(sem.run_dir),
                   "instance_run": str(ins.run_dir), "images": len(rows),
                   "evaluated": {k: {"checkpoint": r.metrics.get("checkpoint"), "epoch": r.metrics.get("epoch")}
                                 for k, r in (("semantic", sem), ("instance", ins))},
                   "settings": {"score": score, "overlap": overlap, "min_stuff_area": min_stuff_area},
                   **pq}
        write_json_atomic(tmp / "panoptic.json", figures)
    return figures


def print_figures(figures: dict[str, Any], out: Path) -> None:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    print(f"panoptic {figures['split']} ({figures['dataset_version']}, {figures['images']} images): stuff from "
          f"{Path(figures['semantic_run']).name}, things from {Path(figures['instance_run']).name}")
    print(f"  {'':<8}{'PQ':>7}{'SQ':>7}{'RQ':>7}{'classes':>9}")
    for label, suffix in (("all", ""), ("things", "_th"), ("stuff", "_st")):
        print(f"  {label:<8}{pct(figures['PQ' + suffix]):>7}{pct(figures['SQ' + suffix]):>7}"
              f"{pct(figures['RQ' + suffix]):>7}{figures['n' + suffix]:>9}")
    print(f"written: {out / 'panoptic.json'}, {out / 'pred'}/ + predictions.json, {out / 'gt'}/ + ground_truth.json")
