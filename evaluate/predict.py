"""``evaluate predict``: a run's predictions on unlabelled images (a folder or a list file), for the labeling loop.

Writes ``runs/<run>/predict/<name>/``: ``pred/<sha256>.png`` (train indices), ``uncertainty/<sha256>.png``
(softmax entropy / ln C, 0-255) and ``index.json`` (image sha256 -> files, mean and margin uncertainty), the files
``annotate predict`` and ``annotate next`` read. Images are keyed by content hash, so a renamed file keeps its
prediction and a changed file does not.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from core.fsio import atomic_dir, read_image, save_png, sha256_file, write_json_atomic
from core.runs import Run, find_checkpoint, resolve_run
from evaluate.runner import load_for_inference, normalised_entropy
from ingest.images import list_images
from train.data import resize_image
from train.infer import predict_logits


def predict_images(run: str | Path, images: str | Path, name: str | None = None, which: str = "best",
                   device: str = "auto", progress: bool = True) -> Path:
    run_dir = resolve_run(run)
    model, ckpt, dev, cl = load_for_inference(find_checkpoint(run_dir, which), device)
    cfg = ckpt["config"]
    hw = tuple(cfg["data"]["image_size"])
    names = [c["name"] for c in ckpt["taxonomy"]["classes"]]
    files = list_images(images)
    out = Run(run_dir).predict_dir(name or Path(images).stem)
    if ckpt["model_spec"]["task"] == "instance":
        return _predict_instances(model, ckpt, dev, files, out, run_dir.name, names, progress)
    index: dict[str, Any] = {}
    log_c = math.log(len(names))
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "pred").mkdir()
        (tmp / "uncertainty").mkdir()
        for f in tqdm(files, desc=f"predicting {Path(images).name}", disable=not progress):
            img = read_image(f)
            x = torch.from_numpy(resize_image(img, hw))[None]
            logits = predict_logits(model, x, img.shape[:2], dev, bool(cfg["train"]["amp"]), cl)
            p = logits.softmax(1)[0]
            top2 = p.topk(2, dim=0).values
            ent = normalised_entropy(p, log_c)
            sha = sha256_file(f)
            save_png(tmp / "pred" / f"{sha}.png", p.argmax(0).byte().cpu().numpy())
            save_png(tmp / "uncertainty" / f"{sha}.png", (ent * 255).round().byte().cpu().numpy())
            index[sha] = {"image": str(f.resolve()), "prediction": f"pred/{sha}.png",
                          "uncertainty": f"uncertainty/{sha}.png", "mean_uncertainty": float(ent.mean()),
                          "mean_margin": float((top2[0] - top2[1]).mean())}
        write_json_atomic(tmp / "index.json", {"run": run_dir.name, "classes": names, "images": index})
    return out


def _predict_instances(model: torch.nn.Module, ckpt: dict[str, Any], dev: torch.device, files: list[Path], out: Path,
                       run_name: str, names: list[str], progress: bool) -> Path:
    """Instance runs: ``instances.json`` (COCO results; ``image_id`` is the image's position in the list, and
    ``index.json`` maps each image's sha256 to it), the painted instances in ``pred/`` and each image's instance
    uncertainty (1 - the mean score of its confident detections)."""
    from evaluate.instance_eval import SCORE_THRESHOLD, instance_uncertainty, paint_instances, predict_instances
    from metrics.coco import outputs_to_results

    amp = bool(ckpt["config"]["train"]["amp"])
    ignore = int(ckpt["taxonomy"].get("ignore_index", 255))
    index: dict[str, Any] = {}
    results: list[dict[str, Any]] = []
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "pred").mkdir()
        for image_id, f in enumerate(tqdm(files, desc=f"predicting {out.name}", disable=not progress)):
            img = read_image(f)
            sha = sha256_file(f)
            res = outputs_to_results(image_id, predict_instances(model, img, dev, amp))
            results += res
            save_png(tmp / "pred" / f"{sha}.png", paint_instances(res, img.shape[:2], ignore))
            index[sha] = {"image": str(f.resolve()), "prediction": f"pred/{sha}.png", "uncertainty": None,
                          "mean_uncertainty": instance_uncertainty(res), "instances": len(res), "image_id": image_id,
                          "score_threshold": SCORE_THRESHOLD}
        write_json_atomic(tmp / "instances.json", results, indent=None)
        write_json_atomic(tmp / "index.json", {"run": run_name, "task": "instance", "classes": names,
                                               "images": index})
    return out
