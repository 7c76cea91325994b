"""YOLO-seg runs: Ultralytics' own trainer runs the epochs; SegLoop keeps the run, the data and the scoring.

``YoloFit`` is the instance task's delegated trainer for the ``yolov8*-seg``, ``yolo11*-seg`` and ``yolo26*-seg``
models. Ultralytics does what it does well and what YOLO's published results depend on: its data loading and
augmentations (mosaic, copy-paste, HSV), its loss, optimiser groups, warmup, EMA and AMP. SegLoop keeps the rest, so
a YOLO run reads like any other run:

- the data: the dataset version exported to the YOLO-seg layout (``tasks.instance.yolo_data``, holes and split
  objects kept), cached by version;
- validation: SegLoop's COCO evaluator on the validation split at native mask resolution picks ``best.pt``
  (Ultralytics' own validator scores masks at a quarter of the resolution and does not ignore crowd regions);
- the run folder, written through ``core.runs.RunWriter`` from Ultralytics' callbacks (``on_train_batch_end``,
  ``on_model_save``, ``on_fit_epoch_end``): ``metrics.jsonl``, TensorBoard, ``run.json``, and checkpoints that
  hold tensors and the model spec only. Ultralytics' own ``.pt`` files are pickles of its classes and are never
  written: a SegLoop checkpoint is read with ``weights_only=True`` by evaluation, the app and resume alike;
- resume, from ``last.pt``: weights, optimiser, scaler, EMA counter, best score and early-stopping state.

Fully offline: ``YOLO_OFFLINE=true``; Ultralytics' settings in a folder of SegLoop's in the user's cache
(``~/.cache/segloop/ultralytics``: Ultralytics reads it once per process, when first imported, before a run folder
exists, and nothing of it belongs in a run) with a local font as ``Arial.ttf``; no analytics (``sync``), no
``download:`` key in the data YAML, no pretrained weights; and on CUDA the AMP check (which fetches a checkpoint)
replaced by SegLoop's rule: bf16 where the GPU has it, else fp16 with a gradient scaler.
"""

from __future__ import annotations

import difflib
import logging
import math
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from core.config import dump_yaml
from core.errors import SegLoopError
from core.runs import settle_replaced
from tasks.instance.train import SEMANTIC_ONLY
from train.checkpoint import check_compatible, load_state, rng_state, unwrap
from train.engine import Trainer, TrainResult, check_something_to_do, dist_info
from train.models.yolo import MODEL_NAMES, YoloSeg, default_config_dir, is_yolo, offline_environment

# SegLoop's keys and the Ultralytics argument each one sets (README: "YOLO-seg")
MAPPED = {
    "epochs": "train.epochs", "batch": "train.batch_size", "imgsz": "data.image_size", "time": "train.time_limit",
    "device": "train.device", "seed": "train.seed", "workers": "data.workers", "amp": "train.amp",
    "channels_last": "train.channels_last", "optimizer": "optim.name", "lr0": "optim.lr",
    "weight_decay": "optim.weight_decay", "momentum": "optim.momentum", "cos_lr": "schedule.name",
    "lrf": "schedule.min_lr_ratio", "warmup_epochs": "schedule.warmup_steps", "fliplr": "augment.hflip",
    "scale": "augment.scale", "hsv_h": "augment.hue", "hsv_s": "augment.saturation",
    "hsv_v": "augment.brightness", "copy_paste": "augment.copy_paste",
}
# set by SegLoop itself: the run's data, model and folders, and what it does in Ultralytics' place
FIXED = {"model", "data", "task", "mode", "project", "name", "exist_ok", "pretrained", "resume", "save", "val",
         "plots", "save_dir", "save_period", "split", "single_cls"}
OPTIMIZERS = {"adamw": "AdamW", "sgd": "SGD"}


def ultralytics_keys() -> dict[str, Any]:
    """Every argument of Ultralytics' configuration, with its default."""
    offline_environment(default_config_dir())
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return dict(DEFAULT_CFG_DICT)


