"""``evaluate run``: score a run's checkpoint on a split and write everything a report or a triage needs.

Output, under ``runs/<run>/eval/<split>/`` (replaced atomically on re-evaluation):
``metrics.json`` (pixel accuracy, mIoU, mean Dice, per-class IoU/Dice, worst classes, confusion matrix, timing,
model size), ``per_class.csv`` (worst first), ``per_image.csv``, ``pred/<image>.png`` (train indices) and
``uncertainty/<image>.png`` (normalised softmax entropy, 0-255) for choosing what to label next.
"""

from __future__ import annotations

import csv
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.errors import SegLoopError
from core.fsio import atomic_dir, save_png, write_json_atomic
from core.runs import dataset_ref, find_checkpoint, resolve_run
from ingest.version import DatasetVersion, resolve_version
from metrics.semantic import SemSegEvaluator
from train.checkpoint import load_model
from train.data import resize_image
from train.infer import pick_device, predict_logits, use_channels_last


def model_size(model: torch.nn.Module) -> dict[str, Any]:
    params = sum(p.numel() for p in model.parameters())
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters()) + \
        sum(b.numel() * b.element_size() for b in model.buffers())
    return {"parameters": params, "size_mb": round(nbytes / 2**20, 3)}


def load_for_inference(ckpt_path: Path, device: str = "auto", task: str | None = None
                       ) -> tuple[torch.nn.Module, dict[str, Any], torch.device, bool]:
    """A checkpoint's model on the chosen device, in the memory layout it runs best in there; with the checkpoint,
    the device and whether that layout is channels_last. With ``task``, a checkpoint of another task is refused."""
    model, ckpt = load_model(ckpt_path, task=task)
    dev = pick_device(device)
    requested = bool(ckpt["config"]["train"]["channels_last"])
    if ckpt["model_spec"]["task"] == "semantic":
        channels_last = use_channels_last(model, dev, requested)
    else:  # detection models gain from NHWC on GPUs only
        channels_last = requested and dev.type == "cuda"
    model = model.to(dev, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return model, ckpt, dev, channels_last


def normalised_entropy(probs: torch.Tensor, log_c: float) -> torch.Tensor:
    """Per-pixel softmax entropy / ln C in [0, 1], from (C, H, W) class probabilities."""
    return (-(probs * probs.clamp_min(1e-12).log()).sum(0) / log_c).clamp(0, 1)


def evaluate_run(run: str | Path, split: str = "test", which: str = "best", device: str = "auto",
                 version: str | None = None, tta: bool = False, uncertainty: bool = True,
                 progress: bool = True) -> dict[str, Any]:
    run_dir = resolve_run(run)
    ckpt_path = find_checkpoint(run_dir, which)
    model, ckpt, dev, channels_last = load_for_inference(ckpt_path, device)
    cfg = ckpt["config"]
    ref = version or dataset_ref(ckpt["dataset_path"], ckpt["dataset_version"])
    ds = DatasetVersion(resolve_version(ref, cfg["data"]["versions_root"]))
    names = [c["name"] for c in ckpt["taxonomy"]["classes"]]
    if ds.taxonomy.names != names:
        raise SegLoopError(f"dataset {ds.version} has taxonomy '{ds.taxonomy.name}' ({ds.taxonomy.num_classes} "
                           f"classes) but the run was trained on '{ckpt['taxonomy']['name']}' ({len(names)})",
                           path=ds.path, fix="evaluate on a version built with the run's taxonomy")
    images = ds.images(split)
    if not images:
        raise SegLoopError(f"split '{split}' of {ds.version} is empty", path=ds.path, fix="choose another --split")
    hw = tuple(cfg["data"]["image_size"])
    amp = bool(cfg["train"]["amp"])
    if ckpt["model_spec"]["task"] == "instance":
        return _evaluate_instances(run_dir, ckpt_path, ckpt, model, ds, split, dev, amp, progress)
    evaluator = SemSegEvaluator(names, ds.taxonomy.ignore_index)
    out_dir = run_dir / "eval" / split
    times: list[float] = []
    index: dict[str, dict[str, Any]] = {}  # image sha256 -> its prediction files (what annotate reads)
    log_c = math.log(len(names))
    with atomic_dir(out_dir, replace=True) as tmp:
        (tmp / "pred").mkdir()
        if uncertainty:
            (tmp / "uncertainty").mkdir()
        for im in tqdm(images, desc=f"evaluating {run_dir.name} on {split}", disable=not progress):
            label = ds.load_semantic(im)
            x = torch.from_numpy(resize_image(ds.load_image(im), hw))[None]
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            logits = predict_logits(model, x, label.shape, dev, amp, channels_last, hflip_tta=tta)
            pred = logits.argmax(1)[0]
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            pred_np = pred.cpu().numpy().astype(np.uint8)
            name = im["key"].replace("/", "__") + ".png"
            save_png(tmp / "pred" / name, pred_np)
            if uncertainty:
                ent = normalised_entropy(logits.softmax(1)[0], log_c)
                save_png(tmp / "uncertainty" / name, (ent * 255).round().byte().cpu().numpy())
            evaluator.process(pred_np, label, {"image_id": im["id"], "key": im["key"], "file": im["file_name"],
                                               "prediction": f"pred/{name}"})
            index[im["sha256"]] = {"image": str(ds.image_path(im)), "prediction": f"pred/{name}",
                                   "uncertainty": f"uncertainty/{name}" if uncertainty else None,
                                   "mean_uncertainty": float(ent.mean()) if uncertainty else None}
        result = evaluator.evaluate()
        thing_iou = [result["per_class"][c.name]["iou"] for c in ds.taxonomy.classes if c.has_instances]
        thing_iou = [v for v in thing_iou if v is not None]
        result["things_mIoU"] = float(np.mean(thing_iou)) if thing_iou else float("nan")
        result.update(_header(run_dir, split, ds, ckpt_path, ckpt, len(images), times, dev, list(hw), model))
        result["tta"] = tta
        write_json_atomic(tmp / "metrics.json", result)
        write_json_atomic(tmp / "index.json", {"run": run_dir.name, "classes": names, "images": index})
        with open(tmp / "per_class.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["class", "iou", "dice", "gt_pixels"])
            pc = result["per_class"]
            for n in result["worst_classes"] + [n for n in names if n not in result["worst_classes"]]:
                w.writerow([n, _fmt(pc[n]["iou"]), _fmt(pc[n]["dice"]), pc[n]["gt_pixels"]])
        with open(tmp / "per_image.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(evaluator.rows[0]))
            w.writeheader()
            for row in sorted(evaluator.rows, key=lambda r: (np.nan_to_num(r["mIoU"], nan=2.0), r["key"])):
                w.writerow({k: (_fmt(v) if isinstance(v, float) else v) for k, v in row.items()})
    result["out_dir"] = str(out_dir)
    return result


def _header(run_dir: Path, split: str, ds: DatasetVersion, ckpt_path: Path, ckpt: dict[str, Any], images: int,
            times: list[float], dev: torch.device, input_size: Any, model: torch.nn.Module) -> dict[str, Any]:
    """What every evaluation records beside its scores: the run, data, checkpoint, timing and model size."""
    steady = times[1:] or times
    return {
        "run": str(run_dir), "task": ckpt["model_spec"]["task"], "split": split, "dataset_version": ds.version,
        "checkpoint": str(ckpt_path), "epoch": ckpt["epoch"], "images": images, "classes": ds.taxonomy.names,
        "timing": {"device": str(dev), "batch_size": 1, "input_size": input_size,
                   "ms_per_image_mean": 1000 * statistics.fmean(steady),
                   "ms_per_image_median": 1000 * statistics.median(steady),
                   "images_per_second": len(steady) / sum(steady)},
        "model": {"name": ckpt["model_spec"]["name"], "args": ckpt["model_spec"]["args"], **model_size(model)},
    }


def _evaluate_instances(run_dir: Path, ckpt_path: Path, ckpt: dict[str, Any], model: torch.nn.Module,
                        ds: DatasetVersion, split: str, dev: torch.device, amp: bool, progress: bool
                        ) -> dict[str, Any]:
    from evaluate.instance_eval import evaluate_instance_split

    out_dir = run_dir / "eval" / split
    with atomic_dir(out_dir, replace=True) as tmp:
        metrics, times = evaluate_instance_split(model, ds, split, tmp, dev, amp, progress, run_dir.name)
        spec = ckpt["model_spec"]["args"]
        size = {"min_size": spec.get("min_size"), "max_size": spec.get("max_size")}
        result = {**_header(run_dir, split, ds, ckpt_path, ckpt, len(ds.images(split)), times, dev, size, model),
                  **metrics}
        write_json_atomic(tmp / "metrics.json", result)
    result["out_dir"] = str(out_dir)
    return result


def _show(v: float | None) -> str:
    """A figure for the terminal; '-' where COCO leaves it undefined (no ground truth of that kind)."""
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _fmt(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6f}"


def print_summary(result: dict[str, Any]) -> None:
    t, m = result["timing"], result["model"]
    if result["task"] == "instance":
        sg, bb = result["segm"], result.get("bbox", {})
        print(f"{result['run']} on {result['split']} ({result['images']} images, {result['dataset_version']}):\n"
              f"  mask AP {_show(sg['AP'])}  AP50 {_show(sg['AP50'])}  AP75 {_show(sg['AP75'])}   "
              f"box AP {_show(bb.get('AP'))}   thing-class mIoU {_show(result['things_mIoU'])}\n"
              f"  {t['ms_per_image_mean']:.1f} ms/image on {t['device']}   {m['parameters'] / 1e6:.2f} M parameters, "
              f"{m['size_mb']:.1f} MB")
        print("  per-class mask AP (worst first):")
        for n in result["worst_classes"]:
            print(f"    {n:16} {_show(sg['per_class'][n])}")
        print(f"  written to {result['out_dir']}")
        return
    print(f"{result['run']} on {result['split']} ({result['images']} images, {result['dataset_version']}):\n"
          f"  mIoU {result['mIoU']:.4f}   pixel acc {result['pixel_acc']:.4f}   mean Dice {result['mDice']:.4f}\n"
          f"  {t['ms_per_image_mean']:.1f} ms/image on {t['device']}   {m['parameters'] / 1e6:.2f} M parameters, "
          f"{m['size_mb']:.1f} MB")
    print("  per-class IoU (worst first):")
    for n in result["worst_classes"]:
        print(f"    {n:16} {result['per_class'][n]['iou']:.4f}")
    print(f"  written to {result['out_dir']}")
