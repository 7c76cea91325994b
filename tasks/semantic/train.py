"""Semantic segmentation: per-pixel classes, models mapping images to logits that their head decodes (softmax over
the classes, or one sigmoid logit for a two-class taxonomy), scored by mIoU."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from core.errors import SegLoopError
from core.metrics import scores_from_matrix
from ingest.version import DatasetVersion
from metrics.semantic import SemSegEvaluator
from train.data import SplitDataset, build_augment, collate, normalize, resize_image
from train.infer import autocast_for, predict_logits, use_channels_last
from train.losses import build_loss, resolve_class_weights, uses_class_weights
from train.models import SEMANTIC_MODELS
from train.models.heads import Decoding, decoding_of
from train.task import Task

# the state-dict names of the residual UNet and LinkNet before their encoders became registry entries: same
# layers, same shapes, under other names (old name prefix -> today's), so a run trained then is still read
RESUNET_NAMES = (("stem.", "encoder.stem."), ("down.", "encoder.down."), ("up.", "decoder."),
                 ("head.1.", "head.conv."))
LINKNET_NAMES = (("stem.", "encoder.stem."), ("enc.", "encoder.down."), ("head.1.", "final."),
                 ("head.2.", "head.conv."))


class BatchSemSegEvaluator(SemSegEvaluator):
    """The semantic evaluator fed with a validation batch and its predicted maps."""

    def process(self, inputs: dict[str, Any], outputs: list[torch.Tensor]) -> None:  # type: ignore[override]
        for pred, label in zip(outputs, inputs["label"], strict=True):
            super().process(pred, label.to(pred.device), {})


class SemanticTask(Task):
    name = "semantic"
    models = SEMANTIC_MODELS
    best_metric = "mIoU"
    metric_names = ("mIoU", "pixel_acc", "mDice")

    @classmethod
    def upgrade_checkpoint(cls, ckpt: dict[str, Any]) -> dict[str, Any]:
        """A ``resunet`` or ``linknet`` checkpoint written before the encoder registry, renamed to today's layout
        (LinkNet's ``width`` / ``depth`` moved under ``encoder_args``); any other checkpoint as it is."""
        spec, state = ckpt["model_spec"], ckpt["model"]
        names = {"resunet": RESUNET_NAMES, "linknet": LINKNET_NAMES}.get(spec["name"])
        if names is None or not any(k.startswith("stem.") for k in state):
            return ckpt
        renamed = {}
        for key, value in state.items():
            old = next((o for o, _ in names if key.startswith(o)), None)
            renamed[key if old is None else dict(names)[old] + key[len(old):]] = value
        ckpt["model"] = renamed
        ckpt["model_spec"] = cls.upgrade_spec(spec)
        return ckpt

    @classmethod
    def upgrade_spec(cls, spec: dict[str, Any]) -> dict[str, Any]:
        """A model spec of the earlier layout (LinkNet's ``width`` / ``depth`` as its own arguments, which are
        its encoder's today) in today's."""
        if spec["name"] != "linknet" or not {"width", "depth"} & set(spec["args"]):
            return spec
        args = dict(spec["args"])
        enc = {k: args.pop(k) for k in ("width", "depth") if k in args}
        return {**spec, "args": {**args, "encoder_args": {**(args.pop("encoder_args", None) or {}), **enc}}}

    @classmethod
    def unused_settings(cls, cfg: dict[str, Any]) -> dict[str, str]:
        out = {"augment.copy_paste": "copy-paste pastes another image's instances: an instance-task augmentation"}
        if cfg["augment"]["copy_blob"]["p"] == 0:
            out.update({f"augment.copy_blob.{k}": "CopyBlob is off (augment.copy_blob.p is 0)"
                        for k in ("classes", "max_blobs", "band")})
        if (cfg["model"]["args"] or {}).get("head", "softmax") != "sigmoid":
            out["model.args.threshold"] = "the threshold decodes a sigmoid head's one logit; a softmax head takes " \
                                          "the most probable class"
        if not uses_class_weights(cfg["loss"]["name"]):
            out["loss.class_weights"] = f"class weights weight the pixels of cross_entropy and bce; " \
                                        f"{cfg['loss']['name']} takes none"
        return out

    def copy_blob_config(self, version: DatasetVersion) -> dict[str, Any] | None:
        """``augment.copy_blob`` with its class names as train indices; a class the taxonomy lacks is refused."""
        cb = dict(self.cfg["augment"]["copy_blob"])
        if cb["p"] == 0:
            return None
        if not cb["classes"]:
            raise SegLoopError("augment.copy_blob.p is set but augment.copy_blob.classes names no class",
                               fix="name the rare classes to paste, e.g. augment.copy_blob.classes=[pole,bus]")
        names = self.taxonomy.names
        missing = [c for c in cb["classes"] if c not in names]
        if missing:
            raise SegLoopError(f"augment.copy_blob.classes names {', '.join(missing)}, which taxonomy "
                               f"'{self.taxonomy.name}' does not have", path=version.path,
                               fix=f"classes of {self.taxonomy.name}: {', '.join(names)}")
        cb["class_indices"] = [names.index(c) for c in cb["classes"]]
        return cb

    def datasets(self, version: DatasetVersion, train_ids: list[int] | None, val_split: str,
                 val_ids: list[int] | None, augment: bool = True) -> tuple[Dataset, Dataset]:
        cfg = self.cfg
        hw = tuple(cfg["data"]["image_size"])
        aug = build_augment(cfg["augment"], hw, self.taxonomy.ignore_index) if augment else None
        if aug is not None:
            aug.set_random_seed(cfg["train"]["seed"])
        copy_blob = self.copy_blob_config(version) if augment else None
        train_set = SplitDataset(version, cfg["data"]["train_split"], hw, aug, image_ids=train_ids,
                                 progress=self.progress, copy_blob=copy_blob)
        if train_set.copy_blob is not None:
            absent = [self.taxonomy.names[c] for c, n in train_set.copy_blob.counts().items() if n == 0]
            if absent:
                raise SegLoopError(f"augment.copy_blob.classes: {', '.join(absent)} has no blob (connected region "
                                   f"of 16+ pixels at data.image_size) in the {cfg['data']['train_split']} split",
                                   path=version.path, fix="paste classes the training images have, or leave them "
                                                          "out of augment.copy_blob.classes")
        self.val_set = SplitDataset(version, val_split, hw, None, full_labels=True, image_ids=val_ids,
                                    progress=self.progress)
        return train_set, self.val_set

    def collate(self, batch: list[Any]) -> Any:
        return collate(batch)

    def start_epoch(self, train_set: Dataset, seed: int) -> None:
        train_set.set_random_seed(seed)
        n = self.taxonomy.num_classes
        self.train_counts = torch.zeros(n * n + 1, dtype=torch.long, device=self.device)

    def train_record(self) -> dict[str, Any]:
        """The epoch's training batches scored as they were trained (augmented, at the training size, before
        each step's update): ``train_mIoU`` beside ``val_mIoU`` shows how far validation lags behind."""
        counts = getattr(self, "train_counts", None)
        if counts is None or not bool(counts[:-1].any()):
            return {}
        n = self.taxonomy.num_classes
        return {"train_mIoU": scores_from_matrix(counts[:-1].view(n, n).cpu().numpy()).miou}

    def build_model(self, initialise: bool = True) -> nn.Module:
        model = super().build_model(initialise)
        self.decoding: Decoding = decoding_of(model)
        return model

    def channels_last(self, model: nn.Module, requested: bool) -> bool:
        self.use_cl = use_channels_last(model, self.device, requested)
        return self.use_cl

    def setup_loss(self, train_set: Dataset) -> None:
        pixels, present = train_set.class_pixels(self.taxonomy.num_classes)
        weights = resolve_class_weights(self.cfg["loss"], self.taxonomy.num_classes, pixels, present)
        self.class_weights = None if weights is None or not uses_class_weights(self.cfg["loss"]["name"]) else \
            {n: round(float(w), 6) for n, w in zip(self.taxonomy.names, weights, strict=True)}
        self.loss_fn = build_loss(self.cfg["loss"], self.decoding.loss_mode, self.taxonomy.ignore_index,
                                  weights).to(self.device)

    def before_train(self, run_dir: Any, train_set: Dataset) -> None:
        """``augment.preview=N``: N augmented training samples (image over its label) in ``augment_preview.png``,
        exactly as the first epoch's pipeline produces them (the epoch re-seeds the stream afterwards)."""
        n = self.cfg["augment"]["preview"]
        if not n or self.cfg["train"]["overfit_batch"]:  # the overfit check augments nothing: nothing to preview
            return
        from core.fsio import save_png

        train_set.set_random_seed(self.cfg["train"]["seed"] * 1000)
        tiles = []
        for i in range(n):
            item = train_set[i % len(train_set)]
            img, label = item["image"].numpy(), item["label"].numpy().astype(np.uint8)
            tiles.append(np.concatenate([img, self.taxonomy.colorize(label)], 0))
        cols = min(n, 4)
        blank = np.zeros_like(tiles[0])
        rows = [np.concatenate((tiles[r:r + cols] + [blank] * cols)[:cols], 1) for r in range(0, n, cols)]
        save_png(run_dir / "augment_preview.png", np.concatenate(rows, 0))
        print(f"augment.preview: {n} augmented training samples in {run_dir / 'augment_preview.png'}")

    def run_info(self, model: nn.Module) -> dict[str, Any]:
        info: dict[str, Any] = {"head": self.decoding.describe()}
        if isinstance(getattr(getattr(model, "encoder", None), "name", None), str):
            info["encoder"] = model.encoder.name
        if self.class_weights is not None:
            info["class_weights"] = self.class_weights
        return info

    def train_step(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = normalize(batch["image"].to(self.device, non_blocking=True))
        # the NHWC->NCHW permute leaves channels_last strides: make the layout explicit either way
        x = x.contiguous(memory_format=torch.channels_last if self.use_cl else torch.contiguous_format)
        y = batch["label"].to(self.device, non_blocking=True)
        with autocast_for(self.device, self.amp):
            logits = model(x)
            losses = self.loss_fn(logits, y)
        if hasattr(self, "train_counts"):  # on the device, no sync: one bin past the matrix takes ignored pixels
            n = self.taxonomy.num_classes
            key = torch.where((y >= 0) & (y < n), y * n + self.decoding.labels(logits.detach()), n * n)
            self.train_counts += torch.bincount(key.reshape(-1), minlength=n * n + 1)
        return losses

    def evaluator(self, version: DatasetVersion, split: str) -> BatchSemSegEvaluator:
        return BatchSemSegEvaluator(self.taxonomy.names, self.taxonomy.ignore_index)

    def _logits(self, model: nn.Module, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Logits at each label's own resolution, one tensor per batch (labels of different sizes one by one)."""
        labels = batch["label"]
        if isinstance(labels, torch.Tensor):
            return [predict_logits(model, batch["image"], tuple(labels.shape[-2:]), self.device, self.amp,
                                   self.use_cl)]
        return [predict_logits(model, batch["image"][i:i + 1], tuple(lb.shape), self.device, self.amp, self.use_cl)
                for i, lb in enumerate(labels)]

    @torch.no_grad()
    def inference(self, model: nn.Module, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Class maps (the head's decoding) at each label's own resolution."""
        return [m for logits in self._logits(model, batch) for m in self.decoding.labels(logits)]

    @torch.no_grad()
    def validation_step(self, model: nn.Module, batch: dict[str, Any]
                        ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor] | None]:
        """Class maps and the training loss's terms (same weights, smoothing, ignore value) from one forward pass,
        on the logits upsampled to each label's full resolution, as the validation metrics see them."""
        labels = batch["label"]
        chunks = self._logits(model, batch)
        targets = [labels] if isinstance(labels, torch.Tensor) else [lb[None] for lb in labels]
        ignore = self.taxonomy.ignore_index
        # an image with no labelled pixel has no loss (cross-entropy over no pixel is NaN): it is left out
        terms = [self.loss_fn(logits, y.to(self.device).long())
                 for logits, y in zip(chunks, targets, strict=True) if bool((y != ignore).any())]
        losses = {k: torch.stack([t[k].float() for t in terms]).mean() for k in terms[0]} if terms else None
        return [m for logits in chunks for m in self.decoding.labels(logits)], losses

    @torch.no_grad()
    def validation_loss(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        return self.validation_step(model, batch)[1]

    def record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"val_mIoU": metrics["mIoU"], "val_pixel_acc": metrics["pixel_acc"], "val_mDice": metrics["mDice"],
                "val_iou": {n: v["iou"] for n, v in metrics["per_class"].items()}}

    def summary(self, record: dict[str, Any]) -> str:
        return f"val mIoU {record['val_mIoU']:.4f}  pixel acc {record['val_pixel_acc']:.4f}"

    def panels(self, batch: dict[str, Any], outputs: list[torch.Tensor], limit: int) -> list[np.ndarray]:
        out = []
        for i, pred in enumerate(outputs[:limit]):
            index = int(batch["index"][i])
            label = self.val_set.labels[index]
            img = resize_image(self.val_set.images[index], label.shape)
            out.append(np.concatenate([img, self.taxonomy.colorize(label),
                                       self.taxonomy.colorize(pred.cpu().numpy().astype(np.uint8))], 1))
        return out
