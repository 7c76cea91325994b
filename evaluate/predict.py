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
from evaluate.runner import load_for_inference, normalised_entropy, resolve_run
from ingest.images import list_images
from train.checkpoint import find_checkpoint
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
    out = run_dir / "predict" / (name or Path(images).stem)
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
