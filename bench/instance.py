"""Mask R-CNN on this machine: step time per backbone, and SegLoop's trainer against a plain torchvision loop.

1. Step time (forward + backward + SGD step, batch 4 demo images at the recipe's size) for each backbone of
   ``configs/experiments/maskrcnn-demo.yaml``, models from scratch (GroupNorm).
2. SegLoop's training loop (task seam, hooks, schedule, TensorBoard, grouped batches, augmentation) against the
   plain loop of torchvision's detection reference on the same model, data and batch size: images/s over the same
   wall-clock budget, alternating rounds so drift hits both sides. Target: ratio >= 0.95.
3. The COCO evaluation against pycocotools is ``bench/coco_eval.py`` (>= 500 images, identical numbers).
4. YOLO-seg (``--yolo``): SegLoop's YOLO run against Ultralytics' ``SegmentationTrainer`` run directly (what
   ``yolo segment train`` runs) on the same exported data and arguments, training images/s over the same epochs,
   alternating rounds (target >= 0.95); then, for the same weights, Ultralytics' own mask mAP50 on the validation
   split beside SegLoop's COCO mask AP50 (pycocotools-equal).
5. Quality (``--quality``): the YOLO-seg and Mask R-CNN recipes, each trained for ``--minutes`` on the demo city and
   scored on the test split by the same evaluator: mask AP50 for car and person in one table (target >= 0.5).
6. DETR (``--detr``): step time and images/s of each variant at ``configs/experiments/detr-boxes-demo.yaml``'s
   size, and SegLoop's trainer against a plain loop around the same Hugging Face model (its own batching of
   normalised images and normalised cxcywh labels, ``model(pixel_values, pixel_mask, labels).loss``), alternating
   rounds (target >= 0.95). With ``--quality``: the recipe trained for ``--minutes``, its test box AP50 / AP and
   the loss from its first epoch to its last (``evaluate history``, with the curve).

  python bench/instance.py [--budget 1.0] [--rounds 2] [--steps 4] [--device auto]
  python bench/instance.py --yolo [--epochs 3] [--rounds 2]
  python bench/instance.py --quality [--minutes 15]
  python bench/instance.py --detr [--budget 1.0] [--rounds 2] [--steps 4]
  python bench/instance.py --detr --quality [--minutes 15]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # puts the project root on sys.path (and is used for its path)
import torch
from torch.utils.data import DataLoader, RandomSampler

from train.config import load_train_config
from train.engine import Trainer, Validation
from train.instance_data import collate_instances
from train.models import INSTANCE_MODELS

RECIPE = _common.ROOT / "configs" / "experiments" / "maskrcnn-demo.yaml"
BACKBONES = {"resnet18": {}, "resnet50": {}, "mobilenet_v3_large": {"anchor_sizes": [32, 64, 128]}}


def _to(batch: dict, device: torch.device) -> tuple[list[torch.Tensor], list[dict]]:
    images = [im.to(device).float().div_(255) for im in batch["image"]]
    targets = [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
               for t in batch["target"]]
    return images, targets


def step_times(trainer: Trainer, steps: int) -> None:
    """Seconds per training step of each backbone on one fixed batch (first step not counted)."""
    args = dict(trainer.cfg["model"]["args"])
    batch = collate_instances([trainer.train_set[i] for i in range(4)])
    print(f"step time, batch 4 at min_size {args['min_size']} (device {trainer.device}):")
    for backbone, extra in BACKBONES.items():
        model = INSTANCE_MODELS.build("maskrcnn", {**args, "backbone": backbone, **extra},
                                      num_classes=trainer.taxonomy.num_classes + 1).to(trainer.device).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        time_steps(backbone, model, opt, batch, trainer.device, steps)


def time_steps(label: str, model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict, device: torch.device,
               steps: int) -> None:
    """Print the seconds per training step (forward, backward, optimiser step) on one fixed batch of 4, the first
    step (warm-up) not counted."""
    images, targets = _to(batch, device)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    steady = times[1:]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"  {label:20} {sum(steady) / len(steady):6.2f} s/step  {4 * len(steady) / sum(steady):5.2f} img/s"
          f"  {params:.1f} M parameters")


def plain_loop(trainer: Trainer, seconds: float) -> float:
    """torchvision's reference loop on SegLoop's model, data and optimiser for ``seconds``; returns images/s."""
    model, opt = trainer.model, trainer.optimizer
    loader = DataLoader(trainer.train_set, batch_size=trainer.cfg["train"]["batch_size"], drop_last=True,
                        sampler=RandomSampler(trainer.train_set), collate_fn=collate_instances)
    model.train()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for batch in loader:
            images, targets = _to(batch, trainer.device)
            loss = sum(model(images, targets).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(images)
            if time.perf_counter() - t0 >= seconds:
                break
    return n / (time.perf_counter() - t0)


YOLO_RECIPE = _common.ROOT / "configs" / "experiments" / "yolo-seg-demo.yaml"


def direct_ultralytics(fit: object, epochs: int) -> tuple[float, float]:
    """Ultralytics' own ``SegmentationTrainer`` (``yolo segment train``) on the export and arguments of ``fit``:
    training images/s (epoch loops only, as SegLoop counts them) and the seconds its own validation took."""
    from ultralytics.models.yolo.segment import SegmentationTrainer

    from tasks.instance.yolo_data import export_yolo

    export = export_yolo(fit.dataset, progress=False)
    work = tempfile.mkdtemp()
    args = {**fit.args, "epochs": epochs, "time": None, "data": str(export / "data.yaml"),
            "model": f"{fit.spec['name']}.yaml", "project": work, "name": "direct", "exist_ok": True}
    trainer = SegmentationTrainer(overrides=args)
    clock = {"train": 0.0, "images": 0, "val": 0.0}

    def start(t: object) -> None:
        clock["t0"] = time.perf_counter()

    def end(t: object) -> None:
        clock["train"] += time.perf_counter() - clock["t0"]
        clock["images"] += len(t.train_loader.dataset)
        clock["v0"] = time.perf_counter()

    def fit_end(t: object) -> None:
        clock["val"] += time.perf_counter() - clock["v0"]

    trainer.add_callback("on_train_epoch_start", start)
    trainer.add_callback("on_train_epoch_end", end)
    trainer.add_callback("on_fit_epoch_end", fit_end)
    trainer.train()
    return clock["images"] / clock["train"], clock["val"]


def ultralytics_map50(run: object, device: str) -> float:
    """Ultralytics' own validator (mask mAP50 on the validation split) on a SegLoop YOLO run's best weights."""
    from ultralytics.models.yolo.segment import SegmentationValidator

    from tasks.instance.yolo_data import export_yolo
    from train.checkpoint import load_model

    model, ckpt = load_model(run, "best")
    from ingest.version import DatasetVersion

    ds = DatasetVersion(ckpt["dataset_path"])
    export = export_yolo(ds, progress=False)
    v = SegmentationValidator(args={"data": str(export / "data.yaml"), "imgsz": int(model.imgsz), "batch": 8,
                                    "project": tempfile.mkdtemp(), "name": "val",
                                    "conf": 0.001, "iou": 0.7, "split": "val", "plots": False, "device": device,
                                    "verbose": False})
    stats = v(model=model.net.float())
    return float(stats["metrics/mAP50(M)"])


def yolo_bench(args: argparse.Namespace) -> None:
    from train.engine import trainer_for

    runs = tempfile.mkdtemp()
    overrides = [f"output.runs_dir={runs}", "train.time_limit=null", f"train.epochs={args.epochs}",
                 f"train.eval_every={10**6}", "train.log_images=0", f"train.device={args.device}",
                 "ultralytics.close_mosaic=0"]
    cfg = lambda name: load_train_config(YOLO_RECIPE, [*overrides, f"output.name={name}"])  # noqa: E731
    direct, ours, direct_val, ours_val = [], [], [], []
    res = fit = None
    for r in range(args.rounds):
        fit = trainer_for(cfg(f"segloop{r}"))(cfg(f"segloop{r}"), progress=False)
        t0 = time.perf_counter()
        res = fit.fit()
        ours.append(res.images_per_second)
        ours_val.append(time.perf_counter() - t0 - fit.train_time)
        d, dv = direct_ultralytics(fit, args.epochs)
        direct.append(d)
        direct_val.append(dv)
        print(f"round {r + 1}: Ultralytics direct {d:.2f} img/s, SegLoop {ours[-1]:.2f} img/s")
    print(f"YOLO-seg trainer overhead: {fit.spec['name']} at imgsz {fit.args['imgsz']}, batch {fit.args['batch']}, "
          f"{args.epochs} epochs x {args.rounds} rounds on {fit.device}")
    print(f"  Ultralytics {max(direct):.2f} img/s   SegLoop {max(ours):.2f} img/s   ratio "
          f"{max(ours) / max(direct):.3f} (target >= 0.95)")
    print(f"  outside the epoch loops: Ultralytics' validation {min(direct_val):.1f} s ({args.epochs} validations, "
          f"every epoch) vs SegLoop's {min(ours_val):.1f} s (one COCO validation at native resolution, the "
          f"export and the checkpoints)")
    compare_map(res.run_dir, fit.device)


def compare_map(run: object, device: object) -> None:
    """Ultralytics' own mask mAP50 and SegLoop's (pycocotools-equal) for the same weights, on the validation split."""
    from evaluate.runner import evaluate_run

    result = evaluate_run(run, "val", progress=False)
    theirs = ultralytics_map50(run, "cpu" if str(device) == "cpu" else "0")
    print(f"same weights ({run}), validation split: Ultralytics mask mAP50 {theirs:.4f}   SegLoop (pycocotools) "
          f"mask AP50 {result['segm']['AP50']:.4f}")
    print("  the difference: Ultralytics scores masks at the letterboxed input size from quarter-resolution\n"
          "  prototypes, keeps 300 detections, treats crowd regions as background and interpolates its own PR\n"
          "  curve; pycocotools scores masks at the image's size, ignores detections on crowd regions, keeps 100\n"
          "  detections and samples 101 recall points.")


def quality(args: argparse.Namespace) -> None:
    from evaluate.runner import evaluate_run
    from train.engine import train

    runs = tempfile.mkdtemp()
    table = []
    for recipe in (YOLO_RECIPE, RECIPE):
        cfg = load_train_config(recipe, [f"output.runs_dir={runs}", f"train.time_limit={args.minutes}",
                                         f"train.device={args.device}"])
        res = train(cfg, progress=False)
        if recipe == YOLO_RECIPE:
            compare_map(res.run_dir, args.device if args.device != "auto" else "cpu")
        m = evaluate_run(res.run_dir, "test", progress=False)
        pc = m["segm"]["per_class"]
        table.append((cfg["model"]["name"], res.epochs_done, m["segm"]["AP50"], m["segm"]["AP"],
                      _ap50(res.run_dir, "car"), _ap50(res.run_dir, "person"), pc.get("car"), pc.get("person")))
    print(f"quality on the demo city's test split, {args.minutes} min of training each (same COCO evaluator):")
    print(f"  {'model':14} {'epochs':>6} {'AP50':>7} {'AP':>7} {'car AP50':>9} {'person AP50':>12} {'car AP':>7} "
          f"{'person AP':>10}")
    for name, ep, ap50, ap, car50, person50, car, person in table:
        print(f"  {name:14} {ep:6d} {ap50:7.4f} {ap:7.4f} {car50:9.4f} {person50:12.4f} {car or 0:7.4f} "
              f"{person or 0:10.4f}")
    print("  target: YOLO-seg's car and person mask AP50 >= 0.5")


def _ap50(run: object, name: str) -> float:
    """Mask AP at IoU 0.5 of one class on the test split, from the run's written results (pycocotools)."""
    import contextlib
    import io
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from core.runs import Run
    from ingest.version import DatasetVersion

    info = Run(run).info()
    ds = DatasetVersion(info["dataset_path"])
    gt = ds.coco("test")
    results = json.loads((run / "eval" / "test" / "instances.json").read_text())
    if not results:
        return 0.0
    cat = ds.taxonomy.index_of(name) + 1
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = gt
        cg.createIndex()
        ev = COCOeval(cg, cg.loadRes(results), "segm")
        ev.params.catIds = [cat]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(max(ev.stats[1], 0.0))


