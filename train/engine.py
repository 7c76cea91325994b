"""The training loop: one generic loop for every task, with hooks for what happens around it.

The loop itself only moves batches through the task's train step, the optimiser and the schedule. Everything else
is a hook (detectron2's ``HookBase``): the run folder and ``run.json``, validation with the task's evaluator,
``metrics.jsonl`` and TensorBoard, checkpoints and ``best.pt`` by the task's metric. The time budget and DDP are
part of the loop because they decide when it stops and how batches are shared. Resume continues from ``last.pt``
exactly (same batches, same augmentation, same weights as an uninterrupted run).
"""

from __future__ import annotations

import json
import math
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
from tqdm import tqdm

import tasks
from core.config import dump_yaml, flatten
from core.errors import SegLoopError, article
from core.fsio import sha256_file
from core.names import safe_name
from core.runs import (
    Run,
    RunWriter,
    create_run_dir,
    has_results,
    new_run_problem,
    plan_run_dir,
    settle_replaced,
    training_start_problem,
)
from ingest.version import DatasetVersion, build, load_data_config, resolve_version
from train.checkpoint import (
    check_compatible,
    check_run_checkpoint,
    load_checkpoint,
    load_state,
    model_spec,
    rng_state,
    set_rng_state,
    unwrap,
)
from train.config import WHY, train_command
from train.data import worker_init
from train.infer import pick_device
from train.models.yolo import ultralytics_weights
from train.schedule import WarmupSchedule
from train.selection import Selection, select_images
from train.task import Task


@dataclass
class TrainResult:
    run_dir: Path
    best_metric: str
    best_value: float
    best_epoch: int
    epochs_done: int
    steps: int
    train_seconds: float
    images_per_second: float
    overfit: dict[str, Any] | None = None  # the overfit check's outcome (train.overfit_batch), when it ran


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


