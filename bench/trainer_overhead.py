"""SegLoop's training loop vs a plain hand-written loop: same model, data, augmentation, loss, optimiser, batch.

The plain loop is the minimum anyone would write (DataLoader -> normalise -> forward -> loss -> backward -> step).
SegLoop's adds the schedule, TensorBoard, tqdm, loss logging, time-limit checks. Training images/s exclude
validation on both sides. Runs alternate (plain, SegLoop, plain, SegLoop, ...) and the best of each is kept, so
drift of the machine hits both. Target: ratio >= 0.95.

  python bench/trainer_overhead.py [--epochs 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import _common  # noqa: F401 - puts the project root on sys.path
import torch
from torch.utils.data import DataLoader, RandomSampler

from train.config import load_train_config
from train.data import collate, normalize
from train.engine import Trainer
from train.infer import use_channels_last


def plain_loop(trainer: Trainer, epochs: int) -> float:
    """The same objects SegLoop built, driven by the simplest possible loop; returns images/s."""
    torch.manual_seed(0)
    model, loss_fn, opt = trainer.model, trainer.task.loss_fn, trainer.optimizer
    loader = DataLoader(trainer.train_set, batch_size=trainer.cfg["train"]["batch_size"], drop_last=True,
                        sampler=RandomSampler(trainer.train_set), collate_fn=collate)
    cl = use_channels_last(model, trainer.device, True)
    model.train()
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            x = normalize(batch["image"]).contiguous(memory_format=torch.channels_last if cl else
                                                    torch.contiguous_format)
            loss = loss_fn(model(x), batch["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += x.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    runs = tempfile.mkdtemp()
    overrides = [f"train.epochs={args.epochs}", f"output.runs_dir={runs}", f"train.eval_every={10**6}",
                 "train.log_images=0"]
    plain, ours = [], []
    for r in range(args.rounds):
        t = Trainer(load_train_config(None, [*overrides, f"output.name=plain{r}"]), progress=False)
        plain.append(plain_loop(t, args.epochs))
        res = Trainer(load_train_config(None, [*overrides, f"output.name=segloop{r}"]), progress=True).fit()
        ours.append(res.images_per_second)
        print(f"round {r + 1}: plain {plain[-1]:.2f} img/s, SegLoop {ours[-1]:.2f} img/s")
    cfg = load_train_config(None, overrides)
    print(f"trainer_overhead: {cfg['model']['name']} {t.spec['args'] or '(default args)'}, batch "
          f"{cfg['train']['batch_size']}, {cfg['data']['image_size']} input, {args.epochs} epochs x {args.rounds} "
          f"rounds on {t.device}")
    print(f"  plain loop {max(plain):.2f} img/s   SegLoop {max(ours):.2f} img/s   ratio {max(ours) / max(plain):.3f} "
          f"(target >= 0.95)")


if __name__ == "__main__":
    main()
