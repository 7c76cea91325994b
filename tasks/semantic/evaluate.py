"""The semantic evaluation part: a class map and an entropy map per image, scored by one confusion matrix.

The model's head decodes its logits (``train.models.heads``): probabilities, the class map and the entropy of the
probabilities over ln C come from there, for a softmax head and a one-logit sigmoid head alike.

``eval/<split>/``: ``pred/<image>.png`` (train indices), ``uncertainty/<image>.png`` (normalised entropy,
0-255), ``per_class.csv`` (IoU, Dice, ground-truth pixels; worst first), ``per_image.csv`` (mIoU, pixel accuracy,
Dice) and ``index.json``; ``predict/<name>/`` the same maps keyed by image sha256, with each image's mean entropy and
mean top-2 margin for choosing what to label next.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from core.fsio import read_image, save_png, sha256_file
from core.metrics import thing_iou
from core.runs import write_index
from evaluate.inference import Inference, figures_problem, fmt, show
from ingest.version import DatasetVersion
from metrics.semantic import SemSegEvaluator
from train.data import resize_image
from train.infer import predict_logits, use_channels_last
from train.models.heads import decoding_of


class SemanticEvaluation:
    task = "semantic"
    # the figure that ranks two models of this task on one split (metrics.json path), e.g. before a model is replaced
    headline: tuple[str, tuple[str, ...]] = ("mIoU", ("mIoU",))
    tta_problem: str | None = None  # --tta averages the flipped image's class probabilities

    def channels_last(self, model: nn.Module, device: torch.device, requested: bool) -> bool:
        return use_channels_last(model, device, requested)

    def flops_input(self, hw: tuple[int, int]) -> Any:
        """An input of the training size for counting FLOPs."""
        return torch.zeros(1, 3, *hw)

    def logits(self, inf: Inference, image: np.ndarray, out_hw: tuple[int, int], tta: bool = False) -> torch.Tensor:
        """(1, C, H, W) logits of one HWC uint8 image, resized to the run's input size and back to ``out_hw``."""
        x = torch.from_numpy(resize_image(image, inf.image_size))[None]
        return predict_logits(inf.model, x, out_hw, inf.device, inf.amp, inf.channels_last, hflip_tta=tta)

    def evaluate_split(self, inf: Inference, ds: DatasetVersion, split: str, tmp: Path, run_name: str,
                       tta: bool = False, uncertainty: bool = True, progress: bool = True) -> dict[str, Any]:
        names = inf.class_names
        dec = decoding_of(inf.model)
        evaluator = SemSegEvaluator(names, ds.taxonomy.ignore_index)
        times: list[float] = []
        index: dict[str, dict[str, Any]] = {}
        (tmp / "pred").mkdir()
        if uncertainty:
            (tmp / "uncertainty").mkdir()
        for im in tqdm(ds.images(split), desc=f"evaluating {run_name} on {split}", disable=not progress):
            label = ds.load_semantic(im)
            img = ds.load_image(im)
            logits = inf.timed(lambda img=img, label=label: self.logits(inf, img, label.shape, tta), times)
            pred_np = dec.labels(logits)[0].cpu().numpy().astype(np.uint8)
            name = im["key"].replace("/", "__") + ".png"
            save_png(tmp / "pred" / name, pred_np)
            entry: dict[str, Any] = {"image": str(ds.image_path(im)), "prediction": f"pred/{name}",
                                     "uncertainty": None, "mean_uncertainty": None}
            if uncertainty:
                ent = dec.uncertainty(dec.probabilities(logits))[0]
                save_png(tmp / "uncertainty" / name, (ent * 255).round().byte().cpu().numpy())
                entry.update(uncertainty=f"uncertainty/{name}", mean_uncertainty=float(ent.mean()))
            evaluator.process(pred_np, label, {"image_id": im["id"], "key": im["key"], "file": im["file_name"],
                                               "prediction": f"pred/{name}"})
            index[im["sha256"]] = entry
        result = evaluator.evaluate()
        _, result["things_mIoU"] = thing_iou(
            evaluator.cm.mat, names, [c.index for c in ds.taxonomy.classes if c.has_instances])
        result["tta"] = tta
        write_index(tmp, run_name, self.task, names, index)
        with open(tmp / "per_class.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["class", "iou", "dice", "gt_pixels"])
            pc = result["per_class"]
            for n in result["worst_classes"] + [n for n in names if n not in result["worst_classes"]]:
                w.writerow([n, fmt(pc[n]["iou"]), fmt(pc[n]["dice"]), pc[n]["gt_pixels"]])
        with open(tmp / "per_image.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(evaluator.rows[0]))
            w.writeheader()
            for row in sorted(evaluator.rows, key=lambda r: (np.nan_to_num(r["mIoU"], nan=2.0), r["key"])):
                w.writerow({k: (fmt(v) if isinstance(v, float) else v) for k, v in row.items()})
        return {**result, "times": times, "input_size": list(inf.image_size)}

    def predict_images(self, inf: Inference, files: list[Path], tmp: Path, run_name: str, desc: str,
                       progress: bool = True) -> None:
        """``pred/<sha256>.png``, ``uncertainty/<sha256>.png`` and ``index.json`` (mean entropy and mean top-2
        margin per image) for unlabelled images, into ``tmp``."""
        names = inf.class_names
        dec = decoding_of(inf.model)
        index: dict[str, Any] = {}
        (tmp / "pred").mkdir()
        (tmp / "uncertainty").mkdir()
        for f in tqdm(files, desc=desc, disable=not progress):
            img = read_image(f, upright=True)  # as the user sees the photo (EXIF orientation)
            logits = self.logits(inf, img, img.shape[:2])
            p = dec.probabilities(logits)
            ent = dec.uncertainty(p)[0]
            sha = sha256_file(f)
            save_png(tmp / "pred" / f"{sha}.png", dec.labels(logits)[0].byte().cpu().numpy())
            save_png(tmp / "uncertainty" / f"{sha}.png", (ent * 255).round().byte().cpu().numpy())
            index[sha] = {"image": str(f.resolve()), "prediction": f"pred/{sha}.png",
                          "uncertainty": f"uncertainty/{sha}.png", "mean_uncertainty": float(ent.mean()),
                          "mean_margin": float(dec.margin(p).mean())}
        write_index(tmp, run_name, self.task, names, index)

    def result_problem(self, result: dict[str, Any]) -> str | None:
        """What a ``metrics.json`` of this task lacks, or holds of the wrong kind, for its readers (the report)."""
        missing = [k for k in ("mIoU", "pixel_acc", "mDice", "per_class", "worst_classes") if k not in result]
        if missing:
            return f"lacks {', '.join(missing)}"
        return figures_problem(result, ("mIoU", "pixel_acc", "mDice"), "per_class")

    def summary_lines(self, result: dict[str, Any]) -> list[str]:
        lines = [f"mIoU {show(result['mIoU'])}   pixel acc {show(result['pixel_acc'])}   "
                 f"mean Dice {show(result['mDice'])}", "per-class IoU (worst first):"]
        return lines + [f"  {n:16} {show(result['per_class'][n]['iou'])}" for n in result["worst_classes"]]