def dist_info() -> tuple[int, int, int]:
    """WORLD_SIZE, RANK and LOCAL_RANK as torchrun sets them; a value torchrun would never set (``abc``, a rank
    outside the world, a world of 0) is said, naming the variable, instead of int()'s message or a silent run."""
    values = {}
    for var, default in (("WORLD_SIZE", "1"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        text = os.environ.get(var, default).strip()
        if not text.isdigit():
            raise SegLoopError(f"environment variable {var}={os.environ[var]!r} is not a whole number",
                               fix=f"unset {var} for one process, or start training with torchrun, which sets it")
        values[var] = int(text)
    world, rank = values["WORLD_SIZE"], values["RANK"]
    if world == 1 and "WORLD_SIZE" not in os.environ and ({"RANK", "LOCAL_RANK"} & set(os.environ)):
        if rank > 0:
            raise SegLoopError(f"RANK={rank} is set but WORLD_SIZE is not: a rank above 0 belongs to a world of "
                               f"several processes", fix="unset RANK and LOCAL_RANK for one process, or start "
                                                         "training with torchrun, which sets all three")
        print("note: RANK / LOCAL_RANK are set but WORLD_SIZE is not: training runs as one process "
              "(torchrun sets all three)")
    if world < 1 or rank >= world:
        raise SegLoopError(f"WORLD_SIZE={world} with RANK={rank}: the world needs at least one process and each "
                           f"rank is below WORLD_SIZE", fix="unset WORLD_SIZE, RANK and LOCAL_RANK for one process, "
                                                            "or start training with torchrun")
    return world, rank, values["LOCAL_RANK"]


def check_rendezvous(addr: str, port: str) -> None:
    """MASTER_ADDR / MASTER_PORT as torchrun would set them: a port number, a host that resolves (torch's own
    rendezvous would raise int()'s message, or retry an unknown host for ever)."""
    import socket

    if not port.strip().isdigit() or not 0 < int(port) < 65536:
        raise SegLoopError(f"environment variable MASTER_PORT={port!r} is not a port number (1-65535)",
                           fix="set MASTER_PORT to a free port, e.g. 29500, or start training with torchrun")
    try:
        socket.getaddrinfo(addr, int(port))
    except (socket.gaierror, UnicodeError) as exc:
        raise SegLoopError(f"environment variable MASTER_ADDR={addr!r} does not resolve to a host ({exc})",
                           fix="set MASTER_ADDR to the first node's address (127.0.0.1 on one machine)") from None


def transfer_weights(model: nn.Module, source: str | Path, class_names: list[str],
                     model_name: str | None = None) -> dict[str, Any]:
    """Start every layer of ``model`` whose name and shape match from another SegLoop run or checkpoint (transfer
    learning). A head whose rows are classes (``class_rows``) of another taxonomy keeps, for each class the two
    taxonomies share by name, the source's row; the other classes' rows stay fresh. Nothing matching is an error."""
    from train.models.heads import class_rows, source_rows

    model_name = model_name or type(model).__name__
    path = Run(source).checkpoint_path("best") if Path(source).is_dir() else Path(source)
    foreign = ultralytics_weights(path) if path.is_file() else None
    their_names: list[str] = []
    if foreign is not None:  # an Ultralytics .pt (COCO-pretrained YOLO, say): its tensors, none of its code
        theirs, spec = foreign, {"task": "instance", "name": "Ultralytics"}
    else:
        ckpt = load_checkpoint(path)
        theirs, spec = ckpt["model"], ckpt["model_spec"]
        their_names = [c["name"] for c in ckpt.get("taxonomy", {}).get("classes", [])]
    own = model.state_dict()
    matched = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    mapped: dict[str, list[str]] = {}
    heads = class_rows(model)
    if heads and their_names and not set(their_names) & set(class_names):
        raise SegLoopError(f"model.init_from's taxonomy ({', '.join(their_names[:4])}, ...) shares no class with this "
                           f"dataset's ({', '.join(class_names[:4])}, ...): no class of the head can start from it",
                           path=path, fix="start from a run whose taxonomy shares classes by name with this "
                                          "dataset's, or train without model.init_from")
    for key, rows in heads.items():  # a head's weight, then its bias: the bias follows its weight
        weight = key.removesuffix(".bias") + ".weight" if key.endswith(".bias") else key
        if key not in theirs or key not in own or own[key].shape[1:] != theirs[key].shape[1:] or (
                key != weight and weight not in matched):
            continue
        if their_names == class_names:
            continue
        matched.pop(key, None)  # rows of the same shape but other classes would start each class as another
        src = source_rows(theirs[key].shape[0], len(their_names))
        if src is None:  # rows that cannot be told apart by class (a no-object row): the head starts fresh
            continue
        tensor, shared = own[key].clone(), []
        for r, cls in enumerate(rows):
            name = class_names[cls]
            if name in their_names and their_names.index(name) in src:
                tensor[r] = theirs[key][src.index(their_names.index(name))]
                shared.append(name)
        if shared:
            matched[key] = tensor
            mapped[key] = shared
    if not any(not k.endswith("num_batches_tracked") for k in matched):  # a counter alone is no shared layer
        raise SegLoopError(f"model.init_from is {article(spec['task'])} {spec['task']} {spec['name']} model, which "
                           f"shares no layer (same "
                           f"name and shape) with this {model_name}", path=path,
                           fix="start from a run of the same model family, or leave model.init_from empty")
    model.load_state_dict(matched, strict=False)
    report = {"from": str(path), "sha256": sha256_file(path), "loaded": len(matched), "of": len(own),
              "skipped": sorted(k for k in own if k not in matched)[:20],
              # where the source's training had got to: evaluate history continues its curve from there
              **({"epoch": ckpt.get("epoch"), "step": ckpt.get("step")} if foreign is None else {})}
    if mapped:
        report["classes_mapped"] = sorted({n for names in mapped.values() for n in names})
    print(f"model.init_from {path}: {len(matched)} of {len(own)} tensors loaded"
          + (f"; new: {', '.join(report['skipped'][:4])}{' ...' if len(own) - len(matched) > 4 else ''}"
             if len(matched) < len(own) else "")
          + (f"; head rows of {', '.join(report['classes_mapped'])} mapped by class name" if mapped else ""))
    if len(matched) < len(own) / 2:
        print(f"note: most of this {model_name} starts fresh: model.init_from is {article(spec['task'])} "
              f"{spec['task']} {spec['name']} model of another architecture, and only layers of the same name and "
              f"shape are taken")
    return report


def pretrained_files(model: nn.Module) -> list[dict[str, Any]]:
    """The weight files the model's parts started from ({file, sha256}), as each part recorded when it loaded one."""
    return [m.pretrained for m in model.modules() if isinstance(getattr(m, "pretrained", None), dict)]


def check_reasons(cfg: dict[str, Any], model_args: dict[str, Any]) -> None:
    """A ``why:`` reason for a model argument the model does not have (``model.args.widht``) explains nothing: it
    is refused as an unknown key is, with the closest argument (the config schema cannot know a model's
    arguments, so this check waits until the model is known)."""
    import difflib

    valid = [k for k in model_args if k != "num_classes"]
    for key in cfg.get(WHY) or {}:
        parts = key.split(".")
        if parts[:2] == ["model", "args"] and len(parts) > 2 and parts[2] not in valid:
            close = difflib.get_close_matches(parts[2], valid, n=1)
            hint = f"did you mean 'model.args.{close[0]}'? " if close else ""
            raise SegLoopError(f"why: names '{key}', but model {cfg['model']['name']} has no argument "
                               f"'{parts[2]}'", fix=f"{hint}arguments of {cfg['model']['name']}: "
                                                    f"{', '.join(valid) or 'none'}")
        # a free section's keys (Ultralytics' arguments, a loss term's) are known once set: a reason explains a
        # value the config sets
        section = ".".join(parts[:2]) if parts[:2] == ["loss", "args"] else parts[0]
        if section in ("ultralytics", "loss.args") and key != section:
            given = [k for k in flatten({section: _section(cfg, section)}) if k != section]
            if key not in given and not any(g.startswith(key + ".") for g in given):
                close = difflib.get_close_matches(key, given, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise SegLoopError(f"why: names '{key}', which this config does not set",
                                   fix=f"{hint}give reasons for the {section} keys the config sets"
                                       + (f" ({', '.join(given)})" if given else " (it sets none)"))


def _section(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = (node or {}).get(part) if isinstance(node, dict) else None
    return node or {}


def set_deterministic(on: bool, device: torch.device) -> tuple[bool, bool, bool, bool]:
    """``train.deterministic``: torch's deterministic kernels only (cuDNN's too, without benchmarking); the
    previous setting is returned so that the caller restores it (it is process-wide). On CPU SegLoop's runs are then
    bitwise identical from rerun to rerun; on CUDA a few kernels have no deterministic form (the backward of bilinear
    upsampling, ROI Align's, scatter-adds): torch warns about each instead of stopping the run."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS' deterministic workspace
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return before


class Patience:
    """Early stopping's rule (Keras' and Ultralytics' patience): stop once ``patience`` epochs have passed since
    the metric last rose by more than ``min_delta``. The reference value moves only on such a rise, so a slow creep
    of tiny gains does not keep a plateaued run going."""

    def __init__(self, patience: int, min_delta: float, value: float = -math.inf, epoch: int = 0) -> None:
        self.patience, self.min_delta, self.value, self.epoch = patience, min_delta, value, epoch

    def update(self, epoch: int, value: float) -> bool:
        """Feed one validation (``epoch`` counted from 1); True when training should stop after it."""
        if value > self.value + self.min_delta:
            self.value, self.epoch = value, epoch
            return False
        return epoch - self.epoch >= self.patience

    def state(self) -> dict[str, Any]:
        return {"value": self.value, "epoch": self.epoch}


# the settings a resumed run keeps: its data, its inputs' size and its loss (the epochs, time budget, validation and
# logging intervals, device and workers may change)
RESUME_FIXED = ("data.version", "data.fold", "data.train_split", "data.val_split", "data.image_size", "loss.name",
                "train.seed", "train.overfit_batch")


def check_resume_overrides(cfg: dict[str, Any], theirs: dict[str, Any]) -> None:
    """A resumed run continues in its own folder from its own weights: ``output.*`` and a starting checkpoint
    (``model.weights`` / ``model.init_from``) other than the ones it was started with would have no effect."""
    for key in ("task", "model.name"):
        ours, before = (cfg[key], theirs.get(key)) if key == "task" else (cfg["model"]["name"],
                                                                          (theirs.get("model") or {}).get("name"))
        if before is not None and ours != before:
            raise SegLoopError(f"{key}={ours} does not apply when resuming: the run trains {key}={before}, and "
                               f"resuming continues it", path=cfg["resume"],
                               fix=f"drop {key} from the command, or start a new run without resume=")
    for key in ("output.name", "output.runs_dir", "model.weights", "model.init_from"):
        section, name = key.split(".")
        ours, before = cfg[section][name], (theirs.get(section) or {}).get(name)
        if ours != before and not (section == "output" and ours is None):
            raise SegLoopError(f"{key}={ours} does not apply when resuming: the run continues in its own folder "
                               f"from its last.pt (it was started with {key}={before})", path=cfg["resume"],
                               fix=f"drop {key} from the command, or start a new run without resume=")
    # what the checkpoint's weights were trained on and as: a resume that changed it (on the command line, or by an
    # edit of config.yaml, or a key missing there and so read from the defaults) would continue another training
    for key in RESUME_FIXED:
        section, name = key.split(".")
        if section not in theirs or name not in (theirs.get(section) or {}):
            continue  # a key the run's SegLoop did not have yet: today's default is what it trained with
        ours, before = cfg[section][name], theirs[section][name]
        if ours != before:
            raise SegLoopError(f"{key}={ours} does not apply when resuming: the run's checkpoint trained with "
                               f"{key}={before} (config.yaml, or the command line, says otherwise)",
                               path=cfg["resume"], fix=f"drop {key} from the command (or restore it in config.yaml "
                                                       f"to {before}), or start a new run without resume=")
    if cfg["output"]["exist_ok"] and not (theirs.get("output") or {}).get("exist_ok"):
        raise SegLoopError("output.exist_ok=true does not apply when resuming: the run continues in its own folder",
                           path=cfg["resume"], fix="drop output.exist_ok from the command")
    preview = cfg["augment"].get("preview")
    if preview and preview != (theirs.get("augment") or {}).get("preview"):
        print(f"note: augment.preview={preview} has no effect when resuming: the preview shows the pipeline a run "
              f"starts with, and is written when it starts (start a new run to see one)")


def check_something_to_do(cfg: dict[str, Any], epochs_done: int, elapsed_s: float,
                          stopped: str | None = None) -> None:
    """A resumed run that has finished its epochs, used its time budget, or stopped itself (early stopping, the
    overfit check reaching its target) has nothing to train: say so before the run folder is touched (its run.json,
    config.yaml and TensorBoard stay as they are)."""
    tc = cfg["train"]
    key = "train.overfit_steps" if tc["overfit_batch"] else "train.epochs"
    epochs = tc["overfit_steps"] if tc["overfit_batch"] else tc["epochs"]
    if stopped:
        raise SegLoopError(f"nothing to do: the run stopped itself ({stopped})", path=cfg["resume"],
                           fix="start a new run to train further (model.init_from=RUN starts from its weights)")
    if epochs_done >= epochs:
        unit = "steps" if tc["overfit_batch"] else "epochs"
        raise SegLoopError(f"nothing to do: the run finished its {epochs} {unit} ({key})", path=cfg["resume"],
                           fix=f"resume with more {unit}: {key}={epochs_done + 10}")
    if tc["time_limit"] and elapsed_s >= tc["time_limit"] * 60:
        raise SegLoopError(f"nothing to do: the run has trained {elapsed_s / 60:.2f} minutes, already past "
                           f"train.time_limit={tc['time_limit']:g} minutes", path=cfg["resume"],
                           fix=f"resume with a larger budget: train.time_limit={elapsed_s / 60 + 5:.0f} (minutes in "
                               f"all, not more)")


class HookBase:
    """Called around the loop; ``self.trainer`` is set when the hook is registered. Only rank 0 runs hooks that
    write (``main_only``)."""

    trainer: Trainer
    main_only = True

    def before_train(self) -> None: ...

    def after_step(self) -> None: ...

    def after_epoch(self) -> None: ...

    def after_train(self) -> None: ...


class Trainer:
    """SegLoop's training loop (a task may delegate the fit to another trainer: ``Task.delegated_trainer``)."""

    foreign_section: str | None = None  # the config section of another trainer's own arguments this one reads

    def __init__(self, cfg: dict[str, Any], progress: bool = True) -> None:
        self.cfg = cfg
        self.progress = progress
        self.world, self.rank, local_rank = dist_info()
        self.main = self.rank == 0
        tc = cfg["train"]
        if self.world > 1 and not dist.is_initialized() and not {"MASTER_ADDR", "MASTER_PORT"} <= set(os.environ):
            raise SegLoopError(f"WORLD_SIZE={self.world} asks for distributed training, but MASTER_ADDR / "
                               f"MASTER_PORT are not set (torchrun sets them)",
                               fix="start it with torchrun --nproc_per_node=N -m train.run, or unset WORLD_SIZE, "
                                   "RANK and LOCAL_RANK for one process")
        if self.world > 1 and not dist.is_initialized():
            check_rendezvous(os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"])
            if self.main:
                print(f"waiting for {self.world} processes at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
                      flush=True)
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
        if resume:  # first: a resumed run's settings are its own, and an override that cannot apply is said
            self.ckpt = load_checkpoint(Run(resume).checkpoint_path("last"))
            check_run_checkpoint(resume, self.ckpt, Run(resume).checkpoint_path("last"))
            check_resume_overrides(cfg, self.ckpt["config"])
        task_cls = tasks.get(cfg["task"]).training()  # model name and arguments fail here, before any dataset is built
        task_cls.models.check_args(cfg["model"]["name"], dict(cfg["model"]["args"] or {}), ("num_classes",))
        check_reasons(cfg, task_cls.models.parameters(cfg["model"]["name"]))
        if cfg.get("ultralytics") and self.foreign_section != "ultralytics":
            raise SegLoopError(f"the ultralytics: section sets arguments of Ultralytics' trainer, which trains YOLO "
                               f"models only; {cfg['model']['name']} trains in SegLoop's loop",
                               fix="remove the ultralytics: section, or set model.name to a YOLO model "
                                   "(python -m train.run --models)")
        if cfg["model"]["weights"] and cfg["model"]["init_from"]:
            raise SegLoopError("model.weights and model.init_from both set: one run starts from one checkpoint",
                               fix="model.weights for the same model and taxonomy, or model.init_from for transfer "
                                   "learning (layers of the same name and shape); not both")
        for key in ("weights", "init_from"):
            if cfg["model"][key] and Path(cfg["model"][key]).is_dir():
                training_start_problem(cfg["model"][key], f"model.{key}")
        if self.world > 1 and not self.main:
            dist.barrier()  # rank 0 generates / builds the dataset first; the others then only read it
        self.dataset = ensure_dataset(cfg) if not resume else DatasetVersion(
            resolve_version(self.ckpt["dataset_path"] if Path(self.ckpt["dataset_path"]).exists()
                            else self.ckpt["dataset_version"], cfg["data"]["versions_root"]))
        if self.world > 1 and self.main:
            dist.barrier()
        self.taxonomy = self.dataset.taxonomy
        self.amp = bool(tc["amp"]) and self.device.type == "cuda"
        self.task: Task = task_cls(cfg, self.taxonomy, self.device, self.amp, progress)
        self.unused = self._say_unused(self.unused_settings())
        self.task.check_dataset(self.dataset, cfg["data"]["train_split"])
        self.best_metric = tc["best_metric"] if tc["best_metric"] != "auto" else self.task.best_metric
        if self.best_metric not in self.task.metric_names:
            raise SegLoopError(f"train.best_metric '{self.best_metric}' is not a validation metric of the "
                               f"{self.task.name} task", fix="one of: auto, " + ", ".join(self.task.metric_names))
        self.selection: Selection = select_images(cfg, self.dataset)
        before = (Run(resume).info().get("train_images") or {}).get("ids_sha256") if resume else None
        # a fold's images are the version's own (runs on a fold recorded no digest before it was kept)
        if resume and before != self.selection.info.get("ids_sha256") and not (before is None
                                                                               and cfg["data"]["fold"] is not None):
            raise SegLoopError("the training images are not those the run started with (data.train_list's file, "
                               "or data.train_ids, changed since): the resumed epochs would train on others",
                               path=resume, fix="restore the list the run started with (run.json's train_images "
                                                "holds its ids), or start a new run on the new list")
        self._check_stopping(self.selection)
        # the overfit check trains one fixed batch per step: its epochs are steps
        self.overfit = tc["overfit_batch"] > 0
        self.epochs = tc["overfit_steps"] if self.overfit else tc["epochs"]
        self.batch_size = tc["overfit_batch"] if self.overfit else tc["batch_size"]

        # the run folder is only planned here; it is created when training starts (a config or data error above
        # or in the setup below leaves nothing behind)
        self.run_dir: Path | None = None
        self.created_run_dir = False
        if resume:
            self.run_dir = Path(resume)
        elif self.main:
            name = cfg["output"]["name"] or f"{cfg['model']['name']}-{self.dataset.version.split('@')[0]}"
            new_run_problem(Path(cfg["output"]["runs_dir"]) / safe_name(name, "output.name"), cfg["data"]["fold"],
                            self.dataset.version)
            self.run_dir = plan_run_dir(cfg["output"]["runs_dir"], name, cfg["output"]["exist_ok"])
        self._build_data()
        self._build_model()
        self.hooks: list[HookBase] = []
        self.register_hooks([RunFolder(), Validation(), *([OverfitCheck()] if self.overfit else []), MetricsLog(),
                             EarlyStopping(), Checkpointer()])

    def unused_settings(self) -> dict[str, str]:
        """Config keys this run does not read, with why (the loop's own, then the task's)."""
        oc, tc = self.cfg["optim"], self.cfg["train"]
        out = {"optim.momentum": f"momentum is SGD's; {oc['name']} has none"} if oc["name"] != "sgd" else {}
        if tc["overfit_batch"]:
            check = "the overfit check trains its fixed images, one batch per step, without augmentation"
            out.update({"train.epochs": f"{check} (train.overfit_steps bounds it)",
                        "train.batch_size": f"{check} (the batch is train.overfit_batch)",
                        "train.early_stop": f"{check} until train.overfit_target", "augment": check})
        else:
            out.update({f"train.{k}": "it sets the overfit check, which train.overfit_batch=N turns on"
                        for k in ("overfit_target", "overfit_steps")})
        if not tc["early_stop"]["patience"]:
            out["train.early_stop.min_delta"] = "early stopping is off (train.early_stop.patience is 0)"
        if self.cfg["data"]["fold"] is not None and not tc["overfit_batch"]:
            out["data.val_split"] = "with data.fold, the fold's own held-out images validate"
        return {**out, **self.schedule_unused(), **type(self.task).unused_settings(self.cfg)}

    def _check_stopping(self, sel: Selection) -> None:
        """Early stopping needs validation images apart from the training ones, and one process for the overfit
        check (its few images are not shared among ranks)."""
        tc = self.cfg["train"]
        overlap = sel.val_split == sel.train_split and (sel.val_ids is None or sel.train_ids is None
                                                        or bool(set(sel.val_ids) & set(sel.train_ids)))
        if tc["early_stop"]["patience"] and not tc["overfit_batch"] and overlap:
            raise SegLoopError(f"train.early_stop.patience is set but validation scores the training split "
                               f"({sel.val_split}): the score of images it trains on keeps rising, so it cannot say "
                               f"when to stop", fix="validate on another split (data.val_split=val), or train on a "
                                                    "fold (data.fold=k), or set train.early_stop.patience=0")
        if tc["overfit_batch"] and self.world > 1:
            raise SegLoopError(f"train.overfit_batch with {self.world} processes: the check trains one fixed batch "
                               f"in one process", fix="run the overfit check without torchrun")

    def schedule_unused(self) -> dict[str, str]:
        """The schedule's keys that only another schedule reads (``power``: poly, ``min_lr_ratio``: cosine)."""
        sc, out = self.cfg["schedule"], {}
        if sc["name"] != "poly":
            out["schedule.power"] = f"the power shapes the poly schedule, not {sc['name']}"
        if sc["name"] != "cosine":
            out["schedule.min_lr_ratio"] = f"the floor of the cosine schedule, not {sc['name']}"
        return out

    def _say_unused(self, unused: dict[str, str]) -> dict[str, str]:
        """The unused keys this config sets to something other than the default, each said once."""
        from core.config import flatten, load_with_bases
        from train.config import TRAIN_DEFAULT

        default, given = flatten(load_with_bases(TRAIN_DEFAULT)), flatten(self.cfg)

        def value(key: str, flat: dict[str, Any]) -> Any:  # a leaf, or a section (loss.args) as its leaves
            return flat[key] if key in flat else {k: v for k, v in flat.items() if k.startswith(key + ".")}

        # null switches a setting off, which needs no note (a recipe's loss.class_weights: null, say)
        said = {k: why for k, why in unused.items() if value(k, given) not in ({}, None, value(k, default))}
        if self.main:
            for key, why in said.items():
                shown = given[key] if key in given else {k.removeprefix(key + "."): v  # the leaves set
                                                          for k, v in value(key, given).items() if default.get(k) != v}
                print(f"note: {key}={shown} has no effect here: {why}")
        return said

    def register_hooks(self, hooks: list[HookBase]) -> None:
        for h in hooks:
            h.trainer = self
            self.hooks.append(h)

    def _call(self, stage: str) -> None:
        for h in self.hooks:
            if self.main or not h.main_only:
                getattr(h, stage)()

    # ---------------------------------------------------------------------------------------------------- setup
    def _build_data(self) -> None:
        cfg, ds, sel = self.cfg, self.dataset, self.selection
        self.val_split = sel.val_split
        self.train_set, self.val_set = self.task.datasets(ds, sel.train_ids, sel.val_split, sel.val_ids,
                                                          augment=sel.augment)
        if len(self.train_set) == 0 or len(self.val_set) == 0:
            raise SegLoopError(f"empty split in dataset {ds.version}: train {len(self.train_set)}, val "
                               f"{len(self.val_set)} images", path=ds.path, fix="rebuild the version with images "
                                                                                 "in both splits")
        bs = self.batch_size
        workers = cfg["data"]["workers"]
        self.generator = torch.Generator().manual_seed(cfg["train"]["seed"])
        self.sampler = (DistributedSampler(self.train_set, self.world, self.rank, shuffle=True,
                                           seed=cfg["train"]["seed"], drop_last=True) if self.world > 1
                        else RandomSampler(self.train_set, generator=self.generator))
        loader_kw: dict[str, Any] = {"num_workers": workers, "collate_fn": self.task.collate,
                                     "pin_memory": self.device.type == "cuda", "worker_init_fn": worker_init}
        if workers > 0:
            loader_kw.update(persistent_workers=True, prefetch_factor=4)
        batches = self.task.batch_sampler(self.train_set, self.sampler, bs)
        if batches is not None:
            self.train_loader = DataLoader(self.train_set, batch_sampler=batches, **loader_kw)
        else:
            self.train_loader = DataLoader(self.train_set, batch_size=bs, sampler=self.sampler, drop_last=True,
                                           **loader_kw)
        if len(self.train_loader) == 0:
            raise SegLoopError(f"train.batch_size {bs} is larger than the training images ({len(self.train_set)}"
                               f"{', ' + sel.info['from'] if sel.info.get('from') else ''})",
                               fix=f"set train.batch_size={max(1, len(self.train_set))} or less")
        self.val_loader = DataLoader(self.val_set, batch_size=bs, shuffle=False, num_workers=0,
                                     collate_fn=self.task.collate)

    def _build_model(self) -> None:
        self._build_network()
        self._build_optimizer()

    def _build_network(self) -> None:
        """The model with its starting weights (``model.weights``, ``model.init_from``), on the device."""
        cfg = self.cfg
        self.spec = model_spec(cfg)
        model = self.task.build_model(initialise=not (self.ckpt or cfg["model"]["weights"]))
        self.weights_report: dict[str, Any] | None = None
        if cfg["model"]["weights"] and not self.ckpt:
            source = (Run(cfg["model"]["weights"]).checkpoint_path("best") if Path(cfg["model"]["weights"]).is_dir()
                      else Path(cfg["model"]["weights"]))
            init = load_checkpoint(source)
            check_compatible(init, self.spec, self.taxonomy.names, cfg["model"]["weights"])
            load_state(model, init["model"], cfg["model"]["weights"])
            self.weights_report = {"from": str(source), "epoch": init.get("epoch"), "step": init.get("step"),
                                   "sha256": sha256_file(source)}
        self.init_report = None
        if cfg["model"]["init_from"] and not self.ckpt:
            self.init_report = transfer_weights(model, cfg["model"]["init_from"], self.taxonomy.names,
                                                cfg["model"]["name"])
        self.channels_last = self.task.channels_last(model, bool(cfg["train"]["channels_last"]))
        model = model.to(self.device, memory_format=torch.channels_last if self.channels_last else
                         torch.contiguous_format)
        self.model: nn.Module = model
        if self.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(cfg["train"]["freeze_encoder_epochs"]))  # a frozen encoder has no grad
        frozen, epochs = cfg["train"]["freeze_encoder_epochs"], self.epochs
        if frozen >= epochs:
            raise SegLoopError(f"train.freeze_encoder_epochs={frozen} freezes all {epochs} epochs "
                               f"(train.epochs): the encoder would never train",
                               fix=f"freeze fewer epochs than train.epochs, e.g. train.freeze_encoder_epochs="
                                   f"{max(epochs // 10, 1) if epochs > 1 else 0}")
        if cfg["train"]["freeze_encoder_epochs"] and not isinstance(getattr(model, "encoder", None), nn.Module):
            raise SegLoopError(f"train.freeze_encoder_epochs is set, but model {cfg['model']['name']} has no "
                               f"encoder part to freeze", fix="use an encoder-decoder model (unet, linknet, resunet, "
                                                             "convunext), or set train.freeze_encoder_epochs=0")

    def _build_optimizer(self) -> None:
        """Loss, optimiser, schedule and scaler; on resume, their state and the run's position."""
        cfg = self.cfg
        self.task.setup_loss(self.train_set)
        oc = cfg["optim"]
        # a model may supply its own parameter groups (a backbone at a lower rate): the optimiser knows no model
        groups = getattr(unwrap(self.model), "parameter_groups", None)
        params = groups(oc["lr"]) if callable(groups) else [p for p in self.model.parameters() if p.requires_grad]
        if oc["name"] == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=oc["lr"], weight_decay=oc["weight_decay"])
        elif oc["name"] == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=oc["lr"], momentum=oc["momentum"],
                                             weight_decay=oc["weight_decay"], nesterov=True)
        else:
            raise SegLoopError(f"unknown optimizer '{oc['name']}'", fix="optim.name: adamw or sgd")
        tl = cfg["train"]["time_limit"]
        self.schedule = WarmupSchedule(self.optimizer, cfg["schedule"],
                                       self.epochs * len(self.train_loader), tl * 60 if tl else None)
        fp16 = self.amp and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.start_epoch, self.step, self.elapsed = 0, 0, 0.0
        self.best: dict[str, Any] = {"metric": self.best_metric, "value": -1.0, "epoch": -1}
        es = cfg["train"]["early_stop"]
        self.patience = Patience(es["patience"], es["min_delta"]) if es["patience"] and not self.overfit else None
        self.stop_reason: str | None = None
        if self.ckpt:
            check_compatible(self.ckpt, self.spec, self.taxonomy.names, self.cfg["resume"])
            load_state(unwrap(self.model), self.ckpt["model"], self.cfg["resume"])
            self.optimizer.load_state_dict(self.ckpt["optimizer"])
            self.schedule.load_state_dict(self.ckpt["scheduler"])
            self.schedule.total = self.epochs * len(self.train_loader)
            self.scaler.load_state_dict(self.ckpt["scaler"])
            self.start_epoch, self.step = self.ckpt["epoch"], self.ckpt["step"]
            self.elapsed = self.ckpt["elapsed_s"]
            best = self.ckpt["best"]
            if "value" not in best:  # written before tasks existed: {"mIoU": v, "epoch": e}
                best = {"metric": "mIoU", "value": best["mIoU"], "epoch": best["epoch"]}
            if best["metric"] == self.best_metric:  # another metric starts its own record
                self.best = best
            set_rng_state(self.ckpt["rng"])
            if self.patience is not None and self.ckpt.get("early_stop"):
                self.patience.value = self.ckpt["early_stop"]["value"]
                self.patience.epoch = self.ckpt["early_stop"]["epoch"]
            check_something_to_do(self.cfg, self.start_epoch, self.elapsed, self.ckpt.get("stopped"))

    # ------------------------------------------------------------------------------------------------- the loop
    def fit(self, stop_after_epochs: int | None = None) -> TrainResult:
        """Train to ``train.epochs``; ``stop_after_epochs`` ends this session early (as an interruption would)."""
        import signal
        import threading

        def terminated(signum: int, frame: Any) -> None:  # a scheduler's or timeout's SIGTERM ends like Ctrl-C
            raise SystemExit(128 + signum)

        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, terminated) if main_thread else None
        deterministic = set_deterministic(bool(self.cfg["train"]["deterministic"]), self.device)
        try:
            return self._fit(stop_after_epochs)
        except BaseException:
            # a run that dies before its first checkpoint has nothing to resume: leave no folder behind
            if self.created_run_dir and not has_results(self.run_dir):
                shutil.rmtree(self.run_dir, ignore_errors=True)
                settle_replaced(self.run_dir, restore=True)
            raise
        finally:
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic[2:]
            if main_thread:
                signal.signal(signal.SIGTERM, previous)

    def _fit(self, stop_after_epochs: int | None) -> TrainResult:
        tc = self.cfg["train"]
        self._call("before_train")
        time_limit = tc["time_limit"] * 60 if tc["time_limit"] else None
        train_images, train_time = 0, 0.0
        epoch = self.start_epoch
        self.stopped_by_time = False
        for epoch in range(self.start_epoch, self.epochs):
            self.epoch = epoch
            self.model.train()
            self.freeze_encoder(epoch < tc["freeze_encoder_epochs"])
            if isinstance(self.sampler, DistributedSampler):
                self.sampler.set_epoch(epoch)
            self.generator.manual_seed(tc["seed"] * 1000 + epoch)
            self.task.start_epoch(self.train_set, tc["seed"] * 1000 + epoch)
            self.loss_sums: dict[str, torch.Tensor] = {}
            self.batches = 0
            t_epoch = time.perf_counter()
            self.bar = tqdm(self.train_loader, desc=f"{'step' if self.overfit else 'epoch'} {epoch + 1}/{self.epochs}",
                            disable=not (self.progress and self.main), leave=False)
            for batch in self.bar:
                self.losses = self._train_step(batch)
                for k, v in self.losses.items():
                    self.loss_sums[k] = self.loss_sums.get(k, 0) + v.detach()
                self.batches += 1
                self.step += 1
                now = self.elapsed + time.perf_counter() - t_epoch
                if self.world > 1 and time_limit:  # one clock for every rank: same lr, same stopping step
                    clock = torch.tensor([now], dtype=torch.float64, device=self.device)
                    dist.all_reduce(clock, op=dist.ReduceOp.MAX)
                    now = float(clock)
                self.schedule.step(now)
                self._call("after_step")
                if time_limit and now >= time_limit:
                    self.stopped_by_time = True
                    break
            if self.batches:  # an epoch shorter than train.log_every was never checked step by step
                check_finite(self.epoch_losses(), f"over epoch {epoch + 1}", self.run_dir)
            epoch_time = time.perf_counter() - t_epoch
            self.elapsed += epoch_time
            train_time += epoch_time
            train_images += self.batches * self.batch_size * self.world
            self.last_epoch = self.stopped_by_time or epoch + 1 == self.epochs
            self.record = None  # the Validation hook's result, when it validates this epoch
            self._call("after_epoch")
            if self.world > 1:
                dist.barrier()
            if self.stopped_by_time or self.stop_reason or (
                    stop_after_epochs and epoch + 1 - self.start_epoch >= stop_after_epochs):
                break
        self.images_per_second = train_images / train_time if train_time else 0.0
        self._call("after_train")
        if self.world > 1:
            dist.destroy_process_group()
        return TrainResult(self.run_dir, self.best["metric"], self.best["value"], self.best["epoch"], epoch + 1,
                           self.step, self.elapsed, self.images_per_second, getattr(self, "overfit_outcome", None))

    def freeze_encoder(self, frozen: bool) -> None:
        """Freeze (or release) the model's encoder: no gradient, and its BatchNorm statistics kept as they were
        loaded (eval mode), while the rest of the model trains."""
        encoder = getattr(unwrap(self.model), "encoder", None)
        if not self.cfg["train"]["freeze_encoder_epochs"] or encoder is None:
            return
        for p in encoder.parameters():
            p.requires_grad_(not frozen)
        encoder.train(not frozen)

    def _train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        losses = self.task.train_step(self.model, batch)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg["train"]["grad_clip"] > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["train"]["grad_clip"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if len(losses) > 1:
            losses = {"total": loss, **losses}
        return losses

    def validate(self, model: nn.Module, losses: bool = True) -> dict[str, Any]:
        """Score the validation split with the task's evaluator (one inference over the loader, as detectron2's
        ``inference_on_dataset``): the task's ``val_*`` record, with ``val_loss`` when ``losses`` and the task can
        compute one, and the first images' panels in TensorBoard. A delegated trainer validates through this too."""
        model.eval()
        evaluator = self.task.evaluator(self.dataset, self.val_split)
        evaluator.reset()
        panels: list[np.ndarray] = []
        limit = self.cfg["train"]["log_images"]
        loss_sums: dict[str, float] = {}
        images = 0
        # validation draws from its own seeded stream (Mask R-CNN's loss samples proposals): the training stream,
        # and so a resumed run, stays exactly as without it, and every validation draws the same samples
        with torch.no_grad(), torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.cfg["train"]["seed"])
            for batch in self.val_loader:
                if losses:
                    outputs, batch_losses = self.task.validation_step(model, batch)
                else:
                    outputs, batch_losses = self.task.inference(model, batch), None
                evaluator.process(batch, outputs)
                if len(panels) < limit:
                    panels += self.task.panels(batch, outputs, limit - len(panels))
                if batch_losses:
                    n = len(batch["image"])
                    images += n
                    for k, v in batch_losses.items():
                        loss_sums[k] = loss_sums.get(k, 0.0) + float(v) * n
        record = self.task.record(evaluator.evaluate())
        if images:
            terms = {k: v / images for k, v in loss_sums.items()}
            record["val_loss"] = sum(terms.values())
            if len(terms) > 1:
                record["val_losses"] = terms
        for i, p in enumerate(panels):
            self.out.tb.add_image(f"val/panel_{i}", p, self.step, dataformats="HWC")
        return record

    def epoch_losses(self) -> dict[str, float]:
        """Mean of each named loss over this epoch's batches (``total`` when there are several)."""
        return {k: float(v / max(self.batches, 1)) for k, v in self.loss_sums.items()}

    def save(self, name: str, epoch: int) -> None:
        self.out.checkpoint(name, dict(
            model=unwrap(self.model).state_dict(), optimizer=self.optimizer.state_dict(),
            scheduler=self.schedule.state_dict(), scaler=self.scaler.state_dict(), epoch=epoch, step=self.step,
            best=self.best, rng=rng_state(), config=self.cfg, model_spec=self.spec,
            taxonomy=self.taxonomy.to_dict(), dataset_version=self.dataset.version,
            dataset_path=str(self.dataset.path.resolve()), elapsed_s=self.elapsed, stopped=self.stop_reason,
            **({"early_stop": self.patience.state()} if self.patience is not None else {}),
        ))


# --------------------------------------------------------------------------------------------------------- hooks


def check_finite(values: dict[str, float], when: str, run_dir: Path | None) -> None:
    """A NaN or infinite training loss ends the run with the terms named (a diverged model's checkpoint would
    otherwise be kept as the best)."""
    main = values.get("total", next(iter(values.values()), 0.0))
    if not math.isfinite(main):
        raise SegLoopError(f"the training loss is {main} {when} (terms: "
                           + ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k != "total") + ")",
                           path=run_dir, fix="lower optim.lr, set train.grad_clip, or check loss.class_weights, "
                                             "loss.args and the starting weights; the run stops here")


