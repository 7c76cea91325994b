"""CamVid (11 classes, ../shared/data/camvid): the best recipe of each SegLoop architecture vs a hand-written
segmentation_models_pytorch loop, each given the same wall-clock training budget on this machine, all scored on
CamVid val at full label resolution (360x480) with the same confusion matrix, SegLoop's runs with flip TTA.

Baseline: smp.Unet(resnet18, encoder_weights=None), AdamW 1e-3, cross-entropy (ignore 255), horizontal flips,
batch 8 at the native 360x480 (padded to 384x480), trained until the budget runs out.
SegLoop: ``python -m train.run --config configs/experiments/camvid.yaml train.time_limit=<budget> <row's overrides>``
for each row of ``RECIPES``; the EfficientNet-Lite0 UNet runs with and without its ImageNet weights, which is the
pretraining gain at this budget.

  python bench/camvid.py [--camvid DIR] [--budget 900] [--only resunet,unet-effnet-lite0]   (SEGLOOP_CAMVID too)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import _common
import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from core.metrics import ConfusionMatrix
from evaluate.runner import evaluate_run
from ingest.version import DatasetVersion, build, load_data_config
from train.config import load_train_config
from train.data import normalize
from train.engine import train


def baseline(ds: DatasetVersion, budget_s: float, seed: int = 0) -> dict:
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    model = smp.Unet("resnet18", encoder_weights=None, classes=ds.taxonomy.num_classes)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    imgs = [ds.load_image(im) for im in ds.images("train")]
    labels = [ds.load_semantic(im) for im in ds.images("train")]
    aug = A.Compose([A.PadIfNeeded(384, 480, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=255),
                     A.HorizontalFlip(p=0.5)], seed=seed)
    rng = np.random.default_rng(seed)
    t0, steps, seen = time.perf_counter(), 0, 0
    model.train()
    while time.perf_counter() - t0 < budget_s:
        for idx in np.array_split(rng.permutation(len(imgs)), len(imgs) // 8):
            batch = [aug(image=imgs[i], mask=labels[i]) for i in idx]
            x = normalize(torch.from_numpy(np.stack([b["image"] for b in batch])))
            y = torch.from_numpy(np.stack([b["mask"] for b in batch])).long()
            loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y, ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps, seen = steps + 1, seen + len(idx)
            if time.perf_counter() - t0 >= budget_s:
                break
    train_s = time.perf_counter() - t0
    model.eval()
    cm = ConfusionMatrix(ds.taxonomy.num_classes, 255, ds.taxonomy.names)
    with torch.no_grad():
        for im in ds.images("val"):
            img, label = ds.load_image(im), ds.load_semantic(im)
            h, w = label.shape
            x = normalize(torch.from_numpy(img)[None])
            x = F.pad(x, (0, (-w) % 32, 0, (-h) % 32))
            cm.update(model(x.contiguous(memory_format=torch.channels_last))[..., :h, :w].argmax(1)[0],
                      torch.from_numpy(label))
    s = cm.scores()
    return {"mIoU": s.miou, "pixel_acc": s.pixel_acc, "steps": steps, "images": seen, "train_s": train_s,
            "per_class": dict(zip(ds.taxonomy.names, s.iou.round(4).tolist(), strict=True))}


# each architecture's recipe on top of configs/experiments/camvid.yaml (its data, schedule and augmentation; its own
# model is the pretrained EfficientNet-Lite0 UNet at batch 4); the rows trained at batch 8 were measured so
BATCH8 = ["train.batch_size=8", "optim.lr=0.003"]
RECIPES: dict[str, list[str]] = {
    "resunet": ["model.name=resunet", "model.args={width: 32, depth: 4, stem_stride: 2}", *BATCH8],
    "unet-resnet34": ["model.args={encoder: resnet34, encoder_weights: null, decoder_channels: [32, 32, 64, 128]}",
                      *BATCH8],  # the same model as the file's: its arguments are merged, so each is given
    "convunext": ["model.name=convunext", "model.args={width: 16, depth: 4, stem_stride: 2}", "train.batch_size=8"],
    "linknet-resnet34": ["model.name=linknet", "model.args={encoder: resnet34}", *BATCH8],
    "unet-effnet-lite0": [],
    "unet-effnet-lite0-scratch": ["model.args.encoder_weights=null"],  # the same model's other arguments kept
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--camvid", default=os.environ.get("SEGLOOP_CAMVID", str(_common.ROOT.parent / "shared" / "data"
                                                                             / "camvid")))
    p.add_argument("--budget", type=float, default=900, help="training seconds for each side")
    p.add_argument("--out", default=None, help="where runs and versions go (default: a temporary folder)")
    p.add_argument("--only", help="comma-separated rows of the table (default: all): " + ", ".join(RECIPES))
    p.add_argument("overrides", nargs="*", help="extra key=value for every SegLoop row")
    args = p.parse_args()
    camvid = Path(args.camvid)
    if not (camvid / "train").is_dir():
        print(f"camvid: skipped, CamVid not found at {camvid} (use --camvid or SEGLOOP_CAMVID)")
        sys.exit(0)
    rows = args.only.split(",") if args.only else list(RECIPES)
    unknown = [r for r in rows if r not in RECIPES]
    if unknown:
        sys.exit(f"--only: unknown rows {unknown}; rows: {', '.join(RECIPES)}")
    out = Path(args.out or tempfile.mkdtemp())
    dcfg = load_data_config(_common.ROOT / "configs" / "data" / "camvid.yaml", [f"output={out / 'versions'}"])
    dcfg["sources"][0]["root"] = str(camvid)
    ds = DatasetVersion(build(dcfg).path)

    base = baseline(ds, args.budget)
    results: dict[str, dict] = {}
    for row in rows:
        cfg = load_train_config(_common.ROOT / "configs" / "experiments" / "camvid.yaml",
                                [f"data.version={ds.path}", f"train.time_limit={args.budget / 60}",
                                 f"output.runs_dir={out / 'runs'}", f"output.name={row}", "output.exist_ok=true",
                                 *RECIPES[row], *args.overrides])
        res = train(cfg)
        ours = evaluate_run(res.run_dir, "val", which="last", uncertainty=False, tta=True, progress=False)
        results[row] = {"val_mIoU": ours["mIoU"], "pixel_acc": ours["pixel_acc"], "train_s": res.train_seconds,
                        "steps": res.steps, "overrides": RECIPES[row],
                        "per_class": {n: ours["per_class"][n]["iou"] for n in ds.taxonomy.names}}
    summary = {"budget_s": args.budget, "segloop": results, "baseline_smp_unet_resnet18": base}
    (out / "camvid_bench.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\ncamvid: {len(ds.images('train'))} train / {len(ds.images('val'))} val images, budget {args.budget:.0f} s "
          f"each, scored on val at 360x480 (SegLoop rows with flip TTA)")
    print(f"  {'recipe':<28} {'val mIoU':>9} {'pixel acc':>10} {'steps':>7} {'vs baseline':>12}")
    print(f"  {'smp Unet-resnet18 (hand loop)':<28} {base['mIoU']:>9.4f} {base['pixel_acc']:>10.4f} "
          f"{base['steps']:>7} {'1.00':>12}")
    for row, r in results.items():
        print(f"  {row:<28} {r['val_mIoU']:>9.4f} {r['pixel_acc']:>10.4f} {r['steps']:>7} "
              f"{r['val_mIoU'] / base['mIoU']:>12.2f}")
    if {"unet-effnet-lite0", "unet-effnet-lite0-scratch"} <= set(results):
        gain = results["unet-effnet-lite0"]["val_mIoU"] - results["unet-effnet-lite0-scratch"]["val_mIoU"]
        print(f"  pretraining gain (EfficientNet-Lite0 ImageNet weights vs from scratch): {gain:+.4f} mIoU")
    print(f"  details: {out / 'camvid_bench.json'}")


if __name__ == "__main__":
    main()