def check_passthrough(extra: dict[str, Any]) -> None:
    """``ultralytics:`` holds Ultralytics arguments SegLoop does not map (mosaic, close_mosaic, overlap_mask, ...);
    a key SegLoop sets, or one Ultralytics does not have, is refused here, in a second, with the key to use."""
    known = ultralytics_keys()
    free = sorted(k for k in known if k not in MAPPED and k not in FIXED)
    for key in extra:
        if key in MAPPED:
            raise SegLoopError(f"ultralytics.{key} is set by SegLoop from {MAPPED[key]}",
                               fix=f"set {MAPPED[key]} instead, and remove ultralytics.{key}")
        if key in FIXED:
            raise SegLoopError(f"ultralytics.{key} is set by SegLoop for every YOLO run",
                               fix=f"remove ultralytics.{key}")
        if key not in known:
            close = difflib.get_close_matches(key, free, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise SegLoopError(f"Ultralytics has no training argument '{key}'",
                               fix=f"{hint}Ultralytics' arguments (yolo cfg): {', '.join(free)}")


def ultralytics_device(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else str(device.index or 0)


def ultralytics_args(cfg: dict[str, Any], device: torch.device, batches_per_epoch: int,
                     time_left_s: float | None) -> dict[str, Any]:
    """The Ultralytics arguments of a SegLoop training config: the mapped keys, then ``ultralytics:`` as given.

    Where Ultralytics has no exact counterpart the nearest one is chosen and said here (and in the README):
    ``augment.scale [lo, hi]`` becomes Ultralytics' symmetric gain ``max(1 - lo, hi - 1)``; colour jitter is HSV
    gains (``brightness`` -> ``hsv_v``, ``saturation`` -> ``hsv_s``, ``hue`` -> ``hsv_h``; ``color: 0`` turns it
    off, as Ultralytics draws gains for every image); ``schedule.warmup_steps`` becomes a fraction of an epoch.
    """
    tc, oc, sc, ac = cfg["train"], cfg["optim"], cfg["schedule"], cfg["augment"]
    if sc["name"] == "poly" and sc["power"] != 1:
        raise SegLoopError(f"schedule poly with power {sc['power']} is not one of Ultralytics' schedules",
                           fix="for YOLO models use schedule.name cosine, constant, or poly with power 1 (linear)")
    lo, hi = ac["scale"]
    color = ac["color"] > 0
    amp: bool | str = bool(tc["amp"]) and device.type == "cuda"
    if amp and torch.cuda.is_bf16_supported():
        amp = "bf16"  # as SegLoop's loop; Ultralytics' AMP check, which downloads a checkpoint, is for fp16 only
    args = {
        "epochs": tc["epochs"], "batch": tc["batch_size"], "imgsz": max(cfg["data"]["image_size"]),
        "time": time_left_s / 3600 if time_left_s else None, "device": ultralytics_device(device),
        "seed": tc["seed"], "workers": cfg["data"]["workers"], "amp": amp, "channels_last": bool(tc["channels_last"]),
        "optimizer": OPTIMIZERS[oc["name"]], "lr0": oc["lr"], "weight_decay": oc["weight_decay"],
        "momentum": oc["momentum"], "cos_lr": sc["name"] == "cosine",
        "lrf": 1.0 if sc["name"] == "constant" else (sc["min_lr_ratio"] if sc["name"] == "cosine" else 0.0),
        "warmup_epochs": sc["warmup_steps"] / max(batches_per_epoch, 1), "fliplr": ac["hflip"],
        "scale": max(1 - lo, hi - 1), "hsv_h": ac["hue"] if color else 0.0,
        "hsv_s": ac["saturation"] if color else 0.0, "hsv_v": ac["brightness"] if color else 0.0,
        "copy_paste": ac["copy_paste"], "patience": tc["early_stop"]["patience"] or tc["epochs"],
        "deterministic": bool(tc["deterministic"]),
        "pretrained": False, "plots": False, "val": True, "save": True, "verbose": False,
        **(cfg.get("ultralytics") or {}),
    }
    return args


def validate_args(args: dict[str, Any]) -> None:
    """Ultralytics' own type and range checks on the final arguments, as a SegLoop error naming the key."""
    from ultralytics.cfg import CFG_FRACTION_KEYS, CFG_INT_KEYS, CFG_INT_MIN, get_cfg

    known = ultralytics_keys()
    for key, value in args.items():  # ranges Ultralytics' own check leaves out (an int fraction, a negative count)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key in CFG_FRACTION_KEYS and not 0 <= value <= 1:
            raise SegLoopError(f"ultralytics.{key} must be a fraction in [0, 1], got {value}",
                               fix=f"set ultralytics.{key} between 0 and 1 (or the SegLoop key it comes from)")
        low = CFG_INT_MIN.get(key, min(0, known.get(key) or 0) if isinstance(known.get(key), int) else 0)
        if key in CFG_INT_KEYS and value < low:
            raise SegLoopError(f"ultralytics.{key} must be an integer >= {low}, got {value}",
                               fix=f"set ultralytics.{key} >= {low}")
    try:
        get_cfg(overrides={k: v for k, v in args.items() if k not in ("model", "data")})
    except (TypeError, ValueError, SyntaxError) as exc:
        raise SegLoopError(f"Ultralytics refused an argument: {exc}",
                           fix="correct it under ultralytics: (or the SegLoop key it comes from)") from None


@contextmanager
def no_amp_download():
    """Ultralytics checks fp16 AMP by running a downloaded YOLO26n; SegLoop trusts fp16 with a gradient scaler (its
    own loop does the same), so the check is replaced by its answer for the duration of the fit."""
    import ultralytics.engine.trainer as ut

    original = ut.check_amp
    ut.check_amp = lambda model: True
    try:
        yield
    finally:
        ut.check_amp = original


@contextmanager
def quiet(on: bool):
    """Ultralytics' per-batch log lines and argument dumps off (``progress=False``: tests, benchmarks)."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    if on:
        LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)


class YoloFit(Trainer):
    """A SegLoop run whose epochs Ultralytics' ``SegmentationTrainer`` runs (see the module docstring)."""

    foreign_section = "ultralytics"

    def __init__(self, cfg: dict[str, Any], progress: bool = True) -> None:
        if not is_yolo(cfg["model"]["name"]):
            raise SegLoopError(f"{cfg['model']['name']} is not a YOLO model", fix=f"one of {', '.join(MODEL_NAMES)}")
        if dist_info()[0] > 1:
            raise SegLoopError("YOLO models train in one process on one device (Ultralytics' trainer runs here, "
                               "with SegLoop's callbacks, which its own multi-GPU launcher would not carry)",
                               fix="start python -m train.run without torchrun; train.device=cuda:N picks the GPU")
        check_passthrough(dict(cfg.get("ultralytics") or {}))
        side = max(cfg["data"]["image_size"])
        if side % 32:
            up = -(-side // 32) * 32
            raise SegLoopError(f"data.image_size={cfg['data']['image_size']}: YOLO models train on a square input "
                               f"whose side is a multiple of 32 (their largest stride); Ultralytics would round {side}"
                               f" up to {up} while SegLoop validated at {side}",
                               fix=f"set data.image_size=[{up}, {up}] (or [{up - 32}, {up - 32}])")
        if cfg["train"]["overfit_batch"]:
            raise SegLoopError("train.overfit_batch: YOLO models train in Ultralytics' trainer, which has no "
                               "overfit check", fix="run the check with a model of SegLoop's loop (maskrcnn), or "
                                                    "train YOLO on a few images with data.train_ids")
        super().__init__(cfg, progress)

    def unused_settings(self) -> dict[str, str]:
        """What Ultralytics' trainer does not read of SegLoop's keys (momentum is AdamW's beta1 there)."""
        loss = "YOLO trains with Ultralytics' own loss (box, mask, class, DFL)"
        out = {"loss.name": loss, "loss.args": loss, "loss.class_weights": loss, **SEMANTIC_ONLY,
               "train.grad_clip": "Ultralytics always clips gradients at norm 10",
               "train.freeze_encoder_epochs": "Ultralytics freezes layers with its own freeze argument "
                                              "(ultralytics: {freeze: N})",
               "augment.contrast": "Ultralytics' colour augmentation has hue, saturation and value gains only",
               "train.early_stop.min_delta": "Ultralytics' early stopping counts any rise of the metric"}
        return {**out, **self.schedule_unused()}

    # ---------------------------------------------------------------------------------------------------- setup
    def _build_data(self) -> None:
        """The validation set SegLoop scores; the training images are read by Ultralytics from the export."""
        cfg, ds, sel = self.cfg, self.dataset, self.selection
        self.val_split = sel.val_split
        images = ds.coco(sel.train_split)["images"]
        self.train_set = images if sel.train_ids is None else [im for im in images if im["id"] in set(sel.train_ids)]
        self.val_set = self.task.validation_set(ds, sel.val_split, sel.val_ids)
        if not self.train_set or not len(self.val_set):
            raise SegLoopError(f"empty split in dataset {ds.version}: train {len(self.train_set)}, val "
                               f"{len(self.val_set)} images", path=ds.path,
                               fix="rebuild the version with images in both splits")
        self.batches_per_epoch = math.ceil(len(self.train_set) / cfg["train"]["batch_size"])
        self.val_loader = DataLoader(self.val_set, batch_size=cfg["train"]["batch_size"], shuffle=False,
                                     num_workers=0, collate_fn=self.task.collate)

    def _build_model(self) -> None:
        """The network from its YAML (weights from ``model.weights`` / ``init_from`` / the resumed checkpoint);
        Ultralytics builds its optimiser, scheduler and scaler itself."""
        self._build_network()
        tc = self.cfg["train"]
        self.start_epoch, self.step, self.elapsed = 0, 0, 0.0
        self.best: dict[str, Any] = {"metric": self.best_metric, "value": -1.0, "epoch": -1}
        self.resume_state: dict[str, Any] | None = None
        self.patience, self.stop_reason = None, None  # Ultralytics' own stopper applies train.early_stop
        if self.ckpt:
            check_compatible(self.ckpt, self.spec, self.taxonomy.names, self.cfg["resume"])
            load_state(unwrap(self.model), self.ckpt["model"], self.cfg["resume"])
            self.start_epoch, self.step, self.elapsed = self.ckpt["epoch"], self.ckpt["step"], self.ckpt["elapsed_s"]
            if self.ckpt["best"]["metric"] == self.best_metric:
                self.best = self.ckpt["best"]
            self.resume_state = self.ckpt["trainer"]
        limit = tc["time_limit"] * 60 if tc["time_limit"] else None
        if self.ckpt:
            check_something_to_do(self.cfg, self.start_epoch, self.elapsed, self.ckpt.get("stopped"))
        self.args = ultralytics_args(self.cfg, self.device, self.batches_per_epoch,
                                     limit - self.elapsed if limit else None)
        validate_args(self.args)
        layers = len(unwrap(self.model).net.model)
        freeze = self.args.get("freeze")
        frozen = [freeze] if isinstance(freeze, int) and not isinstance(freeze, bool) else (
            freeze if isinstance(freeze, list) else [])
        if any(not isinstance(f, int) or isinstance(f, bool) or not 0 <= f < layers for f in frozen) or (
                isinstance(freeze, int) and freeze >= layers):
            raise SegLoopError(f"ultralytics.freeze={freeze!r}: {self.spec['name']} has {layers} layers (0 .. "
                               f"{layers - 1}); freezing them all, or one it does not have, leaves nothing to train",
                               fix=f"freeze the first N layers with N < {layers} (the backbone is the first 10 or "
                                   f"11), or a list of layer indices below {layers}")
        self.model.imgsz.fill_(self.args["imgsz"])

    # ------------------------------------------------------------------------------------------------ the fit
    def _fit(self, stop_after_epochs: int | None) -> TrainResult:
        from tasks.instance.yolo_data import export_yolo

        self._call("before_train")
        self.out.run.update_info(trainer={"name": "ultralytics", "version": _version(), "args": self.args})
        export = export_yolo(self.dataset, progress=self.progress)
        self.stop_after = stop_after_epochs
        self.stopped_by_time = False
        self.epochs_done = self.start_epoch
        self.record = None
        self.train_images, self.train_time = 0, 0.0
        with tempfile.TemporaryDirectory(prefix="segloop-yolo-") as work:
            data = self._data_yaml(export, Path(work))
            trainer = make_trainer(self, {**self.args, "data": str(data), "model": f"{self.spec['name']}.yaml",
                                          "project": work, "name": "train", "exist_ok": True})
            self.ultra = trainer
            with no_amp_download(), quiet(not self.progress):
                trainer.train()
        patience = self.cfg["train"]["early_stop"]["patience"]
        if patience and self.epochs_done < self.cfg["train"]["epochs"] and not self.stopped_by_time and (
                self.epochs_done - trainer.stopper.best_epoch >= patience):
            self.stop_reason = (f"early stopping: val {self.best_metric} has not risen for {patience} epochs "
                                f"(train.early_stop.patience, Ultralytics' stopper)")
            print(f"{self.stop_reason}; its peak {self.best['value']:.4f} was at epoch {self.best['epoch']}")
        self.images_per_second = self.train_images / self.train_time if self.train_time else 0.0
        self._call("after_train")
        return TrainResult(self.run_dir, self.best["metric"], self.best["value"], self.best["epoch"],
                           self.epochs_done, self.step, self.elapsed, self.images_per_second)

    def _data_yaml(self, export: Path, work: Path) -> Path:
        """Ultralytics' data YAML for this run: the export's splits, or lists of the chosen images where the run
        trains or validates on part of a split (a fold, ``data.train_ids``): the same ids SegLoop validates on."""
        from core.config import read_yaml

        data = read_yaml(export / "data.yaml")
        sel = self.selection
        for part, split, ids in (("train", sel.train_split, sel.train_ids), ("val", sel.val_split, sel.val_ids)):
            if ids is None:
                data[part] = data[split]
                continue
            images = {im["id"]: im for im in self.dataset.coco(split)["images"]}
            files = [next((export / "images" / split).glob(images[i]["key"].replace("/", "__") + ".*"))
                     for i in ids]
            (work / f"{part}.txt").write_text("".join(f"{f}\n" for f in files))
            data[part] = str(work / f"{part}.txt")
        (work / "data.yaml").write_text(dump_yaml(data))
        return work / "data.yaml"

    # ---------------------------------------------------------------------------- called by Ultralytics' trainer
    def score(self, ultra: Any) -> tuple[dict[str, Any] | None, float | None]:
        """Validation in Ultralytics' place: SegLoop's evaluator on the EMA weights, every ``train.eval_every``
        epochs and at the end (the last epoch, the time limit, a stop)."""
        epoch = ultra.epoch + 1
        timed_out = bool(ultra.args.time) and time.time() - ultra.train_time_start > ultra.args.time * 3600
        last = epoch >= min(ultra.epochs, self.cfg["train"]["epochs"]) or ultra.stop or timed_out or (
            self.stop_after is not None and epoch - self.start_epoch >= self.stop_after)
        if not (epoch % self.cfg["train"]["eval_every"] == 0 or last):
            self.record = None
            return ultra.metrics, None
        self.step_at_record = self.step
        self.record = self.validate(YoloSeg(ultra.ema.ema, self.args["imgsz"]).to(ultra.device), losses=False)
        fitness = float(self.record[f"val_{self.best_metric}"])
        return self.record, fitness

    def payload(self, ultra: Any, epoch: int) -> dict[str, Any]:
        """A SegLoop checkpoint of the EMA weights (what Ultralytics saves and resumes from as well), with what
        Ultralytics' resume needs beside them; tensors and plain data only."""
        from ultralytics.utils.torch_utils import unwrap_model

        ema = YoloSeg(ultra.ema.ema, self.args["imgsz"])
        stopper = {"best_fitness": ultra.stopper.best_fitness, "best_epoch": ultra.stopper.best_epoch}
        return dict(
            model={k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                   for k, v in ema.state_dict().items()},
            epoch=epoch, step=self.step, best=self.best, rng=rng_state(), config=self.cfg, model_spec=self.spec,
            taxonomy=self.taxonomy.to_dict(), dataset_version=self.dataset.version,
            dataset_path=str(self.dataset.path.resolve()), elapsed_s=self.elapsed,
            trainer={"name": "ultralytics", "version": _version(), "optimizer": ultra.optimizer.state_dict(),
                     "scaler": ultra.scaler.state_dict(), "ema_updates": int(ultra.ema.updates),
                     "stopper": {k: (float(v) if v is not None else None) for k, v in stopper.items()},
                     "model_class": type(unwrap_model(ultra.model)).__name__},
        )


def _version() -> str:
    import ultralytics

    return ultralytics.__version__


def make_trainer(fit: YoloFit, args: dict[str, Any]) -> Any:
    """Ultralytics' ``SegmentationTrainer`` over ``fit``'s network, with SegLoop's validation, checkpoints and run
    folder in place of its own (its pickled ``.pt`` files and ``results.csv`` are never written)."""
    from ultralytics.models.yolo.segment import SegmentationTrainer
    from ultralytics.nn.tasks import SegmentationModel

    class SegLoopTrainer(SegmentationTrainer):
        def setup_model(self) -> dict[str, Any] | None:
            self.model = unwrap(fit.model).net
            state = fit.resume_state
            if state is None:
                return None
            self.resume = True
            ema = SegmentationModel(self.model.yaml, nc=self.model.model[-1].nc, verbose=False)
            ema.load_state_dict(self.model.state_dict())
            return {"epoch": fit.start_epoch - 1, "optimizer": state["optimizer"], "scaler": state["scaler"],
                    "ema": ema, "updates": state["ema_updates"], "best_fitness": fit.best["value"],
                    "stopper": state["stopper"]}

        def validate(self) -> tuple[dict[str, Any] | None, float | None]:
            metrics, fitness = fit.score(self)
            if fitness is not None and (self.best_fitness is None or fitness > self.best_fitness):
                self.best_fitness = fitness
            return metrics, fitness

        def save_model(self) -> bool:
            return True  # SegLoop's checkpoints are written by the on_model_save callback

        def save_metrics(self, metrics: dict[str, Any]) -> None:
            """metrics.jsonl is the run's record (on_fit_epoch_end); no results.csv."""

        def final_eval(self) -> None:
            """The last epoch was scored by SegLoop's evaluator already (``fit.score``)."""

    trainer = SegLoopTrainer(overrides=args)
    epoch_start: dict[str, float] = {}

    def on_train_epoch_start(t: Any) -> None:
        epoch_start["t"] = time.perf_counter()
        epoch_start["batches"] = 0

    def on_train_batch_end(t: Any) -> None:
        fit.step += 1
        epoch_start["batches"] += 1
        if fit.step % fit.cfg["train"]["log_every"] == 0 and t.loss_items is not None:
            items = {k: float(v) for k, v in t.loss_items.items()}
            fit.out.scalar("train/loss", sum(items.values()), fit.step)
            for k, v in items.items():
                fit.out.scalar(f"train_loss/{k}", v, fit.step)
            fit.out.scalar("train/lr", t.optimizer.param_groups[0]["lr"], fit.step)

    def on_train_epoch_end(t: Any) -> None:
        seconds = time.perf_counter() - epoch_start["t"]
        fit.train_time += seconds
        fit.train_images += epoch_start["batches"] * t.batch_size
        fit.elapsed += seconds

    def on_model_save(t: Any) -> None:
        epoch = t.epoch + 1
        if fit.record is not None:
            value = float(fit.record[f"val_{fit.best_metric}"])
            if value > fit.best["value"]:  # best.pt first, as SegLoop's loop
                fit.best = {"metric": fit.best_metric, "value": value, "epoch": epoch, "step": fit.step}
                fit.out.checkpoint("best.pt", fit.payload(t, epoch))
        fit.out.checkpoint("last.pt", fit.payload(t, epoch))
        if fit.created_run_dir:  # an earlier run of this name, set aside by output.exist_ok, can go now
            settle_replaced(fit.run_dir, restore=False)

    def on_fit_epoch_end(t: Any) -> None:
        epoch = t.epoch + 1
        fit.epochs_done = epoch
        timed_out = bool(t.args.time) and time.time() - t.train_time_start > t.args.time * 3600
        fit.stopped_by_time = fit.stopped_by_time or timed_out
        if epoch >= fit.cfg["train"]["epochs"] or (fit.stop_after and epoch - fit.start_epoch >= fit.stop_after):
            t.stop = True  # train.epochs bounds Ultralytics' time-based estimate of the epoch count too
        if fit.record is None:
            return
        losses = {k: float(v) for k, v in (t.tloss or {}).items()}
        record = {"epoch": epoch, "step": fit.step, "time_s": round(fit.elapsed, 2),
                  "lr": t.optimizer.param_groups[0]["lr"], "train_loss": sum(losses.values()),
                  "train_losses": losses, **fit.record}
        fit.out.log(record)
        print(f"epoch {epoch}: loss {record['train_loss']:.4f}  {fit.task.summary(fit.record)}  "
              f"({fit.elapsed:.0f}s)", flush=True)
        fit.record = None

    for event, fn in (("on_train_epoch_start", on_train_epoch_start), ("on_train_batch_end", on_train_batch_end),
                      ("on_train_epoch_end", on_train_epoch_end), ("on_model_save", on_model_save),
                      ("on_fit_epoch_end", on_fit_epoch_end)):
        trainer.add_callback(event, fn)
    return trainer