class RunFolder(HookBase):
    """Creates the run folder when training starts and opens its ``RunWriter`` (``config.yaml``, ``run.json``,
    TensorBoard); at the end, the final figures in ``run.json``."""

    def before_train(self) -> None:
        t = self.trainer
        if t.ckpt is None:
            t.run_dir = create_run_dir(t.run_dir, t.cfg["output"]["exist_ok"])
            t.created_run_dir = True
        t.out = RunWriter(t.run_dir, t.step if t.ckpt is not None else None)
        info = {"task": t.task.name, "model": t.spec, "dataset_version": t.dataset.version,
                "dataset_path": str(t.dataset.path.resolve()), "taxonomy": t.taxonomy.name,
                "device": str(t.device), "world_size": t.world, "torch": torch.__version__,
                "parameters": sum(p.numel() for p in t.model.parameters()), "best_metric": t.best_metric,
                **({"init_from": t.init_report} if t.init_report else {}),
                **({"weights": t.weights_report} if t.weights_report else {}),
                **({"pretrained": pretrained} if (pretrained := pretrained_files(unwrap(t.model))) else {}),
                **t.task.run_info(unwrap(t.model)),
                **({"train_images": t.selection.info} if t.selection.info else {}),
                **({"deterministic": True} if t.cfg["train"]["deterministic"] else {}),
                **({"unused_settings": t.unused} if t.unused else {})}
        if t.out.start(dump_yaml(t.cfg), info, train_command(sys.argv, t.cfg)):
            write_hparams(t.out.tb, t.cfg)  # once per run: a resume continues the session its config started
            t.task.before_train(t.run_dir, t.train_set)
        print(f"run {t.run_dir}: {t.task.name}, {t.dataset.version}, {len(t.train_set)} train / {len(t.val_set)} "
              f"val images, {t.spec['name']} {t.spec['args']}, device {t.device}"
              + (f" x{t.world}" if t.world > 1 else ""))

    def after_step(self) -> None:
        t = self.trainer
        if t.step % t.cfg["train"]["log_every"] == 0:
            values = {k: float(v.detach()) for k, v in t.losses.items()}
            check_finite(values, f"at step {t.step}", t.run_dir)  # where the loss is read anyway: no extra sync
            main = values.get("total", next(iter(values.values())))
            t.out.scalar("train/loss", main, t.step)
            if len(values) > 1:
                for k, v in values.items():
                    if k != "total":
                        t.out.scalar(f"train_loss/{k}", v, t.step)
            t.out.scalar("train/lr", t.schedule.get_last_lr()[0], t.step)
            t.bar.set_postfix(loss=f"{main:.3f}")

    def after_train(self) -> None:
        t = self.trainer
        if t.best.get("epoch", -1) >= 0:  # the hparams table's column for the best checkpoint's score
            t.out.scalar(f"best/{t.best['metric']}", t.best["value"], t.step)
        write_hparams(t.out.tb, t.cfg, end=True)
        es = t.cfg["train"]["early_stop"]
        t.out.finish(
            best_metric=t.best["metric"], best_value=t.best["value"], best_epoch=t.best["epoch"],
            best_step=t.best.get("step"), steps=t.step,
            train_seconds=round(t.elapsed, 2), train_images_per_second=round(t.images_per_second, 2),
            stopped_by_time_limit=t.stopped_by_time,
            **({"stopped": t.stop_reason} if t.stop_reason else {}),
            **({"early_stop": {"metric": t.best_metric, "patience": es["patience"], "min_delta": es["min_delta"],
                               "stopped_at_epoch": t.epoch + 1 if t.stop_reason else None,
                               "peak": {"epoch": t.best["epoch"], "step": t.best.get("step"),
                                        "value": t.best["value"]}}} if t.patience is not None else {}),
            **({"overfit": t.overfit_outcome} if t.overfit else {}),
            **({"best_val_mIoU": t.best["value"]} if t.best["metric"] == "mIoU" else {}))