DETR_RECIPE = _common.ROOT / "configs" / "experiments" / "detr-boxes-demo.yaml"


def detr_step_times(trainer: Trainer, steps: int) -> None:
    """Seconds per training step of each DETR variant on one fixed batch of 4 (first step not counted)."""
    from train.models import DETECTION_MODELS

    args = dict(trainer.cfg["model"]["args"])
    batch = trainer.task.collate([trainer.train_set[i] for i in range(4)])
    print(f"DETR step time, batch 4 at min_size {args['min_size']} (device {trainer.device}):")
    for name in ("conditional_detr", "detr", "deformable_detr"):
        model = DETECTION_MODELS.build(name, args, num_classes=trainer.taxonomy.num_classes).to(trainer.device)
        model.train()
        time_steps(name, model, torch.optim.AdamW(model.parameter_groups(1e-4)), batch, trainer.device, steps)


def plain_detr_loop(trainer: Trainer, seconds: float) -> float:
    """A hand-written loop around the same Hugging Face model, data and optimiser for ``seconds``: images
    normalised and stacked (the demo images share one size), labels as normalised cxcywh; returns images/s."""
    hf = trainer.model.detr
    mean = torch.tensor([0.485, 0.456, 0.406], device=trainer.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=trainer.device).view(1, 3, 1, 1)
    loader = DataLoader(trainer.train_set, batch_size=trainer.cfg["train"]["batch_size"], drop_last=True,
                        sampler=RandomSampler(trainer.train_set), collate_fn=trainer.task.collate)
    opt = trainer.optimizer
    hf.train()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for batch in loader:
            x = torch.stack(batch["image"]).to(trainer.device).float().div_(255)
            h, w = x.shape[-2:]
            labels = []
            for t in batch["target"]:
                b = t["boxes"].to(trainer.device)
                labels.append({"class_labels": t["labels"].to(trainer.device) - 1,
                               "boxes": torch.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                                                     (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], 1)})
            mask = torch.ones((len(x), h, w), dtype=torch.long, device=trainer.device)
            loss = hf(pixel_values=(x - mean) / std, pixel_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(hf.parameters(), trainer.cfg["train"]["grad_clip"])
            opt.step()
            n += len(x)
            if time.perf_counter() - t0 >= seconds:
                break
    return n / (time.perf_counter() - t0)


def detr_quality(args: argparse.Namespace) -> None:
    """The DETR recipe for ``--minutes``: test box AP50 / AP and the loss drop, with the curve."""
    from evaluate.history import describe, run_history
    from evaluate.runner import evaluate_run
    from train.engine import train

    runs = tempfile.mkdtemp()
    cfg = load_train_config(DETR_RECIPE, [f"output.runs_dir={runs}", f"train.time_limit={args.minutes}",
                                          f"train.device={args.device}"])
    res = train(cfg, progress=False)
    m = evaluate_run(res.run_dir, "test", progress=False)
    h = run_history(res.run_dir)
    bb = m["bbox"]
    print(f"DETR quality on the demo city's test split, {args.minutes} min of training ({res.epochs_done} epochs, "
          f"{res.steps} steps, {cfg['model']['name']}):")
    print(f"  box AP50 {bb['AP50'] or 0:.4f}  AP {bb['AP'] or 0:.4f}  AP75 {bb['AP75'] or 0:.4f}")
    pc = bb["per_class"]
    print("  per-class box AP: " + ", ".join(f"{n} {pc[n]:.3f}" for n in m["worst_classes"][::-1]))
    print("  " + "\n  ".join(describe(h)) + f"\n  curve: {h.get('plot')}")


def detr_bench(args: argparse.Namespace) -> None:
    """DETR step times, then SegLoop's trainer against the plain loop, alternating rounds."""
    if args.quality:
        return detr_quality(args)
    trainer_overhead(args, DETR_RECIPE, detr_step_times, plain_detr_loop, "detection")


def trainer_overhead(args: argparse.Namespace, recipe: Path, step_times_of: Any, plain: Any, what: str) -> None:
    """The recipe's step times, then its run by SegLoop's trainer against ``plain`` (a loop over the same model,
    data and optimiser), alternating rounds so that drift hits both sides; the best round of each is compared."""
    runs = tempfile.mkdtemp()
    # one image scale for both sides: the recipe's scale jitter draws from torch's global RNG, which the two loops
    # consume differently, and a 224 vs 288 batch differs 1.6x in compute
    overrides = [f"output.runs_dir={runs}", f"train.time_limit={args.budget}", "train.epochs=1000",
                 f"train.eval_every={10**6}", "train.log_images=0", f"train.device={args.device}",
                 "model.args.min_size=256"]
    cfg = lambda name: load_train_config(recipe, [*overrides, f"output.name={name}"])  # noqa: E731
    first = Trainer(cfg("probe"), progress=False)
    step_times_of(first, args.steps)
    plains, ours = [], []
    for r in range(args.rounds):
        plains.append(plain(Trainer(cfg(f"plain{r}"), progress=False), args.budget * 60))
        ours_t = Trainer(cfg(f"segloop{r}"), progress=False)
        # training throughput only: the final validation (45 images of inference) is not what is compared
        ours_t.hooks = [h for h in ours_t.hooks if not isinstance(h, Validation)]
        ours.append(ours_t.fit().images_per_second)
        print(f"round {r + 1}: plain {plains[-1]:.2f} img/s, SegLoop {ours[-1]:.2f} img/s")
    print(f"{what} trainer overhead: {first.spec['name']} {first.spec['args']['backbone']}, batch "
          f"{first.cfg['train']['batch_size']}, {args.budget} min x {args.rounds} rounds on {first.device}")
    print(f"  plain loop {max(plains):.2f} img/s   SegLoop {max(ours):.2f} img/s   ratio "
          f"{max(ours) / max(plains):.3f} (target >= 0.95)")
    if not torch.cuda.is_available():
        print("no CUDA GPU here: AMP / channels_last figures need a GPU run (--device cuda)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=1.0, help="minutes of training per side and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=4, help="timed steps per backbone")
    p.add_argument("--device", default="auto")
    p.add_argument("--yolo", action="store_true", help="YOLO-seg: SegLoop vs Ultralytics' trainer, and mAP50")
    p.add_argument("--epochs", type=int, default=3, help="--yolo: epochs per side and round")
    p.add_argument("--quality", action="store_true", help="YOLO-seg and Mask R-CNN recipes, --minutes each")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--compare", metavar="RUN", help="a trained YOLO run: Ultralytics' mask mAP50 beside SegLoop's")
    p.add_argument("--detr", action="store_true", help="DETR: step times, trainer overhead; with --quality, "
                                                        "the recipe's box AP and loss drop in --minutes")
    args = p.parse_args()
    if args.detr:
        return detr_bench(args)
    if args.compare:
        return compare_map(Path(args.compare), args.device if args.device != "auto" else "cpu")
    if args.yolo:
        return yolo_bench(args)
    if args.quality:
        return quality(args)
    trainer_overhead(args, RECIPE, step_times, plain_loop, "instance")


if __name__ == "__main__":
    main()
