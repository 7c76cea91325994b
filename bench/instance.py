"""Mask R-CNN on this machine: step time per backbone, and SegLoop's trainer against a plain torchvision loop.

1. Step time (forward + backward + SGD step, batch 4 demo images at the recipe's size) for each backbone of
   ``configs/experiments/maskrcnn-demo.yaml``, models from scratch (GroupNorm).
2. SegLoop's training loop (task seam, hooks, schedule, TensorBoard, grouped batches, augmentation) against the
   plain loop of torchvision's detection reference on the same model, data and batch size: images/s over the same
   wall-clock budget, alternating rounds so drift hits both sides. Target: ratio >= 0.95.
3. The COCO evaluation against pycocotools is ``bench/coco_eval.py`` (>= 500 images, identical numbers).

  python bench/instance.py [--budget 1.0] [--rounds 2] [--steps 4] [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time

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
        images, targets = _to(batch, trainer.device)
        times = []
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            loss = sum(model(images, targets).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        steady = times[1:]
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"  {backbone:20} {sum(steady) / len(steady):6.2f} s/step  {4 * len(steady) / sum(steady):5.2f} img/s"
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=1.0, help="minutes of training per side and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=4, help="timed steps per backbone")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    runs = tempfile.mkdtemp()
    # one image scale for both sides: the recipe's scale jitter draws from torch's global RNG, which the two loops
    # consume differently, and a 224 vs 288 batch differs 1.6x in compute
    overrides = [f"output.runs_dir={runs}", f"train.time_limit={args.budget}", "train.epochs=1000",
                 f"train.eval_every={10**6}", "train.log_images=0", f"train.device={args.device}",
                 "model.args.min_size=256"]
    cfg = lambda name: load_train_config(RECIPE, [*overrides, f"output.name={name}"])  # noqa: E731
    first = Trainer(cfg("probe"), progress=False)
    step_times(first, args.steps)
    plain, ours = [], []
    for r in range(args.rounds):
        t = Trainer(cfg(f"plain{r}"), progress=False)
        plain.append(plain_loop(t, args.budget * 60))
        ours_t = Trainer(cfg(f"segloop{r}"), progress=False)
        # training throughput only: the final validation (45 images of inference) is not what is compared
        ours_t.hooks = [h for h in ours_t.hooks if not isinstance(h, Validation)]
        res = ours_t.fit()
        ours.append(res.images_per_second)
        print(f"round {r + 1}: plain {plain[-1]:.2f} img/s, SegLoop {ours[-1]:.2f} img/s")
    print(f"instance trainer overhead: maskrcnn {first.spec['args']['backbone']}, batch "
          f"{first.cfg['train']['batch_size']}, {args.budget} min x {args.rounds} rounds on {first.device}")
    print(f"  plain loop {max(plain):.2f} img/s   SegLoop {max(ours):.2f} img/s   ratio {max(ours) / max(plain):.3f} "
          f"(target >= 0.95)")
    if not torch.cuda.is_available():
        print("no CUDA GPU here: AMP / channels_last figures need a GPU run (python bench/instance.py --device cuda)")


if __name__ == "__main__":
    main()