class Validation(HookBase):
    """Scores the validation split with the task's evaluator every ``eval_every`` epochs and after the last."""

    def after_epoch(self) -> None:
        t = self.trainer
        if not ((t.epoch + 1) % t.cfg["train"]["eval_every"] == 0 or t.last_epoch):
            return
        t.record = t.validate(unwrap(t.model))
        t.model.train()


class MetricsLog(HookBase):
    """One ``metrics.jsonl`` line per validation, TensorBoard scalars, and the epoch's line on the terminal."""

    def after_epoch(self) -> None:
        t = self.trainer
        if t.record is None:
            return
        losses = t.epoch_losses()
        record = {"epoch": t.epoch + 1, "step": t.step, "time_s": round(t.elapsed, 2),
                  "lr": t.schedule.get_last_lr()[0], "train_loss": losses.get("total", next(iter(losses.values())))}
        if len(losses) > 1:
            record["train_losses"] = {k: v for k, v in losses.items() if k != "total"}
        record.update(t.task.train_record())
        record.update(t.record)
        t.out.log(record)
        val_loss = f"  val loss {record['val_loss']:.4f}" if "val_loss" in record else ""
        tqdm.write(f"{'step' if t.overfit else 'epoch'} {t.epoch + 1}: loss {record['train_loss']:.4f}{val_loss}  "
                   f"{t.task.summary(t.record)}  "
                   f"({t.elapsed:.0f}s)")


