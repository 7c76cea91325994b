"""The training loop: data, model, loss, optimiser and schedule from one config; validation, TensorBoard,
``metrics.jsonl`` and checkpoints into one run folder; resume from ``last.pt``; DDP when started by torchrun."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from core.config import dump_yaml
from core.errors import SegLoopError
from core.fsio import write_json_atomic, write_text_atomic
from core.metrics import ConfusionMatrix, Scores
from ingest.taxonomy import Taxonomy
from ingest.version import DatasetVersion, build, load_data_config, resolve_version
from train.checkpoint import (
    check_compatible,
    load_checkpoint,
    model_spec,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap,
)
from train.data import SplitDataset, build_augment, collate, normalize, resize_image, worker_init
from train.infer import autocast_for, pick_device, predict_logits, use_channels_last
from train.losses import build_loss
from train.models import build_model, model_kwargs
from train.schedule import WarmupSchedule


@dataclass
class TrainResult:
    run_dir: Path
    best_miou: float
    best_epoch: int
    epochs_done: int
    steps: int
    train_seconds: float
    images_per_second: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def ensure_dataset(cfg: dict[str, Any]) -> DatasetVersion:
    """The configured dataset version; built from ``data.config`` when it is a bare name that does not exist yet."""
    ref, root = cfg["data"]["version"], cfg["data"]["versions_root"]
    try:
        return DatasetVersion(resolve_version(ref, root))
    except SegLoopError:
        if "@" in ref or Path(ref).exists() or not cfg["data"]["config"]:
            raise
        dcfg = load_data_config(cfg["data"]["config"], [f"output={root}"])
        if dcfg["name"] != ref:
            raise
        print(f"dataset version '{ref}' not found: building it from {cfg['data']['config']}")
        return DatasetVersion(build(dcfg).path)


def make_run_dir(cfg: dict[str, Any], dataset_name: str) -> Path:
    root = Path(cfg["output"]["runs_dir"])
    name = cfg["output"]["name"] or f"{cfg['model']['name']}-{dataset_name}"
    path = root / name
    if path.exists() and cfg["output"]["exist_ok"]:
        shutil.rmtree(path)  # a fresh run under the same name: old metrics must not mix with new ones
    elif path.exists():
        i = 2
        while (root / f"{name}-{i}").exists():
            i += 1
        path = root / f"{name}-{i}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


class Trainer:
    def __init__(self, cfg: dict[str, Any], progress: bool = True) -> None:
        self.cfg = cfg
        self.progress = progress
        self.world, self.rank, local_rank = _dist_info()
        self.main = self.rank == 0
        tc = cfg["train"]
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() and tc["device"] != "cpu" else "gloo")
        self.device = pick_device(tc["device"])
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        seed_everything(tc["seed"] + self.rank)

        resume = cfg["resume"]
        self.ckpt: dict[str, Any] | None = None
        if resume:
            self.ckpt = load_checkpoint(Path(resume) / "checkpoints" / "last.pt")
        if self.world > 1 and not self.main:
            dist.barrier()  # rank 0 generates / builds the dataset first; the others then only read it
        self.dataset = ensure_dataset(cfg) if not resume else DatasetVersion(
            resolve_version(self.ckpt["dataset_path"] if Path(self.ckpt["dataset_path"]).exists()
                            else self.ckpt["dataset_version"], cfg["data"]["versions_root"]))
        if self.world > 1 and self.main:
            dist.barrier()
        self.taxonomy: Taxonomy = self.dataset.taxonomy
        self.hw = tuple(cfg["data"]["image_size"])
        if len(self.hw) != 2:
            raise SegLoopError(f"data.image_size must be [H, W], got {cfg['data']['image_size']}")

        self.run_dir = Path(resume) if resume else (make_run_dir(cfg, self.dataset.version.split("@")[0])
                                                     if self.main else None)
        self._build_data()
        self._build_model()

    # ---------------------------------------------------------------------------------------------------- setup
    def _build_data(self) -> None:
        cfg, ds = self.cfg, self.dataset
        fold = cfg["data"]["fold"]
        train_ids = val_ids = None
        train_split, val_split = cfg["data"]["train_split"], cfg["data"]["val_split"]
        if fold is not None:
            f = ds.fold(fold)
            train_ids, val_ids, val_split = f["train"], f["val"], train_split
        aug = build_augment(cfg["augment"], self.hw, self.taxonomy.ignore_index)
        aug.set_random_seed(cfg["train"]["seed"])
        self.train_set = SplitDataset(ds, train_split, self.hw, aug, image_ids=train_ids, progress=self.progress)
        self.val_set = SplitDataset(ds, val_split, self.hw, None, full_labels=True, image_ids=val_ids,
                                    progress=self.progress)
        if len(self.train_set) == 0 or len(self.val_set) == 0:
            raise SegLoopError(f"empty split in dataset {ds.version}: train {len(self.train_set)}, val "
                               f"{len(self.val_set)} images", path=ds.path, fix="rebuild the version with images "
                                                                                 "in both splits")
        bs = self.cfg["train"]["batch_size"]
        workers = self.cfg["data"]["workers"]
        self.generator = torch.Generator().manual_seed(self.cfg["train"]["seed"])
        self.sampler = (DistributedSampler(self.train_set, self.world, self.rank, shuffle=True,
                                           seed=self.cfg["train"]["seed"], drop_last=True) if self.world > 1
                        else RandomSampler(self.train_set, generator=self.generator))
        loader_kw: dict[str, Any] = {"num_workers": workers, "collate_fn": collate,
                                     "pin_memory": self.device.type == "cuda", "worker_init_fn": worker_init}
        if workers > 0:
            loader_kw.update(persistent_workers=True, prefetch_factor=4)
        self.train_loader = DataLoader(self.train_set, batch_size=bs, sampler=self.sampler, drop_last=True,
                                       **loader_kw)
        if len(self.train_loader) == 0:
            raise SegLoopError(f"train.batch_size {bs} is larger than the train split ({len(self.train_set)} "
                               f"images)", fix=f"set train.batch_size={max(1, len(self.train_set))} or less")
        self.val_loader = DataLoader(self.val_set, batch_size=bs, shuffle=False, num_workers=0, collate_fn=collate)

    def _build_model(self) -> None:
        cfg = self.cfg
        self.spec = model_spec(cfg["model"])
        model = build_model(cfg["model"]["name"], self.taxonomy.num_classes, **model_kwargs(cfg["model"]))
        if cfg["model"]["weights"] and not self.ckpt:
            init = load_checkpoint(cfg["model"]["weights"])
            check_compatible(init, self.spec, self.taxonomy.names, cfg["model"]["weights"])
            model.load_state_dict(init["model"])
        self.channels_last = use_channels_last(model, self.device, bool(cfg["train"]["channels_last"]))
        model = model.to(self.device, memory_format=torch.channels_last if self.channels_last else
                         torch.contiguous_format)
        self.model: nn.Module = model
        if self.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        pixels = self.train_set.pixels_per_class(self.taxonomy.num_classes)
        self.loss_fn = build_loss(cfg["loss"], self.taxonomy.num_classes, self.taxonomy.ignore_index,
                                  pixels).to(self.device)
        oc = cfg["optim"]
        params = [p for p in self.model.parameters() if p.requires_grad]
        if oc["name"] == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=oc["lr"], weight_decay=oc["weight_decay"])
        elif oc["name"] == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=oc["lr"], momentum=oc["momentum"],
                                             weight_decay=oc["weight_decay"], nesterov=True)
        else:
            raise SegLoopError(f"unknown optimizer '{oc['name']}'", fix="optim.name: adamw or sgd")
        tl = cfg["train"]["time_limit"]
        self.schedule = WarmupSchedule(self.optimizer, cfg["schedule"],
                                       cfg["train"]["epochs"] * len(self.train_loader), tl * 60 if tl else None)
        self.amp = bool(cfg["train"]["amp"]) and self.device.type == "cuda"
        fp16 = self.amp and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.start_epoch, self.step, self.elapsed = 0, 0, 0.0
        self.best = {"mIoU": -1.0, "epoch": -1}
        if self.ckpt:
            check_compatible(self.ckpt, self.spec, self.taxonomy.names, self.cfg["resume"])
            unwrap(self.model).load_state_dict(self.ckpt["model"])
            self.optimizer.load_state_dict(self.ckpt["optimizer"])
            self.schedule.load_state_dict(self.ckpt["scheduler"])
            self.schedule.total = self.cfg["train"]["epochs"] * len(self.train_loader)
            self.scaler.load_state_dict(self.ckpt["scaler"])
            self.start_epoch, self.step = self.ckpt["epoch"], self.ckpt["step"]
            self.elapsed, self.best = self.ckpt["elapsed_s"], self.ckpt["best"]
            set_rng_state(self.ckpt["rng"])

    # ------------------------------------------------------------------------------------------------- the loop
    def fit(self, stop_after_epochs: int | None = None) -> TrainResult:
        """Train to ``train.epochs``; ``stop_after_epochs`` ends this session early (as an interruption would)."""
        cfg, tc = self.cfg, self.cfg["train"]
        writer = None
        if self.main:
            write_text_atomic(self.run_dir / "config.yaml", dump_yaml(cfg))
            write_json_atomic(self.run_dir / "run.json", {
                "dataset_version": self.dataset.version, "dataset_path": str(self.dataset.path.resolve()),
                "taxonomy": self.taxonomy.name, "command": " ".join(sys.argv), "device": str(self.device),
                "world_size": self.world, "torch": torch.__version__,
                "parameters": sum(p.numel() for p in self.model.parameters()),
            })
            writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step if self.ckpt else None)
            print(f"run {self.run_dir}: {self.dataset.version}, {len(self.train_set)} train / {len(self.val_set)} "
                  f"val images, {self.spec}, device {self.device}" + (f" x{self.world}" if self.world > 1 else ""))
        time_limit = tc["time_limit"] * 60 if tc["time_limit"] else None
        train_images, train_time = 0, 0.0
        epoch = self.start_epoch
        stop = False
        for epoch in range(self.start_epoch, tc["epochs"]):
            self.model.train()
            if isinstance(self.sampler, DistributedSampler):
                self.sampler.set_epoch(epoch)
            self.generator.manual_seed(tc["seed"] * 1000 + epoch)
            self.train_set.augment.set_random_seed(tc["seed"] * 1000 + epoch)
            running = torch.zeros((), device=self.device)
            n_batches = 0
            t_epoch = time.perf_counter()
            bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{tc['epochs']}",
                       disable=not (self.progress and self.main), leave=False)
            for batch in bar:
                loss = self._train_step(batch)
                running += loss.detach()
                n_batches += 1
                self.step += 1
                now = self.elapsed + time.perf_counter() - t_epoch
                self.schedule.step(now)
                if self.main and self.step % tc["log_every"] == 0:
                    value = float(loss.detach())
                    writer.add_scalar("train/loss", value, self.step)
                    writer.add_scalar("train/lr", self.schedule.get_last_lr()[0], self.step)
                    bar.set_postfix(loss=f"{value:.3f}")
                if time_limit and now >= time_limit:
                    stop = True
                    break
            epoch_time = time.perf_counter() - t_epoch
            self.elapsed += epoch_time
            train_time += epoch_time
            train_images += n_batches * tc["batch_size"] * self.world
            last = stop or epoch + 1 == tc["epochs"]
            scores = None
            if self.main and ((epoch + 1) % tc["eval_every"] == 0 or last):
                scores = self._validate(writer, epoch)
                record = {"epoch": epoch + 1, "step": self.step, "time_s": round(self.elapsed, 2),
                          "lr": self.schedule.get_last_lr()[0],
                          "train_loss": float(running / max(n_batches, 1)), "val_mIoU": scores.miou,
                          "val_pixel_acc": scores.pixel_acc, "val_mDice": scores.mdice,
                          "val_iou": {n: (None if np.isnan(v) else float(v))
                                      for n, v in zip(self.taxonomy.names, scores.iou, strict=True)}}
                with open(self.run_dir / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                writer.add_scalar("train/epoch_loss", record["train_loss"], self.step)
                if self.main:
                    tqdm.write(f"epoch {epoch + 1}: loss {record['train_loss']:.4f}  val mIoU {scores.miou:.4f}  "
                               f"pixel acc {scores.pixel_acc:.4f}  ({self.elapsed:.0f}s)")
            if self.main:
                improved = scores is not None and scores.miou > self.best["mIoU"]
                if improved:
                    self.best = {"mIoU": scores.miou, "epoch": epoch + 1}
                self._save("last.pt", epoch + 1)
                if improved:
                    self._save("best.pt", epoch + 1)
            if self.world > 1:
                dist.barrier()
            if stop or (stop_after_epochs and epoch + 1 - self.start_epoch >= stop_after_epochs):
                break
        if writer is not None:
            writer.close()
        if self.world > 1:
            dist.destroy_process_group()
        ips = train_images / train_time if train_time else 0.0
        if self.main:
            info = json.loads((self.run_dir / "run.json").read_text())
            info.update(best_val_mIoU=self.best["mIoU"], best_epoch=self.best["epoch"], steps=self.step,
                        train_seconds=round(self.elapsed, 2), train_images_per_second=round(ips, 2),
                        stopped_by_time_limit=stop)
            write_json_atomic(self.run_dir / "run.json", info)
        return TrainResult(self.run_dir, self.best["mIoU"], self.best["epoch"], epoch + 1, self.step, self.elapsed,
                           ips)

    def _train_step(self, batch: dict[str, Any]) -> torch.Tensor:
        x = normalize(batch["image"].to(self.device, non_blocking=True))
        # the NHWC->NCHW permute leaves channels_last strides: make the layout explicit either way
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        y = batch["label"].to(self.device, non_blocking=True)
        with autocast_for(self.device, self.amp):
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg["train"]["grad_clip"] > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["train"]["grad_clip"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss

    @torch.no_grad()
    def _validate(self, writer: SummaryWriter, epoch: int) -> Scores:
        model = unwrap(self.model)
        model.eval()
        cm = ConfusionMatrix(self.taxonomy.num_classes, self.taxonomy.ignore_index, self.taxonomy.names)
        panels = []
        n_panels = self.cfg["train"]["log_images"]
        for batch in self.val_loader:
            labels = batch["label"]
            hw = tuple(labels.shape[-2:]) if isinstance(labels, torch.Tensor) else None
            if hw is None:  # labels of different sizes: upsample one by one
                preds = [predict_logits(model, batch["image"][i:i + 1], tuple(lb.shape), self.device, self.amp,
                                        self.channels_last).argmax(1)[0] for i, lb in enumerate(labels)]
            else:
                preds = list(predict_logits(model, batch["image"], hw, self.device, self.amp,
                                            self.channels_last).argmax(1))
            for i, (pred, lb) in enumerate(zip(preds, labels, strict=True)):
                cm.update(pred, lb.to(pred.device))
                if len(panels) < n_panels:
                    panels.append(self._panel(int(batch["index"][i]), pred.cpu().numpy()))
        scores = cm.scores()
        writer.add_scalar("val/mIoU", scores.miou, self.step)
        writer.add_scalar("val/pixel_acc", scores.pixel_acc, self.step)
        writer.add_scalar("val/mDice", scores.mdice, self.step)
        for name, v in zip(self.taxonomy.names, scores.iou, strict=True):
            if not np.isnan(v):
                writer.add_scalar(f"val_iou/{name}", v, self.step)
        for i, p in enumerate(panels):
            writer.add_image(f"val/panel_{i}", p, self.step, dataformats="HWC")
        model.train()
        return scores

    def _panel(self, index: int, pred: np.ndarray) -> np.ndarray:
        """image | ground truth | prediction, at label resolution."""
        label = self.val_set.labels[index]
        img = resize_image(self.val_set.images[index], label.shape)
        return np.concatenate([img, self.taxonomy.colorize(label), self.taxonomy.colorize(pred.astype(np.uint8))], 1)

    def _save(self, name: str, epoch: int) -> None:
        save_checkpoint(
            self.run_dir / "checkpoints" / name, model=unwrap(self.model).state_dict(),
            optimizer=self.optimizer.state_dict(), scheduler=self.schedule.state_dict(),
            scaler=self.scaler.state_dict(), epoch=epoch, step=self.step, best=self.best, rng=rng_state(),
            config=self.cfg, model_spec=self.spec, taxonomy=self.taxonomy.to_dict(),
            dataset_version=self.dataset.version, dataset_path=str(self.dataset.path.resolve()),
            elapsed_s=self.elapsed,
        )


def train(cfg: dict[str, Any], progress: bool = True) -> TrainResult:
    return Trainer(cfg, progress).fit()