class Checkpointer(HookBase):
    """``last.pt`` after every epoch, ``best.pt`` when the best metric improved. The overfit check (whose epochs
    are single steps) saves its end state only, as both: the weights that reached, or did not reach, the target."""

    def after_epoch(self) -> None:
        t = self.trainer
        if t.overfit and not (t.last_epoch or t.stop_reason):
            return
        value = None if t.record is None else t.record.get(f"val_{t.best_metric}")
        improved = value is not None and (value > t.best["value"] or t.overfit)
        if improved:  # best.pt first: a kill between the two never leaves last.pt naming a best that is not saved
            t.best = {"metric": t.best_metric, "value": value, "epoch": t.epoch + 1, "step": t.step}
            t.save("best.pt", t.epoch + 1)
        t.save("last.pt", t.epoch + 1)
        if t.created_run_dir:  # the new run has a checkpoint: an earlier run of its name, set aside, can go
            settle_replaced(t.run_dir, restore=False)


class EarlyStopping(HookBase):
    """``train.early_stop``: after a validation, stop when ``best_metric`` has not risen by ``min_delta`` for
    ``patience`` epochs; the peak (``best.pt``'s epoch and step) is what ``run.json`` records. Runs before the
    checkpointer, so the epoch's ``last.pt`` holds the rule's state after this validation, and why the run ended."""

    main_only = False  # every rank stops at the same epoch (the record is the same on every rank)

    def after_epoch(self) -> None:
        t = self.trainer
        value = None if t.record is None else t.record.get(f"val_{t.best_metric}")
        if t.patience is None or value is None or t.stop_reason:
            return
        if t.patience.update(t.epoch + 1, value):
            t.stop_reason = (f"early stopping: val {t.best_metric} has not risen by more than "
                             f"{t.patience.min_delta:g} for {t.patience.patience} epochs (train.early_stop.patience)")
            # this epoch's value is not in t.best yet (the checkpointer runs next): it may be the peak itself
            peak = (value, t.epoch + 1, t.step) if value > t.best["value"] else (
                t.best["value"], t.best["epoch"], t.best.get("step"))
            tqdm.write(f"{t.stop_reason}; its peak {peak[0]:.4f} was at epoch {peak[1]} (step {peak[2]})")


class OverfitCheck(HookBase):
    """``train.overfit_batch``: the few fixed images are both the batch and the validation; the check passes
    when ``best_metric`` on them reaches ``train.overfit_target`` (the run stops there) and fails when
    ``train.overfit_steps`` pass first. Either way ``run.json`` and the terminal say which, at which step."""

    main_only = False

    def before_train(self) -> None:
        t = self.trainer
        tc = t.cfg["train"]
        t.overfit_outcome = {"images": t.selection.train_ids, "metric": t.best_metric,
                             "target": tc["overfit_target"], "reached": False, "step": None, "value": None,
                             "steps": tc["overfit_steps"]}

    def after_epoch(self) -> None:
        t = self.trainer
        value = None if t.record is None else t.record.get(f"val_{t.best_metric}")
        if value is None:
            return
        out = t.overfit_outcome
        out["value"], out["last_step"] = value, t.step
        if value >= out["target"]:
            out.update(reached=True, step=t.step)
            t.stop_reason = f"overfit check passed at step {t.step}"

    def after_train(self) -> None:
        t = self.trainer
        out = t.overfit_outcome
        n = len(out["images"])
        if out["reached"]:
            print(f"overfit check passed: {out['metric']} {out['value']:.4f} >= {out['target']:g} on the "
                  f"{n} fixed images after {out['step']} steps")
        else:
            print(f"overfit check FAILED: {out['metric']} {out['value'] if out['value'] is not None else 'nan':.4}"
                  f" < {out['target']:g} on the {n} fixed images after {t.step} steps: a pipeline that cannot learn "
                  f"{n} images will not learn the dataset (check the labels, the loss, optim.lr, the model's output)")


def hparam_value(value: Any) -> bool | int | float | str:
    """A config value as the hparams plugin takes it: numbers, strings and booleans as they are, the rest as JSON."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


def write_hparams(writer: Any, cfg: dict[str, Any], end: bool = False) -> None:
    """The run's flattened config for TensorBoard's hparams plugin (a session start, written once when the run is
    created) or its end (``end=True``), so that ``tensorboard --logdir runs`` compares every run in one table. No
    experiment summary is written: with none, the plugin builds its columns from every run's config keys and scalar
    tags, so semantic and instance runs, and models with different arguments, all keep their own columns (one run's
    experiment summary would fix the columns for all). Metric values come from the runs' own scalars."""
    from torch.utils.tensorboard.summary import hparams

    hp = {k: hparam_value(v) for k, v in flatten({k: v for k, v in cfg.items() if k != WHY}).items()}
    _, start, finish = hparams(hp, {})
    writer._get_file_writer().add_summary(finish if end else start)


def trainer_for(cfg: dict[str, Any]) -> type[Trainer]:
    """SegLoop's loop, or the trainer the task delegates this config's fit to (Ultralytics runs YOLO's epochs)."""
    return tasks.get(cfg["task"]).training().delegated_trainer(cfg) or Trainer


def train(cfg: dict[str, Any], progress: bool = True) -> TrainResult:
    """Train one run (``data.fold=all``: ``train.folds.train_folds``, one run per fold)."""
    return trainer_for(cfg)(cfg, progress).fit()
